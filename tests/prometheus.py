"""A real Prometheus (Debian's `prometheus`) scraping a served process, and the shipped Grafana
dashboard's and alert rules' queries evaluated through its HTTP API: shared by the dashboard test of the
hf service (tests/e2e/test_prometheus_dashboard.py) and of the vLLM engine (tests/vllm/).

The dashboard's collapsed row titled `VLLM_ROW...` holds the panels of vLLM's own metrics, which only a
service on the vllm engine exports: `dashboard_queries(vllm=False)` leaves them out, `vllm=True` gives
only them.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.postgres import free_port

REPO = Path(__file__).resolve().parents[1]
DASHBOARD = REPO / "helm" / "zantara" / "dashboards" / "zantara.json"
RULES = REPO / "helm" / "zantara" / "prometheus" / "zantara-rules.yaml"
PROMETHEUS = Path("/usr/bin/prometheus")
PROMTOOL = Path("/usr/bin/promtool")
RATE_INTERVAL = "10s"
VLLM_ROW = "vLLM engine"
"""How the title of the dashboard's row of vLLM's own metrics starts."""


@dataclass(frozen=True)
class Window:
    """A Prometheus and when the traffic it is asked about started."""

    prometheus: str
    started: float


def require_prometheus() -> None:
    """Fail (never skip) when Debian's prometheus or promtool is missing."""
    missing = [str(p) for p in (PROMETHEUS, PROMTOOL) if not p.is_file()]
    if missing:
        pytest.fail(
            f"{', '.join(missing)} missing: install Debian's prometheus package "
            "(`apt-get install -y prometheus`; `make test` does it when run as root)"
        )


@contextmanager
def run_prometheus(root: Path, service_url: str, *, rule_files: bool = True) -> Iterator[str]:
    """Prometheus scraping the service (`job="zantara"`) every second and evaluating the shipped rules
    every second, its files under `root`; yields its URL."""
    port = free_port()
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "900ms"},
        "rule_files": [str(RULES)] if rule_files else [],
        "scrape_configs": [
            {"job_name": "zantara", "static_configs": [{"targets": [service_url.removeprefix("http://")]}]}
        ],
    }
    (root / "prometheus.yml").write_text(yaml.safe_dump(config))
    log = (root / "prometheus.log").open("w")
    process = subprocess.Popen(
        [
            str(PROMETHEUS),
            f"--config.file={root / 'prometheus.yml'}",
            f"--storage.tsdb.path={root / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/-/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"prometheus did not start:\n{(root / 'prometheus.log').read_text()[-3000:]}"
                )
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=20)
        log.close()


def wait_for_first_scrape(prometheus: str) -> None:
    """Until Prometheus holds a sample of the service: counters must be seen before the traffic, or a
    quick run leaves every increase at 0 and every ratio of increases undefined."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        found = httpx.get(f"{prometheus}/api/v1/query", params={"query": 'up{job="zantara"} == 1'}, timeout=5)
        if found.json()["data"]["result"]:
            return
        time.sleep(0.2)
    raise AssertionError("prometheus never scraped the service")


def all_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Every panel, those inside collapsed rows included."""
    for panel in panels:
        yield panel
        yield from all_panels(panel.get("panels", []))


def dashboard() -> dict[str, Any]:
    """The shipped Grafana dashboard."""
    loaded = json.loads(DASHBOARD.read_text())
    assert isinstance(loaded, dict)
    return loaded


def dashboard_queries(*, vllm: bool = False) -> list[tuple[str, str]]:
    """(where, PromQL) of every panel target and annotation outside the vLLM row, or (`vllm`) of the
    panels inside it."""
    board = dashboard()
    panels = [
        panel
        for top in board["panels"]
        for panel in all_panels([top])
        if top["title"].startswith(VLLM_ROW) == vllm and panel["type"] != "row"
    ]
    found = [
        (f"panel {panel['title']!r} {target['refId']}", target["expr"])
        for panel in panels
        for target in panel.get("targets", [])
    ]
    if not vllm:
        annotations = board["annotations"]["list"]
        found += [(f"annotation {a['name']!r}", a["expr"]) for a in annotations if "expr" in a]
    return found


def substitute(expr: str, window: Window) -> str:
    """Grafana's variables as Grafana sends them with every template variable on All."""
    covered = f"{int(time.time() - window.started) + 30}s"
    expr = expr.replace("$__rate_interval", RATE_INTERVAL).replace("$__range", covered)
    return re.sub(r"\$\{?(job|variant|adapter|target|model_name)\}?", ".*", expr)


def query_range(window: Window, expr: str) -> list[dict[str, Any]]:
    """The result of a range query over the test's traffic at a one-second step; raises on an error."""
    response = httpx.get(
        f"{window.prometheus}/api/v1/query_range",
        params={"query": expr, "start": window.started - 5, "end": time.time(), "step": "1s"},
        timeout=30,
    )
    body = response.json()
    assert response.status_code == 200 and body["status"] == "success", f"{expr}\n{body}"
    result = body["data"]["result"]
    assert isinstance(result, list)
    return result


def finite_points(result: list[dict[str, Any]]) -> int:
    """How many finite values a range query returned."""
    return sum(1 for series in result for _, value in series["values"] if math.isfinite(float(value)))


def queries_without_data(window: Window, queries: list[tuple[str, str]]) -> list[str]:
    """The queries that return no finite value over the window."""
    return [
        f"{where}: {expr}"
        for where, expr in queries
        if not finite_points(query_range(window, substitute(expr, window)))
    ]
