"""The platform server: static feeds and ledger tiles, CAMARA check, bulk check with receipts,
and platforms' acknowledgements.

``create_app(settings)`` builds the FastAPI app; ``recycle serve`` runs it under uvicorn. The
server never opens the nightly DuckDB file: it answers from the query snapshot
(``pipelines.feeds.query_snapshot``), reads tokens from ``<data>/server/platforms.sqlite``, and appends
every download and query to ``<data>/server/audit/<UTC day>.jsonl`` with numbers masked, and
keeps acknowledgements in ``<data>/server/acknowledgements.sqlite`` (``pipelines.compliance.notifications``).

Regenerate the committed OpenAPI document after changing an endpoint::

    .venv/bin/python -m pipelines.server.app --openapi > schemas/openapi.json
"""

from __future__ import annotations

import datetime as dt
import gc
import hashlib
import json
import logging
import os
import re
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from fastapi import FastAPI, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.openapi.utils import get_openapi
from fastapi.responses import FileResponse, JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from pipelines.compliance.notifications import (
    CSV_HEADER,
    JSON_FIELDS,
    MAX_ACK_ITEMS,
    STATUSES,
    AckStore,
    read_acknowledgements,
    validate_acknowledgements,
)
from pipelines.config import Settings
from pipelines.errors import DataContractError, RecycleError
from pipelines.feeds.publish import FeedPaths, load_root, role_signers
from pipelines.feeds.query_snapshot import BULK_ANSWERS, SnapshotHolder, SnapshotIndex, day_number
from pipelines.feeds.wire import ROLE_RECEIPT, Envelope, QueryReceipt, sha256_hex
from pipelines.layout import Layout
from pipelines.ledger.signer import FileSigner
from pipelines.ledger.tiles import Tile
from pipelines.server.platforms import (
    PHONE_PATTERN,
    AuditLog,
    Platform,
    RateLimiter,
    TokenStore,
    utc_now,
)

log = logging.getLogger(__name__)

API = "/number-recycling/v0.2"
MAX_BULK_PAIRS = 250_000
MAX_CHECK_BODY = 16 * 1024  # bytes
MAX_BULK_BODY = 40 * 1024 * 1024  # 250,000 JSON pairs are about 15 MB
MAX_ACK_BODY = 32 * 1024 * 1024  # 100,000 JSON acknowledgements with every field are about 13 MB
# Always fullmatch: PHONE_PATTERN ends in "$", which in Python also matches before a final
# newline, while JSON Schema (ECMA-262) reads it as the end of input.
_PHONE = re.compile(PHONE_PATTERN)
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_CORRELATOR = re.compile(rb"[a-zA-Z0-9\-_:;./<>{}]{0,256}")

IMMUTABLE = "public, max-age=31536000, immutable"
SHORT = "public, max-age=60"
PRIVATE_IMMUTABLE = "private, max-age=31536000, immutable"
PRIVATE_SHORT = "private, max-age=60"

# Only these files are served: anything else under the data directory (keys, openings,
# state) stays private even if a path trick got past the checks.
_FEED_FILES = re.compile(
    r"(?P<short>root\.json|timestamp\.json|snapshot/recycled\.(?:parquet|csv))"
    r"|(?P<fixed>roots/[1-9][0-9]*\.root\.json|manifests/[1-9][0-9]*\.json"
    r"|daily/\d{4}-\d{2}-\d{2}/(?:recycled\.parquet|recycled\.csv|manifest\.json))"
)


class ApiError(Exception):
    """An error answered as a CAMARA ErrorInfo body ``{status, code, message}``."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}

    def response(self) -> JSONResponse:
        return JSONResponse(
            {"status": self.status, "code": self.code, "message": self.message},
            status_code=self.status,
            headers=self.headers,
        )


# --------------------------------------------------------------------------- middleware


Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
ASGIApp = Callable[
    [Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]], Awaitable[None]
]


class CorrelatorMiddleware:
    """Echo a valid ``x-correlator`` on every response; refuse an invalid one (CAMARA)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(
        self,
        scope: Scope,
        receive: Callable[[], Awaitable[Message]],
        send: Callable[[Message], Awaitable[None]],
    ) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        value = next((v for k, v in scope["headers"] if k == b"x-correlator"), None)
        if value is None:
            await self.app(scope, receive, send)
            return
        if not _CORRELATOR.fullmatch(value):
            err = ApiError(
                400, "INVALID_ARGUMENT", "x-correlator does not match ^[a-zA-Z0-9-_:;.\\/<>{}]{0,256}$"
            )
            await err.response()(scope, receive, send)
            return

        async def send_with_correlator(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (b"x-correlator", value)]
            await send(message)

        await self.app(scope, receive, send_with_correlator)


# --------------------------------------------------------------------------- helpers


