"""The one-page evidence summary of a number, beside its proof bundle.

The history is made the way the nightly run makes it: rows in the ingest tables, the
lifecycle and reminder steps day by day, e-mails through the real SMTP adapter to the
loopback SMTP simulator, receipts as drop rows, then the real ledger step into a ledger
under the test's data dir. Policy: 10-day freeze, reminders on days 0, 4 and 7 after the
cancel, 2 effective needed. A cancels on day 1, its e-mails of days 1 and 5 are delivered,
it is released on day 11 and reissued on day 12.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pytest

import pipelines.lifecycle as lc
import pipelines.reminders as rm
from pipelines import db
from pipelines.compliance.alerts import acknowledge
from pipelines.compliance.evidence_summary import render_evidence_summary
from pipelines.config import Policy, Settings, SmtpSettings
from pipelines.dev.simulators import GatewaySimulator
from pipelines.ledger import verify_proof_file
from pipelines.ledger.nightly import append_queued_events, open_ledger
from pipelines.numbers import mask, mask_contact
from pipelines.reminders.channels import Channel, LetterBatchChannel, SmtpChannel

D0 = dt.date(2026, 3, 1)
A = "+8613800000001"
B = "+8613800000002"
EMAIL = "li.wei@example.cn"


def day(n: int) -> dt.date:
    return D0 + dt.timedelta(days=n)


@dataclass
class Night:
    """Ingest rows and nightly steps for a tiny history."""

    con: duckdb.DuckDBPyConnection
    settings: Settings
    smtp: SmtpSettings
    lines: dict[str, int] = field(default_factory=dict)

    def _line(self, kind: str, d: dt.date) -> tuple[str, int]:
        name = f"{kind}_{d}.csv"
        sha = hashlib.sha256(name.encode()).hexdigest()
        if sha not in self.lines:
            self.lines[sha] = 1
            self.con.execute(
                "INSERT INTO files VALUES (?, ?, ?, ?, 'ingested', 0, 0, 0, 'utf-8', ',', NULL)",
                [name, kind, sha, d],
            )
        self.lines[sha] += 1
        return sha, self.lines[sha]

    def subscriber(self, d: dt.date, m: str, email: str | None = None) -> None:
        sha, line = self._line("subscribers", d)
        self.con.execute(
            "INSERT INTO subscriber_rows VALUES (?, ?, ?, ?, ?, 'GD', ?, contact_seal(?), NULL, 'zh-CN')",
            [sha, line, d, m, dt.date(2020, 5, 1), f"S{m[-2:]}", email],
        )

    def cancel(self, d: dt.date, m: str) -> None:
        sha, line = self._line("lifecycle", d)
        self.con.execute(
            "INSERT INTO lifecycle_events VALUES (?, ?, ?, ?, 'cancel', ?, 'GD', ?, ?, NULL, NULL, 'zh-CN')",
            [sha, line, d, m, d, f"S{m[-2:]}", dt.date(2020, 5, 1)],
        )

    def reissue(self, d: dt.date, m: str) -> None:
        sha, line = self._line("reissue", d)
        self.con.execute(
            "INSERT INTO reissue_events VALUES (?, ?, ?, ?, ?, 'GD', 'N1')", [sha, line, d, m, d]
        )

    def receipt(self, d: dt.date, reminder_id: str, channel: str, at: dt.date) -> None:
        sha, line = self._line("receipts", d)
        self.con.execute(
            "INSERT INTO receipt_rows VALUES (?, ?, ?, ?, ?, 'delivered', ?, 'ph-77')",
            [sha, line, d, reminder_id, channel, dt.datetime.combine(at, dt.time(10))],
        )

    def run(self, d: dt.date) -> None:
        for fn in (rm.apply_receipts, lc.advance_time, lc.apply_events, rm.schedule_reminders):
            self.con.execute("BEGIN TRANSACTION")
            fn(self.con, self.settings, d)
            self.con.execute("COMMIT")
        channels: dict[str, Channel] = {
            "email": SmtpChannel(self.smtp),
            "letter": LetterBatchChannel(self.settings.data_dir / "letters", d),
        }
        rm.send_reminders(self.con, self.settings, d, channels, sleep=lambda s: None)

    def sent(self, m: str) -> list[tuple[str, str]]:
        return [
            (str(r), str(c))
            for r, c in self.con.execute(
                "SELECT reminder_id, channel FROM reminders WHERE msisdn = ? AND status = 'sent' "
                "ORDER BY due_on, reminder_id",
                [m],
            ).fetchall()
        ]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Night, Settings]]:
    """The history, built once for the module (13 nights); tests that change it roll back."""
    tmp_path = tmp_path_factory.mktemp("evidence")
    settings = Settings(
        data_dir=tmp_path / "data",
        policies={
            "default": Policy(
                freeze_days=10,
                suspend_days=5,
                reminder_offsets=(0, 4, -3),
                min_effective_reminders=2,
                max_hold_days=3,
            )
        },
    )
    con = db.connect(tmp_path / "data" / "state.duckdb")
    with GatewaySimulator() as sim:
        night = Night(con, settings, sim.smtp_settings())
        night.subscriber(day(0), A, email=EMAIL)
        night.subscriber(day(0), B)
        night.run(day(0))
        night.cancel(day(1), A)
        night.run(day(1))  # e-mail 1 of A
        for n in range(2, 13):
            for rid, channel in night.sent(A):
                # The mail gateway reports delivery the day after (days 1 and 5), not for day 8's.
                if n in (2, 6):
                    night.receipt(day(n), rid, channel, day(n - 1))
            if n == 12:
                night.reissue(day(12), A)
            night.run(day(n))
    with open_ledger(settings) as ledger:
        append_queued_events(con, ledger)
    yield night, settings
    con.close()


def test_summary_lists_the_facts_and_links_verifiable_proofs(
    world: tuple[Night, Settings], tmp_path: Path
) -> None:
    night, settings = world
    con = night.con
    released = con.execute(
        "SELECT released_on, effective_reminders, exception FROM releases WHERE msisdn = ?", [A]
    ).fetchall()
    assert released == [(day(11), 2, False)]  # the history is what the docstring says
    out = tmp_path / "dispute"
    with open_ledger(settings) as ledger:
        path = render_evidence_summary(con, ledger, A, out)
        vkey = ledger.vkey
    page = path.read_text(encoding="utf-8")
    assert path == out / "summary.html"
    index = json.loads((out / "index.json").read_text(encoding="utf-8"))
    entries = index["entries"]
    types = [e["type"] for e in entries]
    assert types.count("reminder_sent") == 3 and types.count("reminder_effective") == 2
    assert {"tenure_closed", "released", "reissued"} <= set(types)
    # Every entry of the bundle is on the page with a link to its proof, and every proof verifies.
    for e in entries:
        assert f'<a href="{e["file"]}">{e["file"]}</a>' in page
        verified = verify_proof_file((out / e["file"]).read_bytes(), vkey)
        assert verified.index == e["index"]
    ledger_rows = re.findall(r"<tr><td>(\d+)</td><td>([a-z_]+)</td>", page)
    assert [(int(i), t) for i, t in ledger_rows] == [(e["index"], e["type"]) for e in entries]
    # The command that verifies them, for this very folder.
    assert f"<pre>recycle verify {out}</pre>" in page
    # Reminders with channel, dates and receipts; release and reissue.
    assert page.count("<td>email</td>") == 3
    assert page.count(f"<td>{mask_contact(EMAIL)}</td>") == 3
    assert page.count("delivered at 2026-03-02 10:00:00 UTC (ref ph-77") == 1
    assert "delivered at 2026-03-06 10:00:00 UTC (ref ph-77" in page
    assert f"<td>{day(11)}</td><td>2</td><td>no</td>" in page  # released day 11, 2 effective
    assert f"<td>{day(12)}</td>" in page and "violation" in page
    # Masked everywhere on the page; the full number is in the machine-readable bundle only.
    assert f"Evidence summary — {mask(A)}" in page
    assert A not in page and A[3:] not in page and EMAIL not in page
    assert any(e["value"] and e["value"].get("msisdn") == A for e in entries)


def test_acknowledgements_of_the_number_are_shown(world: tuple[Night, Settings], tmp_path: Path) -> None:
    night, settings = world
    night.con.execute("BEGIN TRANSACTION")  # the shared history is left as it was
    try:
        # Make A's reissue a recorded violation to acknowledge (the summary lists acks by number).
        night.con.execute("UPDATE reissues SET violation = true WHERE msisdn = ?", [A])
        acknowledge(
            night.con,
            A,
            day(12),
            "owner agreed in writing",
            "ops.li",
            dt.datetime(2026, 3, 14, 8, 0, tzinfo=dt.UTC),
        )
        with open_ledger(settings) as ledger:
            page = render_evidence_summary(night.con, ledger, A, tmp_path / "s").read_text("utf-8")
    finally:
        night.con.execute("ROLLBACK")
    assert "owner agreed in writing" in page and "ops.li" in page
    assert "<td>reissue_violation</td><td>2026-03-13</td>" in page


def test_number_without_ledger_entries_and_unknown_number(
    world: tuple[Night, Settings], tmp_path: Path
) -> None:
    night, settings = world
    with open_ledger(settings) as ledger:
        # B is on record (active since the snapshot) but nothing about it is in the ledger.
        page = render_evidence_summary(night.con, ledger, B, tmp_path / "b").read_text("utf-8")
        assert "the ledger holds no entry" in page and "No proofs in this folder yet" in page
        assert not (tmp_path / "b" / "index.json").exists()
        with pytest.raises(LookupError, match=re.escape(mask("+8613800000099"))):
            render_evidence_summary(night.con, ledger, "+8613800000099", tmp_path / "x")
