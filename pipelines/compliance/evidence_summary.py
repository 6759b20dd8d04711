"""A one-page human summary of one number's evidence, for a dispute.

:func:`render_evidence_summary` writes, into one folder, the machine-readable evidence bundle
(``pipelines.ledger.evidence.write_number_evidence``: one C2SP ``tlog-proof`` per ledger entry,
``index.json``, ``vkey``) and ``summary.html`` beside it: the number's tenures, the reminders
with their channels, dates and receipts, the release and reissue, and the ledger entries with
a link to each proof, plus the exact command that verifies them. The page shows the number
masked everywhere (the people reading it do not need more); the full E.164 is only in the
bundle's canonical values, where the proofs need it.
"""

from __future__ import annotations

import html
import json
import shlex
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import duckdb

from pipelines.compliance.alerts import list_acks
from pipelines.layout import atomic_write_bytes
from pipelines.ledger import Ledger
from pipelines.ledger.evidence import write_number_evidence
from pipelines.lifecycle import number_history
from pipelines.numbers import mask, mask_contact

__all__ = ["render_evidence_summary"]

_CSS = """
body { font-family: system-ui, -apple-system, 'Segoe UI', 'Noto Sans', sans-serif; margin: 0 auto;
  max-width: 1100px; padding: 20px 28px; color: #222; font-size: 14px; }
h1 { font-size: 22px; margin: 0 0 4px; } h2 { font-size: 17px; margin: 22px 0 6px;
  border-bottom: 1px solid #ddd; padding-bottom: 3px; }
table { border-collapse: collapse; font-size: 12.5px; margin: 6px 0; }
th, td { border: 1px solid #ddd; padding: 3px 7px; text-align: left; vertical-align: top;
  white-space: nowrap; } td.wrap { white-space: normal; word-break: break-all; }
th { background: #f0f0f0; } .muted { color: #666; } .bad { color: #b00020; font-weight: 600; }
pre { background: #f6f6f6; padding: 8px 12px; border-radius: 6px; white-space: pre-wrap; }
.warn { background: #fff4e5; border-left: 4px solid #f0a020; padding: 6px 10px; }
@media print { body { max-width: none; padding: 0; font-size: 11px; } }
"""


def _e(value: Any) -> str:
    return "" if value is None else html.escape(str(value))


def _table(
    headers: Sequence[str], rows: Sequence[Sequence[Any]], empty: str, wrap: Sequence[int] = ()
) -> str:
    """An HTML table of already-escaped cells; only the columns in ``wrap`` break lines."""
    if not rows:
        return f'<p class="muted">{html.escape(empty)}</p>'
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="wrap">{cell}</td>' if i in wrap else f"<td>{cell}</td>" for i, cell in enumerate(row)
        )
        + "</tr>"
        for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _text(value: Any) -> Any:
    if isinstance(value, bool):
        return "yes" if value else "no"
    return value


def _address(channel: str, address: str | None) -> str:
    if not address:
        return ""
    if channel == "letter":
        return "postal letter via the print house"
    return mask_contact(address)


def _ledger_rows(
    events: Sequence[Mapping[str, Any]], ledger: Ledger, files: Mapping[int, Mapping[str, Any]]
) -> tuple[list[list[str]], dict[str, list[int]]]:
    """Rows of the ledger table, and the ledger indices of each reminder id."""
    rows: list[list[str]] = []
    by_reminder: dict[str, list[int]] = {}
    for ev in events:
        index = ledger.index_of(str(ev["idempotency_key"])) if ev["appended"] else None
        fields = ev["fields"] or {}
        if index is not None and fields.get("reminder_id"):
            by_reminder.setdefault(str(fields["reminder_id"]), []).append(index)
        item = files.get(index) if index is not None else None
        if index is None:
            proof = '<span class="muted">not in the log yet (next nightly ledger step)</span>'
        elif item is None or item.get("erased"):
            proof = '<span class="bad">opening erased (crypto-shredded)</span>'
        else:
            name = str(item["file"])
            proof = f'<a href="{_e(name)}">{_e(name)}</a>'
        detail = ", ".join(
            f"{k}={_e(_text(fields[k]))}"
            for k in (
                "channel",
                "slot",
                "status",
                "effective_reminders",
                "exception",
                "receipt_sha256",
                "violation",
            )
            if k in fields and fields[k] is not None
        )
        rows.append(
            [
                _e(index if index is not None else "—"),
                _e(ev["type"]),
                _e(ev["on_date"]),
                _e(ev["tenure_id"]),
                detail,
                proof,
            ]
        )
    return rows, by_reminder


