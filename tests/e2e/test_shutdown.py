"""SIGTERM on a real `zantara serve` process while answers stream: the streams finish completely, new
connections are refused, then the process exits 0 (what Kubernetes sees when it stops a pod)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from tests.postgres import free_port
from tests.served import REPO, demo_env
from tests.service.helpers import chat_body

STREAMS = 4
MAX_TOKENS = 400
"""Long answers at a high temperature: they are still being generated when the signal arrives."""


async def _wait_ready(url: str, server: subprocess.Popen[str]) -> None:
    async with httpx.AsyncClient(timeout=2) as http:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and server.poll() is None:
            try:
                if (await http.get(f"{url}/readyz")).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.2)
    raise AssertionError("the service did not become ready")


async def _refused(url: str) -> bool:
    """True once a new connection is refused (polls for up to 10 s). A connection made while the server
    was closing its listening socket is dropped unanswered (a read error, seen on a busy core): that one
    proves nothing either way, so it polls on until a connection is refused."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            async with httpx.AsyncClient(timeout=2) as fresh:
                await fresh.get(f"{url}/healthz")
        except httpx.ConnectError:
            return True
        except (httpx.ReadError, httpx.RemoteProtocolError):
            pass
        await asyncio.sleep(0.05)
    return False


async def test_sigterm_drains_streams_then_exits_0(demo_dirs: tuple[Path, Path], tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        **demo_env(
            tmp_path / "var",
            demo_dirs,
            f"sqlite:///{tmp_path / 'zantara.db'}",
            ZANTARA_LOG_LEVEL="warning",
            ZANTARA_PORT=str(port),
            ZANTARA_GRACEFUL_SHUTDOWN_S="60",
        ),
    }
    with tempfile.TemporaryFile("w+") as output:
        server = subprocess.Popen(
            [sys.executable, "-m", "zantara", "serve"],
            env=env,
            cwd=REPO,
            stdout=output,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            await _wait_ready(url, server)
            async with httpx.AsyncClient(base_url=url, timeout=120) as http:
                bodies = [
                    chat_body(
                        f"Jelaskan langkah {i} mendirikan PT PMA secara rinci.",
                        model="zantara-demo-base",
                        max_tokens=MAX_TOKENS,
                        temperature=2,
                        seed=i,
                        stream=True,
                        stream_options={"include_usage": True},
                    )
                    for i in range(STREAMS)
                ]
                requests = [http.build_request("POST", "/v1/chat/completions", json=b) for b in bodies]
                streams = [await http.send(r, stream=True) for r in requests]
                lines = [s.aiter_lines() for s in streams]
                for stream, line_iter in zip(streams, lines, strict=True):
                    assert stream.status_code == 200
                    assert (await anext(line_iter)).startswith("data:")  # generating now

                server.send_signal(signal.SIGTERM)
                assert await _refused(url), "new connections are still accepted after SIGTERM"

                for stream, line_iter in zip(streams, lines, strict=True):
                    payloads = [line[5:].strip() async for line in line_iter if line.startswith("data:")]
                    await stream.aclose()
                    assert payloads[-1] == "[DONE]", payloads[-3:]
                    usage = json.loads(payloads[-2])["usage"]
                    finish = json.loads(payloads[-3])["choices"][0]["finish_reason"]
                    assert finish in {"stop", "length"}
                    assert usage["completion_tokens"] == MAX_TOKENS or finish == "stop"
            assert server.wait(timeout=90) == 0
        finally:
            if server.poll() is None:
                server.kill()
                server.wait()
            output.seek(0)
            log = output.read()
        assert "Traceback" not in log, log[-3000:]
