"""`recycle storage status | pull` on a file:// storage (the seam's S3 side is tested in
tests/unit/storage against a real S3 server)."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from pipelines.cli import app
from pipelines.config import Settings
from pipelines.errors import ConfigError
from pipelines.storage.publish import publish_ledger


def test_status_lists_what_is_not_pushed_then_pull_brings_it_back(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    data, store = tmp_path / "data", tmp_path / "store"
    (data / "ledger/tile/0").mkdir(parents=True)
    (data / "ledger/tile/0/000.p/2").parent.mkdir(parents=True)
    (data / "ledger/tile/0/000.p/2").write_bytes(b"h" * 64)
    (data / "ledger/checkpoint").write_bytes(b"origin\n2\nROOT\n\n- sig\n")
    monkeypatch.setenv("RECYCLE_STORAGE", f"file://{store}")
    runner = CliRunner()
    got = runner.invoke(app, ["storage", "status", "--data", str(data), "--json"])
    assert got.exit_code == 1, got.output
    assert json.loads(got.output)["missing"]["ledger"] == ["ledger/checkpoint", "ledger/tile/0/000.p/2"]

    publish_ledger(Settings(data_dir=data, storage=f"file://{store}"))
    assert runner.invoke(app, ["storage", "status", "--data", str(data)]).exit_code == 0

    rebuilt = tmp_path / "rebuilt"
    rebuilt.mkdir()
    got = runner.invoke(app, ["storage", "pull", "--what", "ledger", "--data", str(rebuilt)])
    assert got.exit_code == 0 and "ledger: 2 file(s) pulled" in got.output
    assert (rebuilt / "ledger/checkpoint").read_bytes() == (data / "ledger/checkpoint").read_bytes()

    bad = runner.invoke(app, ["storage", "pull", "--what", "tiles", "--data", str(rebuilt)])
    assert isinstance(bad.exception, ConfigError) and "choose from ledger, feeds, snapshot" in str(
        bad.exception
    )
