"""The compliance report for auditors: one self-contained HTML page plus a CSV per table.

``recycle report --from D1 --to D2 --out DIR`` → :func:`build_report`. Every figure is one
set-based DuckDB query over the state file (a province's night is a million rows; only the
aggregates reach Python), every chart is drawn from a table that is also written as CSV
beside the page, and numbers appear masked (``138****5678``) everywhere in it. plotly.js is
inlined, so the page opens without a network. Nothing depends on the wall clock: the same
state and period give the same bytes.

Dates are the dates of the events themselves: a disconnection counts on the day the tenure
ended (the cancel date, or the start of a 双停 suspension that became final), a release on
its release date, a hold on the day the gate held the number, a reissue on the reissue date.
Definitions are repeated on the page and in ``docs/auditing.md``.
"""

from __future__ import annotations

import datetime as dt
import html
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import plotly.graph_objects as go
import plotly.io as pio
import pyarrow as pa
import pyarrow.csv as pacsv
from plotly.offline import get_plotlyjs
from plotly.subplots import make_subplots

from pipelines.compliance.alerts import has_ack_table
from pipelines.compliance.exports import END_REASONS_SQL, arrow_query, state_through
from pipelines.config import Settings
from pipelines.db import Con
from pipelines.errors import TerminalError
from pipelines.layout import atomic_write_bytes
from pipelines.lifecycle.sql import expand_sql
from pipelines.spreadsheet import csv_safe_table

__all__ = ["HEADLINE", "ReportSummary", "build_report"]

HTML_ROWS = 500  # rows of a listing shown on the page; the CSV beside it has them all
TOP_REGIONS = 12  # regions drawn by name in stacked charts; the rest are summed as "other"

# (key, label, explanation) of the headline figures, in page order.
HEADLINE: tuple[tuple[str, str, str], ...] = (
    ("disconnections", "Disconnections", "tenures that ended for good in the period (not ports)"),
    ("released", "Released", "numbers released for reissue in the period, with or without exception"),
    (
        "released_with_exception",
        "Released with exception",
        "released after max_hold_days without the required effective reminders",
    ),
    ("entered_hold", "Held at the gate", "times the gate held a number in the period"),
    ("held_now", "Held now", "numbers held when the state was last updated"),
    ("reissues", "Reissues", "numbers sold to a new subscriber in the period"),
    ("reissue_violations", "Reissue violations", "reissues of numbers the gate had not released"),
    ("unacknowledged", "Open alerts", "violations and exceptions in the period nobody acknowledged"),
    ("quarantined", "Quarantined rows", "drop-file rows set aside in the period (see reasons below)"),
)

