"""``nrc check`` / ``recycle check``: answer from the verified copy a pull stored, without the
network, through the one answer rule (:mod:`number_recycling_client.answer`)."""

from __future__ import annotations

import datetime as dt
import re
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from number_recycling_client.answer import Verdict, answer, spans_from_feed
from number_recycling_client.errors import TerminalError
from number_recycling_client.store import connect

E164 = re.compile(r"\+[1-9][0-9]{4,14}")
_DATES = frozenset({"disconnected_on", "released_on", "reissued_on", "feed_date"})


@dataclass(frozen=True)
class LocalAnswer:
    recycled: bool
    row: dict[str, Any] | None  # the feed row that says why (the first change on or after the date)
    covered_from: dt.date  # first feed day stored; answers are only about events since


class LocalFeed:
    """The pulled feed, opened read-only, for many local checks (``with LocalFeed(dir) as feed``)."""

    _COLS: tuple[str, ...] = ("seq", "msisdn", "event", "disconnected_on", "released_on", "reissued_on")
    _COLS += ("region", "feed_date", "prior_end")

    def __init__(self, state_dir: Path) -> None:
        self._con: sqlite3.Connection = connect(state_dir, read_only=True)
        first = self._con.execute("SELECT min(feed_date) FROM manifests").fetchone()
        if first is None or first[0] is None:
            self._con.close()
            raise TerminalError(f"{state_dir} holds no verified feed yet; run `nrc pull` first")
        self.covered_from = dt.date.fromisoformat(first[0])

    def __enter__(self) -> LocalFeed:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._con.close()

    def check(self, e164: str, since: dt.date) -> LocalAnswer:
        """Was ``e164`` recycled since ``since``? (FCC RND ``yes``/``no``)

        The one answer rule over the number's feed rows and pending-list rows: yes when a prior
        subscriber's tenure ended on or after ``since``, a reissue came after it, or the number
        was released and nobody holds it since. "no" means nothing in the feed says so.
        """
        if not E164.fullmatch(e164):
            raise TerminalError("the number is not in E.164 form; give it as +<country code><number>")
        found = self._rows(
            f"SELECT {', '.join(self._COLS)} FROM feed_rows WHERE msisdn = ? ORDER BY seq", e164
        )
        found += self._rows(
            "SELECT seq, msisdn, event, disconnected_on, NULL, NULL, region, feed_date, cause "
            "FROM notice_rows WHERE msisdn = ? ORDER BY seq",
            e164,
        )
        spans = spans_from_feed(
            [(r["event"], r["disconnected_on"], r["reissued_on"], r["prior_end"]) for r in found]
        )
        recycled = answer(spans, since).verdict == Verdict.TRUE
        return LocalAnswer(recycled, why(found, since) if recycled else None, self.covered_from)

    def _rows(self, sql: str, e164: str) -> list[dict[str, Any]]:
        out = []
        for values in self._con.execute(sql, [e164]).fetchall():
            row = dict(zip(self._COLS, values, strict=True))
            out.append({k: dt.date.fromisoformat(v) if k in _DATES and v else v for k, v in row.items()})
        return out


def check_local(state_dir: Path, e164: str, since: dt.date) -> LocalAnswer:
    """One local check (see :meth:`LocalFeed.check`)."""
    with LocalFeed(state_dir) as feed:
        return feed.check(e164, since)


def why(rows: list[dict[str, Any]], since: dt.date) -> dict[str, Any] | None:
    """The row to show: the first that lists a change on or after ``since``, else the last."""
    for row in rows:
        if (row["disconnected_on"] or dt.date.min) >= since or (row["reissued_on"] or dt.date.min) > since:
            return row
    return rows[-1] if rows else None