@dataclass
class _Receipts:
    """The online key that signs query receipts, reloaded when root.json changes (rotation)."""

    settings: Settings
    signers: list[FileSigner] | None = None
    root_mtime: int = -1

    def current(self) -> list[FileSigner]:
        path = Layout(self.settings.data_dir).feeds_dir / "root.json"
        try:
            mtime = path.stat().st_mtime_ns
        except FileNotFoundError:
            raise ApiError(
                503,
                "UNAVAILABLE",
                "the feed keys are not set up yet (no root.json); "
                "bulk answers cannot be signed until the first feed is published",
            ) from None
        if mtime != self.root_mtime or self.signers is None:
            root = load_root(self.settings)
            assert root is not None
            self.signers = role_signers(self.settings, root.signed, ROLE_RECEIPT)
            self.root_mtime = mtime
        return self.signers


class _ETags:
    """Strong ETags (SHA-256 of the content), cached per file version."""

    def __init__(self) -> None:
        self._cache: dict[tuple[str, int, int, int], str] = {}
        self._lock = threading.Lock()

    def of(self, path: Path, st: os.stat_result) -> str:
        key = (str(path), st.st_ino, st.st_mtime_ns, st.st_size)
        with self._lock:
            tag = self._cache.get(key)
        if tag is None:
            h = hashlib.sha256()
            with open(path, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    h.update(block)
            tag = f'"{h.hexdigest()}"'
            with self._lock:
                if len(self._cache) > 10_000:
                    self._cache.clear()
                self._cache[key] = tag
        return tag


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if header is None:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def _parse_date(value: Any, field: str) -> dt.date:
    if not isinstance(value, str) or not _DATE.fullmatch(value):
        raise ApiError(400, "INVALID_ARGUMENT", f"{field} must be a date YYYY-MM-DD (RFC 3339 full-date)")
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise ApiError(400, "INVALID_ARGUMENT", f"{field} {value!r} is not a calendar date") from None


def _canonical_lines(items: list[str]) -> bytes:
    return ("\n".join(items) + "\n").encode("utf-8") if items else b""


def request_digest(phones: list[str], dates: list[str]) -> str:
    """SHA-256 over ``phone,date\\n`` per pair, in request order: the same for JSON and CSV."""
    return sha256_hex(_canonical_lines([f"{p},{d}" for p, d in zip(phones, dates, strict=True)]))


def response_digest(results: list[str]) -> str:
    """SHA-256 over one answer (``yes``/``no``/``no_data``) per line, in request order."""
    return sha256_hex(_canonical_lines(results))


def _bulk_pairs(body: bytes, content_type: str) -> tuple[list[str], list[str]]:
    if content_type.startswith("text/csv"):
        try:
            text = body.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise ApiError(400, "INVALID_ARGUMENT", "the CSV upload is not UTF-8") from None
        lines = text.splitlines()
        if not lines or lines[0].strip().replace(" ", "") != "phoneNumber,specifiedDate":
            raise ApiError(
                400,
                "INVALID_ARGUMENT",
                "the CSV upload must start with the header line phoneNumber,specifiedDate",
            )
        phones, dates = [], []
        for n, line in enumerate(lines[1:], start=2):
            if not line.strip():
                continue
            parts = line.split(",")
            if len(parts) != 2:
                raise ApiError(400, "INVALID_ARGUMENT", f"CSV line {n}: expected phoneNumber,specifiedDate")
            phones.append(parts[0].strip())
            dates.append(parts[1].strip())
        return phones, dates
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "INVALID_ARGUMENT", "the request body is not valid JSON") from None
    if not isinstance(doc, dict) or set(doc) != {"queries"} or not isinstance(doc["queries"], list):
        raise ApiError(
            400, "INVALID_ARGUMENT", 'the body must be {"queries": [{"phoneNumber", "specifiedDate"}, ...]}'
        )
    queries = doc["queries"]
    try:
        phones = [q["phoneNumber"] for q in queries]
        dates = [q["specifiedDate"] for q in queries]
    except (TypeError, KeyError):
        raise ApiError(400, "INVALID_ARGUMENT", "every query needs phoneNumber and specifiedDate") from None
    return phones, dates


def _first_bad(values: list[Any], ok: Callable[[Any], bool]) -> int:
    return next(i for i, v in enumerate(values) if not ok(v))


def _is_date(v: Any) -> bool:
    if not isinstance(v, str) or not _DATE.fullmatch(v):
        return False
    try:
        dt.date.fromisoformat(v)
    except ValueError:
        return False
    return True


