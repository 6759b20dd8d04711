"""Signed tenure statements: the wire format and the offline verifier (no DuckDB, no Airflow).

A statement tells that a subscriber (by ``subscriber_ref``) held a number from ``tenure_start`` to
``tenure_end`` (or, for a live tenure, "since ``tenure_start``, current as of ``as_of``"). The
file is two documents the ledger already speaks, one after the other:

1. a C2SP signed note by the ledger's key, whose text is a header line
   ``number-recycling/tenure-statement/v1`` and one ``name value`` line per fact, sorted by name;
2. a ``c2sp.org/tlog-proof@v1`` evidence proof (``extra`` = entry ‖ opening ‖ canonical value)
   of the ``tenure_statement`` ledger entry that commits to exactly those facts.

What is signed and what is committed are one thing: the facts, read as a
:class:`CanonicalValue`, must equal the value the proof opens. So the carrier can neither hand
out a statement it did not log (the log is public and append-only) nor log one thing and sign
another. ``docs/statements.md`` gives the format, the fields and the privacy rules. A light
client imports this module and :func:`verify_statement`; nothing here opens a state file.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from number_recycling_client.ledger.entries import CanonicalValue, EntryType
from number_recycling_client.ledger.note import Checkpoint, Verifier, open_note
from number_recycling_client.ledger.proof import PROOF_HEADER

from pipelines.errors import CommitmentError, FormatError
from pipelines.ledger.verify import verify_proof_file
from pipelines.numbers import mask

HEADER_PREFIX = "number-recycling/tenure-statement/v"
MAJOR = 1  # a later 1.x only adds fact lines, which are kept (signed and committed as they are)
HEADER = f"{HEADER_PREFIX}{MAJOR}"
MAX_STATEMENT_BYTES = 64 * 1024
STATUS_ENDED = "ended"
STATUS_CURRENT = "current"
REQUIRED: tuple[str, ...] = (
    "as_of",
    "issued_at",
    "issued_local",
    "issuer",
    "msisdn",
    "signer_key",
    "status",
    "subscriber_ref",
)
REQUIRED += ("tenure_id", "tenure_start", "timezone")
_LOCAL_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}[+-]\d{2}:\d{2}")
_SEPARATOR = ("\n" + PROOF_HEADER + "\n").encode("ascii")


@dataclass(frozen=True)
class TenureFacts:
    """The facts of one tenure a statement is issued for (read from the state by the issuer)."""

    tenure_id: str
    msisdn: str
    subscriber_ref: str
    tenure_start: dt.date
    tenure_end: dt.date | None  # None: the tenure is live
    end_reason: str | None
    opened_by: str  # snapshot | cancel | suspend | port_in | reissue (how the carrier first saw it)


def statement_value(
    facts: TenureFacts,
    *,
    as_of: dt.date,
    issuer: str,
    signer_key: str,
    issued_at: dt.datetime,
    zone: dt.tzinfo,
) -> CanonicalValue:
    """The facts a statement signs and its ledger entry commits to.

    ``issued_local`` is the same instant as ``issued_at`` in the carrier's time zone (the date a
    person reads), ``issued_at`` the UTC instant the ledger's ``*_at`` rule requires.
    """
    local = issued_at.astimezone(zone).replace(microsecond=0)
    ended = facts.tenure_end is not None
    return CanonicalValue.build(
        tenure_id=facts.tenure_id,
        msisdn=facts.msisdn,
        subscriber_ref=facts.subscriber_ref,
        tenure_start=facts.tenure_start,
        tenure_end=facts.tenure_end,
        end_reason=facts.end_reason if ended else None,
        status=STATUS_ENDED if ended else STATUS_CURRENT,
        opened_by=facts.opened_by,
        as_of=as_of,
        issuer=issuer,
        signer_key=signer_key,
        issued_at=issued_at.replace(microsecond=0),
        issued_local=local.isoformat(),
        timezone=str(getattr(zone, "key", zone)),
    )


def statement_text(value: CanonicalValue) -> bytes:
    """The note text: the header, then ``name value`` per field in canonical (sorted) order."""
    return ("\n".join([HEADER, *(f"{n} {v}" for n, v in value.fields)]) + "\n").encode("utf-8")


def _parse_text(text: bytes) -> CanonicalValue:
    lines = text.decode("utf-8").split("\n")[:-1]  # open_note: the text ends in a newline
    if not lines or not lines[0].startswith(HEADER_PREFIX):
        raise FormatError(f"statement: the first line must be {HEADER!r}; this is not a tenure statement")
    if lines[0] != HEADER:
        raise FormatError(
            f"statement: {lines[0]!r} is a version this verifier does not read (it reads {HEADER}); "
            "update number-recycling"
        )
    pairs = []
    for no, line in enumerate(lines[1:], start=2):
        name, sep, value = line.partition(" ")
        if not sep:
            raise FormatError(f"statement: line {no} is not 'name value'")
        pairs.append((name, value))
    return CanonicalValue(tuple(pairs))  # strict: sorted unique names, known fields checked


@dataclass(frozen=True)
class VerifiedStatement:
    """What a verified statement establishes: the facts, the log entry and the checkpoint."""

    facts: Mapping[str, str]
    index: int
    checkpoint: Checkpoint

    @property
    def current(self) -> bool:
        return self.facts["status"] == STATUS_CURRENT

    def describe(self) -> str:
        """One line for a person, the number masked (the file holds it in clear)."""
        f = self.facts
        held = (
            f"since {f['tenure_start']}, current as of {f['as_of']}"
            if self.current
            else f"from {f['tenure_start']} to {f['tenure_end']} (ended: {f['end_reason']})"
        )
        return (
            f"subscriber {f['subscriber_ref']} held {mask(f['msisdn'])} {held}; tenure {f['tenure_id']}, "
            f"issued {f['issued_local']} by {f['issuer']}, ledger entry {self.index} in checkpoint "
            f"size {self.checkpoint.size}"
        )


def is_statement(path: Path) -> bool:
    """Whether ``path`` is a file that begins like a tenure statement (``recycle verify`` dispatch)."""
    if not path.is_file():
        return False
    with path.open("rb") as fh:
        return fh.read(len(HEADER_PREFIX)) == HEADER_PREFIX.encode("ascii")


def split_statement(data: bytes) -> tuple[bytes, bytes]:
    """(signed note, tlog-proof) of a statement file."""
    if len(data) > MAX_STATEMENT_BYTES:
        raise FormatError(f"statement: {len(data)} bytes is larger than {MAX_STATEMENT_BYTES}")
    cut = data.find(_SEPARATOR)
    if not data.startswith(HEADER_PREFIX.encode("ascii")) or cut < 0:
        raise FormatError(
            f"statement: expected a signed note starting {HEADER!r} followed by a {PROOF_HEADER} proof"
        )
    return data[: cut + 1], data[cut + 1 :]


def verify_statement(data: bytes, vkey: str | Verifier, origin: str | None = None) -> VerifiedStatement:
    """Verify a statement file offline with the carrier's published verifier key; raise on failure.

    In order: the note's signature (altered facts fail here), the facts' format, the proof (its
    checkpoint's signature, the inclusion of the entry, the opening against the commitment), that
    the entry is a ``tenure_statement`` committing to exactly the signed facts, and the facts'
    own rules (see :func:`_check_facts`). Every failure is a ``VerificationError`` naming it.
    """
    verifier = Verifier.from_vkey(vkey) if isinstance(vkey, str) else vkey
    note_bytes, proof_bytes = split_statement(data)
    note = open_note(note_bytes, [verifier])
    signed = _parse_text(note.text)
    entry = verify_proof_file(proof_bytes, verifier, origin)
    if entry.entry.entry_type != EntryType.TENURE_STATEMENT:
        raise FormatError(
            f"statement: its proof is of ledger entry {entry.index}, a {entry.entry.entry_type.label} "
            "entry, not a tenure_statement"
        )
    if entry.value != signed:
        logged, ours = entry.value.as_dict(), signed.as_dict()
        differ = sorted(n for n in logged.keys() | ours.keys() if logged.get(n) != ours.get(n))
        raise CommitmentError(
            f"statement: the signed facts differ from those ledger entry {entry.index} commits to "
            f"(fields: {', '.join(differ)}); the statement was altered"
        )
    facts = signed.as_dict()
    _check_facts(facts, entry.checkpoint, verifier)
    return VerifiedStatement(facts, entry.index, entry.checkpoint)


def _check_facts(facts: Mapping[str, str], checkpoint: Checkpoint, verifier: Verifier) -> None:
    """The rules a well-issued statement keeps beyond its signatures."""
    missing = [n for n in REQUIRED if n not in facts]
    if missing:
        raise FormatError(f"statement: missing facts {', '.join(missing)}")
    if facts["issuer"] != checkpoint.origin or facts["signer_key"] != verifier.label:
        raise FormatError(
            f"statement: issued by {facts['issuer']} / {facts['signer_key']} but proven in log "
            f"{checkpoint.origin} / {verifier.label}"
        )
    start, as_of = _date(facts, "tenure_start"), _date(facts, "as_of")
    if facts["status"] == STATUS_CURRENT:
        if "tenure_end" in facts or "end_reason" in facts:
            raise FormatError("statement: a current tenure has no tenure_end or end_reason")
        last = as_of
    elif facts["status"] == STATUS_ENDED:
        if "tenure_end" not in facts or "end_reason" not in facts:
            raise FormatError("statement: an ended tenure names its tenure_end and end_reason")
        last = _date(facts, "tenure_end")
        if last > as_of:
            raise FormatError("statement: tenure_end is after as_of")
    else:
        raise FormatError(f"statement: status must be {STATUS_ENDED} or {STATUS_CURRENT}")
    if start > last:
        raise FormatError("statement: tenure_start is after the tenure's end (or as_of)")
    local = facts["issued_local"]
    issued = dt.datetime.fromisoformat(facts["issued_at"][:-1]).replace(tzinfo=dt.UTC)
    if not _LOCAL_TIME.fullmatch(local) or dt.datetime.fromisoformat(local) != issued:
        raise FormatError(f"statement: issued_local {local!r} is not the instant issued_at names")


def _date(facts: Mapping[str, str], name: str) -> dt.date:
    try:
        return dt.date.fromisoformat(facts[name])
    except ValueError:
        raise FormatError(f"statement: {name} {facts[name][:32]!r} is not a date YYYY-MM-DD") from None