_SQL: dict[str, str] = {
    "daily_by_region": f"""
        WITH ev AS (
            SELECT tenure_end AS day, region, 'disconnections' AS what FROM tenures
            WHERE tenure_end BETWEEN $f AND $t AND end_reason IN {END_REASONS_SQL}
            UNION ALL
            SELECT released_on, region, CASE WHEN exception THEN 'released_with_exception'
                                             ELSE 'released_clean' END FROM releases
            WHERE released_on BETWEEN $f AND $t
            UNION ALL
            SELECT h.on_date, t.region, 'entered_hold' FROM state_history h
            JOIN tenures t USING (tenure_id)
            WHERE h.to_state = 'held' AND h.on_date BETWEEN $f AND $t
            UNION ALL
            SELECT reissue_date, region, CASE WHEN violation THEN 'reissue_violations'
                                              ELSE 'reissues_clean' END FROM reissues
            WHERE reissue_date BETWEEN $f AND $t
        )
        SELECT day, region,
               count(*) FILTER (WHERE what = 'disconnections') AS disconnections,
               count(*) FILTER (WHERE what LIKE 'released%') AS released,
               count(*) FILTER (WHERE what = 'released_with_exception') AS released_with_exception,
               count(*) FILTER (WHERE what = 'entered_hold') AS entered_hold,
               count(*) FILTER (WHERE what LIKE 'reissue%') AS reissues,
               count(*) FILTER (WHERE what = 'reissue_violations') AS reissue_violations
        FROM ev GROUP BY day, region ORDER BY day, region
    """,
    # A reminder belongs to the period by its due date. Stages are cumulative: a reminder
    # acknowledged was also delivered and sent; cancelled ones (restore, release…) were never sent.
    "reminders": """
        SELECT r.channel, t.region,
               count(*) FILTER (WHERE r.status <> 'cancelled') AS scheduled,
               count(*) FILTER (WHERE r.sent_on IS NOT NULL
                                OR r.status IN ('delivered', 'acknowledged')) AS sent,
               count(*) FILTER (WHERE r.status IN ('delivered', 'acknowledged')) AS delivered,
               count(*) FILTER (WHERE r.status = 'acknowledged') AS acknowledged,
               count(*) FILTER (WHERE r.status IN ('failed', 'expired')) AS failed,
               count(*) FILTER (WHERE r.status = 'scheduled') AS not_yet_sent,
               count(*) FILTER (WHERE r.status = 'cancelled') AS cancelled
        FROM reminders r JOIN tenures t USING (tenure_id)
        WHERE r.due_on BETWEEN $f AND $t
        GROUP BY ALL
    """,
    "days_to_release": """
        SELECT datediff('day', disconnected_on, released_on) AS days,
               count(*) AS released,
               count(*) FILTER (WHERE exception) AS released_with_exception
        FROM releases WHERE released_on BETWEEN $f AND $t
        GROUP BY days ORDER BY days
    """,
    "effective_reminders": """
        SELECT effective_reminders, count(*) AS released,
               count(*) FILTER (WHERE exception) AS released_with_exception
        FROM releases WHERE released_on BETWEEN $f AND $t
        GROUP BY effective_reminders ORDER BY effective_reminders
    """,
    # nr_mask(m) is pipelines.numbers.mask in SQL (pipelines.lifecycle.sql.expand_sql).
    "exceptions": """
        SELECT nr_mask(r.msisdn) AS number, r.region, r.disconnected_on, r.released_on,
               r.effective_reminders,
               ack.reason IS NOT NULL AS acknowledged, ack.reason AS ack_reason,
               ack.acked_by AS ack_by
        FROM releases r
        LEFT JOIN ({acks}) ack ON ack.kind = 'release_exception'
             AND ack.m = r.msisdn AND ack.on_date = r.released_on
        WHERE r.exception AND r.released_on BETWEEN $f AND $t
        ORDER BY released_on, number, region
    """,
    "violations": """
        SELECT nr_mask(r.msisdn) AS number, r.region, r.reissue_date, r.disconnected_on AS prior_disconnected_on,
               h.from_state AS state_at_reissue, r.logical_date AS recorded_on,
               ack.reason IS NOT NULL AS acknowledged, ack.reason AS ack_reason,
               ack.acked_by AS ack_by
        FROM reissues r
        LEFT JOIN state_history h ON h.file_sha256 = r.file_sha256 AND h.line_no = r.line_no
             AND h.cause = 'reissue'
        LEFT JOIN ({acks}) ack ON ack.kind = 'reissue_violation'
             AND ack.m = r.msisdn AND ack.on_date = r.reissue_date
        WHERE r.violation AND r.reissue_date BETWEEN $f AND $t
        ORDER BY reissue_date, number, region
    """,
    "quarantine": """
        SELECT stage, reason, count(*) AS rows
        FROM quarantine WHERE logical_date BETWEEN $f AND $t
        GROUP BY ALL ORDER BY stage, rows DESC, reason
    """,
    "acknowledgements": """
        SELECT nr_mask(msisdn) AS number, kind, on_date, reason, acked_by,
               strftime(acked_at, '%Y-%m-%dT%H:%M:%SZ') AS acked_at
        FROM alert_acks ORDER BY acked_at, number, on_date, kind
    """,
}

