"""Subscriptions to the carrier's events, CAMARA's model (``docs/events.md``): create, list, get
and delete over HTTP with the platform's token (scope ``subscriptions``)."""

from __future__ import annotations

from typing import Any

import httpx

from number_recycling_client.errors import TerminalError, TransientError

PATH = "number-recycling/v0.2/subscriptions"
TYPE_PREFIX = "org.camaraproject.number-recycling.v0."
EVENT_TYPES = ("pending", "withdrawn", "released", "reissued")


class Subscriptions:
    """``with Subscriptions(url, token) as subs: subs.create("https://me.example/hook")``."""

    def __init__(self, base_url: str, token: str, timeout_s: float = 30.0, **client: Any) -> None:
        self.base_url = base_url.rstrip("/") + "/"
        self._http = httpx.Client(
            base_url=self.base_url, headers={"Authorization": f"Bearer {token}"}, timeout=timeout_s, **client
        )

    def __enter__(self) -> Subscriptions:
        return self

    def __exit__(self, *exc: object) -> None:
        self._http.close()

    def create(
        self, sink: str, types: tuple[str, ...] = EVENT_TYPES, expires_at: str | None = None
    ) -> dict[str, Any]:
        """A new subscription of ``sink`` to the event ``types`` (short names or full types)."""
        config: dict[str, Any] = {"initialEvent": False}
        if expires_at is not None:
            config["subscriptionExpireTime"] = expires_at
        body = {
            "protocol": "HTTP",
            "sink": sink,
            "types": [t if t.startswith(TYPE_PREFIX) else TYPE_PREFIX + t for t in types],
            "config": config,
        }
        result: dict[str, Any] = self._call("POST", PATH, 201, json=body)
        return result

    def list(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._call("GET", PATH, 200)
        return result

    def get(self, subscription_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", f"{PATH}/{subscription_id}", 200)
        return result

    def delete(self, subscription_id: str) -> None:
        self._call("DELETE", f"{PATH}/{subscription_id}", 204)

    def _call(self, method: str, path: str, expected: int, **kw: Any) -> Any:
        try:
            resp = self._http.request(method, path, **kw)
        except httpx.HTTPError as exc:
            raise TransientError(f"{method} {self.base_url}{path}: {exc}; retry later") from None
        if resp.status_code == expected:
            return None if expected == 204 else resp.json()
        if resp.status_code >= 500 or resp.status_code == 429:
            raise TransientError(f"{method} {self.base_url}{path}: HTTP {resp.status_code}; retry later")
        hint = {
            401: "the token was refused: ask the carrier for a platform token",
            403: "the token lacks the 'subscriptions' scope: ask the carrier to grant it",
            404: "no such subscription of this platform: `nrc subscriptions list` shows yours",
        }.get(resp.status_code, "the server refused the request")
        raise TerminalError(f"{method} {path}: HTTP {resp.status_code} ({_message(resp)}): {hint}")


def _message(resp: httpx.Response) -> str:
    try:
        body = resp.json()
    except ValueError:
        return resp.text[:200]
    return (
        str(body.get("message") or body.get("code") or body)[:200]
        if isinstance(body, dict)
        else str(body)[:200]
    )