def bulk_answer(index: SnapshotIndex, phones: list[str], dates: list[str], today: dt.date) -> list[str]:
    """Validate the pairs (400 naming the first bad one) and answer them, vectorised."""
    if not phones:
        raise ApiError(400, "INVALID_ARGUMENT", "the request holds no queries")
    if len(phones) > MAX_BULK_PAIRS:
        raise ApiError(400, "OUT_OF_RANGE", f"{len(phones)} queries; at most {MAX_BULK_PAIRS} per request")
    try:
        phone_arr = pa.array(phones, type=pa.string())
        date_arr = pa.array(dates, type=pa.string())
    except (pa.ArrowTypeError, pa.ArrowInvalid):
        bad = _first_bad(
            [*zip(phones, dates, strict=True)],
            lambda pair: isinstance(pair[0], str) and isinstance(pair[1], str),
        )
        raise ApiError(
            400, "INVALID_ARGUMENT", f"query {bad + 1}: phoneNumber and specifiedDate must be strings"
        ) from None
    phone_ok = pc.match_substring_regex(phone_arr, PHONE_PATTERN)
    if not pc.all(phone_ok).as_py():
        bad = _first_bad(phones, lambda p: bool(_PHONE.fullmatch(p)))
        raise ApiError(400, "INVALID_ARGUMENT", f"query {bad + 1}: phoneNumber must match {PHONE_PATTERN}")
    try:
        if not pc.all(pc.match_substring_regex(date_arr, r"^\d{4}-\d{2}-\d{2}$")).as_py():
            raise pa.ArrowInvalid("bad date shape")
        day_arr = date_arr.cast(pa.date32())
    except pa.ArrowInvalid:
        bad = _first_bad(dates, _is_date)
        raise ApiError(
            400, "INVALID_ARGUMENT", f"query {bad + 1}: specifiedDate must be a date YYYY-MM-DD"
        ) from None
    keys = pc.cast(pc.utf8_slice_codeunits(phone_arr, 1), pa.int64()).to_numpy()
    days = np.asarray(day_arr.cast(pa.int32()).to_numpy(), dtype=np.int32)
    codes = index.bulk(np.asarray(keys, dtype=np.int64), days, day_number(today))
    answers: list[str] = BULK_ANSWERS[codes].tolist()
    return answers


# --------------------------------------------------------------------------- the app


