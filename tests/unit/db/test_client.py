"""The DuckDB seam (:mod:`pipelines.db`): the nightly connection settings, and ``nightly_step``'s
transaction and insertion-order handling around a real step (``lifecycle.apply_events``)."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import Any

import duckdb
import pytest
from lifecycle_testkit import SETTINGS, A, B, World, day, seeded

import pipelines.lifecycle as lc
from pipelines import db
from pipelines.config import Settings
from pipelines.errors import ConfigError


def test_steps_put_insertion_order_back_even_when_they_fail(world: World) -> None:
    def order(con: duckdb.DuckDBPyConnection) -> bool:
        return bool(con.execute("SELECT current_setting('preserve_insertion_order')").fetchone()[0])  # type: ignore[index]

    seen: list[bool] = []

    def failing(con: duckdb.DuckDBPyConnection, settings: Settings, d: dt.date) -> None:
        seen.append(order(con))
        raise ValueError("step failed")

    world.con.execute("BEGIN TRANSACTION")
    with pytest.raises(ValueError, match="step failed"):
        db.nightly_step(failing)(world.con, SETTINGS, day(0))
    world.con.execute("ROLLBACK")
    assert seen == [False] and order(world.con)
    world.run(day(0))
    assert order(world.con)

    def aborting(con: duckdb.DuckDBPyConnection, settings: Settings, d: dt.date) -> None:
        con.execute("SELECT * FROM no_such_table")

    # DuckDB refuses the restore inside the aborted transaction: the step's own error surfaces.
    world.con.execute("BEGIN TRANSACTION")
    with pytest.raises(duckdb.CatalogException):
        db.nightly_step(aborting)(world.con, SETTINGS, day(0))
    world.con.execute("ROLLBACK")


def test_a_step_called_outside_a_transaction_runs_in_its_own(world: World) -> None:
    seeded(world, A, B)
    world.event(day(1), A, "cancel")
    world.event(day(1), B, "suspend")

    def half_then_fail(con: duckdb.DuckDBPyConnection, settings: Settings, d: dt.date) -> None:
        lc.apply_events(con, settings, d)  # joins the step's transaction
        raise ValueError("step failed")

    with pytest.raises(ValueError, match="step failed"):
        db.nightly_step(half_then_fail)(world.con, SETTINGS, day(1))
    assert world.state(A)["state"] == "active"  # rolled back as a whole
    assert world.one("SELECT current_setting('preserve_insertion_order')") is True
    report = lc.apply_events(world.con, SETTINGS, day(1))  # no BEGIN: committed by the step
    assert report.applied == 2
    world.con.execute("BEGIN TRANSACTION")
    world.con.execute("ROLLBACK")  # nothing of the step was left open
    assert (world.state(A)["state"], world.state(B)["state"]) == ("frozen", "suspended")


def _setting(con: duckdb.DuckDBPyConnection, name: str) -> Any:
    row = con.execute("SELECT current_setting(?)", [name]).fetchone()
    return row[0] if row else None


def _rendered(limit: str) -> str:
    con = duckdb.connect()
    con.execute(f"SET memory_limit = '{limit}'")
    return str(_setting(con, "memory_limit"))


def test_connect_applies_the_nightly_duckdb_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(db.ENV_MEMORY_LIMIT, raising=False)
    path = tmp_path / "data" / "state.duckdb"
    con = db.connect(path)
    assert _setting(con, "memory_limit") == _rendered("3GB")
    assert _setting(con, "threads") == len(os.sched_getaffinity(0))
    # Spills stay on the data volume, beside the state file.
    assert Path(_setting(con, "temp_directory")) == tmp_path / "data" / "state.duckdb.tmp"
    # A plain second connection to the same file is not refused for another configuration.
    other = duckdb.connect(str(path))
    assert _setting(other, "memory_limit") == _rendered("3GB")
    other.close()
    con.close()

    monkeypatch.setenv(db.ENV_MEMORY_LIMIT, "1500MB")
    with db.open_state(path) as con:
        assert _setting(con, "memory_limit") == _rendered("1500MB")
    with db.open_state(path, read_only=True) as con:
        assert _setting(con, "memory_limit") == _rendered("1500MB")
    con = db.connect(path, memory_limit="2GB", threads=1)
    assert (_setting(con, "memory_limit"), _setting(con, "threads")) == (_rendered("2GB"), 1)
    con.close()

    monkeypatch.setenv(db.ENV_MEMORY_LIMIT, "lots")
    with pytest.raises(ConfigError, match=db.ENV_MEMORY_LIMIT):
        db.connect(path)


@pytest.mark.parametrize(
    ("limit", "fraction", "share"),
    [
        (None, 1 / 2, "1430MiB"),
        ("1500MB", 1 / 2, "715MiB"),
        ("2GiB", 1 / 3, "682MiB"),
        ("100MB", 1 / 3, "64MiB"),
    ],
)
def test_a_step_with_two_databases_gives_each_a_share_of_the_limit(
    limit: str | None, fraction: float, share: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ledger step's state and openings store keep their sum within the configured limit."""
    if limit is None:
        monkeypatch.delenv(db.ENV_MEMORY_LIMIT, raising=False)
    else:
        monkeypatch.setenv(db.ENV_MEMORY_LIMIT, limit)
    assert db.memory_share(fraction) == share
    with db.open_state(tmp_path / "state.duckdb", memory_limit=share) as con:
        assert _setting(con, "memory_limit") == _rendered(share)


def test_a_limit_that_is_not_a_size_is_left_to_duckdb(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(db.ENV_MEMORY_LIMIT, "80%")
    assert db.memory_share(1 / 2) == "80%"
