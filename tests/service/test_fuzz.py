"""Schema-driven fuzzing of the whole HTTP API with Schemathesis, against a real `zantara serve` process
(demo model, PostgreSQL) and the service's own OpenAPI schema.

Every operation gets generated valid and invalid requests (with working credentials, so admin and
reviewer operations are exercised past the 401). Checks: no 5xx, status code, content type and body as
the schema says (every 4xx in OpenAI's error shape), invalid data refused, valid data accepted. The run
is derandomized, so a failure reproduces."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import APIOperation, Case
from schemathesis.checks import (
    content_type_conformance,
    negative_data_rejection,
    not_a_server_error,
    positive_data_acceptance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.core.failures import FailureGroup
from schemathesis.core.result import Err
from schemathesis.generation import GenerationMode

from database.engine import create_db_engine, make_session_factory
from database.migrate import upgrade
from feedback.reviewers import add_reviewer
from tests.postgres import fresh_database
from tests.served import demo_env, running_server

API_KEY = "sk-fuzz-backend"
ADMIN = "fuzz-admin-token-0123456789"
CHAT = "/v1/chat/completions"
SERVED_MODELS = ["zantara", "zantara-demo-base", "zantara-demo", "zantara-demo@v1"]
EXAMPLES_PER_OPERATION = 55
MAX_TOKENS = 8
"""Low on purpose: generation stays quick, and the schema states the limit, so requests respect it."""


class Tally:
    """What the fuzz sent and how the service answered."""

    def __init__(self) -> None:
        self.statuses: Counter[tuple[str, str, int]] = Counter()

    def record(self, case: Case, status: int) -> None:
        """Count one request by operation, generation mode and status."""
        mode = case.meta.generation.mode.value if case.meta else "explicit"
        self.statuses[(case.operation.label, mode, status)] += 1

    def total(self, label: str | None = None, mode: str | None = None) -> int:
        """Requests sent (to one operation, in one mode)."""
        return sum(n for (op, m, _), n in self.statuses.items() if label in (None, op) and mode in (None, m))

    def answered(self, label: str, mode: str, status: int) -> int:
        """Requests of one operation and mode answered with `status`."""
        return sum(n for (op, m, s), n in self.statuses.items() if (op, m, s) == (label, mode, status))


@pytest.fixture(scope="module")
def fuzz_target(
    demo_dirs: tuple[Path, Path], postgres_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, str]]:
    """(URL, reviewer token) of a served app with a low max_tokens limit, on a fresh PostgreSQL."""
    with fresh_database(postgres_url) as database_url:
        upgrade(database_url)
        database = create_db_engine(database_url)
        _, reviewer_token = add_reviewer(make_session_factory(database), "fuzz")
        database.dispose()
        env = demo_env(
            tmp_path_factory.mktemp("var"),
            demo_dirs,
            database_url,
            ZANTARA_API_KEYS=API_KEY,
            ZANTARA_ADMIN_TOKEN=ADMIN,
            ZANTARA_MAX_TOKENS_LIMIT=str(MAX_TOKENS),
            ZANTARA_DEFAULT_MAX_TOKENS=str(MAX_TOKENS),
            ZANTARA_MAX_MESSAGES="4",
            ZANTARA_MAX_MESSAGE_CHARS="100",
        )
        with running_server(env, timeout_s=180) as server:
            yield server.url, reviewer_token


def _positive(case: Case) -> bool:
    return case.meta is not None and case.meta.generation.mode == GenerationMode.POSITIVE


def _cases(operation: APIOperation, mode: GenerationMode, headers: dict[str, str]) -> st.SearchStrategy[Case]:
    """Generated requests for one operation; valid chat requests mostly name a served model (a generated
    name is a 404: allowed, but then nothing is generated)."""
    cases = operation.as_strategy(generation_mode=mode, headers=headers)
    if operation.path != CHAT or mode != GenerationMode.POSITIVE:
        return cases
    return st.tuples(cases, st.sampled_from([*SERVED_MODELS, None])).map(_with_model)


def _with_model(drawn: tuple[Case, str | None]) -> Case:
    case, model = drawn
    if model is not None and isinstance(case.body, dict):
        case.body = {**case.body, "model": model}
    return case


def openai_error_shape(_ctx: Any, response: Any, case: Case) -> bool | None:
    """Every 4xx body is `{"error": {"message", "type", "param", "code"}}` with a non-empty message."""
    if 400 <= response.status_code < 500:
        error = response.json()["error"]
        assert set(error) == {"message", "type", "param", "code"}, error
        assert isinstance(error["message"], str) and error["message"] and isinstance(error["type"], str)
    return None


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    negative_data_rejection,
    positive_data_acceptance,
    openai_error_shape,
]


def _fuzz(operation: APIOperation, mode: GenerationMode, headers: dict[str, str], tally: Tally) -> None:
    @given(case=_cases(operation, mode, headers))
    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def run(case: Case) -> None:
        response = case.call(timeout=60)
        tally.record(case, response.status_code)
        case.validate_response(response, checks=CHECKS, headers=headers)

    run()


def test_generated_requests_get_no_5xx_and_conform(fuzz_target: tuple[str, str]) -> None:
    url, reviewer_token = fuzz_target
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
    tally, failures = Tally(), []
    for result in schema.get_all_operations():
        if isinstance(result, Err):
            raise result.err()
        operation = result.ok()
        path = operation.path
        token = (
            API_KEY if path.startswith("/v1/") else ADMIN if path.startswith("/admin/") else reviewer_token
        )
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            try:
                _fuzz(operation, mode, {"Authorization": f"Bearer {token}"}, tally)
            except Unsatisfiable:
                continue  # nothing to make invalid: the operation takes no parameters but the credentials
            except (Exception, FailureGroup) as failure:  # noqa: BLE001 - fuzz all, then show all failures
                failures.append(f"{operation.label} ({mode.value}): {failure}")
    label = f"POST {CHAT}"
    valid_chats, answered = tally.total(label, "positive"), tally.answered(label, "positive", 200)
    print(f"\nfuzz: {tally.total()} requests; {label}: {answered} of {valid_chats} valid ones answered")
    for (operation_label, mode_name, status), count in sorted(tally.statuses.items()):
        print(f"  {operation_label} {mode_name} {status}: {count}")
    assert not failures, "\n\n".join(failures)
    assert tally.total() >= 1000
    assert answered >= 0.6 * valid_chats


CHAT_BODY = {"model": "zantara", "messages": [{"role": "user", "content": "Apa itu NIB?"}], "max_tokens": 2}
FOUND_BY_FUZZING: list[tuple[str, str, str, dict[str, Any], int]] = [
    (
        "NUL in a message",
        "POST",
        CHAT,
        {**CHAT_BODY, "messages": [{"role": "user", "content": "a\x00"}]},
        422,
    ),
    ("NUL in a stop string", "POST", CHAT, {**CHAT_BODY, "stop": ["\x00"]}, 422),
    ("seed past int64", "POST", CHAT, {**CHAT_BODY, "seed": 2**64 + 5}, 422),
    ("NUL in the rollout's adapter", "PUT", "/admin/rollout", {"percentage": 0, "adapter": "x\x00"}, 422),
    ("NUL in a rollout reason", "PUT", "/admin/rollout", {"percentage": 0, "reason": "x\x00"}, 422),
    ("NUL in a rollback reason", "POST", "/admin/rollback", {"reason": "x\x00"}, 422),
    (
        "NUL in an adapter path",
        "POST",
        "/admin/adapters",
        {"name": "a", "version": "v", "path": "a\x00"},
        422,
    ),
    (
        "adapter path too long",
        "POST",
        "/admin/adapters",
        {"name": "a", "version": "v", "path": "a" * 300},
        404,
    ),
]


@pytest.mark.parametrize(
    ("case", "method", "path", "body", "status"), FOUND_BY_FUZZING, ids=[c[0] for c in FOUND_BY_FUZZING]
)
def test_requests_that_were_5xx_are_clean_4xx(
    fuzz_target: tuple[str, str], case: str, method: str, path: str, body: dict[str, Any], status: int
) -> None:
    """Each was a 500 (PostgreSQL refuses NUL in text, torch a seed past 64 bits, the file system a
    300-character name) before the schema stated the bound."""
    url, _ = fuzz_target
    token = API_KEY if path.startswith("/v1/") else ADMIN
    response = httpx.request(method, url + path, json=body, headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == status, response.text
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}