def create_app(
    settings: Settings,
    *,
    clock: Callable[[], dt.datetime] = utc_now,
    monotonic: Callable[[], float] = time.monotonic,
    snapshot_check_s: float = 1.0,
) -> FastAPI:
    """The server app. ``clock`` gives wall-clock UTC (today's date for range checks, audit and
    receipt times); ``monotonic`` drives the rate limiter."""
    layout = Layout(settings.data_dir)
    feeds_root = layout.feeds_dir
    ledger_root = layout.ledger_dir
    tokens = TokenStore.open(settings.data_dir, clock)
    audit = AuditLog.open(settings.data_dir, clock)
    acks = AckStore.open(settings.data_dir)
    limiter = RateLimiter(monotonic)
    holder = SnapshotHolder(layout.snapshot_dir, snapshot_check_s)
    receipts = _Receipts(settings)
    etags = _ETags()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await run_in_threadpool(holder.load_now)
        # Everything allocated so far lives as long as the server: keep it out of the cyclic
        # GC's full collections, which otherwise show up as multi-millisecond latency spikes.
        gc.freeze()
        yield
        audit.close()
        tokens.close()
        acks.close()

    app = FastAPI(
        title="Number recycling: feeds, CAMARA check and bulk check",
        version="0.2.0",
        description=_DESCRIPTION,
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
    )
    app.add_middleware(CorrelatorMiddleware)
    app.state.tokens = tokens
    app.state.audit = audit
    app.state.acks = acks
    app.state.snapshot = holder

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> Response:
        return exc.response()

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        code = {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED"}.get(exc.status_code, "INVALID_ARGUMENT")
        return ApiError(exc.status_code, code, str(exc.detail)).response()

    @app.exception_handler(RecycleError)
    async def _recycle_error(request: Request, exc: RecycleError) -> Response:
        log.error("server error: %s", exc.diagnostics())
        return ApiError(503, "UNAVAILABLE", "the service cannot answer right now").response()

    def authorize(request: Request, scope: str, action: str) -> Platform:
        token = _bearer(request)
        corr = request.headers.get("x-correlator")
        if token is None:
            audit.record(None, action, status=401, path=request.url.path, correlator=corr)
            raise ApiError(
                401,
                "UNAUTHENTICATED",
                "Request not authenticated due to missing, invalid, "
                "or expired credentials: send Authorization: Bearer <platform token>",
            )
        platform = tokens.authenticate(token)
        if platform is None:
            audit.record(
                None,
                action,
                status=403,
                path=request.url.path,
                correlator=corr,
                reason="unknown or revoked token",
            )
            raise ApiError(
                403,
                "PERMISSION_DENIED",
                "the token is unknown or was revoked; ask the carrier for a new platform token",
            )
        if scope not in platform.scopes:
            audit.record(
                platform.name,
                action,
                status=403,
                path=request.url.path,
                correlator=corr,
                reason=f"missing scope {scope}",
            )
            raise ApiError(
                403, "PERMISSION_DENIED", f"this platform's token does not have the {scope!r} scope"
            )
        wait = limiter.take(platform.name, platform.rate, platform.burst)
        if wait is not None:
            audit.record(platform.name, action, status=429, path=request.url.path, correlator=corr)
            raise ApiError(
                429,
                "TOO_MANY_REQUESTS",
                f"rate limit of {platform.rate:g} requests/s exceeded; retry after {wait} s",
                {"Retry-After": str(wait)},
            )
        return platform

    def snapshot() -> SnapshotIndex:
        index = holder.current()
        if index is None:
            raise ApiError(
                503,
                "UNAVAILABLE",
                "no query snapshot is published yet; the nightly run publishes one after its first night",
            )
        return index

    def today(index: SnapshotIndex) -> dt.date:
        return max(clock().date(), index.meta.as_of)

    # ----------------------------------------------------------------- CAMARA check

    # check and bulk-check are plain Starlette routes: they parse their own bodies (to answer
    # CAMARA error codes, not FastAPI's 422) and skip FastAPI's per-request dependency solving;
    # their OpenAPI operations are written out in _OPERATIONS.
    async def check(request: Request) -> Response:
        platform = authorize(request, "check", "check")
        corr = request.headers.get("x-correlator")
        fields: dict[str, Any] = {"correlator": corr}
        number: str | None = None  # masked by the audit writer
        try:
            body = await request.body()
            if len(body) > MAX_CHECK_BODY:
                raise ApiError(400, "INVALID_ARGUMENT", "the request body is too large")
            try:
                doc = json.loads(body)
            except (ValueError, UnicodeDecodeError):
                raise ApiError(400, "INVALID_ARGUMENT", "the request body is not valid JSON") from None
            if not isinstance(doc, dict):
                raise ApiError(400, "INVALID_ARGUMENT", "the request body must be a JSON object")
            if "specifiedDate" not in doc:
                raise ApiError(400, "INVALID_ARGUMENT", "specifiedDate is required")
            day = _parse_date(doc["specifiedDate"], "specifiedDate")
            fields["date"] = day.isoformat()
            if "phoneNumber" not in doc:
                # a two-legged token identifies no subscriber, so the body must (CAMARA)
                raise ApiError(
                    422,
                    "MISSING_IDENTIFIER",
                    "The phone number cannot be identified: "
                    "send phoneNumber (a platform token does not identify a subscriber)",
                )
            phone = doc["phoneNumber"]
            if not isinstance(phone, str) or not _PHONE.fullmatch(phone):
                raise ApiError(400, "INVALID_ARGUMENT", f"phoneNumber must be E.164 matching {PHONE_PATTERN}")
            number = phone
            index = snapshot()
            if day < index.meta.data_from:
                raise ApiError(
                    400,
                    "OUT_OF_RANGE",
                    f"specifiedDate is before {index.meta.data_from}, "
                    "the earliest date this service holds data for",
                )
            if day > today(index):
                raise ApiError(400, "OUT_OF_RANGE", "specifiedDate is in the future")
            recycled = index.recycled(int(phone[1:]), day_number(day))
            if recycled is None:
                raise ApiError(404, "IDENTIFIER_NOT_FOUND", "Phone number not found.")
        except ApiError as exc:
            audit.record(platform.name, "check", number=number, status=exc.status, code=exc.code, **fields)
            raise
        audit.record(
            platform.name,
            "check",
            number=number,
            status=200,
            recycled=recycled,
            snapshot=index.meta.as_of.isoformat(),
            **fields,
        )
        return Response(
            b'{"phoneNumberRecycled":true}' if recycled else b'{"phoneNumberRecycled":false}',
            media_type="application/json",
        )

    app.add_route(f"{API}/check", check, methods=["POST"], name="checkNumberRecycling")

    # ----------------------------------------------------------------- bulk check

    async def bulk_check(request: Request) -> Response:
        platform = authorize(request, "bulk", "bulk_check")
        corr = request.headers.get("x-correlator")
        try:
            body = await request.body()
            if len(body) > MAX_BULK_BODY:
                raise ApiError(400, "OUT_OF_RANGE", f"the body is larger than {MAX_BULK_BODY} bytes")
            index = snapshot()
            signers = receipts.current()
            content_type = request.headers.get("content-type", "application/json")

            def work() -> tuple[bytes, int, dict[str, int], str]:
                phones, dates = _bulk_pairs(body, content_type)
                answers = bulk_answer(index, phones, dates, today(index))
                counts = {name: answers.count(name) for name in ("yes", "no", "no_data")}
                receipt = QueryReceipt(
                    platform=platform.name,
                    answered_at=clock().replace(microsecond=0),
                    request_sha256=request_digest(phones, dates),
                    response_sha256=response_digest(answers),
                    pairs=len(answers),
                    snapshot_date=index.meta.as_of,
                    feed_seq=index.meta.feed_seq,
                    checkpoint=index.meta.checkpoint,
                )
                env = Envelope.create(receipt, signers)
                out = json.dumps(
                    {"counts": counts, "receipt": env.to_dict(), "results": answers},
                    separators=(",", ":"),
                    ensure_ascii=False,
                ).encode("utf-8")
                return out, len(answers), counts, receipt.request_sha256

            out, pairs, counts, digest = await run_in_threadpool(work)
        except ApiError as exc:
            audit.record(platform.name, "bulk_check", status=exc.status, code=exc.code, correlator=corr)
            raise
        audit.record(
            platform.name,
            "bulk_check",
            status=200,
            pairs=pairs,
            counts=counts,
            request_sha256=digest,
            snapshot=index.meta.as_of.isoformat(),
            correlator=corr,
        )
        return Response(out, media_type="application/json")

    app.add_route(f"{API}/bulk-check", bulk_check, methods=["POST"], name="bulkCheckNumberRecycling")

    # ----------------------------------------------------------------- acknowledgements

    async def acknowledgements(request: Request) -> Response:
        platform = authorize(request, "ack", "acknowledge")
        corr = request.headers.get("x-correlator")
        received = clock()
        try:
            length = request.headers.get("content-length", "")
            if length.isdigit() and int(length) > MAX_ACK_BODY:  # refuse before reading it
                raise ApiError(400, "OUT_OF_RANGE", f"the body is larger than {MAX_ACK_BODY} bytes")
            body = await request.body()
            if len(body) > MAX_ACK_BODY:
                raise ApiError(400, "OUT_OF_RANGE", f"the body is larger than {MAX_ACK_BODY} bytes")
            content_type = request.headers.get("content-type", "application/json")

            def work() -> tuple[dict[str, Any], dict[str, Any]]:
                try:
                    upload = read_acknowledgements(body, content_type)
                    if upload.rows.num_rows > MAX_ACK_ITEMS:
                        raise ApiError(
                            400,
                            "OUT_OF_RANGE",
                            f"{upload.rows.num_rows} acknowledgements; at most {MAX_ACK_ITEMS} per request",
                        )
                    valid = validate_acknowledgements(
                        upload, published=FeedPaths.of(settings).published_days(), now=received
                    )
                except DataContractError as exc:
                    raise ApiError(400, "INVALID_ARGUMENT", str(exc)) from None
                receipt = acks.add(platform.name, valid, received, "api")
                statuses = valid.column("status").to_pylist()
                fields: dict[str, Any] = {
                    "items": receipt.accepted,
                    "stored": receipt.stored,
                    "batch": receipt.batch_id,
                    "request_sha256": receipt.request_sha256,
                    "counts": {s: statuses.count(s) for s in STATUSES},
                }
                if receipt.accepted == 1:
                    fields["number"] = valid.column("msisdn")[0].as_py()  # masked by the audit writer
                return receipt.to_dict(), fields

            answer, fields = await run_in_threadpool(work)
        except ApiError as exc:
            audit.record(platform.name, "acknowledge", status=exc.status, code=exc.code, correlator=corr)
            raise
        audit.record(platform.name, "acknowledge", status=200, correlator=corr, **fields)
        return JSONResponse(answer)

    app.add_route(f"{API}/acknowledgements", acknowledgements, methods=["POST"], name="acknowledgeNumbers")

    # ----------------------------------------------------------------- static files

    def serve_file(request: Request, base: Path, rel: str, cache: str, platform: str | None) -> Response:
        path = base / rel
        try:
            resolved = path.resolve(strict=True)
            resolved.relative_to(base.resolve())
            st = resolved.stat()
        except (FileNotFoundError, ValueError, OSError):
            audit.record(platform, "download", path=request.url.path, status=404)
            raise ApiError(404, "NOT_FOUND", f"{rel} does not exist") from None
        etag = etags.of(resolved, st)
        headers = {"ETag": etag, "Cache-Control": cache}
        inm = request.headers.get("if-none-match")
        # The SHA-256 names the exact content handed over: the rolling snapshot is rewritten
        # daily, and notification evidence ties a download to a manifest by this digest.
        sha = etag.strip('"')
        if inm is not None and (inm.strip() == "*" or etag in [t.strip() for t in inm.split(",")]):
            # only a matching ETag proves which content the platform holds ("*" proves none)
            audit.record(
                platform,
                "download",
                path=request.url.path,
                status=304,
                sha256=None if inm.strip() == "*" else sha,
            )
            return Response(status_code=304, headers=headers)
        audit.record(platform, "download", path=request.url.path, status=200, bytes=st.st_size, sha256=sha)
        return FileResponse(resolved, headers=headers, stat_result=st)

    @app.get("/feeds/{rel:path}", operation_id="getFeedFile")
    def feed_file(rel: str, request: Request) -> Response:
        platform = authorize(request, "feeds", "download")
        m = _FEED_FILES.fullmatch(rel)
        if m is None:
            audit.record(platform.name, "download", path=request.url.path, status=404)
            raise ApiError(404, "NOT_FOUND", f"{rel} is not a feed file")
        cache = PRIVATE_SHORT if m.group("short") else PRIVATE_IMMUTABLE
        return serve_file(request, feeds_root, rel, cache, platform.name)

    @app.get("/ledger/{rel:path}", operation_id="getLedgerFile")
    def ledger_file(rel: str, request: Request) -> Response:
        if rel in ("checkpoint", "vkey"):  # vkey: the checkpoint signer's public verifier key
            cache = SHORT
        else:
            try:
                tile = Tile.parse(rel)
            except RecycleError:
                audit.record(None, "download", path=request.url.path, status=404)
                raise ApiError(404, "NOT_FOUND", f"{rel} is not a ledger tile or checkpoint") from None
            cache = SHORT if tile.is_partial else IMMUTABLE
        return serve_file(request, ledger_root, rel, cache, None)

    @app.get("/status", operation_id="getStatus")
    def status() -> dict[str, Any]:
        holder.current()
        return {"snapshot": holder.status()}

    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


# --------------------------------------------------------------------------- OpenAPI

_DESCRIPTION = (
    "Carrier-side service for platforms. `POST /number-recycling/v0.2/check` implements CAMARA "
    "NumberRecycling v0.2 (two-legged tokens: phoneNumber is required). `POST "
    "/number-recycling/v0.2/bulk-check` answers up to 250,000 (number, date) pairs with FCC "
    "Reassigned Numbers Database semantics and a signed query receipt. `POST "
    "/number-recycling/v0.2/acknowledgements` takes platforms' reports of what they did per "
    "number (unbound, no_account, step_up_enabled). `/feeds/...` serves the "
    "signed daily recycled-number feed (see docs/feeds.md), `/ledger/...` the public "
    "transparency log (C2SP tlog-tiles). Every call needs `Authorization: Bearer <platform "
    "token>` except `/ledger/...` and `/status`."
)


def _error_response(status: int, codes: list[str], description: str) -> dict[str, Any]:
    return {
        "description": description,
        "headers": {"x-correlator": {"$ref": "#/components/headers/x-correlator"}},
        "content": {
            "application/json": {
                "schema": {
                    "allOf": [
                        {"$ref": "#/components/schemas/ErrorInfo"},
                        {
                            "type": "object",
                            "properties": {"status": {"enum": [status]}, "code": {"enum": codes}},
                        },
                    ]
                }
            }
        },
    }


_RESPONSES: dict[str, Any] = {
    "Generic400": _error_response(
        400, ["INVALID_ARGUMENT", "OUT_OF_RANGE"], "Problem with the client request"
    ),
    "Generic401": _error_response(401, ["UNAUTHENTICATED"], "Authentication problem with the client request"),
    "Generic403": _error_response(403, ["PERMISSION_DENIED"], "Client does not have sufficient permission"),
    # CAMARA lists only IDENTIFIER_NOT_FOUND for the check's 404; files answer NOT_FOUND.
    "Generic404": _error_response(
        404,
        ["IDENTIFIER_NOT_FOUND"],
        "Resource Not Found (a number that is not ours: never was, or ported away)",
    ),
    "FileNotFound404": _error_response(404, ["NOT_FOUND"], "No such feed file, tile or checkpoint"),
    "Generic422": _error_response(422, ["MISSING_IDENTIFIER"], "Unprocessable Content"),
    "Generic429": _error_response(429, ["TOO_MANY_REQUESTS"], "Rate limit exceeded; see Retry-After"),
    "Generic503": _error_response(503, ["UNAVAILABLE"], "No snapshot or feed keys published yet"),
}

_SCHEMAS: dict[str, Any] = {
    "XCorrelator": {
        "type": "string",
        "pattern": "^[a-zA-Z0-9-_:;.\\/<>{}]{0,256}$",
        "example": "b4333c46-49c0-4f62-80d7-f0ef930f1c46",
    },
    "PhoneNumber": {
        "description": "E.164 number with a leading '+'.",
        "type": "string",
        "pattern": PHONE_PATTERN,
        "example": "+8613812345678",
    },
    "CreateCheckNumRecycling": {
        "type": "object",
        "required": ["specifiedDate"],
        "properties": {
            "phoneNumber": {"$ref": "#/components/schemas/PhoneNumber"},
            "specifiedDate": {
                "type": "string",
                "format": "date",
                "example": "2024-10-31",
                "description": "RFC 3339 full-date YYYY-MM-DD; not in the future and "
                "not before the earliest date the service holds data for.",
            },
        },
    },
    "CheckNumRecyclingInfo": {
        "type": "object",
        "required": ["phoneNumberRecycled"],
        "properties": {
            "phoneNumberRecycled": {
                "type": "boolean",
                "description": "true when the subscriber who held the number on specifiedDate no "
                "longer holds it (a later subscriber, or the number was permanently disconnected and "
                "released), or when nobody held it that day (a freeze gap).",
            }
        },
    },
    "ErrorInfo": {
        "type": "object",
        "required": ["status", "code", "message"],
        "properties": {
            "status": {"type": "integer"},
            "code": {"type": "string"},
            "message": {"type": "string"},
        },
    },
    "BulkCheckRequest": {
        "type": "object",
        "required": ["queries"],
        "additionalProperties": False,
        "properties": {
            "queries": {
                "type": "array",
                "minItems": 1,
                "maxItems": MAX_BULK_PAIRS,
                "items": {
                    "type": "object",
                    "required": ["phoneNumber", "specifiedDate"],
                    "properties": {
                        "phoneNumber": {"$ref": "#/components/schemas/PhoneNumber"},
                        "specifiedDate": {"type": "string", "format": "date"},
                    },
                },
            }
        },
    },
    "BulkCheckResponse": {
        "type": "object",
        "required": ["results", "counts", "receipt"],
        "properties": {
            "results": {
                "type": "array",
                "items": {"type": "string", "enum": ["yes", "no", "no_data"]},
                "description": "One answer per query, in request order (FCC RND semantics): yes = "
                "the number was permanently disconnected on or after specifiedDate; no = it was "
                "not; no_data = not our number (never, or ported away) or the date is outside "
                "[data_from, today].",
            },
            "counts": {"type": "object", "additionalProperties": {"type": "integer"}},
            "receipt": {"$ref": "#/components/schemas/SignedQueryReceipt"},
        },
    },
    "AcknowledgementsRequest": {
        "type": "object",
        "required": ["acknowledgements"],
        "additionalProperties": False,
        "properties": {
            "acknowledgements": {
                "type": "array",
                "minItems": 1,
                "maxItems": MAX_ACK_ITEMS,
                "items": {
                    "type": "object",
                    "required": ["phoneNumber", "status"],
                    "additionalProperties": False,
                    "properties": {
                        "phoneNumber": {"$ref": "#/components/schemas/PhoneNumber"},
                        "status": {
                            "type": "string",
                            "enum": list(STATUSES),
                            "description": "unbound: accounts bound to the number were unbound; "
                            "no_account: none was bound; step_up_enabled: stronger verification "
                            "now guards them.",
                        },
                        "feedDate": {
                            "type": ["string", "null"],
                            "format": "date",
                            "description": "The published feed day that told the platform.",
                        },
                        "observedAt": {
                            "type": ["string", "null"],
                            "format": "date-time",
                            "description": "RFC 3339 with a zone offset: when the platform "
                            "acted; not in the future.",
                        },
                    },
                },
            }
        },
    },
    "AcknowledgementReceipt": {
        "type": "object",
        "required": ["accepted", "alreadyStored", "receivedAt"],
        "properties": {
            "accepted": {"type": "integer", "description": "Items in the request, all valid."},
            "alreadyStored": {
                "type": "integer",
                "description": "Items already stored by an "
                "earlier request (same platform, number, status and feed day).",
            },
            "receivedAt": {"type": "string", "format": "date-time", "description": "Server time (UTC)."},
        },
    },
    "SignedQueryReceipt": {
        "type": "object",
        "required": ["signed", "signatures"],
        "description": "Ed25519 over the canonical JSON of `signed` by the root's receipt role. "
        "request_sha256 = SHA-256 of 'phoneNumber,specifiedDate\\n' per query; response_sha256 "
        "= SHA-256 of 'answer\\n' per query (docs/feeds.md).",
        "properties": {
            "signed": {
                "type": "object",
                "required": [
                    "_type",
                    "answered_at",
                    "checkpoint",
                    "feed_seq",
                    "pairs",
                    "platform",
                    "request_sha256",
                    "response_sha256",
                    "snapshot_date",
                    "spec_version",
                ],
            },
            "signatures": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["keyid", "sig"],
                    "properties": {"keyid": {"type": "string"}, "sig": {"type": "string"}},
                },
            },
        },
    },
}


