"""How `zantara retrain` talks to the running service(s): start a version as the canary, wait for it.

Training never imports `service`; it uses the admin API like an operator would:
`PUT /admin/rollout {"adapter": "NAME@VERSION", "percentage", "reason"}` makes the replica hot-load the
registered version and route the canary share to it (the other replicas pick it up through their sync
loop), then `GET /v1/models` on every replica given shows when each one serves it. Connection errors
are retried with backoff; any HTTP error answer is final.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import httpx
from tenacity import retry, retry_if_exception_type, stop_after_attempt, wait_exponential

CONNECTION_ERRORS = (httpx.ConnectError, httpx.ConnectTimeout)


class ServiceError(Exception):
    """A service could not be reached, or refused the request (its error message is kept)."""


class CanaryClient:
    """Admin calls to the service replicas at `urls` (the first one receives the rollout change)."""

    def __init__(
        self,
        urls: Sequence[str],
        *,
        admin_token: str,
        api_key: str | None = None,
        actor: str = "zantara-retrain",
        attempts: int = 5,
        timeout_s: float = 60.0,
    ) -> None:
        if not urls:
            raise ValueError("at least one service URL is needed")
        self.urls = [url.rstrip("/") for url in urls]
        self._admin = {"Authorization": f"Bearer {admin_token}", "X-Zantara-Actor": actor}
        self._api = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(timeout=timeout_s)
        self._send = retry(
            retry=retry_if_exception_type(CONNECTION_ERRORS),
            stop=stop_after_attempt(attempts),
            wait=wait_exponential(multiplier=0.5, max=8),
            reraise=True,
        )(self._http.request)

    def rollout(self) -> dict[str, Any]:
        """`GET /admin/rollout` on the first replica."""
        return self._call("GET", self.urls[0], "/admin/rollout", self._admin)

    def start_canary(self, key: str, percentage: float, reason: str) -> dict[str, Any]:
        """`PUT /admin/rollout`: hot-load `key` (NAME@VERSION) and send it `percentage` of the users."""
        body = {"adapter": key, "percentage": percentage, "reason": reason}
        return self._call("PUT", self.urls[0], "/admin/rollout", self._admin, body)

    def models(self, url: str) -> list[str]:
        """The model ids `GET /v1/models` lists on the replica at `url`."""
        listed = self._call("GET", url, "/v1/models", self._api)
        return [str(model.get("id")) for model in listed.get("data", [])]

    def wait_listed(
        self, key: str, timeout_s: float, *, poll_s: float = 1.0, on_poll: Callable[[str], None] = print
    ) -> None:
        """Return once every replica lists `key` in `/v1/models`; `ServiceError` after `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        waiting = list(self.urls)
        while waiting:
            waiting = [url for url in waiting if key not in self.models(url)]
            on_poll(f"{len(self.urls) - len(waiting)}/{len(self.urls)} replicas serve {key}")
            if not waiting:
                return
            if time.monotonic() > deadline:
                raise ServiceError(f"{key} is not served by {', '.join(waiting)} after {timeout_s:.0f} s")
            time.sleep(poll_s)

    def close(self) -> None:
        """Release the connection pool."""
        self._http.close()

    def _call(
        self, method: str, url: str, path: str, headers: dict[str, str], body: dict[str, Any] | None = None
    ) -> Any:
        try:
            response = self._send(method, url + path, json=body, headers=headers)
        except httpx.HTTPError as error:
            raise ServiceError(f"cannot reach the service at {url}: {error}") from error
        if response.status_code >= 400:
            raise ServiceError(f"{method} {url}{path} answered {response.status_code}: {_message(response)}")
        return response.json() if response.content else {}


def _message(response: httpx.Response) -> str:
    """The OpenAI-shaped error message of a failed answer, else its text."""
    try:
        return str(response.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return response.text[:500]
