"""The dashboard's vLLM row on a real Prometheus scraping the service on the real vLLM engine (CPU build):
every panel query of vLLM's own metrics returns data, and `promtool check metrics` accepts what
`/metrics` exposes with vLLM's metrics beside ours."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.prometheus import (
    PROMTOOL,
    Window,
    dashboard_queries,
    queries_without_data,
    require_prometheus,
    run_prometheus,
    wait_for_first_scrape,
)
from tests.served import Server
from tests.vllm.helpers import QUESTIONS, chat
from training.demo.model import DEMO_ADAPTER

pytestmark = pytest.mark.slow

BASE = "zantara-demo-base"
ADAPTER = "{}@{}".format(*DEMO_ADAPTER)


@pytest.fixture(scope="module")
def scraped(vllm_server: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Window]:
    """Prometheus scraping the vLLM service every second while it answers the base model and the
    adapter (one prompt twice, so the prefix cache hits), then a few more scrapes."""
    require_prometheus()
    root = tmp_path_factory.mktemp("prometheus-vllm")
    with run_prometheus(root, vllm_server.url, rule_files=False) as prometheus:
        wait_for_first_scrape(prometheus)
        started = time.time()
        with httpx.Client(base_url=vllm_server.url, timeout=120) as client:
            for model in (BASE, ADAPTER, BASE, ADAPTER):
                for question in QUESTIONS[:2]:
                    chat(client, model, question, max_tokens=8)
                time.sleep(1.2)
        time.sleep(3)
        yield Window(prometheus=prometheus, started=started)


def test_every_vllm_panel_query_returns_data(scraped: Window) -> None:
    queries = dashboard_queries(vllm=True)
    assert len(queries) >= 6
    assert all("vllm:" in expr for _, expr in queries)
    empty = queries_without_data(scraped, queries)
    assert not empty, "vLLM panel queries without data on a served vLLM engine:\n" + "\n".join(empty)


def test_promtool_accepts_the_metrics_with_vllms_beside_ours(vllm_server: Server) -> None:
    """The exposition parses (exit 1 would be a parse error) and its only lint findings are on vLLM's own
    names, which we do not choose (`vllm:...`: colons, which the naming lint reserves for recording
    rules, and a gauge `vllm:iteration_tokens_total`); ours have none."""
    require_prometheus()
    exposition = httpx.get(f"{vllm_server.url}/metrics", timeout=10).text
    assert "vllm:generation_tokens_total" in exposition and "zantara_requests_total" in exposition
    checked = subprocess.run(
        [str(PROMTOOL), "check", "metrics"], input=exposition, capture_output=True, text=True, timeout=60
    )
    findings = [line for line in (checked.stdout + checked.stderr).splitlines() if line.strip()]
    others = [line for line in findings if not line.startswith("vllm:")]
    assert checked.returncode in (0, 3) and not others, checked.stdout + checked.stderr