# The latest acknowledgement of each item (several people may have acknowledged it).
_ACKS = """
    SELECT msisdn AS m, on_date, kind, last(reason ORDER BY acked_at) AS reason,
           last(acked_by ORDER BY acked_at) AS acked_by
    FROM alert_acks GROUP BY ALL
"""
_NO_ACKS = (
    "SELECT NULL::VARCHAR AS m, NULL::DATE AS on_date, NULL::VARCHAR AS kind, "
    "NULL::VARCHAR AS reason, NULL::VARCHAR AS acked_by WHERE false"
)


@dataclass(frozen=True)
class ReportSummary:
    first: dt.date
    last: dt.date
    state_through: dt.date | None  # the last night processed into the state
    html: Path
    csv_files: Mapping[str, Path]  # table name -> CSV path
    headline: Mapping[str, int]  # keys of HEADLINE


# --------------------------------------------------------------------------- data


def _query(con: Con, name: str, params: Mapping[str, Any], acks: bool) -> pa.Table:
    sql = _SQL[name].replace("{acks}", _ACKS if acks else _NO_ACKS)
    used = {k: v for k, v in params.items() if f"${k}" in sql}  # con.sql() refuses unused ones
    return arrow_query(con, expand_sql(sql), used or None)


def _funnel(reminders: pa.Table, by: str) -> pa.Table:
    groups: dict[str, list[int]] = {}
    stages = [c for c in reminders.column_names if c not in ("channel", "region")]
    for row in reminders.to_pylist():  # one row per (channel, region): a few hundred at most
        acc = groups.setdefault(str(row[by]), [0] * len(stages))
        for i, stage in enumerate(stages):
            acc[i] += int(row[stage])
    keys = sorted(groups)
    return pa.table({by: keys, **{s: [groups[k][i] for k in keys] for i, s in enumerate(stages)}})


def _sum(table: pa.Table, column: str) -> int:
    return sum(int(v or 0) for v in table.column(column).to_pylist()) if table.num_rows else 0


def _scalar(con: Con, sql: str, params: Mapping[str, Any] | None = None) -> int:
    row = con.execute(sql, dict(params or {})).fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def _headline(con: Con, tables: Mapping[str, pa.Table], p: Mapping[str, Any]) -> dict[str, int]:
    daily = tables["daily_by_region"]
    exceptions, violations = tables["exceptions"], tables["violations"]
    open_items = sum(1 for v in exceptions.column("acknowledged").to_pylist() if not v) + sum(
        1 for v in violations.column("acknowledged").to_pylist() if not v
    )
    return {
        "disconnections": _sum(daily, "disconnections"),
        "released": _sum(daily, "released"),
        "released_with_exception": _sum(daily, "released_with_exception"),
        "entered_hold": _sum(daily, "entered_hold"),
        "held_now": _scalar(con, "SELECT count(*) FROM number_state WHERE state = 'held'"),
        "reissues": _sum(daily, "reissues"),
        "reissue_violations": _sum(daily, "reissue_violations"),
        "unacknowledged": open_items,
        "quarantined": _scalar(
            con, "SELECT count(*) FROM quarantine WHERE logical_date BETWEEN $f AND $t", p
        ),
    }


def _policy_table(settings: Settings) -> pa.Table:
    codes = ["default", *sorted(c for c in settings.policies if c != "default")]
    pols = [settings.policies[c] for c in codes]
    return pa.table(
        {
            "region": codes,
            "freeze_days": [p.freeze_days for p in pols],
            "suspend_days": [p.suspend_days for p in pols],
            "reminder_offsets": [" ".join(str(o) for o in p.reminder_offsets) for p in pols],
            "min_effective_reminders": [p.min_effective_reminders for p in pols],
            "max_hold_days": [p.max_hold_days for p in pols],
        }
    )


# --------------------------------------------------------------------------- charts

_FONT = "system-ui, -apple-system, 'Segoe UI', 'Noto Sans', 'Noto Sans CJK SC', sans-serif"
_PALETTE = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#17becf",
    "#bcbd22",
    "#393b79",
    "#ad494a",
    "#637939",
    "#7f7f7f",
)
_DAILY_PANELS = (
    ("disconnections", "Disconnections"),
    ("released", "Releases (all)"),
    ("entered_hold", "Numbers held at the gate"),
    ("reissues", "Reissues (all)"),
)


