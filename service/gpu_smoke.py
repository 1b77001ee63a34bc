"""`zantara gpu-smoke`: the `vllm` engine end to end on a GPU host, on the real model and one adapter.

Starts vLLM with the service's settings (`ZANTARA_VLLM_*`), registers the adapter, then runs two phases
of concurrent chat requests: all on the base model, then base and adapter mixed at the canary share
(20% by default). Every answer must be non-empty. It prints tokens per second per variant and the
ratio adapter / base (goal: at least 0.8; users report up to 50% less with one adapter,
vllm-project/vllm#10062).

    zantara gpu-smoke --adapter var/adapters/zantara/v3 [--model HUB_ID_OR_PATH] [--requests 200]

Exit status: 0 all checks passed, 1 a check failed, 2 cannot run here (no vLLM, bad adapter directory).
"""

from __future__ import annotations

import asyncio
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from service.adapters import read_metadata
from service.engines.base import AdapterInfo, EngineError, SamplingParams, generate
from service.engines.vllm import VLLMEngine, import_vllm
from service.settings import Settings

DEFAULT_MODEL = "GoToCompany/llama3-8b-cpt-sahabatai-v1-instruct"

QUESTIONS = (
    "Berapa modal minimum untuk mendirikan PT PMA di Indonesia?",
    "Apa bedanya KITAS dan KITAP untuk tenaga kerja asing?",
    "Bagaimana cara mendaftarkan NIB lewat OSS RBA?",
    "Pajak apa saja yang wajib dibayar oleh PT lokal setiap bulan?",
    "Apakah warga negara asing boleh memiliki tanah di Bali?",
    "Jelaskan langkah-langkah mengurus izin usaha restoran di Jakarta.",
)

console = Console()


@dataclass(frozen=True)
class Answer:
    """One request's outcome."""

    variant: str
    text: str
    completion_tokens: int
    seconds: float


@dataclass(frozen=True)
class Phase:
    """One phase's answers and its wall time."""

    name: str
    answers: list[Answer]
    seconds: float

    def of(self, variant: str) -> list[Answer]:
        """The answers of one variant."""
        return [a for a in self.answers if a.variant == variant]

    def tokens_per_s(self) -> float:
        """Completion tokens per second of the whole phase (every request together)."""
        return sum(a.completion_tokens for a in self.answers) / self.seconds

    def per_request_tokens_per_s(self, variant: str) -> float:
        """Mean decode speed one request of `variant` saw (tokens / its own latency)."""
        speeds = [a.completion_tokens / a.seconds for a in self.of(variant) if a.seconds > 0]
        return statistics.fmean(speeds) if speeds else 0.0


def adapter_slots(requests: int, share: float) -> list[bool]:
    """Which of `requests` go to the adapter: spread evenly, `round(requests * share)` of them."""
    return [int((i + 1) * share) > int(i * share) for i in range(requests)]


async def run_phase(
    engine: VLLMEngine,
    name: str,
    adapter: str | None,
    slots: list[bool],
    concurrency: int,
    max_tokens: int,
) -> Phase:
    """Send one request per slot (True: on `adapter`), at most `concurrency` at a time."""
    sampling = SamplingParams(max_tokens=max_tokens, temperature=0)
    limit = asyncio.Semaphore(concurrency)

    async def one(index: int, on_adapter: bool) -> Answer:
        messages = [{"role": "user", "content": QUESTIONS[index % len(QUESTIONS)]}]
        async with limit:
            started = time.perf_counter()
            prompt = engine.prepare(messages, sampling)
            completion = await generate(engine, prompt, sampling, adapter if on_adapter else None)
            seconds = time.perf_counter() - started
        variant = "adapter" if on_adapter else "base"
        return Answer(variant, completion.text, completion.completion_tokens, seconds)

    started = time.perf_counter()
    answers = await asyncio.gather(*(one(i, on) for i, on in enumerate(slots)))
    return Phase(name, list(answers), time.perf_counter() - started)


