"""The state file's lock protocol (:mod:`pipelines.db.locks`) between real processes: readers
share, a writer excludes, a waiting writer is not starved by readers that come after it, every
wait ends at its deadline naming the holder, and a SIGKILLed holder frees its locks."""

from __future__ import annotations

import datetime as dt
import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipelines.db.locks import NIGHT_LOCK_NAME, night_lock, state_lock, writing_for
from pipelines.errors import BusyError, TerminalError

# A process that takes a lock, says so by creating <marker>, and holds it until <release> exists.
HOLDER = """
import sys, time, pathlib, datetime as dt
from pipelines.db.locks import night_lock, state_lock, writing_for
kind, target, marker, release = sys.argv[1:5]
if kind == "night":
    cm = night_lock(pathlib.Path(target), [dt.date(2026, 3, 1), dt.date(2026, 3, 4)])
else:
    cm = state_lock(pathlib.Path(target), write=kind == "write", wait=30)
with writing_for("nightly step ingest of 2026-03-01"), cm:
    pathlib.Path(marker).touch()
    while not pathlib.Path(release).exists():
        time.sleep(0.01)
"""


class Holder:
    """A real process holding a lock of ``kind`` (read, write, night) on ``target``."""

    def __init__(self, tmp: Path, kind: str, target: Path, name: str) -> None:
        self.marker, self.release = tmp / f"{name}.held", tmp / f"{name}.release"
        self.proc = subprocess.Popen(
            [sys.executable, "-c", HOLDER, kind, str(target), str(self.marker), str(self.release)],
            stderr=subprocess.PIPE,
            text=True,
        )

    def holds(self, within: float = 20.0) -> bool:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if self.marker.exists():
                return True
            if self.proc.poll() is not None:
                raise AssertionError(f"holder exited: {self.proc.stderr.read() if self.proc.stderr else ''}")
            time.sleep(0.01)
        return False

    def let_go(self) -> None:
        self.release.touch()
        assert self.proc.wait(20) == 0

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(20)


@pytest.fixture
def holders(tmp_path: Path) -> Iterator[list[Holder]]:
    started: list[Holder] = []
    yield started
    for h in started:
        if h.proc.poll() is None:
            h.kill()


def _hold(holders: list[Holder], tmp: Path, kind: str, target: Path, name: str) -> Holder:
    h = Holder(tmp, kind, target, name)
    holders.append(h)
    return h


def test_readers_share_and_a_reader_waits_for_the_writer_then_gives_up_naming_it(
    tmp_path: Path, holders: list[Holder]
) -> None:
    state = tmp_path / "state.duckdb"
    reader = _hold(holders, tmp_path, "read", state, "r")
    assert reader.holds()
    with state_lock(state, write=False, wait=0):  # another reader: at once
        pass
    reader.let_go()
    writer = _hold(holders, tmp_path, "write", state, "w")
    assert writer.holds()
    lines: list[str] = []
    started = time.monotonic()
    with pytest.raises(BusyError) as caught, state_lock(state, write=False, wait=0.5, on_wait=lines.append):
        pass
    assert 0.5 <= time.monotonic() - started < 5
    assert len(lines) == 1 and "waiting up to 0.5s" in lines[0]
    for text in (lines[0], str(caught.value)):
        assert f"pid {writer.proc.pid}" in text and "nightly step ingest of 2026-03-01" in text
    assert "RECYCLE_STATE_WAIT_SECONDS" in str(caught.value) and caught.value.exit_code == 75
    writer.let_go()
    with state_lock(state, write=False, wait=0):
        pass


def test_a_waiting_writer_is_not_starved_by_readers_that_come_after_it(
    tmp_path: Path, holders: list[Holder]
) -> None:
    state = tmp_path / "state.duckdb"
    first = _hold(holders, tmp_path, "read", state, "r1")
    assert first.holds()
    writer = _hold(holders, tmp_path, "write", state, "w")
    assert not writer.holds(within=1.0)  # it waits for the reader already in
    # Only a reader holds the file, yet a new reader queues behind the waiting writer.
    with pytest.raises(BusyError), state_lock(state, write=False, wait=0.5, on_wait=lambda _: None):
        pass
    first.let_go()
    assert writer.holds()  # the writer gets in as soon as the reader leaves
    writer.let_go()


def test_a_writer_gives_up_on_a_reader_that_hangs(tmp_path: Path, holders: list[Holder]) -> None:
    state = tmp_path / "state.duckdb"
    assert _hold(holders, tmp_path, "read", state, "r").holds()
    lines: list[str] = []
    with (
        pytest.raises(BusyError, match="readers still hold"),
        state_lock(state, write=True, wait=0.3, on_wait=lines.append),
    ):
        pass
    assert lines == [f"waiting for readers of {state} to finish"]
    with state_lock(state, write=False, wait=0):  # the gate was let go with the attempt
        pass


def test_sigkill_frees_the_state_and_night_locks(tmp_path: Path, holders: list[Holder]) -> None:
    state = tmp_path / "state.duckdb"
    writer = _hold(holders, tmp_path, "write", state, "w")
    night = _hold(holders, tmp_path, "night", tmp_path, "n")
    assert writer.holds() and night.holds()
    writer.kill()
    night.kill()
    with state_lock(state, write=True, wait=0), night_lock(tmp_path, [dt.date(2026, 3, 5)], wait=0):
        pass


def test_a_second_night_is_refused_at_once_naming_the_holder_or_waits(
    tmp_path: Path, holders: list[Holder]
) -> None:
    night = _hold(holders, tmp_path, "night", tmp_path, "n")
    assert night.holds()
    started = time.monotonic()
    with pytest.raises(BusyError) as caught, night_lock(tmp_path, [dt.date(2026, 3, 5)]):
        pass
    assert time.monotonic() - started < 1
    message = str(caught.value)
    assert f"pid {night.proc.pid}" in message and "2026-03-01 .. 2026-03-04" in message
    assert "--wait" in message and "started 20" in message
    lines: list[str] = []
    night.release.touch()  # it ends while the second run waits
    with night_lock(tmp_path, [dt.date(2026, 3, 5)], wait=20, on_wait=lines.append):
        assert (tmp_path / f"{NIGHT_LOCK_NAME}.holder").read_text().count("2026-03-05") == 1
    assert night.proc.wait(20) == 0


def test_locks_are_reentrant_in_one_process_and_their_files_private(tmp_path: Path) -> None:
    state = tmp_path / "state.duckdb"
    tmp_path.chmod(0o755)  # a data directory also holds published files: its mode is left alone
    with writing_for("x"), state_lock(state, write=True, wait=0):
        with state_lock(state, write=True, wait=0), state_lock(state, write=False, wait=0):
            pass
        with night_lock(tmp_path, [dt.date(2026, 3, 1)]), night_lock(tmp_path, [dt.date(2026, 3, 1)]):
            pass
    with (
        state_lock(state, write=False, wait=0),
        pytest.raises(TerminalError, match="asked to write"),
        state_lock(state, write=True, wait=0),
    ):
        pass
    names = ["state.duckdb.lock", "state.duckdb.lock.gate", "state.duckdb.lock.holder", "night.lock"]
    for name in [*names, "night.lock.holder"]:
        assert stat.S_IMODE(os.stat(tmp_path / name).st_mode) == 0o600, name
    assert stat.S_IMODE(tmp_path.stat().st_mode) == 0o755