def _layout(fig: go.Figure, title: str, height: int) -> None:
    fig.update_layout(
        title={"text": title, "x": 0.01, "xanchor": "left"},
        template="plotly_white",
        height=height,
        font={"family": _FONT, "size": 13},
        margin={"l": 70, "r": 30, "t": 70, "b": 60},
        legend={"traceorder": "normal"},
    )


def _empty(fig: go.Figure) -> None:
    fig.add_annotation(
        text="no data in this period",
        showarrow=False,
        xref="paper",
        yref="paper",
        x=0.5,
        y=0.5,
        font={"size": 16, "color": "#777"},
    )


def _daily_chart(daily: pa.Table, first: dt.date, last: dt.date) -> go.Figure:
    rows = daily.to_pylist()
    totals: dict[str, int] = {}
    for r in rows:
        totals[r["region"]] = totals.get(r["region"], 0) + sum(int(r[k]) for k, _ in _DAILY_PANELS)
    named = [reg for reg, _ in sorted(totals.items(), key=lambda kv: (-kv[1], kv[0]))][:TOP_REGIONS]
    series = [*sorted(named), *(["other regions"] if len(totals) > len(named) else [])]
    days = [first + dt.timedelta(days=i) for i in range((last - first).days + 1)]
    index = {d: i for i, d in enumerate(days)}
    fig = make_subplots(
        rows=len(_DAILY_PANELS),
        cols=1,
        shared_xaxes=True,
        vertical_spacing=0.05,
        subplot_titles=[t for _, t in _DAILY_PANELS],
    )
    for s_i, region in enumerate(series):
        colour = _PALETTE[s_i % len(_PALETTE)]
        for p_i, (key, _) in enumerate(_DAILY_PANELS):
            y = [0] * len(days)
            for r in rows:
                if r["region"] == region or (region == "other regions" and r["region"] not in named):
                    y[index[r["day"]]] += int(r[key])
            fig.add_trace(
                go.Bar(
                    x=days,
                    y=y,
                    name=region,
                    legendgroup=region,
                    showlegend=p_i == 0,
                    marker_color=colour,
                    hovertemplate=f"{region}<br>%{{x|%Y-%m-%d}}: %{{y}}<extra></extra>",
                ),
                row=p_i + 1,
                col=1,
            )
    fig.update_layout(barmode="stack", legend_title_text="region")
    for p_i, (key, _) in enumerate(_DAILY_PANELS):
        per_day: dict[dt.date, int] = {}
        for r in rows:
            per_day[r["day"]] = per_day.get(r["day"], 0) + int(r[key])
        # Counts are whole numbers: no 0.2-step ticks on a panel whose tallest bar is 1.
        small = max(per_day.values(), default=0) <= 5
        fig.update_yaxes(
            title_text="numbers", rangemode="tozero", dtick=1 if small else None, row=p_i + 1, col=1
        )
    fig.update_xaxes(title_text="date", tickformat="%Y-%m-%d", row=len(_DAILY_PANELS), col=1)
    _layout(fig, "Daily activity per region (stacked)", 260 * len(_DAILY_PANELS))
    if not rows:
        _empty(fig)
    return fig


_STAGES = ("scheduled", "sent", "delivered", "acknowledged")


