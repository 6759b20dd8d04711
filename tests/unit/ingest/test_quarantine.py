"""Quarantine at rest (pipelines/ingest/quarantine.py): a refused line is sealed with the contacts
vault, exported in clear only on request, and erased with its key after the retention."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipelines.config import Settings, load_settings
from pipelines.contacts import ContactVault
from pipelines.contacts.retention import retire_contacts
from pipelines.contacts.vault import HEADER_SIZE, epoch_header
from pipelines.db import connect
from pipelines.errors import VerificationError
from pipelines.layout import Layout
from pipelines.nightly.steps import RunContext, run_day

DAY = dt.date(2026, 3, 2)
EMAIL = "quarantine.leak@example.cn"
NUMBER = "13700137999"  # the refused line's own number: on no accepted row
CONTACT = "13600136999"
# The e-mail is where the region belongs (a shifted column): refused as unknown_region, a
# detail that quotes the field, and the line holds a number, an e-mail and a contact phone.
LINE = f"{NUMBER},cancel,2026-03-01,{EMAIL},S-9,2020-01-01,,{CONTACT},zh-CN"
LIFECYCLE = (
    "msisdn,event,effective_date,region,subscriber_ref,tenure_start,contact_email,contact_phone,language\n"
)
SUBSCRIBERS = (
    "msisdn,tenure_start,region,subscriber_ref,contact_email,contact_phone,language\n"
    "13800138000,2020-01-01,GD,S-1,kept@example.cn,13912345678,zh-CN\n"
)


def quarantined_night(data: Path, day: dt.date = DAY) -> Settings:
    """One night in ``data`` whose lifecycle drop has one good row and ``LINE``, refused."""
    inbox = Layout(data).inbox(day)
    inbox.mkdir(parents=True)
    (inbox / "subscribers_0001.csv").write_text(SUBSCRIBERS)
    (inbox / "lifecycle_0001.csv").write_text(
        f"{LIFECYCLE}13800138000,suspend,{day},GD,S-1,2020-01-01,,,zh-CN\n{LINE}\n"
    )
    (inbox / "reissue_0001.csv").write_text("msisdn,reissue_date,region,subscriber_ref\n")
    settings = load_settings(env={}, data_dir=data)
    run_day(settings, day, RunContext(simulate_gateways=True, alerts_mode="record"))
    return settings


def _in_clear(data: Path) -> list[str]:
    """Every file under ``data`` holding the line's e-mail, number or contact phone, except the keys
    and the inbox (the carrier's drops as delivered: the input, not a copy this product makes)."""
    found = []
    for path in sorted(data.rglob("*")):
        rel = path.relative_to(data)
        if path.is_file() and rel.parts[0] not in {"keys", "inbox"}:
            raw = path.read_bytes()
            found += [f"{rel}: {v}" for v in (EMAIL, NUMBER, CONTACT) if v.encode() in raw]
    return found


def test_a_night_leaves_no_quarantined_line_in_clear_in_the_data_dir(tmp_path: Path) -> None:
    quarantined_night(tmp_path)
    state = Layout(tmp_path).state_db
    assert state.with_name(state.name + ".wal").exists() or state.exists()  # both are scanned
    assert _in_clear(tmp_path) == []
    with connect(state, read_only=True) as con:  # the keystore opens it
        rows = con.execute(
            "SELECT reason, detail, contact_open(original_line) FROM quarantine WHERE stage = 'ingest'"
        ).fetchall()
    ((reason, detail, line),) = rows
    assert (reason, line) == ("unknown_region", LINE)
    assert detail.startswith("region 'q***@example.cn'")  # the quoted field, masked


def test_the_export_gives_back_the_exact_line_in_a_new_0600_file(tmp_path: Path) -> None:
    from pipelines.errors import QuarantineExportError
    from pipelines.ingest.quarantine import export_quarantine

    settings = quarantined_night(tmp_path / "data")
    out = tmp_path / "fix.parquet"
    with connect(Layout(settings.data_dir).state_db, read_only=True) as con:
        export_quarantine(con, DAY, out, "lifecycle_0001.csv")
        assert out.stat().st_mode & 0o777 == 0o600
        (row,) = pq.read_table(out).to_pylist()
        assert row == {
            "file_name": "lifecycle_0001.csv",
            "line_no": 3,
            "reason": "unknown_region",
            "detail": row["detail"],
            "original_line": LINE,
        }
        before = out.read_bytes()
        with pytest.raises(QuarantineExportError, match="exists; it is not overwritten"):
            export_quarantine(con, DAY, out)
        assert out.read_bytes() == before
        with pytest.raises(QuarantineExportError, match="recycle status --date 2026-03-02"):
            export_quarantine(con, DAY, tmp_path / "none.parquet", "subscribers_0001.csv")
        assert not (tmp_path / "none.parquet").exists()


def test_a_rerun_leaves_the_sealed_quarantine_byte_identical(tmp_path: Path) -> None:
    settings = quarantined_night(tmp_path)
    state = Layout(tmp_path).state_db
    query = "SELECT * FROM quarantine ORDER BY file_sha256, line_no, stage"
    with connect(state, read_only=True) as con:
        first = con.execute(query).fetchall()
    run_day(settings, DAY, RunContext(simulate_gateways=True, alerts_mode="record"))
    with connect(state, read_only=True) as con:
        assert con.execute(query).fetchall() == first
    assert _in_clear(tmp_path) == []


def test_after_the_retention_the_quarantined_line_cannot_be_opened(tmp_path: Path) -> None:
    from pipelines.errors import QuarantineExportError
    from pipelines.ingest.quarantine import export_quarantine, read_quarantine

    retention = 3
    quarantined_night(tmp_path)  # its contacts step saw live-1 begin on DAY
    retired_on = DAY + dt.timedelta(days=retention)
    state = Layout(tmp_path).state_db
    vault = ContactVault.for_state(state)
    with connect(state) as con:
        # The retiring night's own quarantined line, sealed at its ingest under live-1.
        con.execute(
            "INSERT INTO quarantine VALUES ('lifecycle_0009.csv', 'sha', 'lifecycle', $d, 2, 'ingest', "
            "'bad_date', NULL, contact_seal($l))",
            {"d": retired_on, "l": "tonight,line"},
        )
        retire_contacts(con, vault, retired_on - dt.timedelta(days=1), retention)
        assert read_quarantine(con, DAY).rows[0]["original_line"] == LINE  # the day before: still there
        report = retire_contacts(con, vault, retired_on, retention)
        assert report.retired == "live-2" and "live-1" in report.erased
        lines = read_quarantine(con, DAY)
        assert [r["original_line"] for r in lines.rows if r["stage"] == "ingest"] == [None]
        assert lines.erased == {"live-1": (1, retired_on)}
        with pytest.raises(QuarantineExportError, match="erased with their key"):
            export_quarantine(con, DAY, tmp_path / "late.parquet")
        # Tonight's line moved with the live values: the operator reads it in the morning.
        assert read_quarantine(con, retired_on).rows[0]["original_line"] == "tonight,line"
        again = retire_contacts(con, vault, retired_on, retention)  # idempotent
        assert (
            again.erased == () and read_quarantine(con, retired_on).rows[0]["original_line"] == "tonight,line"
        )
        con.execute("CHECKPOINT")
    assert not _recoverable(state, LINE)  # nor does any remaining key, at any offset


def _recoverable(state: Path, value: str) -> bool:
    """Try every remaining key at every sealed-value header in the raw state file and WAL."""
    raw = b"".join(p.read_bytes() for p in (state, state.with_name(state.name + ".wal")) if p.exists())
    vault, size = ContactVault.for_state(state), HEADER_SIZE + len(value.encode()) + 16
    for epoch in vault.epochs():
        header = epoch_header(epoch)
        at = raw.find(header)
        while at >= 0:
            try:
                if vault.open([raw[at : at + size]])[0].as_py() == value:
                    return True
            except VerificationError:  # not a sealed value, or not this one
                pass
            at = raw.find(header, at + 1)
    return False
