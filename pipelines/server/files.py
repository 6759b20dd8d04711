"""Static files: the signed feed under ``/feeds/`` (scope ``feeds``) and the public ledger
(checkpoint, verifier key, tiles) under ``/ledger/`` (no token), with strong ETags,
If-None-Match and cache lifetimes that match how often each file changes.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from fastapi import APIRouter, Request, Response
from fastapi.responses import FileResponse
from number_recycling_client.ledger.tiles import Tile

from pipelines.errors import RecycleError
from pipelines.server.auth import authorize
from pipelines.server.camara import ApiError
from pipelines.server.state import ServerState, server_state

IMMUTABLE = "public, max-age=31536000, immutable"
SHORT = "public, max-age=60"
PRIVATE_IMMUTABLE = "private, max-age=31536000, immutable"
PRIVATE_SHORT = "private, max-age=60"

# Only these files are served: anything else under the data directory (keys, openings,
# state) stays private even if a path trick got past the checks.
_FEED_FILES = re.compile(
    r"(?P<short>root\.json|timestamp\.json|snapshot/recycled\.(?:parquet|csv))"
    r"|(?P<fixed>roots/[1-9][0-9]*\.root\.json|manifests/[1-9][0-9]*\.json"
    r"|daily/\d{4}-\d{2}-\d{2}/(?:recycled\.parquet|recycled\.csv|notices\.parquet|notices\.csv|manifest\.json))"
)

router = APIRouter()


def _existing(
    state: ServerState, request: Request, base: Path, rel: str, platform: str | None
) -> tuple[Path, os.stat_result]:
    """``base / rel`` resolved and inside ``base``; 404 (audited) otherwise."""
    try:
        resolved = (base / rel).resolve(strict=True)
        resolved.relative_to(base.resolve())
        return resolved, resolved.stat()
    except (FileNotFoundError, ValueError, OSError):
        state.audit.record(platform, "download", path=request.url.path, status=404)
        raise ApiError(404, "NOT_FOUND", f"{rel} does not exist") from None


def serve_file(request: Request, base: Path, rel: str, cache: str, platform: str | None) -> Response:
    state = server_state(request.app)
    resolved, st = _existing(state, request, base, rel, platform)
    etag = state.etags.of(resolved, st)
    headers = {"ETag": etag, "Cache-Control": cache}
    inm = request.headers.get("if-none-match")
    # The SHA-256 names the exact content handed over: the rolling snapshot is rewritten
    # daily, and notification evidence ties a download to a manifest by this digest.
    sha = etag.strip('"')
    if inm is not None and (inm.strip() == "*" or etag in [t.strip() for t in inm.split(",")]):
        # only a matching ETag proves which content the platform holds ("*" proves none)
        state.audit.record(
            platform,
            "download",
            path=request.url.path,
            status=304,
            sha256=None if inm.strip() == "*" else sha,
        )
        return Response(status_code=304, headers=headers)
    state.audit.record(platform, "download", path=request.url.path, status=200, bytes=st.st_size, sha256=sha)
    return FileResponse(resolved, headers=headers, stat_result=st)


@router.get("/feeds/{rel:path}", operation_id="getFeedFile")
def feed_file(rel: str, request: Request) -> Response:
    state = server_state(request.app)
    platform = authorize(request, "feeds", "download")
    m = _FEED_FILES.fullmatch(rel)
    if m is None:
        state.audit.record(platform.name, "download", path=request.url.path, status=404)
        raise ApiError(404, "NOT_FOUND", f"{rel} is not a feed file")
    cache = PRIVATE_SHORT if m.group("short") else PRIVATE_IMMUTABLE
    return serve_file(request, state.layout.feeds_dir, rel, cache, platform.name)


@router.get("/ledger/{rel:path}", operation_id="getLedgerFile")
def ledger_file(rel: str, request: Request) -> Response:
    state = server_state(request.app)
    if rel in ("checkpoint", "vkey"):  # vkey: the checkpoint signer's public verifier key
        cache = SHORT
    else:
        try:
            tile = Tile.parse(rel)
        except RecycleError:
            state.audit.record(None, "download", path=request.url.path, status=404)
            raise ApiError(404, "NOT_FOUND", f"{rel} is not a ledger tile or checkpoint") from None
        cache = SHORT if tile.is_partial else IMMUTABLE
    return serve_file(request, state.layout.ledger_dir, rel, cache, None)