def _funnel_chart(by_channel: pa.Table, by_region: pa.Table) -> go.Figure:
    fig = make_subplots(
        rows=1,
        cols=2,
        column_widths=[0.45, 0.55],
        horizontal_spacing=0.12,
        subplot_titles=["per channel (reminders)", "per region (share of scheduled reaching the stage)"],
    )
    for i, row in enumerate(by_channel.to_pylist()):
        fig.add_trace(
            go.Bar(
                x=list(_STAGES),
                y=[row[s] for s in _STAGES],
                name=row["channel"],
                marker_color=_PALETTE[i % len(_PALETTE)],
                text=[row[s] for s in _STAGES],
                textposition="outside",
                legendgroup="channel",
                legendgrouptitle_text="channel",
            ),
            row=1,
            col=1,
        )
    regions = by_region.to_pylist()
    z = [[(r[s] / r["scheduled"]) if r["scheduled"] else 0.0 for s in _STAGES] for r in regions]
    text = [
        [f"{r[s]} ({zz:.0%})" for s, zz in zip(_STAGES, zr, strict=True)]
        for r, zr in zip(regions, z, strict=True)
    ]
    if regions:
        fig.add_trace(
            go.Heatmap(
                x=list(_STAGES),
                y=[r["region"] for r in regions],
                z=z,
                text=text,
                texttemplate="%{text}",
                zmin=0,
                zmax=1,
                colorscale="Blues",
                colorbar={"title": {"text": "share"}, "tickformat": ".0%", "x": 1.02},
                hovertemplate="%{y} %{x}: %{text}<extra></extra>",
            ),
            row=1,
            col=2,
        )
    fig.update_layout(
        barmode="group", legend={"orientation": "h", "x": 0, "y": -0.12, "xanchor": "left", "yanchor": "top"}
    )
    fig.update_yaxes(title_text="reminders", rangemode="tozero", row=1, col=1)
    fig.update_yaxes(title_text="region", autorange="reversed", row=1, col=2)
    fig.update_xaxes(title_text="stage", row=1, col=1)
    fig.update_xaxes(title_text="stage", row=1, col=2)
    _layout(
        fig, "Reminder funnel: scheduled → sent → delivered → acknowledged", max(460, 150 + 22 * len(regions))
    )
    if not regions:
        _empty(fig)
    return fig


def _bar_split(
    table: pa.Table, x: str, x_title: str, title: str, line_at: int | None, line_label: str
) -> go.Figure:
    rows = table.to_pylist()
    xs = [r[x] for r in rows]
    fig = go.Figure()
    fig.add_trace(
        go.Bar(
            x=xs,
            y=[r["released"] - r["released_with_exception"] for r in rows],
            name="released",
            marker_color="#2ca02c",
        )
    )
    fig.add_trace(
        go.Bar(
            x=xs,
            y=[r["released_with_exception"] for r in rows],
            name="released with exception",
            marker_color="#d62728",
        )
    )
    fig.update_layout(barmode="stack", bargap=0.15)
    fig.update_xaxes(title_text=x_title, dtick=1 if len(xs) <= 40 else None)
    fig.update_yaxes(title_text="released numbers", rangemode="tozero")
    if line_at is not None:
        # Between the bars: at the line itself a release is allowed, left of it it is not.
        fig.add_vline(
            x=line_at - 0.5,
            line_dash="dash",
            line_color="#555",
            annotation_text=line_label,
            annotation_position="top right",
        )
    _layout(fig, title, 420)
    if not rows:
        _empty(fig)
    return fig


# --------------------------------------------------------------------------- page

_CSS = """
body { font-family: FONT; margin: 0 auto; max-width: 1320px; padding: 24px 32px; color: #222; }
h1 { font-size: 26px; margin: 0 0 4px; } h2 { font-size: 20px; margin: 36px 0 6px;
  border-bottom: 1px solid #ddd; padding-bottom: 4px; }
.sub { color: #555; margin: 0 0 16px; } .warn { background: #fff4e5; border-left: 4px solid #f0a020;
  padding: 8px 12px; } .bad { color: #b00020; font-weight: 600; }
.cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(190px, 1fr)); gap: 12px; }
.card { border: 1px solid #ddd; border-radius: 8px; padding: 10px 14px; background: #fafafa; }
.card .v { font-size: 28px; font-weight: 650; } .card .k { font-weight: 600; }
.card .e { color: #666; font-size: 12px; } .card.alert { border-color: #d62728; background: #fff0f0; }
p.explain { color: #444; max-width: 980px; }
table.t { border-collapse: collapse; font-size: 13px; margin: 8px 0; }
table.t th, table.t td { border: 1px solid #ddd; padding: 4px 8px; text-align: left; }
table.t th { background: #f0f0f0; } table.t td.n { text-align: right; font-variant-numeric: tabular-nums; }
.muted { color: #777; font-size: 12px; }
""".replace("FONT", _FONT)


