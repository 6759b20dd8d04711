"""Subscriptions over real HTTP (uvicorn on loopback): CAMARA create / list / get / delete,
scope and ownership, refusals audited with CAMARA bodies; ``/`` answers the JSON index and
``/docs`` the Swagger UI page whose assets the server itself serves (no CDN)."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from pipelines.config import load_settings
from pipelines.events.config import EventsConfig
from pipelines.server import TokenStore, create_app

from .test_client_pull import serving

API = "/number-recycling/v0.2"
PENDING = "org.camaraproject.number-recycling.v0.pending"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, dict[str, str], Path]]:
    settings = load_settings(env={}, data_dir=tmp_path / "data")
    store = TokenStore.open(settings.data_dir)
    tokens = {
        "bank": store.add("bank", ["subscriptions"], rate=1000, burst=1000),
        "shop": store.add("shop", ["subscriptions"], rate=1000, burst=1000),
        "feedonly": store.add("feedonly", ["feeds"], rate=1000, burst=1000),
    }
    store.close()
    app = create_app(settings, events_config=EventsConfig(allow_http_loopback=True))
    with serving(app) as url:
        yield url, tokens, settings.data_dir
    app.state.audit.flush()


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def request_body(**config: object) -> dict[str, object]:
    return {"protocol": "HTTP", "sink": "https://bank.example/events", "types": [PENDING], "config": config}


def test_create_list_get_delete(server: tuple[str, dict[str, str], Path]) -> None:
    url, tokens, _data = server
    with httpx.Client(base_url=url) as c:
        made = c.post(
            f"{API}/subscriptions",
            json=request_body(subscriptionMaxEvents=5),
            headers={**auth(tokens["bank"]), "x-correlator": "abc-1"},
        )
        assert made.status_code == 201 and made.headers["x-correlator"] == "abc-1"
        sub = made.json()
        assert (
            sub["status"] == "ACTIVE"
            and sub["types"] == [PENDING]
            and sub["config"] == {"subscriptionMaxEvents": 5}
        )
        assert sub["startsAt"].endswith("Z")
        assert c.get(f"{API}/subscriptions", headers=auth(tokens["bank"])).json() == [sub]
        assert c.get(f"{API}/subscriptions/{sub['id']}", headers=auth(tokens["bank"])).json() == sub
        # another platform sees nothing of it, and cannot delete it
        assert c.get(f"{API}/subscriptions", headers=auth(tokens["shop"])).json() == []
        other = c.get(f"{API}/subscriptions/{sub['id']}", headers=auth(tokens["shop"]))
        assert other.status_code == 404 and other.json()["code"] == "NOT_FOUND"
        assert c.delete(f"{API}/subscriptions/{sub['id']}", headers=auth(tokens["shop"])).status_code == 404
        assert c.delete(f"{API}/subscriptions/{sub['id']}", headers=auth(tokens["bank"])).status_code == 204
        assert c.get(f"{API}/subscriptions/{sub['id']}", headers=auth(tokens["bank"])).status_code == 404
        assert c.delete(f"{API}/subscriptions/{sub['id']}", headers=auth(tokens["bank"])).status_code == 404


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"{", 400, "INVALID_ARGUMENT"),
        (json.dumps({**request_body(), "protocol": "MQTT3"}).encode(), 400, "INVALID_PROTOCOL"),
        (json.dumps({**request_body(), "sink": "http://bank.example/"}).encode(), 400, "INVALID_SINK"),
        (json.dumps({**request_body(), "types": ["x"]}).encode(), 400, "INVALID_ARGUMENT"),
        (b"x" * 20000, 400, "INVALID_ARGUMENT"),
    ],
)
def test_refusals_are_camara_errors_and_audited(
    server: tuple[str, dict[str, str], Path], body: bytes, status: int, code: str
) -> None:
    url, tokens, _data = server
    with httpx.Client(base_url=url) as c:
        answer = c.post(
            f"{API}/subscriptions",
            content=body,
            headers={**auth(tokens["bank"]), "content-type": "application/json"},
        )
    assert answer.status_code == status
    assert answer.json() == {"status": status, "code": code, "message": answer.json()["message"]}
    assert "Traceback" not in answer.text


def test_scope_and_token(server: tuple[str, dict[str, str], Path]) -> None:
    url, tokens, _data = server
    with httpx.Client(base_url=url) as c:
        assert c.get(f"{API}/subscriptions").status_code == 401
        denied = c.post(f"{API}/subscriptions", json=request_body(), headers=auth(tokens["feedonly"]))
        assert denied.status_code == 403 and "subscriptions" in denied.json()["message"]


def test_index_and_docs_need_no_internet(server: tuple[str, dict[str, str], Path]) -> None:
    url, _, _ = server
    with httpx.Client(base_url=url) as c:
        index = c.get("/").json()
        assert index["version"] == "0.2.0" and index["links"]["subscriptions"] == f"{API}/subscriptions"
        for link in ("docs", "openapi", "status"):
            assert c.get(index["links"][link]).status_code == 200
        page = c.get("/docs").text
        assert (
            "swagger-ui" in page
            and "cdn" not in page.lower()
            and "http" not in page.split("<body>")[1].split("url:")[0]
        )
        for asset in ("/docs/static/swagger-ui-bundle.js", "/docs/static/swagger-ui.css"):
            got = c.get(asset)
            assert got.status_code == 200 and len(got.content) > 10_000
        assert c.get("/docs/static/../../etc/passwd").status_code == 404
        assert c.get("/docs/static/index.html").status_code == 404
        doc = c.get("/openapi.json").json()
        assert {"post", "get"} <= set(doc["paths"][f"{API}/subscriptions"])


CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt install chromium)")
def test_docs_render_in_a_browser_offline(server: tuple[str, dict[str, str], Path], tmp_path: Path) -> None:
    """Headless chromium with every host but loopback unreachable renders the operations."""
    url, _, _ = server
    assert CHROMIUM is not None
    dom = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--virtual-time-budget=15000",
            "--dump-dom",
            f"{url}/docs",
        ],
        capture_output=True,
        timeout=180,
        check=True,
    ).stdout.decode("utf-8")
    assert "createSubscription" in dom or "Create a subscription" in dom, dom[:2000]
    assert "checkNumberRecycling" in dom or "Check whether the subscriber" in dom