def _std(responses: dict[str, str]) -> dict[str, Any]:
    return {code: {"$ref": f"#/components/responses/{name}"} for code, name in responses.items()}


_CORR_PARAM = {"$ref": "#/components/parameters/x-correlator"}
_OPERATIONS: dict[tuple[str, str], dict[str, Any]] = {
    (f"{API}/check", "post"): {
        "tags": ["Check Number Recycling"],
        "summary": "Check whether the subscriber of the phone number has changed.",
        "description": "CAMARA NumberRecycling v0.2. Scope `check`.",
        "operationId": "checkNumberRecycling",
        "security": [{"bearer": []}],
        "parameters": [_CORR_PARAM],
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/CreateCheckNumRecycling"}}
            },
        },
        "responses": {
            "200": {
                "description": "OK",
                "headers": {"x-correlator": {"$ref": "#/components/headers/x-correlator"}},
                "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/CheckNumRecyclingInfo"}}
                },
            },
            **_std(
                {
                    "400": "Generic400",
                    "401": "Generic401",
                    "403": "Generic403",
                    "404": "Generic404",
                    "422": "Generic422",
                    "429": "Generic429",
                    "503": "Generic503",
                }
            ),
        },
    },
    (f"{API}/bulk-check", "post"): {
        "tags": ["Bulk Check"],
        "summary": "Answer up to 250,000 (phoneNumber, specifiedDate) pairs, with a signed receipt.",
        "description": "Scope `bulk`. Upload JSON, or CSV with the header "
        "`phoneNumber,specifiedDate`. A malformed pair fails the request with 400 naming it.",
        "operationId": "bulkCheckNumberRecycling",
        "security": [{"bearer": []}],
        "parameters": [_CORR_PARAM],
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/BulkCheckRequest"}},
                "text/csv": {"schema": {"type": "string"}},
            },
        },
        "responses": {
            "200": {
                "description": "One answer per query and a signed receipt",
                "headers": {"x-correlator": {"$ref": "#/components/headers/x-correlator"}},
                "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/BulkCheckResponse"}}
                },
            },
            **_std(
                {
                    "400": "Generic400",
                    "401": "Generic401",
                    "403": "Generic403",
                    "429": "Generic429",
                    "503": "Generic503",
                }
            ),
        },
    },
    (f"{API}/acknowledgements", "post"): {
        "tags": ["Acknowledgements"],
        "summary": "Report what the platform did per number: unbound, no_account or step_up_enabled.",
        "description": f"Scope `ack`. Up to {MAX_ACK_ITEMS:,} items as JSON, or CSV with the header "
        f"`{','.join(CSV_HEADER)}` (JSON names: {', '.join(JSON_FIELDS)}). Every item is checked; "
        "one bad item fails the request with 400 naming it (`item N`, or `line N` of the CSV) and "
        "nothing is stored. Resending the same (number, status, feed day) is harmless: it is "
        "stored once.",
        "operationId": "acknowledgeNumbers",
        "security": [{"bearer": []}],
        "parameters": [_CORR_PARAM],
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/AcknowledgementsRequest"}},
                "text/csv": {"schema": {"type": "string"}},
            },
        },
        "responses": {
            "200": {
                "description": "Stored; a receipt",
                "headers": {"x-correlator": {"$ref": "#/components/headers/x-correlator"}},
                "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/AcknowledgementReceipt"}}
                },
            },
            **_std(
                {
                    "400": "Generic400",
                    "401": "Generic401",
                    "403": "Generic403",
                    "429": "Generic429",
                    "503": "Generic503",
                }
            ),
        },
    },
    ("/feeds/{rel}", "get"): {
        "tags": ["Feeds"],
        "summary": "Signed feed files: root.json, timestamp.json, roots/N.root.json, manifests/N.json, "
        "daily/<D>/{recycled.parquet,recycled.csv,manifest.json}, snapshot/recycled.{parquet,csv}.",
        "description": "Scope `feeds`. Strong ETag; If-None-Match answers 304.",
        "operationId": "getFeedFile",
        "security": [{"bearer": []}],
        "parameters": [
            {"name": "rel", "in": "path", "required": True, "schema": {"type": "string"}},
            {"name": "If-None-Match", "in": "header", "schema": {"type": "string"}},
        ],
        "responses": {
            "200": {"description": "The file", "content": {"application/octet-stream": {}}},
            "304": {"description": "Not modified"},
            **_std({"401": "Generic401", "403": "Generic403", "404": "FileNotFound404", "429": "Generic429"}),
        },
    },
    ("/ledger/{rel}", "get"): {
        "tags": ["Ledger"],
        "summary": "The public transparency log: checkpoint, vkey, tile/<L>/<N>[.p/<W>], tile/entries/<N>[.p/<W>].",
        "description": "No token. Full tiles are immutable; checkpoint and partial tiles are short-lived.",
        "operationId": "getLedgerFile",
        "parameters": [
            {"name": "rel", "in": "path", "required": True, "schema": {"type": "string"}},
            {"name": "If-None-Match", "in": "header", "schema": {"type": "string"}},
        ],
        "responses": {
            "200": {"description": "The file", "content": {"application/octet-stream": {}}},
            "304": {"description": "Not modified"},
            **_std({"404": "FileNotFound404"}),
        },
    },
    ("/status", "get"): {
        "tags": ["Status"],
        "summary": "Which query snapshot is loaded (no token).",
        "operationId": "getStatus",
        "responses": {
            "200": {
                "description": "Snapshot status",
                "content": {"application/json": {"schema": {"type": "object"}}},
            }
        },
    },
}


