"""Files at rest (issue 12, item 5): after a real night every file holding numbers or contacts
is 0600 in 0700 directories, published files stay world-readable, and a writing step refuses a
state file other users can read."""

from __future__ import annotations

import datetime as dt
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.compliance.notifications import AckStore
from pipelines.config import load_settings
from pipelines.db import connect, transaction
from pipelines.dev.synth import generate
from pipelines.errors import ConfigError
from pipelines.layout import Layout, private_dir, write_private
from pipelines.nightly.steps import RunContext, run_day
from pipelines.server.platforms import AuditLog, TokenStore

START = dt.date(2026, 3, 1)
NIGHTS = 2
CONFIG = """\
data_dir = "{data}"
[policy.default]
freeze_days = 60
suspend_days = 10
reminder_offsets = [0, 30, -14]
min_effective_reminders = 2
max_hold_days = 7
"""

# Top directories (relative to <data>) of personal data: they, everything under them, are private.
PRIVATE_TREES = (
    "state.duckdb.tmp",
    "quarantine",  # no longer written (sealed in the state file); an older version's, if any
    "snapshot",
    "server",
    "outbox/letters",
    "private",  # the ledger openings (encrypted too)
)
PRIVATE_FILES = ("state.duckdb", "state.duckdb.wal")
# runs/<day>/gx/: GX's COMPLETE results list the unexpected values (numbers, e-mails).
PUBLIC_TREES = ("feeds", "ledger/tile")
PUBLIC_FILES = ("ledger/checkpoint", "ledger/vkey")


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def _is_private(rel: Path) -> bool:
    parts = rel.parts
    if str(rel) in PRIVATE_FILES:
        return True
    if len(parts) >= 3 and parts[0] == "runs" and parts[2] == "gx":
        return True
    return any(rel == Path(t) or Path(t) in rel.parents for t in PRIVATE_TREES)


def _is_public(rel: Path) -> bool:
    if str(rel) in PUBLIC_FILES or (rel.parts[0] == "keys" and rel.suffix in (".vkey", ".pub")):
        return True
    return any(rel == Path(t) or Path(t) in rel.parents for t in PUBLIC_TREES)


