"""For integrators: ``/`` answers a short JSON index (the API, its version, where the docs,
the OpenAPI document, the feed and the subscriptions are), ``/docs`` the interactive API page
(Swagger UI) and ``/openapi.json`` the document. No token: nothing here names a platform.

Swagger UI's script and stylesheet are served from this server (``/docs/static/``, the copy
the ``fastapi-offline`` package ships, Swagger UI 5, which renders OpenAPI 3.1): FastAPI's
default page loads them from a CDN, which a carrier's network or an offline laptop cannot
reach, and the page would stay blank.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, JSONResponse

from pipelines.server.camara import API, ApiError

DOCS_STATIC = "/docs/static"
_ASSETS = ("swagger-ui-bundle.js", "swagger-ui.css", "favicon.png")

router = APIRouter()


def assets_dir() -> Path:
    import fastapi_offline

    return Path(fastapi_offline.__file__).parent / "static"


@router.get("/", include_in_schema=False)
def index(request: Request) -> JSONResponse:
    app: Any = request.app
    return JSONResponse(
        {
            "name": app.title,
            "version": app.version,
            "api": API,
            "links": {
                "docs": "/docs",
                "openapi": "/openapi.json",
                "status": "/status",
                "feeds": "/feeds/root.json",
                "ledger": "/ledger/checkpoint",
                "check": f"{API}/check",
                "bulkCheck": f"{API}/bulk-check",
                "subscriptions": f"{API}/subscriptions",
                "events": "docs/events.md: CloudEvents 1.0, Standard Webhooks v1a (Ed25519, the feed's online key)",
            },
        }
    )


@router.get("/docs", include_in_schema=False)
def docs(request: Request) -> Response:
    return get_swagger_ui_html(
        openapi_url="/openapi.json",
        title=f"{request.app.title} - API",
        swagger_js_url=f"{DOCS_STATIC}/swagger-ui-bundle.js",
        swagger_css_url=f"{DOCS_STATIC}/swagger-ui.css",
        swagger_favicon_url=f"{DOCS_STATIC}/favicon.png",
    )


@router.get(DOCS_STATIC + "/{name}", include_in_schema=False)
def docs_asset(name: str) -> Response:
    if name not in _ASSETS:
        raise ApiError(404, "NOT_FOUND", f"{name[:64]} is not a docs asset")
    return FileResponse(assets_dir() / name, headers={"Cache-Control": "public, max-age=86400"})