def _cell(value: Any) -> str:
    if value is None:
        return "<td></td>"
    if isinstance(value, bool):
        return f"<td>{'yes' if value else 'no'}</td>"
    if isinstance(value, int | float):
        return f'<td class="n">{value}</td>'
    return f"<td>{html.escape(str(value))}</td>"


def _html_table(table: pa.Table, csv_name: str, empty: str) -> str:
    if not table.num_rows:
        return f'<p class="muted">{html.escape(empty)}</p>'
    head = "".join(f"<th>{html.escape(c)}</th>" for c in table.column_names)
    rows = table.slice(0, HTML_ROWS).to_pylist()
    body = "".join("<tr>" + "".join(_cell(v) for v in r.values()) + "</tr>" for r in rows)
    more = (
        f'<p class="muted">showing {HTML_ROWS} of {table.num_rows} rows; all are in '
        f'<a href="{csv_name}">{csv_name}</a></p>'
        if table.num_rows > HTML_ROWS
        else f'<p class="muted">CSV: <a href="{csv_name}">{csv_name}</a></p>'
    )
    return f'<table class="t"><tr>{head}</tr>{body}</table>{more}'


def _chart(fig: go.Figure, div_id: str) -> str:
    return str(
        pio.to_html(
            fig,
            full_html=False,
            include_plotlyjs=False,
            div_id=div_id,
            config={"displaylogo": False, "responsive": True},
        )
    )


def _csv_bytes(table: pa.Table) -> bytes:
    # For people, opened in spreadsheets: text cells (regions, references, quarantined lines,
    # platform names) neutralised by the one rule, pipelines.spreadsheet; pyarrow quotes them.
    buf = io.BytesIO()
    pacsv.write_csv(csv_safe_table(table), buf)
    return buf.getvalue()


def _section(anchor: str, title: str, explain: str, body: str, csvs: Sequence[str] = ()) -> str:
    links = ""
    if csvs:
        links = '<p class="muted">data: ' + ", ".join(f'<a href="{c}">{c}</a>' for c in csvs) + "</p>"
    return (
        f'<section id="{anchor}"><h2>{html.escape(title)}</h2>'
        f'<p class="explain">{explain}</p>{body}{links}</section>'
    )


def build_report(con: Con, settings: Settings, first: dt.date, last: dt.date, out_dir: Path) -> ReportSummary:
    """Write ``report.html`` and one CSV per table/chart for the period ``first``..``last``."""
    if last < first:
        raise TerminalError(f"report period {first}..{last} ends before it starts; swap --from/--to")
    through = state_through(con)
    tables, headline = _report_tables(con, settings, first, last)
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_files = _write_csvs(tables, out_dir)
    page = _page(settings, tables, headline, first, last, through)
    html_path = out_dir / "report.html"
    atomic_write_bytes(html_path, page.encode("utf-8"))
    return ReportSummary(first, last, through, html_path, csv_files, headline)


# --------------------------------------------------------------------------- build phases


def _report_tables(
    con: Con, settings: Settings, first: dt.date, last: dt.date
) -> tuple[dict[str, pa.Table], dict[str, int]]:
    """Every table of the report (name -> rows, as its CSV) and the headline figures."""
    p = {"f": first, "t": last}
    acks = has_ack_table(con)
    tables: dict[str, pa.Table] = {
        name: _query(con, name, p, acks) for name in _SQL if name != "acknowledgements"
    }
    reminders = tables.pop("reminders")
    tables["reminder_funnel_by_channel"] = _funnel(reminders, "channel")
    tables["reminder_funnel_by_region"] = _funnel(reminders, "region")
    tables["acknowledgements"] = (
        _query(con, "acknowledgements", p, acks)
        if acks
        else pa.table(
            {
                c: pa.array([], pa.string())
                for c in ("number", "kind", "on_date", "reason", "acked_by", "acked_at")
            }
        )
    )
    tables["policy"] = _policy_table(settings)
    headline = _headline(con, tables, p)
    tables["headline"] = pa.table(
        {
            "figure": [k for k, _, _ in HEADLINE],
            "value": [headline[k] for k, _, _ in HEADLINE],
        }
    )
    return tables, headline


