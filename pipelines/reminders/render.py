"""The outbox: each due reminder's text rendered once per template group (zh-CN/en, channel,
cause) and specialised per number, with its idempotency key.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from typing import Any

import pyarrow as pa

from pipelines.config import Settings
from pipelines.db import Con
from pipelines.lifecycle.sql import count_of, drop_tables, run_sql
from pipelines.reminders.ids import temp_table_from_rows
from pipelines.reminders.templates import ReminderContext, RenderedReminder, render_reminder

log = logging.getLogger(__name__)

# The temp tables of one render_due call: each created by the phase named, all dropped together
# when the call ends.
_TEMP_TABLES = (
    "_todo",  # the due reminders not yet in the outbox, with their template group: _find_todo
    "_tpl",  # one checked text per template group: _render_by_template
    "_bad",  # the groups that failed the check: _render_one_by_one
)

# --------------------------------------------------------------------------- render

# Which text a reminder takes, from its slot (templates.Kind): a hold reminder and its fallbacks
# are urgent, an urgent notice says what happened; the rest are the regular reminders.
_KIND_SQL = """CASE WHEN r.slot = 'urgent:exception' THEN 'exception'
                    WHEN r.slot = 'urgent:violation' THEN 'violation'
                    WHEN regexp_replace(r.slot, '^fallback:', '') LIKE 'hold%' THEN 'hold'
                    ELSE 'reminder' END"""


_CTX_COLUMNS = (
    "reminder_id, msisdn, masked, channel, language, disconnected_on, release_on, "
    "reminder_no, final, cause, kind, gkey"
)
_N_CTX = 12  # the columns of _CTX_COLUMNS; the group key is the last of them
_GKEY = _N_CTX - 1


def _context(settings: Settings, row: Sequence[Any]) -> ReminderContext:
    rid, msisdn, _masked, channel, language, disconnected, release, no, final, cause, kind, _g = row
    return ReminderContext(
        reminder_id=rid,
        msisdn=msisdn,
        channel=channel,
        language=language,
        disconnected_on=disconnected,
        release_on=release,
        reminder_no=int(no),
        final=bool(final),
        carrier_name=settings.carrier_name,
        unbind_url=settings.unbind_url,
        national_unbind_service=settings.national_unbind_service,
        cause=cause,
        kind=kind,
    )


_TEMPLATE_SCHEMA = pa.schema(
    [
        ("gkey", pa.string()),
        ("subject", pa.string()),
        ("text", pa.string()),
        ("html", pa.string()),
        ("lang", pa.string()),
        ("ex_masked", pa.string()),
        ("ex_id", pa.string()),
    ]
)


def _swap(text: str | None, ex_masked: str, ex_id: str, masked: str, rid: str) -> str | None:
    # Same order as the SQL replace() below.
    return None if text is None else text.replace(ex_masked, masked).replace(ex_id, rid)


def render_due(con: Con, settings: Settings, day: dt.date) -> tuple[int, int]:
    """Render due reminders into the outbox; returns (rendered, of those rendered one by one).

    Rendering one by one costs ~70 µs a reminder in Python; a night of a million would take
    over a minute. Reminders that differ only in number and id share a text, so each group
    (channel, language, cause, ordinal, dates, country code, mask length) is rendered once
    and filled in by SQL ``replace``. A second member of every group is rendered for real and
    must match the filled-in text, else the whole group is rendered one by one: a template
    that used the number or id in any other way cannot slip through.
    """
    if not _find_todo(con, day):
        drop_tables(con, _TEMP_TABLES)
        return 0, 0
    templates, bad = _check_templates(settings, _group_samples(con))
    if bad:
        log.warning("%d reminder group(s) did not fit the template fast path; rendered one by one", len(bad))
    rendered_n = _render_by_template(con, day, templates) if templates else 0
    one_by_one = _render_one_by_one(con, settings, day, bad) if bad else 0
    drop_tables(con, _TEMP_TABLES)
    return rendered_n + one_by_one, one_by_one


def _find_todo(con: Con, day: dt.date) -> int:
    """``_todo``: the scheduled reminders due by ``day`` that have no outbox row yet, each with
    its masked number and template group key. Returns how many there are."""
    run_sql(
        con,
        f"""
        CREATE OR REPLACE TEMP TABLE _todo AS
        WITH c AS (
            -- Reminders of a number that left its disconnection (restore, port, release,
            -- reissue) were cancelled by that transition: every scheduled one is current.
            SELECT r.reminder_id, r.msisdn, r.channel, r.address, r.language, r.due_on,
                   r.reminder_no, r.final, r.disconnected_on,
                   -- An urgent notice names the day that already happened (release, reissue).
                   CASE WHEN r.slot LIKE 'urgent:%' THEN r.release_on
                        ELSE greatest(r.release_on, $d + 1) END AS release_on,
                   CASE WHEN r.cause = 'suspend' THEN 'suspend' ELSE 'cancel' END AS cause,
                   {_KIND_SQL} AS kind
            FROM reminders r
            WHERE r.status = 'scheduled' AND r.due_on <= $d
        ), n AS (
            SELECT c.* FROM c ANTI JOIN (SELECT reminder_id FROM outbox SEMI JOIN c USING (reminder_id)) o
                USING (reminder_id)
        ), m AS (
            SELECT n.*, nr_mask(n.msisdn) AS masked FROM n
        )
        SELECT m.*, concat_ws('|', channel, language, cause, kind, reminder_no, final, disconnected_on,
                              release_on, substr(msisdn, 1, 1 + nr_cc_len(msisdn)), length(masked))
                        AS gkey
        FROM m
        """,
        {"d": day},
    )
    return count_of(con, "SELECT count(*) FROM _todo")


def _group_samples(con: Con) -> list[Any]:
    """The two members with the smallest ids of every group (``_CTX_COLUMNS`` and their rank)."""
    # An aggregate, not a window, which would sort every row of the day's outbox.
    return run_sql(
        con,
        f"""
        SELECT {_CTX_COLUMNS}, s.gi FROM _todo JOIN (
            SELECT unnest(ids) AS reminder_id, unnest(range(1, len(ids) + 1)) AS gi
            FROM (SELECT min(reminder_id, 2) AS ids FROM _todo GROUP BY gkey)) s USING (reminder_id)
        ORDER BY gkey, s.gi
        """,
    ).fetchall()


def _check_templates(
    settings: Settings, samples: Sequence[Sequence[Any]]
) -> tuple[list[dict[str, Any]], list[str]]:
    """Render the samples; (the template of every group whose second member matches its
    filled-in first, the keys of the groups that do not)."""
    exemplars: dict[str, tuple[Sequence[Any], RenderedReminder]] = {}
    bad: list[str] = []
    for row in samples:
        gkey, gi = row[_GKEY], row[_N_CTX]
        rendered = render_reminder(_context(settings, row[:_N_CTX]))
        if gi == 1:
            exemplars[gkey] = (row, rendered)
            continue
        ex_row, ex = exemplars[gkey]
        args = (str(ex_row[2]), str(ex_row[0]), str(row[2]), str(row[0]))
        same = (
            _swap(ex.subject, *args) == rendered.subject
            and _swap(ex.text, *args) == rendered.text
            and _swap(ex.html, *args) == rendered.html
            and ex.language == rendered.language
        )
        if not same:
            bad.append(gkey)
    templates = [
        {
            "gkey": gkey,
            "subject": ex.subject,
            "text": ex.text,
            "html": ex.html,
            "lang": ex.language,
            "ex_masked": ex_row[2],
            "ex_id": ex_row[0],
        }
        for gkey, (ex_row, ex) in exemplars.items()
        if gkey not in bad
    ]
    return templates, bad


def _render_by_template(con: Con, day: dt.date, templates: list[dict[str, Any]]) -> int:
    """``_tpl`` from ``templates``; the outbox rows of their groups filled in by SQL. Returns how many."""
    temp_table_from_rows(con, "_tpl", templates, _TEMPLATE_SCHEMA)
    run_sql(
        con,
        """
        INSERT INTO outbox
        SELECT t.reminder_id, t.reminder_id, t.channel, t.address, p.lang,
               replace(replace(p.subject, p.ex_masked, t.masked), p.ex_id, t.reminder_id),
               replace(replace(p.text, p.ex_masked, t.masked), p.ex_id, t.reminder_id),
               replace(replace(p.html, p.ex_masked, t.masked), p.ex_id, t.reminder_id),
               t.due_on, 'pending', 0, NULL, NULL, $d
        FROM _todo t JOIN _tpl p USING (gkey)
        """,
        {"d": day},
    )
    return count_of(con, "SELECT count(*) FROM _todo SEMI JOIN _tpl USING (gkey)")


def _render_one_by_one(con: Con, settings: Settings, day: dt.date, bad: list[str]) -> int:
    """``_bad`` from the group keys ``bad``; their outbox rows rendered one by one. Returns how many."""
    run_sql(con, "CREATE OR REPLACE TEMP TABLE _bad (gkey VARCHAR)")
    con.executemany("INSERT INTO _bad VALUES (?)", [[g] for g in bad])
    rows = run_sql(
        con,
        f"""
        SELECT {_CTX_COLUMNS}, address, due_on FROM _todo SEMI JOIN _bad USING (gkey)
        ORDER BY reminder_id
        """,
    ).fetchall()
    out: list[dict[str, Any]] = []
    for row in rows:
        r = render_reminder(_context(settings, row[:_N_CTX]))
        out.append(
            {
                "reminder_id": row[0],
                "channel": row[3],
                "address": row[_N_CTX],
                "language": r.language,
                "subject": r.subject,
                "text": r.text,
                "html": r.html,
                "due_on": row[_N_CTX + 1],
            }
        )
    if out:
        con.register("_one_arrow", pa.Table.from_pylist(out))
        try:
            run_sql(
                con,
                """
                INSERT INTO outbox
                SELECT reminder_id, reminder_id, channel, address, language, subject, text, html,
                       due_on, 'pending', 0, NULL, NULL, $d
                FROM _one_arrow ORDER BY reminder_id
                """,
                {"d": day},
            )
        finally:
            con.unregister("_one_arrow")
    return len(out)
