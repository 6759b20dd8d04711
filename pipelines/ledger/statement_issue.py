"""Issuing signed tenure statements from the state file (:func:`issue_statement`).

Verifying one needs no state and no DuckDB: :mod:`pipelines.ledger.statement`. Issuing reads the
number's tenures (:func:`pipelines.lifecycle.views.number_history`), refuses an erased tenure,
appends a ``tenure_statement`` entry committing to the facts and publishes a checkpoint covering
it, so the statement carries its own inclusion proof. See docs/statements.md.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

import duckdb
from number_recycling_client.ledger.entries import NO_TENURE, EntryType, PreparedEntry

from pipelines.compliance.exports import state_through
from pipelines.db import transaction
from pipelines.errors import OpeningErasedError, StatementError
from pipelines.ledger import Ledger
from pipelines.ledger.statement import TenureFacts, statement_text, statement_value
from pipelines.lifecycle.views import TenureRow, number_history
from pipelines.numbers import mask

_TENURE_ENTRIES_SQL = """
    -- The tenure's own entries, and the reissue entry (logged under the prior tenure) that began it.
    SELECT idempotency_key FROM ledger_events
    WHERE appended AND msisdn = $m AND (tenure_id = $t OR (type IN ('reissued', 'reissue_violation')
          AND json_extract_string(fields, '$.new_tenure_start') = CAST($s AS VARCHAR)))
    ORDER BY seq
"""


@dataclass(frozen=True)
class IssuedStatement:
    """A statement file's bytes (the number in clear: write it 0600) and what it says."""

    data: bytes
    facts: TenureFacts
    index: int
    checkpoint_size: int


def choose_tenure(
    tenures: Sequence[TenureRow], msisdn: str, tenure: str | None = None, at: dt.date | None = None
) -> TenureFacts:
    """The tenure ``--tenure`` names (its start date or id), the one covering ``at``, else the latest.

    On a day the number changed hands both tenures cover ``at``; the one that began that day is
    chosen (its holder is the one asking "since when"; the prior owner names his by start date).
    """
    rows = [_facts(msisdn, t) for t in tenures]
    if tenure is not None:
        found = [f for f in rows if tenure in (f.tenure_id, f.tenure_start.isoformat())]
    elif at is not None:
        found = [f for f in rows if f.tenure_start <= at and (f.tenure_end is None or at <= f.tenure_end)]
    else:
        found = rows
    if not found:
        known = ", ".join(f.tenure_start.isoformat() for f in rows) or "none"
        asked = f"tenure {tenure}" if tenure is not None else f"tenure covering {at}"
        raise StatementError(
            f"{mask(msisdn)} has no {asked} (tenures starting: {known}); name one with "
            "recycle statement --number N --tenure START, or see recycle show N"
        )
    return max(found, key=lambda f: f.tenure_start)


def _facts(msisdn: str, row: TenureRow) -> TenureFacts:
    end = row["tenure_end"]
    return TenureFacts(
        tenure_id=row["tenure_id"],
        msisdn=msisdn,
        subscriber_ref=row["subscriber_ref"],
        tenure_start=dt.date.fromisoformat(row["tenure_start"]),
        tenure_end=None if end is None else dt.date.fromisoformat(end),
        end_reason=row["end_reason"],
        opened_by=row["opened_by"],
    )


def _refuse_erased(con: duckdb.DuckDBPyConnection, ledger: Ledger, facts: TenureFacts) -> None:
    """A statement would publish again what an erasure destroyed: refuse it."""
    params = {"m": facts.msisdn, "t": facts.tenure_id, "s": facts.tenure_start}
    for (key,) in con.execute(_TENURE_ENTRIES_SQL, params).fetchall():
        index = ledger.index_of(key)
        if index is None:
            continue
        try:
            ledger.opening(index)
        except OpeningErasedError:
            raise StatementError(
                f"tenure {facts.tenure_id} of {mask(facts.msisdn)} was erased (ledger entry {index} "
                "crypto-shredded on request): no statement can be issued for it"
            ) from None


def issue_statement(
    con: duckdb.DuckDBPyConnection,
    ledger: Ledger,
    msisdn: str,
    *,
    issued_at: dt.datetime,
    zone: dt.tzinfo,
    tenure: str | None = None,
    at: dt.date | None = None,
) -> IssuedStatement:
    """Issue a signed statement of one of ``msisdn``'s tenures (see :func:`choose_tenure`).

    Appends a ``tenure_statement`` entry committing to the facts and publishes a checkpoint
    covering it, so the statement carries its own inclusion proof; the entry is also recorded in
    ``ledger_events`` (appended), so ``recycle erase`` shreds it with the number's other entries.
    ``issued_at`` is the wall clock on purpose: when the statement was made, not a logical date;
    the facts are as of the last night run (``as_of``). Raises :class:`StatementError`.
    """
    tenures = number_history(con, msisdn)["tenures"]
    if not tenures:
        raise StatementError(
            f"{mask(msisdn)} is not on record: no tenure to state; check the number (recycle show N)"
        )
    facts = choose_tenure(tenures, msisdn, tenure, at)
    _refuse_erased(con, ledger, facts)
    as_of = state_through(con)
    if as_of is None or ledger.checkpoint is None:
        raise StatementError("no night has been run into this state yet: run one (recycle run --date D)")
    value = statement_value(
        facts,
        as_of=as_of,
        issuer=ledger.origin,
        signer_key=ledger.verifier.label,
        issued_at=issued_at,
        zone=zone,
    )
    key = f"tenure_statement:{facts.tenure_id}:{value.get('issued_at')}"
    _record_statement(con, key, facts, as_of)
    (index,) = ledger.append([PreparedEntry(key, EntryType.TENURE_STATEMENT, value, tenure_ref=NO_TENURE)])
    checkpoint = ledger.publish_checkpoint()
    # The text is signed from the logged value: a second issue in the same second reuses the entry.
    data = ledger.sign_note(statement_text(ledger.opening(index).value)) + ledger.proof_file(index)
    return IssuedStatement(data, facts, index, checkpoint.size)


def _record_statement(con: duckdb.DuckDBPyConnection, key: str, facts: TenureFacts, as_of: dt.date) -> None:
    """The statement's row in the ledger queue, already appended: erasure and evidence find it.

    Recorded before the append: a crash in between leaves a row whose key is not in the log,
    which every reader skips (``ledger.index_of`` is None); the other order could leave an entry
    that erasure never finds.
    """
    with transaction(con):
        con.execute(
            """
            INSERT INTO ledger_events
            SELECT coalesce((SELECT max(seq) FROM ledger_events), 0) + 1, $k, $d, $d, 'tenure_statement',
                   $m, $t, $s, $e, '{}', true
            WHERE $k NOT IN (SELECT idempotency_key FROM ledger_events)
            """,
            {
                "k": key,
                "d": as_of,
                "m": facts.msisdn,
                "t": facts.tenure_id,
                "s": facts.tenure_start,
                "e": facts.tenure_end,
            },
        )