def render_evidence_summary(
    con: duckdb.DuckDBPyConnection, ledger: Ledger, msisdn: str, out_dir: Path
) -> Path:
    """Write the evidence bundle of ``msisdn`` (E.164) and ``summary.html`` into ``out_dir``.

    Raises ``LookupError`` when the state has no record of the number. A number on record
    whose facts are not in the ledger yet gets a summary that says so, without proofs.
    """
    history = number_history(con, msisdn)
    if not history["tenures"]:
        raise LookupError(
            f"no record of {mask(msisdn)} in the state: it is not one of ours, or it was never in a drop file"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    files: dict[int, Mapping[str, Any]] = {}
    bundle_note = ""
    try:
        index_path, _ = write_number_evidence(con, ledger, msisdn, out_dir)
    except LookupError as exc:
        bundle_note = f'<p class="warn">{_e(exc)}. There is nothing to verify yet.</p>'
    else:
        doc = json.loads(index_path.read_text(encoding="utf-8"))
        files = {int(item["index"]): item for item in doc["entries"]}

    masked = mask(msisdn)
    ledger_rows, reminder_index = _ledger_rows(history["ledger_events"], ledger, files)
    state: Mapping[str, Any] = history["state"] or {}
    tenures = [
        [
            _e(t["tenure_id"]),
            _e(t["tenure_start"]),
            _e(t["tenure_end"]),
            _e(t["end_reason"]),
            _e(t["region"]),
            _e(t["subscriber_ref"]),
            _e(t["opened_by"]),
        ]
        for t in history["tenures"]
    ]
    reminders = []
    for r in history["reminders"]:
        receipts = "<br>".join(
            f"{_e(rc['status'])} at {_e(str(rc['at']).replace('T', ' '))} UTC (ref {_e(rc['provider_ref'])}; drop of "
            f"{_e(rc['logical_date'])}, line {_e(rc['line_no'])})"
            for rc in r["receipts"]
        )
        entries = ", ".join(str(i) for i in sorted(reminder_index.get(r["reminder_id"], [])))
        reminders.append(
            [
                _e(r["disconnected_on"]),
                _e(r["reminder_no"]),
                _e(r["slot"]),
                _e(r["channel"]),
                _e(_address(str(r["channel"]), r["address"])),
                _e(r["due_on"]),
                _e(r["sent_on"]),
                _e(r["status"]),
                _e(r["effective_on"]),
                receipts,
                _e(entries),
            ]
        )
    releases = [
        [
            _e(r["tenure_id"]),
            _e(r["disconnected_on"]),
            _e(r["released_on"]),
            _e(r["effective_reminders"]),
            '<span class="bad">yes</span>' if r["exception"] else "no",
        ]
        for r in history["releases"]
    ]
    reissues = [
        [
            _e(r["reissue_date"]),
            _e(r["prior_tenure_id"]),
            _e(r["new_tenure_id"]),
            _e(r["released_on"]),
            '<span class="bad">yes</span>' if r["violation"] else "no",
        ]
        for r in history["reissues"]
    ]
    quarantined = [
        [_e(q["logical_date"]), _e(q["file_name"]), _e(q["line_no"]), _e(q["reason"]), _e(q["detail"])]
        for q in history["quarantined"]
    ]
    acks = [
        [_e(a.kind), _e(a.on_date), _e(a.reason), _e(a.acked_by), _e(a.acked_at)]
        for a in list_acks(con, msisdn)
    ]
    folder = shlex.quote(str(out_dir))
    verify = (
        f"<pre>recycle verify {_e(folder)}</pre>"
        "<p>It checks every proof in this folder offline: the entry is in the carrier's signed "
        "log (inclusion proof to a checkpoint signed by the key in <code>vkey</code>), and the "
        "opening reproduces the entry's commitment. Compare <code>vkey</code> with the key the "
        "carrier publishes before trusting the result. One proof alone: "
        f"<code>recycle verify {_e(folder)}/&lt;index&gt;.tlog-proof</code>.</p>"
        if files
        else '<p class="muted">No proofs in this folder yet.</p>'
    )
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Evidence summary {_e(masked)}</title>
<style>{_CSS}</style></head><body>
<h1>Evidence summary — {_e(masked)}</h1>
<p class="muted">Current state: <b>{_e(state.get("state"))}</b> since {_e(state.get("since"))},
region {_e(state.get("region"))}. The number is masked on this page; its full E.164 form is in
<code>index.json</code> only, inside the canonical values the proofs commit to.</p>
{bundle_note}
<h2>How to verify</h2>{verify}
<h2>Tenures</h2>
{
        _table(
            ["tenure", "start", "end (disconnection)", "end reason", "region", "subscriber ref", "opened by"],
            tenures,
            "no tenure",
        )
    }
<h2>Reminders to the prior owner</h2>
<p class="muted">Effective = delivered or acknowledged; the release gate counts effective
reminders on distinct days. Ledger entries are the indices of the entries about the reminder.</p>
{
        _table(
            [
                "disconnection",
                "no.",
                "slot",
                "channel",
                "to",
                "due",
                "sent",
                "status",
                "effective",
                "receipts",
                "ledger entries",
            ],
            reminders,
            "no reminder",
            wrap=(9,),
        )
    }
<h2>Release</h2>
{_table(["tenure", "disconnected", "released", "effective reminders", "exception"], releases, "not released")}
<h2>Reissue</h2>
{_table(["reissue date", "prior tenure", "new tenure", "released on", "violation"], reissues, "not reissued")}
<h2>Ledger entries and proofs</h2>
{_table(["index", "type", "date", "tenure", "details", "proof"], ledger_rows, "no ledger entry", wrap=(4,))}
<h2>Quarantined rows about this number</h2>
{_table(["night", "file", "line", "reason", "detail"], quarantined, "none", wrap=(4,))}
<h2>Operations acknowledgements</h2>
{_table(["kind", "date", "reason", "by", "at (UTC)"], acks, "none", wrap=(2,))}
</body></html>
"""
    path = out_dir / "summary.html"
    atomic_write_bytes(path, page.encode("utf-8"))
    return path
