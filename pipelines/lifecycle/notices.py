"""Pending recycle notices: platforms hear of a disconnection the night it happens.

A number enters the ``pending`` list the night its tenure is permanently disconnected (a
cancel, or a 双停 suspension the night it becomes permanent) with its disconnection date and
earliest release date; a restore *withdraws* it with a ``withdrawn`` record (never a silent
disappearance); release and reissue then follow in the recycled feed as before. Each record
is a row of ``notice_events`` with a contiguous ``seq``: the feed publishes a night's rows
(``notices.parquet``) and a push dispatcher can follow the table by ``seq``.

The list is *derived from the state*, not from the day's events: whatever the events and the
gate did, after them a frozen or held number has a pending notice for its disconnection, and a
notice whose tenure is live again is withdrawn. That makes it idempotent for its night, and it
decides what happens to numbers disconnected before this feature existed: they are listed on
the first night that lists pending notices, and their notice period starts then (platforms
get the full lead time the policy promises; a release waits at most ``min_notice_days`` once,
instead of releasing numbers no platform was told about).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from pipelines.config import Settings
from pipelines.db import Con
from pipelines.lifecycle.sql import count_rows, policy_sql, run_sql


@dataclass(frozen=True)
class NoticesReport:
    listed: int  # numbers newly listed as pending tonight
    withdrawn: int  # pending notices withdrawn tonight (the number was restored)


# A pending notice not withdrawn: its key, for the anti-joins below.
_LIVE_PENDING = """
    SELECT p.* FROM notice_events p
    WHERE p.event = 'pending' AND NOT EXISTS (
        SELECT 1 FROM notice_events w WHERE w.event = 'withdrawn'
        AND w.tenure_id = p.tenure_id AND w.disconnected_on = p.disconnected_on)
"""


_NEXT_SEQ = "(SELECT coalesce(max(seq), 0) FROM notice_events)"


def list_notices(con: Con, settings: Settings, day: dt.date) -> NoticesReport:
    """Withdraw the notices of numbers live again, then list the new disconnections (in that
    order: a number cancelled, restored and cancelled again on one night gets both records)."""
    before = count_rows(con, "notice_events")
    # Withdrawn: the notice's tenure is the number's current one, but its disconnection is no
    # longer the live one (restored: active or suspended again; or re-cancelled on a later
    # date). Only numbers changed tonight can have moved (an equality filter, pushed down).
    run_sql(
        con,
        f"""
        INSERT INTO notice_events
        SELECT {_NEXT_SEQ} + row_number() OVER (ORDER BY p.msisdn, p.disconnected_on),
               'withdrawn', p.msisdn, p.tenure_id, p.disconnected_on, p.earliest_release_on,
               p.cause, p.region, $d
        FROM ({_LIVE_PENDING}) p
        JOIN (SELECT * FROM number_state WHERE changed_logical = $d) s
          ON s.msisdn = p.msisdn AND s.tenure_id = p.tenure_id
        WHERE NOT (s.state IN ('frozen', 'held', 'available') AND s.disconnected_on = p.disconnected_on)
        """,
        {"d": day},
    )
    withdrawn = count_rows(con, "notice_events") - before
    notice = policy_sql(settings, "min_notice_days", "s.region")
    # Pending: every frozen or held number without a notice for its disconnection. Two equality
    # filters on the state (an IN is not pushed into the scan).
    run_sql(
        con,
        f"""
        INSERT INTO notice_events
        SELECT {_NEXT_SEQ} + row_number() OVER (ORDER BY s.msisdn),
               'pending', s.msisdn, s.tenure_id, s.disconnected_on,
               greatest(s.freeze_ends, $d + {notice}), s.cause, s.region, $d
        FROM (SELECT * FROM number_state WHERE state = 'frozen'
              UNION ALL SELECT * FROM number_state WHERE state = 'held') s
        WHERE NOT EXISTS (
            SELECT 1 FROM notice_events n WHERE n.event = 'pending'
            AND n.tenure_id = s.tenure_id AND n.disconnected_on = s.disconnected_on)
        """,
        {"d": day},
    )
    listed = count_rows(con, "notice_events") - before - withdrawn
    return NoticesReport(listed=listed, withdrawn=withdrawn)


def notice_served_sql(settings: Settings, tenure: str, disconnected: str, region: str, on: str) -> str:
    """SQL condition, the one notice rule: the disconnection (``tenure``, ``disconnected``) of a
    number in ``region`` had been listed as pending for at least the region's ``min_notice_days``
    on day ``on`` (column names or parameters). The release gate asks it of every due number;
    the compliance alerts of every reissue."""
    notice = policy_sql(settings, "min_notice_days", region)
    return f"""EXISTS (
        SELECT 1 FROM notice_events n WHERE n.event = 'pending' AND n.tenure_id = {tenure}
        AND n.disconnected_on = {disconnected} AND n.logical_date + {notice} <= {on})"""


def notice_listed_sql(tenure: str, disconnected: str) -> str:
    """SQL condition: the disconnection (``tenure``, ``disconnected``) was ever listed as pending
    (numbers released before notices existed never were)."""
    return f"""EXISTS (
        SELECT 1 FROM notice_events n WHERE n.event = 'pending' AND n.tenure_id = {tenure}
        AND n.disconnected_on = {disconnected})"""
