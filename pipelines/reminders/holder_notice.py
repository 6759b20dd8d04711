"""The new holder's notice at sale (issue 15, deliverable 1): when a reissue is recorded, one SMS
to the recycled number itself saying it was used before, and what the platforms told of it
answered as of that night (:func:`pipelines.compliance.notifications.platform_outcomes`: named
only when they agreed to be, the others counted; nothing about the prior holder).

Why SMS to the number itself: the reissue drop carries no contact of the new holder, and the
new holder is exactly who holds the SIM after the sale. It is the one message that goes to a
recycled number: every reminder of the prior owner is refused that address
(``schedule._sms_blocked_sql``), because before the sale a text there reaches the wrong person.
The prior owner's contacts are never read here: only ``reissues`` and ``number_state``.

Rows live in ``holder_notices`` (not ``reminders``: a holder notice is no reminder of the prior
owner and must never count at a release gate) and in the ``outbox`` under the deterministic
notice id, so the normal send step sends them, journals them and never twice; the send step
calls :func:`record_holder_notice_results` with its results, which queues one
``holder_notice_sent`` ledger entry per notice sent, on the recycled tenure.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from typing import Any

import pyarrow as pa

from pipelines.compliance.notifications import platform_outcomes
from pipelines.config import Settings
from pipelines.db import Con
from pipelines.lifecycle.queue import queue_ledger
from pipelines.lifecycle.sql import count_of, run_sql
from pipelines.reminders.ids import temp_table_from_rows
from pipelines.reminders.templates import HolderNoticeContext, render_holder_notice

_ROWS = pa.schema(
    [
        ("notice_id", pa.string()),
        ("msisdn", pa.string()),
        ("tenure_id", pa.string()),
        ("prior_tenure_id", pa.string()),
        ("prior_start", pa.date32()),
        ("prior_end", pa.date32()),
        ("reissue_date", pa.date32()),
        ("language", pa.string()),
        ("outcomes", pa.string()),
        ("text", pa.string()),
    ]
)


def holder_notice_id(tenure_id: str, channel: str = "sms") -> str:
    """``'H' + sha256(new tenure|new_holder|channel)[:20]``: one notice per sale, never two."""
    return "H" + hashlib.sha256(f"{tenure_id}|new_holder|{channel}".encode()).hexdigest()[:20]


def holder_language(settings: Settings) -> str:
    """The new holder's language. The reissue drop names none, so the carrier's default: zh-CN
    for a Chinese carrier (``default_region = "CN"``), else en."""
    return "zh-CN" if settings.default_region.upper() == "CN" else "en"


def schedule_holder_notices(con: Con, settings: Settings, day: dt.date) -> int:
    """Queue, rendered, one notice for the new holder of every number reissued tonight that still
    holds it (a later event of the same night may have ended the new tenure); returns how many.

    Runs inside the schedule step's transaction; a rerun finds each notice id on record and adds
    nothing. The platforms' answers are taken as of ``day`` (the night runs after it ended), so
    the text says "as of D"; later answers are for ``recycle new-owner`` (the same rule)."""
    due = _due(con, day)
    if not due:
        return 0
    outcomes = platform_outcomes(settings, {r["msisdn"]: r["prior_end"] for r in due}, day)
    language = holder_language(settings)
    rows = []
    for r in due:
        o = outcomes[r["msisdn"]]
        ctx = HolderNoticeContext(r["notice_id"], r["msisdn"], language, o, settings.carrier_name)
        rows.append(
            {**r, "language": language, "outcomes": json.dumps(o), "text": render_holder_notice(ctx).text}
        )
    temp_table_from_rows(con, "_hn", rows, _ROWS)
    run_sql(
        con,
        """
        INSERT INTO holder_notices
        SELECT notice_id, msisdn, tenure_id, prior_tenure_id, prior_start, prior_end, reissue_date,
               $d, 'sms', language, outcomes, 'pending', NULL, $d FROM _hn
        """,
        {"d": day},
    )
    # Addressed to the number itself (sealed like every address): see the module docstring.
    run_sql(
        con,
        """
        INSERT INTO outbox
        SELECT notice_id, notice_id, 'sms', contact_seal(msisdn), language, '', text, NULL, $d,
               'pending', 0, NULL, NULL, $d FROM _hn
        """,
        {"d": day},
    )
    run_sql(con, "DROP TABLE _hn")
    return len(rows)


def _due(con: Con, day: dt.date) -> list[dict[str, Any]]:
    """Tonight's reissues of a number with a prior tenure whose new tenure is still the number's,
    without a notice yet. A number never seen before has no prior tenure: nothing was recycled
    on record, so there is nothing to tell (as ``recycle new-owner`` says)."""
    cur = run_sql(
        con,
        """
        SELECT r.msisdn, r.new_tenure_id, r.prior_tenure_id, r.reissue_date,
               coalesce(r.disconnected_on, r.reissue_date) AS prior_end
        FROM reissues r
        JOIN number_state s ON s.msisdn = r.msisdn AND s.tenure_id = r.new_tenure_id AND s.state = 'active'
        WHERE r.logical_date = $d AND r.prior_tenure_id IS NOT NULL
        ORDER BY r.msisdn
        """,
        {"d": day},
    )
    rows = []
    for msisdn, tenure, prior, reissued, prior_end in cur.fetchall():
        notice = holder_notice_id(tenure)
        rows.append(
            {
                "notice_id": notice,
                "msisdn": msisdn,
                "tenure_id": tenure,
                "prior_tenure_id": prior,
                "reissue_date": reissued,
                "prior_end": prior_end,
            }
        )
    if not rows:
        return []
    known = {
        n
        for (n,) in run_sql(
            con,
            "SELECT notice_id FROM holder_notices WHERE notice_id IN (SELECT unnest($ids))",
            {"ids": [r["notice_id"] for r in rows]},
        ).fetchall()
    }
    starts = dict(
        run_sql(
            con,
            "SELECT tenure_id, tenure_start FROM tenures WHERE tenure_id IN (SELECT unnest($ids))",
            {"ids": [r["prior_tenure_id"] for r in rows]},
        ).fetchall()
    )
    return [
        {**r, "prior_start": starts.get(r["prior_tenure_id"])} for r in rows if r["notice_id"] not in known
    ]


def record_holder_notice_results(con: Con, day: dt.date) -> None:
    """After a send batch (``_res``: reminder_id, result, provider_ref, error): the holder notices
    in it marked sent or failed, and one ``holder_notice_sent`` ledger fact per notice sent.

    The fact is filed under the recycled (prior) tenure, beside its ``reissued`` entry, so the
    public log shows per recycling that the new holder was told; the committed value (private)
    holds the notice id, when it was sent, the day its answers were taken and the text's SHA-256."""
    if not count_of(con, "SELECT count(*) FROM _res WHERE reminder_id LIKE 'H%'"):
        return
    run_sql(
        con,
        """
        UPDATE holder_notices SET
            status = CASE WHEN holder_notices.status = 'sent' THEN 'sent'
                          WHEN r.result = 'sent' THEN 'sent'
                          WHEN r.result = 'failed' THEN 'failed' ELSE holder_notices.status END,
            sent_on = CASE WHEN r.result = 'sent' THEN coalesce(holder_notices.sent_on, $d)
                           ELSE holder_notices.sent_on END
        FROM _res r WHERE holder_notices.notice_id = r.reminder_id
        """,
        {"d": day},
    )
    queue_ledger(
        con,
        day,
        """
        SELECT concat('holder_notice_sent:', h.notice_id), $d, 'holder_notice_sent', h.msisdn,
               h.prior_tenure_id, h.prior_start, h.prior_end,
               json_object('notice_id', h.notice_id, 'channel', h.channel, 'sent_on', $d,
                           'as_of', h.as_of, 'reissued_on', h.reissue_date,
                           'disconnected_on', h.prior_end, 'provider_ref', r.provider_ref,
                           'text_sha256', sha256(o.text), 'language', h.language)
        FROM _res r JOIN holder_notices h ON h.notice_id = r.reminder_id
        JOIN outbox o ON o.reminder_id = h.notice_id
        WHERE r.result = 'sent'
        """,
    )
