"""The Grafana dashboard and the alert rules on a real Prometheus scraping a real service.

Debian's `prometheus` scrapes `zantara serve` (demo model, SQLite) every second while the test routes
half of the users to a canary adapter, chats (plain and streaming) and rates the canary low and the
rest high, so that the canary guardrail rolls the canary back. Then every panel query, annotation
query and template variable of helm/zantara/dashboards/zantara.json, and every rule of
helm/zantara/prometheus/zantara-rules.yaml, is evaluated through Prometheus' HTTP API: none may
error and each must return data. `promtool check metrics` and `promtool check rules` must pass.

Needs /usr/bin/prometheus and /usr/bin/promtool (Debian's `prometheus` package, which `make test`
installs); the test fails without them.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from database.engine import create_db_engine, make_session_factory
from database.migrate import upgrade
from feedback.registry import record_version
from tests.prometheus import (
    PROMTOOL,
    RULES,
    Window,
    dashboard,
    dashboard_queries,
    finite_points,
    queries_without_data,
    query_range,
    require_prometheus,
    run_prometheus,
    wait_for_first_scrape,
)
from tests.served import demo_env, running_server

ADMIN = "prometheus-e2e-admin-token-0123"
CANARY = "zantara-demo@v1"
USERS = 60


@dataclass(frozen=True)
class Stack(Window):
    """The served service and its Prometheus, with the canary ratings the traffic sent."""

    service: str
    canary_ratings: int


def register_evaluated_demo_adapter(database_url: str, adapters: Path) -> None:
    """The demo adapter in the registry with the scores an evaluation gave it, as `zantara retrain`
    records them, so the success-criteria panels have a version to show."""
    upgrade(database_url)
    engine = create_db_engine(database_url)
    with make_session_factory(engine).begin() as session:
        record_version(
            session,
            name="zantara-demo",
            version="v1",
            path=str((adapters / "zantara-demo" / "v1").resolve()),
            base_model="zantara-demo-base",
            gate_report={
                "passed": True,
                "gates": [],
                "scores": {"fact_precision": 0.93, "consistency": 0.88},
            },
        )
    engine.dispose()


@pytest.fixture(scope="module")
def stack(demo_dirs: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    require_prometheus()
    root = tmp_path_factory.mktemp("prometheus-e2e")
    database_url = f"sqlite:///{root / 'zantara.db'}"
    register_evaluated_demo_adapter(database_url, demo_dirs[1])
    env = demo_env(
        root / "var",
        demo_dirs,
        database_url,
        ZANTARA_ADMIN_TOKEN=ADMIN,
        ZANTARA_ROLLOUT_CACHE_S="0",
        ZANTARA_CANARY_INTERVAL_S="1",
        ZANTARA_CANARY_THRESHOLD="1",
        ZANTARA_CANARY_MIN_SAMPLES="5",
        ZANTARA_CANARY_MIN_USERS="5",
        # the demo adapter's LoRA rows are slower per token than the tiny base on a CPU: this test is
        # about the ratings, so a latency rollback must not end the canary before they arrive
        ZANTARA_CANARY_MAX_LATENCY_RATIO="100",
        ZANTARA_QUALITY_REFRESH_S="1",  # the per-adapter correction rate and rater gauges
    )
    with running_server(env, timeout_s=180) as server, run_prometheus(root, server.url) as prometheus:
        wait_for_first_scrape(prometheus)
        started = time.time()
        canary_ratings = send_traffic(server.url)
        wait_for_rollback(server.url)
        time.sleep(4)  # a few more scrapes and rule evaluations after the last change
        yield Stack(prometheus=prometheus, started=started, service=server.url, canary_ratings=canary_ratings)


def send_traffic(service: str) -> int:
    """Half the users on the canary; chats (every third one streamed), then ratings: the canary's
    answers 1-2 stars, the others 5 (one re-rated). Returns the number of canary ratings."""
    admin = {"Authorization": f"Bearer {ADMIN}"}
    with httpx.Client(base_url=service, timeout=60) as client:
        put = client.put("/admin/rollout", json={"percentage": 50, "adapter": CANARY}, headers=admin)
        assert put.status_code == 200, put.text
        answers: list[tuple[str, str]] = []
        for i in range(USERS):
            body = {
                "model": "zantara",
                "user": f"prometheus-user-{i}",
                "max_tokens": 6,
                "messages": [{"role": "user", "content": f"Apa itu KITAS investor? ({i})"}],
            }
            if i % 3 == 0:
                body |= {"stream": True}
                with client.stream("POST", "/v1/chat/completions", json=body) as response:
                    assert response.status_code == 200
                    lines = [line for line in response.iter_lines() if line.startswith("data: {")]
                    answer_id = json.loads(lines[0].removeprefix("data: "))["id"]
                    target = _target(response)
            else:
                response = client.post("/v1/chat/completions", json=body)
                assert response.status_code == 200, response.text
                answer_id, target = response.json()["id"], _target(response)
            answers.append((answer_id, target))
        targets = [target for _, target in answers]
        assert {"base", "canary"} <= set(targets), targets
        time.sleep(2.5)  # scrapes between the chats and the ratings, so rates see each of them rise
        for n, (answer_id, target) in enumerate(answers):
            stars = (1 + n % 2) if target == "canary" else 5
            rated = client.post("/v1/feedback", json={"response_id": answer_id, "rating": stars})
            assert rated.status_code == 200, rated.text
        rerated = client.post("/v1/feedback", json={"response_id": answers[-1][0], "rating": 4})
        assert rerated.status_code == 200, rerated.text
        return targets.count("canary")


def _target(response: httpx.Response) -> str:
    """Which arm answered: the canary's adapter, else the base model (no adapter is live here)."""
    return "canary" if response.headers.get("x-zantara-adapter") == CANARY else "base"