async def smoke(
    engine: VLLMEngine, info: AdapterInfo, requests: int, concurrency: int, share: float, max_tokens: int
) -> tuple[Phase, Phase]:
    """Start the engine, register the adapter, run the base-only and the mixed phase."""
    await engine.start()
    try:
        await engine.load_adapter(info)
        await run_phase(engine, "warm-up", info.key, [False, True] * 2, concurrency, 8)
        base = await run_phase(engine, "base only", None, [False] * requests, concurrency, max_tokens)
        slots = adapter_slots(requests, share)
        mixed = await run_phase(engine, f"mixed {share:.0%}", info.key, slots, concurrency, max_tokens)
    finally:
        await engine.close()
    return base, mixed


def report(base: Phase, mixed: Phase, min_ratio: float) -> bool:
    """Print the table and the ratio; True when every answer is non-empty and the ratio is met."""
    table = Table("phase", "variant", "requests", "tokens", "tokens/s (phase)", "tokens/s per request")
    for phase in (base, mixed):
        for variant in ("base", "adapter"):
            answers = phase.of(variant)
            if not answers:
                continue
            table.add_row(
                phase.name,
                variant,
                str(len(answers)),
                str(sum(a.completion_tokens for a in answers)),
                f"{sum(a.completion_tokens for a in answers) / phase.seconds:,.0f}",
                f"{phase.per_request_tokens_per_s(variant):,.1f}",
            )
    console.print(table)
    empty = [a for a in base.answers + mixed.answers if not a.text.strip()]
    ratio = mixed.per_request_tokens_per_s("adapter") / max(mixed.per_request_tokens_per_s("base"), 1e-9)
    overall = mixed.tokens_per_s() / max(base.tokens_per_s(), 1e-9)
    console.print(
        f"adapter / base tokens/s per request, mixed phase: [bold]{ratio:.2f}[/] (goal >= {min_ratio})"
    )
    console.print(f"mixed phase / base-only phase tokens/s: {overall:.2f}")
    if empty:
        console.print(f"[red]{len(empty)} empty answers[/] ({sorted({a.variant for a in empty})})")
    if ratio < min_ratio:
        console.print(f"[red]adapter throughput below the goal:[/] {ratio:.2f} < {min_ratio}")
    return not empty and ratio >= min_ratio


def gpu_smoke(
    adapter: Annotated[
        Path, typer.Option(help="PEFT adapter directory (its zantara.json names it, else DIR/NAME/VERSION).")
    ],
    model: Annotated[str, typer.Option(help="Base model: hub id or local path.")] = DEFAULT_MODEL,
    requests: Annotated[int, typer.Option(min=5, help="Requests per phase.")] = 200,
    concurrency: Annotated[int, typer.Option(min=1, help="Requests in flight at once.")] = 32,
    adapter_share: Annotated[
        float, typer.Option(min=0.01, max=1.0, help="Share of the mixed phase on the adapter.")
    ] = 0.2,
    max_tokens: Annotated[int, typer.Option(min=1, help="Tokens per answer (greedy).")] = 128,
    min_ratio: Annotated[float, typer.Option(help="Adapter / base tokens/s needed to pass.")] = 0.8,
) -> None:
    """On a GPU host: run the vllm engine on the real model with one adapter, base and adapter requests
    mixed at the canary share; check every answer and print base vs adapter throughput."""
    try:
        import_vllm()
    except EngineError as error:
        console.print(f"[red]Cannot run the GPU smoke test:[/] {escape(str(error))}")
        raise typer.Exit(2) from None
    if not (adapter / "adapter_config.json").is_file():
        console.print(f"[red]{adapter} is not a PEFT adapter directory[/] (no adapter_config.json)")
        raise typer.Exit(2)
    meta = read_metadata(adapter)
    path = adapter.resolve()
    info = AdapterInfo(
        str(meta.get("name") or path.parent.name), str(meta.get("version") or path.name), str(path), meta
    )
    engine = VLLMEngine.from_settings(Settings(), model)
    console.print(
        f"vLLM engine on [bold]{model}[/], adapter [bold]{info.key}[/]; {requests} requests per phase"
    )
    try:
        base, mixed = asyncio.run(smoke(engine, info, requests, concurrency, adapter_share, max_tokens))
    except EngineError as error:
        console.print(f"[red]The engine failed:[/] {escape(str(error))}")
        raise typer.Exit(1) from None
    if not report(base, mixed, min_ratio):
        raise typer.Exit(1)
    console.print("[green]gpu-smoke passed[/]")
