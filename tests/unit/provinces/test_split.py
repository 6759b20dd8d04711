"""Splitting a national drop by region: every line lands in exactly one province, as bytes;
quoted records spanning lines stay whole; lines of no configured province go to the first;
`recycle provinces split` says so."""

from __future__ import annotations

import datetime as dt
import json
import os
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipelines.cli import app
from pipelines.config import Settings
from pipelines.errors import DataContractError
from pipelines.layout import Layout
from pipelines.provinces.split import split_drops

D = dt.date(2026, 9, 3)
HEADER = "msisdn|event|effective_date|region|subscriber_ref|tenure_start|contact_email\r\n"
LINES = [
    "+8613800000001|cancel|2026-09-03|GD|S1|2020-01-01|a@x.cn\r\n",
    '+8613800000002|cancel|2026-09-03|BJ|S2|2020-01-01|"two\r\nline"@x.cn\r\n',  # one record, two lines
    "+8613800000003|cancel|2026-09-03|XX|S3|2020-01-01|\r\n",  # no such province
    "not|enough\r\n",  # malformed: ingest's to quarantine
    "+8613800000004|restore|2026-09-03| GD |S4|2020-01-01|\xe5\x90\x8d@x.cn",  # no final line end
]


def _national(data: Path) -> Path:
    inbox = Layout(data).inbox(D)
    inbox.mkdir(parents=True)
    (inbox / f"lifecycle_{D}.csv").write_bytes((HEADER + "".join(LINES)).encode("latin-1"))
    (inbox / f"reissue_{D}.csv").write_bytes(b"msisdn,reissue_date,region,subscriber_ref\n")
    return inbox


def _province_file(data: Path, code: str, name: str) -> bytes:
    return (Layout(data / "provinces" / code).inbox(D) / name).read_bytes()


def test_every_line_lands_once_as_bytes(tmp_path: Path) -> None:
    _national(tmp_path)
    settings = Settings(data_dir=tmp_path, provinces=("GD", "BJ"))
    report = split_drops(settings, D)
    name = f"lifecycle_{D}.csv"
    bj, gd = _province_file(tmp_path, "BJ", name), _province_file(tmp_path, "GD", name)
    header = HEADER.encode("latin-1")
    assert bj == header + LINES[1].encode("latin-1") + LINES[2].encode("latin-1") + LINES[3].encode("latin-1")
    assert gd == header + LINES[0].encode("latin-1") + LINES[4].encode("latin-1")
    assert report.unrouted == 2 and report.files == 2  # XX and the malformed line, sent to BJ (first)
    # header-only files for a province with no line: the BSS's own empty night
    assert (
        _province_file(tmp_path, "GD", f"reissue_{D}.csv") == b"msisdn,reissue_date,region,subscriber_ref\n"
    )
    mode = stat.S_IMODE(os.stat(Layout(tmp_path / "provinces" / "GD").inbox(D) / name).st_mode)
    assert mode == 0o600
    split_drops(settings, D)  # idempotent: the same bytes again
    assert _province_file(tmp_path, "GD", name) == gd


def test_receipts_cannot_be_split(tmp_path: Path) -> None:
    inbox = _national(tmp_path)
    (inbox / f"receipts_{D}.csv").write_text("reminder_id,channel,status,at\n")
    with pytest.raises(DataContractError, match="cannot be routed"):
        split_drops(Settings(data_dir=tmp_path, provinces=("GD",)), D)


def test_cli_split_and_list(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _national(tmp_path)
    monkeypatch.setenv("RECYCLE_PROVINCES", "GD,BJ")
    runner = CliRunner()
    got = runner.invoke(app, ["provinces", "split", "--date", str(D), "--data", str(tmp_path), "--json"])
    assert got.exit_code == 0, got.output
    assert json.loads(got.output)["lines"] == {"BJ": 4, "GD": 2}  # physical lines: BJ's record spans two
    listed = runner.invoke(app, ["provinces", "list", "--data", str(tmp_path), "--json"])
    assert [r["province"] for r in json.loads(listed.output)] == ["BJ", "GD"]