def wait_for_rollback(service: str) -> None:
    """Until the guardrail's automatic rollback shows on /metrics (it must, on these ratings)."""
    deadline = time.monotonic() + 40
    pattern = re.compile(r'^zantara_canary_decisions_total\{action="auto-rollback"\} ([0-9.]+)$', re.M)
    while time.monotonic() < deadline:
        found = pattern.search(httpx.get(f"{service}/metrics", timeout=5).text)
        if found and float(found.group(1)) >= 1:
            return
        time.sleep(0.5)
    events = httpx.get(f"{service}/admin/rollout/events", headers={"Authorization": f"Bearer {ADMIN}"})
    raise AssertionError(
        f"the guardrail did not roll the low-rated canary back within 40 s: {events.text[:2000]}"
    )


# --- queries -----------------------------------------------------------------------------------------


def with_bool(expr: str) -> str:
    """The expression with every comparison turned into a `bool` comparison (0/1 instead of a filter),
    so it returns the signal whether or not the alert condition holds."""
    masked = re.sub(r"\{[^{}]*\}", lambda m: "\0" * len(m.group(0)), expr)
    out, last = [], 0
    for match in re.finditer(r"(==|!=|>=|<=|>|<)(?!\s*bool)", masked):
        out += [expr[last : match.end()], " bool"]
        last = match.end()
    return "".join(out) + expr[last:]


def rules() -> list[dict[str, Any]]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]


# --- tests -------------------------------------------------------------------------------------------


def test_every_dashboard_query_returns_data(stack: Stack) -> None:
    queries = dashboard_queries()
    assert len(queries) >= 30
    empty = queries_without_data(stack, queries)
    assert not empty, "queries without data on a live service:\n" + "\n".join(empty)


def test_template_variables_list_the_served_labels(stack: Stack) -> None:
    expected = {"variant": {"base", "tuned"}, "adapter": {"", CANARY}, "target": {"base", "canary"}}
    for variable in dashboard()["templating"]["list"]:
        if variable["type"] != "query":
            continue
        metric, label = re.fullmatch(r"label_values\((\w+),\s*(\w+)\)", variable["definition"]).groups()  # type: ignore[union-attr]
        response = httpx.get(
            f"{stack.prometheus}/api/v1/series", params={"match[]": metric, "start": stack.started - 5}
        )
        values = {series.get(label, "") for series in response.json()["data"]}
        assert values, f"${variable['name']}: no {metric} series"
        assert expected.get(label, set()) <= values, f"${variable['name']}: {values}"


def test_rules_load_and_evaluate(stack: Stack) -> None:
    groups = httpx.get(f"{stack.prometheus}/api/v1/rules", timeout=10).json()["data"]["groups"]
    loaded = {rule.get("name"): rule for group in groups for rule in group["rules"]}
    for rule in rules():
        name = rule.get("record") or rule["alert"]
        assert name in loaded, f"Prometheus did not load {name}"
        assert loaded[name]["health"] != "err", f"{name}: {loaded[name].get('lastError')}"
        result = query_range(stack, rule["expr"])
        if "record" in rule:
            assert finite_points(result), f"recording rule {name} has no data: {rule['expr']}"
        else:
            signal = query_range(stack, with_bool(rule["expr"]))
            assert finite_points(signal), f"alert {name}: its signal has no data: {with_bool(rule['expr'])}"


def test_the_canary_alerts_fire_on_a_low_rated_canary(stack: Stack) -> None:
    assert stack.canary_ratings >= 20, "too few canary users for the alert's 20-rating floor"
    by_name = {rule.get("alert"): rule for rule in rules()}
    for name in ("ZantaraCanarySatisfactionDrop", "ZantaraCanaryRolledBack"):
        assert finite_points(query_range(stack, by_name[name]["expr"])), f"{name} did not fire"
    for name in (
        "ZantaraHighErrorRate",
        "ZantaraEngineDead",
        "ZantaraNoReplicaServing",
        "ZantaraSpoolBacklog",
    ):
        assert not query_range(stack, by_name[name]["expr"]), f"{name} fires on a healthy service"


def test_with_bool_rewrites_only_comparisons() -> None:
    assert with_bool('a{x!="1", y=~"2"} > 0.05') == 'a{x!="1", y=~"2"} > bool 0.05'
    assert with_bool("a < on (job) (b - 1) and c >= 20") == "a < bool on (job) (b - 1) and c >= bool 20"
    assert with_bool("a == bool 0") == "a == bool 0"


def test_promtool_checks_the_metrics_and_the_rules(stack: Stack) -> None:
    exposition = httpx.get(f"{stack.service}/metrics", timeout=10).text
    metrics = subprocess.run(
        [str(PROMTOOL), "check", "metrics"], input=exposition, capture_output=True, text=True, timeout=60
    )
    assert metrics.returncode == 0, metrics.stdout + metrics.stderr
    checked = subprocess.run(
        [str(PROMTOOL), "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(rules())} rules found" in checked.stdout
