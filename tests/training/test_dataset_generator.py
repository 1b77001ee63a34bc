"""The generator endpoint client: parsing model output, and falling back offline when the endpoint fails.

The happy path against a live OpenAI-compatible server (our own service with the demo model) belongs
to the session fixture `live_service_url` once `tests/conftest.py` provides it; here the client meets
real sockets that refuse or reject it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.postgres import free_port
from training.dataset.generator import (
    EndpointClient,
    EndpointConfig,
    Generator,
    ModelGenerator,
    parse_questions,
)
from training.dataset.seed_bank import SeedQuestion

SEED = SeedQuestion(
    id="IMM-99",
    category="immigration",
    register="business",
    question="Untuk KITAS investor, persyaratan apa saja yang perlu disiapkan?",
    golden_answer="KITAS investor diajukan lewat e-Visa dengan PT PMA sebagai penjamin.",
    sources=(),
    facts=(),
    line=1,
    variants={
        "formal": ("Apa saja persyaratan Izin Tinggal Terbatas bagi investor asing?",),
        "business": ("Kami mau urus KITAS investor. Syaratnya apa saja?",),
        "casual": ("KITAS investor itu butuh dokumen apa aja sih?",),
    },
)


def test_parse_questions_keeps_one_clean_question_per_line() -> None:
    text = (
        'Berikut variasinya:\n1. "Apa saja syarat KITAS investor?"\n'
        "- Syarat KITAS investor itu apa aja sih?\n\n* ok\n"
        "2) Dokumen apa yang perlu disiapkan untuk KITAS investor?"
    )
    assert parse_questions(text) == [
        "Apa saja syarat KITAS investor?",
        "Syarat KITAS investor itu apa aja sih?",
        "Dokumen apa yang perlu disiapkan untuk KITAS investor?",
    ]


@pytest.fixture
def rejecting_server(tmp_path: Path) -> Iterator[str]:
    """A real HTTP server that serves files only, so a chat-completions POST gets 501."""

    class Handler(SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
            super().__init__(*args, directory=str(tmp_path), **kwargs)

        def log_message(self, *args: object) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("where", ["refused", "rejected"])
def test_endpoint_failure_falls_back_offline_with_one_warning(
    where: str, request: pytest.FixtureRequest
) -> None:
    url = (
        f"http://127.0.0.1:{free_port()}/v1"
        if where == "refused"
        else request.getfixturevalue("rejecting_server")
    )
    warnings: list[str] = []
    generator = ModelGenerator(EndpointClient(EndpointConfig(url, "zantara", timeout_s=2)), warnings.append)
    made = generator.variations(SEED.question, list(SEED.variants["casual"]), "casual", 3, SEED.id, [])
    again = generator.variations(SEED.question, list(SEED.variants["formal"]), "formal", 3, SEED.id, [])
    assert len(warnings) == 1 and "continuing with the offline rules" in warnings[0]
    assert made == Generator().variations(
        SEED.question, list(SEED.variants["casual"]), "casual", 3, SEED.id, []
    )
    assert again and all(name == "rules" for _, name in made + again)
    assert generator.answer("Apa itu KITAS?", SEED.golden_answer) is None
    generator.client.close()
