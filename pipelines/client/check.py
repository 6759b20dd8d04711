"""``recycle check``: answer from the verified copy a pull stored, without the network."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb

from pipelines.client.store import STATE_DB, connect
from pipelines.errors import TerminalError
from pipelines.feeds.answer import Verdict, answer, spans_from_feed
from pipelines.numbers import mask, normalise

_E164 = re.compile(r"\+[1-9][0-9]{4,14}")


@dataclass(frozen=True)
class LocalAnswer:
    recycled: bool
    row: dict[str, Any] | None  # the feed row that says why (the first change on or after the date)
    covered_from: dt.date  # first feed day stored; answers are only about events since


class LocalFeed:
    """The pulled feed, opened read-only, for many local checks (``with LocalFeed(dir) as feed``)."""

    _COLS = (
        "seq",
        "msisdn",
        "event",
        "disconnected_on",
        "released_on",
        "reissued_on",
        "region",
        "feed_date",
        "prior_end",
    )

    def __init__(self, state_dir: Path, default_region: str = "CN") -> None:
        if not (state_dir / STATE_DB).exists():
            raise TerminalError(f"{state_dir} holds no pulled feed; run `recycle pull` first")
        self._con = connect(state_dir, read_only=True)
        self._region = default_region
        first = self._con.execute("SELECT min(feed_date) FROM manifests").fetchone()
        if first is None or first[0] is None:
            self._con.close()
            raise TerminalError(f"{state_dir} holds no verified feed yet; run `recycle pull` first")
        self.covered_from: dt.date = first[0]

    def __enter__(self) -> LocalFeed:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._con.close()

    def check(self, number: str, since: dt.date) -> LocalAnswer:
        """Was ``number`` recycled since ``since``? (FCC RND ``yes``/``no``)

        The one answer rule (:mod:`pipelines.feeds.answer`) over the number's feed rows: yes
        when a prior subscriber's tenure ended on or after ``since``, a reissue came after it,
        or the number was released and nobody holds it since. "no" means nothing in the feed
        says so: a disconnection is listed the night it happens (the pending list), and a
        restore withdraws it.
        """
        e164 = number if _E164.fullmatch(number) else normalise(number, self._region)
        if e164 is None:
            raise TerminalError(f"{mask(number)} is not a valid phone number; give it in E.164 (+86...)")
        found = [
            dict(zip(self._COLS, row, strict=True))
            for row in self._con.execute(
                f"SELECT {', '.join(self._COLS)} FROM feed_rows WHERE msisdn = ? ORDER BY seq", [e164]
            ).fetchall()
        ]
        found += self._notices(e164)
        spans = spans_from_feed(
            [(r["event"], r["disconnected_on"], r["reissued_on"], r["prior_end"]) for r in found]
        )
        recycled = answer(spans, since).verdict == Verdict.TRUE
        return LocalAnswer(recycled, _why(found, since) if recycled else None, self.covered_from)

    def _notices(self, e164: str) -> list[dict[str, Any]]:
        """The number's pending-list rows, as feed rows (a store of an older pull has none)."""
        try:
            rows = self._con.execute(
                "SELECT seq, msisdn, event, disconnected_on, NULL, NULL, region, feed_date, cause "
                "FROM notice_rows WHERE msisdn = ? ORDER BY seq",
                [e164],
            ).fetchall()
        except duckdb.CatalogException:
            return []
        return [dict(zip(self._COLS, row, strict=True)) for row in rows]


def check_local(state_dir: Path, number: str, since: dt.date, default_region: str = "CN") -> LocalAnswer:
    """One local check (see :meth:`LocalFeed.check`)."""
    with LocalFeed(state_dir, default_region) as feed:
        return feed.check(number, since)


def _why(rows: list[dict[str, Any]], since: dt.date) -> dict[str, Any] | None:
    """The row to show: the first that lists a change on or after ``since``, else the last."""
    for row in rows:
        if (row["disconnected_on"] or dt.date.min) >= since or (row["reissued_on"] or dt.date.min) > since:
            return row
    return rows[-1] if rows else None