@pytest.fixture(scope="module")
def night(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = tmp_path_factory.mktemp("at-rest")
    # Defects put rows in quarantine; the third day's drops stay for the refusal test.
    generate(data, START, NIGHTS + 1, 12, seed=5, defect_rate=0.2, freeze_days=60, suspend_days=10)
    (data / "recycle.toml").write_text(CONFIG.format(data=data))
    settings = load_settings(data / "recycle.toml", env={})
    ctx = RunContext(simulate_gateways=True, alerts_mode="record")
    for i in range(NIGHTS):
        run_day(settings, START + dt.timedelta(days=i), ctx)
    # The server's stores, as `recycle serve` and `recycle platform add` create them.
    tokens = TokenStore.open(data)
    tokens.add("platform-a", ["check"])
    tokens.close()
    AckStore.open(data).close()
    audit = AuditLog.open(data)
    audit.record("platform-a", "check", number="+8613800000000", status=200)
    audit.flush()
    audit.close()
    return data


def test_personal_data_is_0600_in_0700_directories(night: Path) -> None:
    seen: dict[str, list[str]] = {"private": [], "public": []}
    wrong: list[str] = []
    for dirpath, dirnames, filenames in os.walk(night):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = path.relative_to(night)
            mode = _mode(path)
            if _is_private(rel):
                seen["private"].append(str(rel))
                want = 0o700 if path.is_dir() else 0o600
                if mode != want:
                    wrong.append(f"{rel}: {mode:04o}, want {want:04o}")
            elif _is_public(rel) and path.is_file():
                seen["public"].append(str(rel))
                if mode & 0o044 != 0o044:
                    wrong.append(f"{rel}: {mode:04o}, published files stay readable")
    assert wrong == []
    private = seen["private"]
    # Every kind was there to be checked.
    assert "state.duckdb" in private
    assert "state.duckdb.tmp" in private
    for prefix in ("snapshot/", "server/audit/", "outbox/letters/"):
        assert any(p.startswith(prefix) and (night / p).is_file() for p in private), prefix
    assert any(p.endswith("/tenures.parquet") for p in private)
    assert any(p.startswith("runs/") and p.endswith(".json") for p in private)
    assert {"server/platforms.sqlite", "server/acknowledgements.sqlite"} <= set(private)
    assert "private/openings/openings.duckdb" in private
    assert any(p.startswith("feeds/") for p in seen["public"])
    assert "ledger/checkpoint" in seen["public"]


def test_writable_connect_refuses_a_state_others_can_read(night: Path) -> None:
    state = Layout(night).state_db
    os.chmod(state, 0o644)
    try:
        with pytest.raises(ConfigError, match=rf"chmod 600 {state}"):
            connect(state)
        connect(state, read_only=True).close()  # a reader is not refused
    finally:
        os.chmod(state, 0o600)


def test_wal_of_the_state_is_0600_while_a_writer_has_it(night: Path) -> None:
    state = Layout(night).state_db
    con = connect(state)
    try:
        con.execute("CHECKPOINT")  # DuckDB deletes the WAL here and re-creates it at the next commit
        with transaction(con):
            con.execute("CREATE TABLE at_rest_probe AS SELECT 1 AS x")
        wal = state.with_name(state.name + ".wal")
        assert wal.exists()
        assert _mode(wal) == 0o600
        with transaction(con):
            con.execute("DROP TABLE at_rest_probe")
    finally:
        con.close()


def test_wal_is_0600_for_a_write_outside_a_transaction(night: Path) -> None:
    state = Layout(night).state_db
    wal = state.with_name(state.name + ".wal")
    con = connect(state)
    try:
        con.execute("CREATE TABLE at_rest_probe AS SELECT 1 AS x")  # autocommit
        assert _mode(wal) == 0o600
        con.execute("DROP TABLE at_rest_probe")
    finally:
        con.close()


def test_run_refuses_a_world_readable_state_without_traceback(night: Path) -> None:
    state = Layout(night).state_db
    os.chmod(state, 0o644)
    try:
        proc = subprocess.run(
            [
                sys.executable,
                "-c",
                "from pipelines.cli.app import main; main()",
                "run",
                "--config",
                str(night / "recycle.toml"),
                "--date",
                (START + dt.timedelta(days=NIGHTS)).isoformat(),
                "--simulate-gateways",
            ],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "COLUMNS": "400"},
            check=False,
        )
    finally:
        os.chmod(state, 0o600)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr + proc.stdout
    assert f"chmod 600 {state}" in " ".join((proc.stderr + proc.stdout).split())


def test_private_dir_tightens_every_level_down_from_top(tmp_path: Path) -> None:
    (tmp_path / "q").mkdir(mode=0o755)
    os.chmod(tmp_path / "q", 0o755)
    write_private(tmp_path / "q" / "d" / "x.parquet", b"numbers", top=tmp_path / "q")
    assert _mode(tmp_path / "q") == 0o700
    assert _mode(tmp_path / "q" / "d") == 0o700
    assert _mode(tmp_path / "q" / "d" / "x.parquet") == 0o600
    with pytest.raises(ValueError):
        private_dir(tmp_path / "a", top=tmp_path / "b")


def test_server_stores_of_an_older_version_are_tightened(tmp_path: Path) -> None:
    server = tmp_path / "server"
    server.mkdir(mode=0o755)
    os.chmod(server, 0o755)
    TokenStore.open(tmp_path).close()
    AckStore.open(tmp_path).close()
    for name in ("platforms.sqlite", "acknowledgements.sqlite"):
        os.chmod(server / name, 0o644)
    os.chmod(server, 0o755)
    TokenStore.open(tmp_path).close()
    AckStore.open(tmp_path).close()
    assert _mode(server) == 0o700
    assert _mode(server / "platforms.sqlite") == 0o600
    assert _mode(server / "acknowledgements.sqlite") == 0o600