def _write_csvs(tables: Mapping[str, pa.Table], out_dir: Path) -> dict[str, Path]:
    csv_files: dict[str, Path] = {}
    for name, table in sorted(tables.items()):
        path = out_dir / f"{name}.csv"
        atomic_write_bytes(path, _csv_bytes(table))
        csv_files[name] = path
    return csv_files


def _page(
    settings: Settings,
    tables: Mapping[str, pa.Table],
    headline: Mapping[str, int],
    first: dt.date,
    last: dt.date,
    through: dt.date | None,
) -> str:
    """The whole HTML page: header, headline cards, then the sections in page order."""
    period = f"{first.isoformat()} to {last.isoformat()}"
    parts = [
        f"<h1>Number recycling compliance report — {html.escape(settings.carrier_name)}</h1>",
        f'<p class="sub">Period <b>{period}</b> · state through <b>{through or "—"}</b> · numbers '
        "are masked (138****5678) · every chart's data is a CSV file beside this page</p>",
        _state_warning(through, last),
        f'<div class="cards">{_cards(headline)}</div>',
        '<p class="muted">Contents: <a href="#policy">policy</a> · <a href="#daily">daily activity</a>'
        ' · <a href="#funnel">reminder funnel</a> · <a href="#days">time to release</a> · '
        '<a href="#effective">effective reminders</a> · <a href="#violations">violations</a> · '
        '<a href="#exceptions">exceptions</a> · <a href="#quarantine">quarantine</a> · '
        '<a href="#acks">acknowledgements</a></p>',
        *_chart_sections(settings, tables, first, last),
        *_listing_sections(tables),
        '<p class="muted">Generated by <code>recycle report</code> from the nightly state file. '
        'Headline figures: <a href="headline.csv">headline.csv</a>. Definitions: docs/auditing.md.</p>',
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>Compliance report {period}</title><style>{_CSS}</style>"
        f'<script type="text/javascript">{get_plotlyjs()}</script></head>'
        f"<body>{''.join(parts)}</body></html>\n"
    )


_ALERT_CARDS = ("reissue_violations", "unacknowledged", "released_with_exception")


def _cards(headline: Mapping[str, int]) -> str:
    return "".join(
        f'<div class="card{" alert" if key in _ALERT_CARDS and headline[key] else ""}">'
        f'<div class="k">{html.escape(label)}</div><div class="v" id="h-{key}">{headline[key]:,}</div>'
        f'<div class="e">{html.escape(explain)}</div></div>'
        for key, label, explain in HEADLINE
    )


def _state_warning(through: dt.date | None, last: dt.date) -> str:
    if through is None:
        return '<p class="warn">The state file holds no processed night: every figure is empty.</p>'
    if through < last:
        return (
            f'<p class="warn">The state covers nights up to {through}; days after it have no '
            "data yet, and “held now” is as of that night.</p>"
        )
    return ""


