"""`zantara gpu-smoke`: a clear exit 2 where vLLM is missing; the whole flow on the recorded vLLM fake
(the real run needs a GPU host)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from service.gpu_smoke import adapter_slots
from tests.service import fake_vllm
from zantara.cli import app

runner = CliRunner()


def said(output: str) -> str:
    """The command's output with rich's line wrapping undone."""
    return " ".join(output.split())


def test_without_vllm_it_exits_2_and_says_how_to_install(
    monkeypatch: pytest.MonkeyPatch, demo_adapter_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "vllm", None)
    result = runner.invoke(app, ["gpu-smoke", "--adapter", str(demo_adapter_path)])
    assert result.exit_code == 2, result.output
    assert "vLLM is not installed" in said(result.output) and "zantara[gpu]" in said(result.output)


def test_a_directory_without_an_adapter_exits_2(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fake_vllm.install(monkeypatch)
    result = runner.invoke(app, ["gpu-smoke", "--adapter", str(tmp_path)])
    assert result.exit_code == 2 and "not a PEFT adapter directory" in said(result.output)


def test_a_fifth_of_the_requests_go_to_the_adapter_spread_evenly() -> None:
    slots = adapter_slots(20, 0.2)
    assert sum(slots) == 4 and [i for i, on in enumerate(slots) if on] == [4, 9, 14, 19]
    assert sum(adapter_slots(200, 0.2)) == 40 and sum(adapter_slots(10, 1.0)) == 10


def smoke(demo_base_path: Path, demo_adapter_path: Path, *more: str) -> list[str]:
    """The command line of a small smoke run on the demo model."""
    return [
        "gpu-smoke",
        "--model",
        str(demo_base_path),
        "--adapter",
        str(demo_adapter_path),
        "--requests",
        "20",
        "--concurrency",
        "4",
        "--max-tokens",
        "6",
        *more,
    ]


def test_on_the_fake_it_mixes_base_and_adapter_and_prints_the_ratio(
    monkeypatch: pytest.MonkeyPatch, demo_base_path: Path, demo_adapter_path: Path
) -> None:
    fake = fake_vllm.install(monkeypatch)
    result = runner.invoke(app, smoke(demo_base_path, demo_adapter_path, "--min-ratio", "0"))
    assert result.exit_code == 0, result.output
    assert "adapter / base tokens/s per request" in said(result.output)
    assert "gpu-smoke passed" in said(result.output)
    [llm] = fake.instances
    assert llm.args.model == str(demo_base_path) and llm.args.enable_lora
    assert [r.lora_name for r in llm.added] == ["zantara-demo@v1"]
    on_adapter = [g.lora_request is not None for g in llm.generations]
    assert len(on_adapter) == 4 + 20 + 20  # warm-up, base only, mixed
    assert sum(on_adapter[4:24]) == 0 and sum(on_adapter[24:]) == 4
    assert all(g.params.max_tokens == 6 and g.params.temperature == 0 for g in llm.generations[4:])
    assert llm.shut_down


def test_a_missed_throughput_goal_exits_1(
    monkeypatch: pytest.MonkeyPatch, demo_base_path: Path, demo_adapter_path: Path
) -> None:
    fake_vllm.install(monkeypatch)
    result = runner.invoke(app, smoke(demo_base_path, demo_adapter_path, "--min-ratio", "1000"))
    assert result.exit_code == 1, result.output
    assert "below the goal" in said(result.output)
