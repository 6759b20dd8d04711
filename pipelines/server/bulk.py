"""Bulk check: up to 250,000 (phoneNumber, specifiedDate) pairs as JSON or CSV, answered
vectorised with FCC RND semantics (yes / no / no_data), the risk grade of every ``yes``, and a
query receipt signed by the root's receipt role over digests of the request and the answers.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from number_recycling_client.wire import Envelope, QueryReceipt, sha256_hex

from pipelines.feeds.answer import Verdict
from pipelines.feeds.grade import GRADES
from pipelines.feeds.query_snapshot import BULK_ANSWERS, SnapshotIndex, day_number
from pipelines.ledger.signer import FileSigner
from pipelines.server.auth import authorize
from pipelines.server.camara import API, ApiError, parse_json, read_body
from pipelines.server.check import PHONE, parse_date
from pipelines.server.platforms import PHONE_PATTERN
from pipelines.server.state import ServerState, server_state

MAX_BULK_PAIRS = 250_000
MAX_BULK_BODY = 40 * 1024 * 1024  # 250,000 JSON pairs are about 15 MB

router = APIRouter()


def _canonical_lines(items: list[str]) -> bytes:
    return ("\n".join(items) + "\n").encode("utf-8") if items else b""


def request_digest(phones: list[str], dates: list[str]) -> str:
    """SHA-256 over ``phone,date\\n`` per pair, in request order: the same for JSON and CSV."""
    return sha256_hex(_canonical_lines([f"{p},{d}" for p, d in zip(phones, dates, strict=True)]))


def response_digest(results: list[str]) -> str:
    """SHA-256 over one answer (``yes``/``no``/``no_data``) per line, in request order."""
    return sha256_hex(_canonical_lines(results))


# --------------------------------------------------------------------------- reading the pairs


def _csv_pairs(body: bytes) -> tuple[list[str], list[str]]:
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


def _json_pairs(body: bytes) -> tuple[list[str], list[str]]:
    doc = parse_json(body)
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


def _bulk_pairs(body: bytes, content_type: str) -> tuple[list[str], list[str]]:
    if content_type.startswith("text/csv"):
        return _csv_pairs(body)
    return _json_pairs(body)


# --------------------------------------------------------------------------- answering them


def _first_bad(values: list[Any], ok: Callable[[Any], bool]) -> int:
    return next(i for i, v in enumerate(values) if not ok(v))


def _is_utf8(value: Any) -> bool:
    return not isinstance(value, str) or value.encode("utf-8", "surrogatepass") == value.encode(
        "utf-8", "replace"
    )


_EPOCH = dt.date(1970, 1, 1)


def parse_dates(date_arr: pa.StringArray) -> np.ndarray:
    """Days since 1970-01-01 per pair, each distinct date parsed by ``check.parse_date`` (the
    rule /check applies): vectorised over the pairs, Python only once per distinct date."""
    distinct = pc.unique(date_arr)
    days = np.empty(len(distinct), dtype=np.int32)
    for i, value in enumerate(distinct.to_pylist()):
        try:
            days[i] = (parse_date(value, "specifiedDate") - _EPOCH).days
        except ApiError as exc:
            first = pc.index(date_arr, value).as_py()
            raise ApiError(400, "INVALID_ARGUMENT", f"query {first + 1}: {exc.message}") from None
    positions = pc.index_in(date_arr, value_set=distinct).to_numpy()
    return np.asarray(days[positions], dtype=np.int32)


def bulk_answer(index: SnapshotIndex, phones: list[str], dates: list[str], today: dt.date) -> list[str]:
    """Validate the pairs (400 naming the first bad one) and answer them, vectorised."""
    return bulk_answer_graded(index, phones, dates, today)[0]


# Each grade's JSON, built once: a reply shares these objects (250,000 pairs, 24 grades).
_GRADE_JSON: tuple[dict[str, Any], ...] = tuple(g.to_json() for g in GRADES)


def bulk_answer_graded(
    index: SnapshotIndex, phones: list[str], dates: list[str], today: dt.date
) -> tuple[list[str], list[dict[str, Any] | None]]:
    """The answers and, aligned with them, the risk grade of every ``yes`` (the grade of the
    number's latest release or reissue, pipelines.feeds.grade; None for other answers)."""
    if not phones:
        raise ApiError(400, "INVALID_ARGUMENT", "the request holds no queries")
    if len(phones) > MAX_BULK_PAIRS:
        raise ApiError(400, "OUT_OF_RANGE", f"{len(phones)} queries; at most {MAX_BULK_PAIRS} per request")
    try:
        phone_arr = pa.array(phones, type=pa.string())
        date_arr = pa.array(dates, type=pa.string())
    except UnicodeEncodeError:  # a "\ud800" escape in the JSON: a lone surrogate is no UTF-8 text
        bad = _first_bad(
            [*zip(phones, dates, strict=True)], lambda pair: _is_utf8(pair[0]) and _is_utf8(pair[1])
        )
        raise ApiError(
            400,
            "INVALID_ARGUMENT",
            f"query {bad + 1}: phoneNumber and specifiedDate must be text (no lone surrogate)",
        ) from None
    except (pa.ArrowTypeError, pa.ArrowInvalid):
        bad = _first_bad(
            [*zip(phones, dates, strict=True)],
            lambda pair: isinstance(pair[0], str) and isinstance(pair[1], str),
        )
        raise ApiError(
            400, "INVALID_ARGUMENT", f"query {bad + 1}: phoneNumber and specifiedDate must be strings"
        ) from None
    if phone_arr.null_count or date_arr.null_count:  # JSON null: pa.array takes None as a null
        bad = _first_bad(
            [*zip(phones, dates, strict=True)], lambda pair: pair[0] is not None and pair[1] is not None
        )
        raise ApiError(
            400,
            "INVALID_ARGUMENT",
            f"query {bad + 1}: phoneNumber and specifiedDate must be strings, not null",
        )
    phone_ok = pc.match_substring_regex(phone_arr, PHONE_PATTERN)
    if not pc.all(phone_ok).as_py():
        bad = _first_bad(phones, lambda p: bool(PHONE.fullmatch(p)))
        raise ApiError(400, "INVALID_ARGUMENT", f"query {bad + 1}: phoneNumber must match {PHONE_PATTERN}")
    days = parse_dates(date_arr)
    keys = pc.cast(pc.utf8_slice_codeunits(phone_arr, 1), pa.int64()).to_numpy()
    codes, _ = index.verdicts(np.asarray(keys, dtype=np.int64), days)
    codes[days > day_number(today)] = Verdict.NO_DATA  # a date in the carrier's future
    answers: list[str] = BULK_ANSWERS[codes].tolist()
    grades = np.where(codes == Verdict.TRUE, index.grades(np.asarray(keys, dtype=np.int64)), -1)
    risk = [None if g < 0 else _GRADE_JSON[g] for g in grades.tolist()]
    return answers, risk


# --------------------------------------------------------------------------- the endpoint


@dataclass(frozen=True)
class _BulkReply:
    body: bytes
    pairs: int
    counts: dict[str, int]
    request_sha256: str


def _answer_and_sign(
    state: ServerState,
    index: SnapshotIndex,
    signers: list[FileSigner],
    platform: str,
    body: bytes,
    content_type: str,
) -> _BulkReply:
    """Parse, answer and sign one upload; CPU-bound, so it runs in the thread pool."""
    phones, dates = _bulk_pairs(body, content_type)
    answers, risk = bulk_answer_graded(index, phones, dates, state.today(index))
    counts = {name: answers.count(name) for name in ("yes", "no", "no_data")}
    receipt = QueryReceipt(
        platform=platform,
        answered_at=state.clock().replace(microsecond=0),
        request_sha256=request_digest(phones, dates),
        response_sha256=response_digest(answers),
        pairs=len(answers),
        snapshot_date=index.meta.as_of,
        feed_seq=index.meta.feed_seq,
        checkpoint=index.meta.checkpoint,
    )
    env = Envelope.create(receipt, signers)
    out = json.dumps(
        # "risk" beside "results" (a new field: clients that know only "results" read on)
        {"counts": counts, "receipt": env.to_dict(), "results": answers, "risk": risk},
        separators=(",", ":"),
        ensure_ascii=False,
    ).encode("utf-8")
    return _BulkReply(out, len(answers), counts, receipt.request_sha256)


async def bulk_check(request: Request) -> Response:
    state = server_state(request.app)
    platform = authorize(request, "bulk", "bulk_check")
    corr = request.headers.get("x-correlator")
    try:
        too_large = ApiError(400, "OUT_OF_RANGE", f"the body is larger than {MAX_BULK_BODY} bytes")
        body = await read_body(request, MAX_BULK_BODY, too_large, state.body_timeout_s)
        index = state.snapshot()
        signers = state.receipt_keys.current()
        content_type = request.headers.get("content-type", "application/json")
        reply = await run_in_threadpool(
            _answer_and_sign, state, index, signers, platform.name, body, content_type
        )
    except ApiError as exc:
        state.audit.record(platform.name, "bulk_check", status=exc.status, code=exc.code, correlator=corr)
        raise
    state.audit.record(
        platform.name,
        "bulk_check",
        status=200,
        pairs=reply.pairs,
        counts=reply.counts,
        request_sha256=reply.request_sha256,
        snapshot=index.meta.as_of.isoformat(),
        correlator=corr,
    )
    return Response(reply.body, media_type="application/json")


# A plain Starlette route, like check (see pipelines.server.check).
router.add_route(f"{API}/bulk-check", bulk_check, methods=["POST"], name="bulkCheckNumberRecycling")
