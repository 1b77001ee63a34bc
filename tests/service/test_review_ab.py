"""Reviewer sign-in, CSRF, and the blind A/B page and JSON API over HTTP, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from database.models import ABJudgment
from feedback.ab import NewPair, ab_summary, queue_pairs
from feedback.reviewers import add_reviewer, revoke_reviewer
from service.app import create_app
from tests.conftest import admin_headers, running
from tests.service.helpers import PLANTED_HTML, assert_error, bearer_headers, csrf_of, sign_in
from zantara.cli import app as cli

ADAPTER = "zantara-demo@v1"


@dataclass
class Review:
    """A running service, its database sessions, and a client without cookies yet."""

    client: httpx.AsyncClient
    sessions: sessionmaker[Session]

    def reviewer(self, name: str) -> str:
        """Add a reviewer; their token."""
        return add_reviewer(self.sessions, name)[1]

    def queue(self, *answers: str) -> list[int]:
        """Queue one pair per adapter answer."""
        return queue_pairs(
            self.sessions,
            [
                NewPair(
                    question=f"Berapa modal minimum PT PMA? ({n})",
                    category="company",
                    register="formal",
                    complexity="simple",
                    base_model="zantara-demo-base",
                    adapter=ADAPTER,
                    base_answer=f"base says {n}",
                    adapter_answer=answer,
                    dataset_version="ds-1",
                    source_id=f"q{n}",
                )
                for n, answer in enumerate(answers)
            ],
        )

    def judgments(self) -> int:
        with self.sessions() as session:
            return session.scalar(select(func.count()).select_from(ABJudgment)) or 0


@pytest.fixture
async def review(settings_factory, database_url: str) -> AsyncIterator[Review]:  # type: ignore[no-untyped-def]
    app = create_app(settings_factory(database_url=database_url, ab_overlap=2))
    async with running(app) as client:
        yield Review(client, app.state.zantara.sessions)


def judgment(choice: str = "A", a: int = 8, b: int = 6) -> dict[str, object]:
    return {"choice": choice, **{c: {"A": a, "B": b} for c in ("naturalness", "accuracy", "completeness")}}


def form(csrf: str, pair_id: int, choice: str = "B") -> dict[str, str]:
    ratings = {f"{c}_{s}": "7" for c in ("naturalness", "accuracy", "completeness") for s in "ab"}
    return {"csrf_token": csrf, "pair_id": str(pair_id), "choice": choice, **ratings}


async def test_sign_in_sets_a_hardened_session_cookie_and_sign_out_ends_it(review: Review) -> None:
    token = review.reviewer("ana")
    signed_out = await review.client.get("/review/ab")
    assert signed_out.status_code == 303 and signed_out.headers["location"] == "/review/login?next=/review/ab"

    signed = await sign_in(review.client, token)
    assert signed.status_code == 303 and signed.headers["location"] == "/review/ab"
    cookie = next(c for c in signed.headers.get_list("set-cookie") if c.startswith("zantara_review_session="))
    assert {"httponly", "samesite=strict", "path=/review"} <= {p.strip().lower() for p in cookie.split(";")}
    assert token not in cookie

    page = await review.client.get("/review/ab")
    assert page.status_code == 200 and "ana" in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]

    out = await review.client.post("/review/logout", data={"csrf_token": csrf_of(page.text)})
    assert out.status_code == 303
    stolen = httpx.Cookies({"zantara_review_session": cookie.split(";")[0].split("=", 1)[1]})
    again = await review.client.get("/review/ab", cookies=stolen)
    assert again.status_code == 303, "the session id stops working after sign-out"


async def test_sign_in_refuses_a_wrong_token_and_a_forged_form(review: Review) -> None:
    token = review.reviewer("ana")
    wrong = await sign_in(review.client, "zrv_not-a-token")
    assert wrong.status_code == 401 and "zantara_review_session" not in wrong.headers.get("set-cookie", "")
    forged = await review.client.post("/review/login", data={"token": token, "csrf_token": "guess"})
    assert forged.status_code == 403 and "zantara_review_session" not in forged.headers.get("set-cookie", "")


async def test_form_posts_need_the_csrf_token(review: Review) -> None:
    (pair_id,) = review.queue("tuned says 1")
    await sign_in(review.client, review.reviewer("ana"))
    page = await review.client.get("/review/ab")
    assert f'name="pair_id" value="{pair_id}"' in page.text

    refused = await review.client.post("/review/ab", data=form("", pair_id))
    assert refused.status_code == 403 and review.judgments() == 0
    refused = await review.client.post("/review/ab", data=form("wrong" + csrf_of(page.text), pair_id))
    assert refused.status_code == 403 and review.judgments() == 0
    cookie_json = await review.client.post(f"/review/api/ab/{pair_id}", json=judgment())
    assert_error(cookie_json, 403)
    assert review.judgments() == 0

    unknown = await review.client.post("/review/ab", data=form(csrf_of(page.text), 2**53))
    assert unknown.status_code == 404 and "was not handed to you" in unknown.text
    stored = await review.client.post("/review/ab", data=form(csrf_of(page.text), pair_id))
    assert stored.status_code == 303 and review.judgments() == 1
    done = await review.client.get(stored.headers["location"])
    assert "Saved" in done.text and "queue is empty" in done.text


async def test_bearer_json_flow_stays_blind(review: Review) -> None:
    token = review.reviewer("ana")
    review.queue("tuned says 1")
    assert_error(await review.client.get("/review/api/ab/next"), 401)
    assert_error(await review.client.get("/review/api/ab/next", headers=bearer_headers("zrv_wrong")), 401)

    shown = await review.client.get("/review/api/ab/next", headers=bearer_headers(token))
    assert shown.status_code == 200
    pair = shown.json()["pair"]
    assert set(pair) == {"id", "question", "category", "register", "complexity", "answers"}
    assert sorted(pair["answers"].values()) == ["base says 0", "tuned says 1"]
    assert ADAPTER not in shown.text and "zantara-demo-base" not in shown.text and 'tuned"' not in shown.text
    tuned_side = "A" if pair["answers"]["A"] == "tuned says 1" else "B"

    for bad in (judgment(choice="C"), judgment(a=11), judgment(b=0), {"choice": "A"}):
        assert_error(
            await review.client.post(f"/review/api/ab/{pair['id']}", json=bad, headers=bearer_headers(token)),
            422,
        )
    assert_error(
        await review.client.post("/review/api/ab/999999", json=judgment(), headers=bearer_headers(token)), 404
    )
    too_big = await review.client.post(
        f"/review/api/ab/{2**53}", json=judgment(), headers=bearer_headers(token)
    )
    assert_error(too_big, 422)

    stored = await review.client.post(
        f"/review/api/ab/{pair['id']}",
        json=judgment(choice=tuned_side, a=9, b=9),
        headers=bearer_headers(token),
    )
    assert stored.status_code == 201 and stored.json() == {"pair_id": pair["id"], "status": "stored"}
    again = await review.client.post(
        f"/review/api/ab/{pair['id']}", json=judgment(), headers=bearer_headers(token)
    )
    assert_error(again, 409)
    empty = await review.client.get("/review/api/ab/next", headers=bearer_headers(token))
    assert empty.status_code == 200 and empty.json()["pair"] is None and "empty" in empty.json()["message"]
    assert ab_summary(review.sessions, ADAPTER).wins == 1


async def test_overlap_spreads_a_pair_over_distinct_reviewers_once_each(review: Review) -> None:
    tokens = [review.reviewer(name) for name in ("ana", "budi", "citra")]
    (pair_id,) = review.queue("tuned says 1")
    for token in tokens[:2]:
        shown = await review.client.get("/review/api/ab/next", headers=bearer_headers(token))
        assert shown.json()["pair"]["id"] == pair_id
        posted = await review.client.post(
            f"/review/api/ab/{pair_id}", json=judgment("tie"), headers=bearer_headers(token)
        )
        assert posted.status_code == 201
        assert (await review.client.get("/review/api/ab/next", headers=bearer_headers(token))).json()[
            "pair"
        ] is None
    third = await review.client.get("/review/api/ab/next", headers=bearer_headers(tokens[2]))
    assert third.json()["pair"] is None, "overlap 2: a third reviewer never gets the pair"
    assert ab_summary(review.sessions, ADAPTER).judgments == 2


async def test_revoked_reviewer_is_refused_everywhere(review: Review) -> None:
    token = review.reviewer("ana")
    review.queue("tuned says 1")
    await sign_in(review.client, token)
    assert (await review.client.get("/review/ab")).status_code == 200
    revoke_reviewer(review.sessions, "ana")
    error = assert_error(await review.client.get("/review/api/ab/next", headers=bearer_headers(token)), 401)
    assert error["code"] == "invalid_reviewer_token"
    page = await review.client.get("/review/ab")
    assert page.status_code == 303 and page.headers["location"].startswith("/review/login")
    assert (await sign_in(review.client, token)).status_code == 401


async def test_model_output_is_escaped(review: Review) -> None:
    review.queue(PLANTED_HTML)
    await sign_in(review.client, review.reviewer("ana"))
    page = await review.client.get("/review/ab")
    assert page.status_code == 200
    assert "<script>document.title" not in page.text and "<img src=x" not in page.text
    assert "&lt;script&gt;document.title=&#34;pwned&#34;&lt;/script&gt;" in page.text


async def test_admin_queues_pairs_and_reads_the_summary(review: Review) -> None:
    body = [
        {
            "question": "Apa itu KITAS?",
            "register": "casual",
            "base_model": "zantara-demo-base",
            "adapter": ADAPTER,
            "base_answer": "b",
            "adapter_answer": "t",
        }
    ]
    assert_error(await review.client.post("/admin/ab/pairs", json=body), 401)
    assert_error(
        await review.client.post("/admin/ab/pairs", json=[{"question": ""}], headers=admin_headers()), 422
    )
    nul = [{**body[0], "register": "casual\x00"}]
    assert_error(await review.client.post("/admin/ab/pairs", json=nul, headers=admin_headers()), 422)
    queued = await review.client.post("/admin/ab/pairs", json=body, headers=admin_headers())
    assert queued.status_code == 201 and len(queued.json()["ids"]) == 1
    token = review.reviewer("ana")
    shown = (await review.client.get("/review/api/ab/next", headers=bearer_headers(token))).json()["pair"]
    assert shown["register"] == "casual"
    await review.client.post(
        f"/review/api/ab/{shown['id']}", json=judgment("tie"), headers=bearer_headers(token)
    )
    summary = await review.client.get(
        "/admin/ab/summary", params={"adapter": ADAPTER}, headers=admin_headers()
    )
    assert summary.status_code == 200
    assert summary.json()["ties"] == 1 and summary.json()["win_rate"] == 0.5
    assert summary.json()["krippendorff_alpha"] is None


def test_reviewers_command_prints_the_token_once(database_url: str) -> None:
    runner = CliRunner()
    added = runner.invoke(cli, ["reviewers", "add", "ana", "--database-url", database_url])
    assert added.exit_code == 0, added.output
    token = added.stdout.strip().splitlines()[-1]
    assert token.startswith("zrv_") and len(token) > 40
    assert runner.invoke(cli, ["reviewers", "add", "ana", "--database-url", database_url]).exit_code == 1
    listed = runner.invoke(cli, ["reviewers", "list", "--json", "--database-url", database_url])
    assert '"name": "ana"' in listed.stdout and token not in listed.stdout
    assert runner.invoke(cli, ["reviewers", "revoke", "ana", "--database-url", database_url]).exit_code == 0
    assert (
        '"revoked_at": null'
        not in runner.invoke(cli, ["reviewers", "list", "--json", "--database-url", database_url]).stdout
    )
    assert runner.invoke(cli, ["reviewers", "revoke", "bob", "--database-url", database_url]).exit_code == 1