def _openapi(app: FastAPI) -> dict[str, Any]:
    if app.openapi_schema is None:
        doc = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        paths: dict[str, Any] = {}
        for (path, method), op in _OPERATIONS.items():
            paths.setdefault(path, {})[method] = op
        doc["paths"] = paths
        doc["servers"] = [{"url": "/"}]
        doc["components"] = {
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "Per-platform token from `recycle platform add`",
                }
            },
            "parameters": {
                "x-correlator": {
                    "name": "x-correlator",
                    "in": "header",
                    "description": "Correlation id for the different services",
                    "schema": {"$ref": "#/components/schemas/XCorrelator"},
                }
            },
            "headers": {
                "x-correlator": {
                    "description": "Correlation id for the different services",
                    "schema": {"$ref": "#/components/schemas/XCorrelator"},
                }
            },
            "schemas": _SCHEMAS,
            "responses": _RESPONSES,
        }
        app.openapi_schema = doc
    return app.openapi_schema


def openapi_bytes(app: FastAPI) -> bytes:
    """The OpenAPI document as committed in ``schemas/openapi.json``."""
    return (json.dumps(app.openapi(), indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()


def serve(settings: Settings, host: str, port: int) -> None:
    import uvicorn

    uvicorn.run(create_app(settings), host=host, port=port, log_level="info", access_log=False)


if __name__ == "__main__":  # pragma: no cover - the OpenAPI export
    if sys.argv[1:] == ["--openapi"]:
        import tempfile

        from pipelines.config import load_settings

        with tempfile.TemporaryDirectory() as tmp:  # the document does not depend on any data
            sys.stdout.write(openapi_bytes(create_app(load_settings(env={}, data_dir=Path(tmp)))).decode())
    else:
        sys.stderr.write("usage: python -m pipelines.server.app --openapi > schemas/openapi.json\n")
        sys.exit(2)


__all__ = [
    "API",
    "ApiError",
    "bulk_answer",
    "create_app",
    "openapi_bytes",
    "request_digest",
    "response_digest",
    "serve",
]
