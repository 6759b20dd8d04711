"""`recycle quarantine list | export`: masked on screen, the exact line in clear in a 0600 file."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pyarrow.parquet as pq
from typer.testing import CliRunner

from pipelines.cli import app
from pipelines.config import load_settings
from pipelines.errors import QuarantineExportError
from pipelines.layout import Layout
from pipelines.nightly.steps import RunContext, run_day

DAY = dt.date(2026, 3, 2)
EMAIL, NUMBER, CONTACT = "cli.leak@example.cn", "13700137999", "13600136999"
LINE = f"{NUMBER},cancel,2026-03-01,{EMAIL},S-9,2020-01-01,,{CONTACT},zh-CN"  # region holds the e-mail
HEADER = "msisdn,event,effective_date,region,subscriber_ref,tenure_start,contact_email,contact_phone,language"


def _night(data: Path) -> Path:
    inbox = Layout(data).inbox(DAY)
    inbox.mkdir(parents=True)
    (inbox / "lifecycle_0001.csv").write_text(f"{HEADER}\n{LINE}\n")
    (inbox / "reissue_0001.csv").write_text("msisdn,reissue_date,region,subscriber_ref\n")
    run_day(
        load_settings(env={}, data_dir=data), DAY, RunContext(simulate_gateways=True, alerts_mode="record")
    )
    return data


def test_list_shows_the_line_masked_and_names_the_export(tmp_path: Path) -> None:
    data = _night(tmp_path / "data")
    for extra in ([], ["--json"]):
        result = CliRunner().invoke(
            app, ["quarantine", "list", "--date", str(DAY), "--data", str(data), *extra]
        )
        assert result.exit_code == 0, result.output
        text = " ".join(result.output.replace("│", " ").split())
        assert "unknown_region" in text and "lifecycle_0001.csv" in text
        assert "137****7999" in text and "c***@example.cn" in text and "136****6999" in text
        assert EMAIL not in text and NUMBER not in text and CONTACT not in text
        assert f"recycle quarantine export --date {DAY} --out" in text


def test_export_writes_the_exact_line_0600_and_says_it_is_personal_data(tmp_path: Path) -> None:
    data = _night(tmp_path / "data")
    out = tmp_path / "fix.parquet"
    args = ["quarantine", "export", "--date", str(DAY), "--out", str(out), "--data", str(data)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "holds personal data" in result.output and f"recycle run --date {DAY}" in result.output
    assert out.stat().st_mode & 0o777 == 0o600
    assert [r["original_line"] for r in pq.read_table(out).to_pylist()] == [LINE]
    again = CliRunner().invoke(app, args)  # never over an existing file (main() prints it, rc 2)
    assert isinstance(again.exception, QuarantineExportError)
    assert "exists; it is not overwritten" in str(again.exception)
    assert [r["original_line"] for r in pq.read_table(out).to_pylist()] == [LINE]