def _chart_sections(
    settings: Settings, tables: Mapping[str, pa.Table], first: dt.date, last: dt.date
) -> list[str]:
    """Policy, daily activity, reminder funnel, time to release and effective reminders."""
    default = settings.policies["default"]
    return [
        _section(
            "policy",
            "Policy",
            "The rules the release gate applied. A number is released when its freeze is over "
            f"and it has at least <b>{default.min_effective_reminders}</b> effective reminders "
            "(delivered or acknowledged, on distinct days); otherwise it is held and reminded on "
            f"other channels, and after <b>{default.max_hold_days}</b> days held it is released "
            "with a recorded compliance exception. Reminder offsets are days after the "
            "disconnection; negative ones count back from the end of the freeze. Alert "
            f"threshold for the exception rate: <b>{settings.exception_rate_threshold:.1%}</b>.",
            _html_table(tables["policy"], "policy.csv", "no policy"),
        ),
        _section(
            "daily",
            "Daily disconnections, releases, holds and reissues",
            "One panel per kind of event, one colour per region (the "
            f"{TOP_REGIONS} busiest by name, the rest summed as “other regions”). A disconnection "
            "counts on the day the tenure ended; a release, hold or reissue on the day it "
            "happened. Releases include those with an exception; reissues include violations.",
            _chart(_daily_chart(tables["daily_by_region"], first, last), "chart-daily"),
            ["daily_by_region.csv"],
        ),
        _section(
            "funnel",
            "Reminder funnel",
            "Reminders due in the period. <i>scheduled</i>: not cancelled before sending "
            "(cancelled ones — number restored, ported or released first — are in the CSV); "
            "<i>sent</i>: handed to the channel; <i>delivered</i>: a delivery receipt or an "
            "acknowledgement came back, which makes the reminder effective; <i>acknowledged</i>: "
            "the prior owner answered. Left: per channel; right: per region, each cell the "
            "count and its share of the region's scheduled reminders.",
            _chart(
                _funnel_chart(tables["reminder_funnel_by_channel"], tables["reminder_funnel_by_region"]),
                "chart-funnel",
            ),
            ["reminder_funnel_by_channel.csv", "reminder_funnel_by_region.csv"],
        ),
        *_release_sections(settings, tables),
    ]


def _release_sections(settings: Settings, tables: Mapping[str, pa.Table]) -> list[str]:
    """Time from disconnection to release, and effective reminders per released number."""
    default = settings.policies["default"]
    return [
        _section(
            "days",
            "Time from disconnection to release",
            "Days between the end of the prior tenure and the release, for numbers released in "
            f"the period. Nothing may be released before the freeze ends (default policy: "
            f"{default.freeze_days} days; a non-payment suspension first runs its {default.suspend_days} days); "
            "the tail beyond it is time spent held at the gate.",
            _chart(
                _bar_split(
                    tables["days_to_release"],
                    "days",
                    "days from disconnection to release",
                    "Days from disconnection to release",
                    default.freeze_days,
                    f"freeze ends: {default.freeze_days} days (default policy) →",
                ),
                "chart-days",
            ),
            ["days_to_release.csv"],
        ),
        _section(
            "effective",
            "Effective reminders per released number",
            "How many effective reminders (on distinct days) each released number's prior owner "
            f"had. Left of the dashed line (policy minimum {default.min_effective_reminders}) only "
            "releases with an exception may appear.",
            _chart(
                _bar_split(
                    tables["effective_reminders"],
                    "effective_reminders",
                    "effective reminders",
                    "Effective reminders per released number",
                    default.min_effective_reminders,
                    f"policy minimum: {default.min_effective_reminders} →",
                ),
                "chart-effective",
            ),
            ["effective_reminders.csv"],
        ),
    ]


def _listing_sections(tables: Mapping[str, pa.Table]) -> list[str]:
    """Violations, exceptions, quarantine and acknowledgements: tables, not charts."""
    return [
        _section(
            "violations",
            "Reissue violations",
            '<span class="bad">Numbers sold again before the gate released them.</span> '
            "<i>state_at_reissue</i> is the state the number was in; <i>recorded_on</i> the night "
            "the reissue was processed. Acknowledged items were reviewed by operations "
            "(<code>recycle alerts ack</code>).",
            _html_table(tables["violations"], "violations.csv", "No reissue violation in the period."),
        ),
        _section(
            "exceptions",
            "Releases with a compliance exception",
            "Numbers released after the maximum hold without the required effective reminders.",
            _html_table(
                tables["exceptions"], "exceptions.csv", "No release with an exception in the period."
            ),
        ),
        _section(
            "quarantine",
            "Quarantined drop-file rows",
            "Rows of the nightly drop files that were set aside, by stage and reason code "
            "(see docs/architecture.md); every row is either accepted or quarantined.",
            _html_table(tables["quarantine"], "quarantine.csv", "No quarantined row in the period."),
        ),
        _section(
            "acks",
            "Acknowledged alerts",
            "Every acknowledgement recorded by operations, with who and why (all dates).",
            _html_table(tables["acknowledgements"], "acknowledgements.csv", "No acknowledgement on record."),
        ),
    ]
