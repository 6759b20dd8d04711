"""Who may open the state file, and when: one writer or many readers, and one night at a time.

DuckDB lets one process open a database file for writing and then refuses every other opener,
readers too; a read-only opener blocks a writer the same way. Left to DuckDB, a ``recycle
status`` during a night made the night's next step die on DuckDB's lock with a traceback. So
every opener of the state file goes through :func:`state_lock` (``open_state`` takes it) first:

- ``<state>.lock``: readers hold it shared, a writer exclusive, for as long as the file is open.
- ``<state>.lock.gate``: writer preference. A writer takes it exclusive *before* waiting for
  ``.lock`` and keeps it; a reader takes it shared only for the instant of getting ``.lock``.
  So a waiting writer waits only for the readers already in (they are short), and readers
  arriving after it queue behind it instead of starving it.
- ``<state>.lock.holder``: who writes (pid, what, since), so a waiting reader can say it.

:func:`night_lock` (``<data>/night.lock`` and ``night.lock.holder``) is held by ``recycle run``
for all its dates and by every nightly step (re-entrant: the run's own steps pass): two runs
never interleave their steps on one data directory.

Why ``fcntl.flock`` on side files: the kernel drops a flock when its process dies, SIGKILL
included, so a killed run leaves no stale lock (a holder file may stay behind; it is read only
while its lock is held, and overwritten by the next holder). Locks are taken by polling with
``LOCK_NB`` (5 ms doubling to 100 ms) so that every wait has a deadline and one line saying
what it waits for; a blocking flock would need a signal (main thread only) to time out.

Why readers wait instead of reading a published copy: the state is one DuckDB file of several
GB at a province's scale (10M tenures); copying it after every step would cost each night
minutes of I/O and the disk twice over, while each step holds the file only for its own
transaction and readers get in between two steps. The server already reads its own
published snapshot (:mod:`pipelines.feeds.query_snapshot`) and never waits.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pipelines.errors import BusyError, ConfigError, TerminalError
from pipelines.layout import PRIVATE_FILE_MODE, atomic_write_bytes

ENV_READER_WAIT = "RECYCLE_STATE_WAIT_SECONDS"
# An operator's command waits this long for the night's current step to close the state file:
# most steps of a demo-size night take under a second, a province's ingest a few minutes.
DEFAULT_READER_WAIT_S = 120.0
# A nightly step waits this long for readers to leave (they are short; a longer wait means a
# reader hangs, and the step fails transiently: Airflow retries it, `recycle run` says so).
DEFAULT_WRITER_WAIT_S = 900.0
NIGHT_LOCK_NAME = "night.lock"
PROBE_GRACE_S = 0.5

OnWait = Callable[[str], None]
Mode = Literal["read", "write"]


def _stderr_line(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def reader_wait_seconds() -> float:
    """``$RECYCLE_STATE_WAIT_SECONDS`` or the default: how long an operator's command waits."""
    raw = os.environ.get(ENV_READER_WAIT, "")
    try:
        return float(raw) if raw.strip() else DEFAULT_READER_WAIT_S
    except ValueError:
        raise TerminalError(
            f"{ENV_READER_WAIT}={raw!r} is not a number of seconds; set it to e.g. 300"
        ) from None


# What the writer of this process is doing, for the holder file (no number: argv may hold one).
_purpose: ContextVar[str] = ContextVar("recycle_state_purpose", default="")


@contextmanager
def writing_for(purpose: str) -> Iterator[None]:
    """Name what this process writes the state for (``nightly step ingest of 2026-03-01``)."""
    token = _purpose.set(purpose)
    try:
        yield
    finally:
        _purpose.reset(token)


# --------------------------------------------------------------------------- primitives


def _open_lock_file(path: Path) -> int:
    # O_CLOEXEC (Python's default): a child process never inherits, and so never keeps, a lock.
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, PRIVATE_FILE_MODE)
    except PermissionError:
        raise ConfigError(
            f"cannot open the lock file {path} (permission denied); run the command as the owner of "
            f"{path.parent}"
        ) from None
    if os.fstat(fd).st_mode & 0o077:
        os.fchmod(fd, PRIVATE_FILE_MODE)
    return fd


def _acquire(fd: int, op: int, deadline: float | None, on_first_miss: Callable[[], None]) -> bool:
    """Take ``op`` on ``fd`` before ``deadline`` (monotonic; None: no limit); False when it passed."""
    delay = 0.005
    missed = False
    while True:
        try:
            fcntl.flock(fd, op | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            pass
        if not missed:
            missed = True
            on_first_miss()
        now = time.monotonic()
        if deadline is not None and now >= deadline:
            return False
        time.sleep(delay if deadline is None else min(delay, deadline - now))
        delay = min(delay * 2, 0.1)


def _deadline(wait: float | None) -> float | None:
    return None if wait is None else time.monotonic() + max(wait, 0.0)


def _write_holder(path: Path, **fields: object) -> None:
    """Say who holds a lock, in a 0600 file beside it (written whole, fsynced: 8.7 ms of a writer's
    9 ms per lock taken, measured over 2,000 takes; ten steps a night cost 0.1 s).

    Not ``write_private``: that makes the directory 0700, and the data directory also holds
    the published feeds and ledger that another user copies out (``pipelines.layout``)."""
    started = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")  # when a process began: wall clock
    body = json.dumps({"pid": os.getpid(), "since": started, **fields}).encode() + b"\n"
    atomic_write_bytes(path, body, mode=PRIVATE_FILE_MODE)


def read_holder(path: Path) -> dict[str, object]:
    """The holder file of a lock (``{}`` when absent or half-written: it is only a description)."""
    try:
        found = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


def describe_holder(holder: dict[str, object]) -> str:
    if not holder:
        return "another process"
    what = holder.get("purpose") or "a writer"
    return f"pid {holder.get('pid', '?')} ({what}, since {holder.get('since', '?')})"


# --------------------------------------------------------------------------- re-entry


@dataclass
class _Held:
    mode: Mode
    fds: tuple[int, ...]
    count: int = 1


# Locks this process holds, by lock file: a nested open (a step's helper opening the state
# again, `recycle run`'s steps under its night lock) must not wait for its own process.
_held: dict[Path, _Held] = {}
_held_guard = threading.Lock()


def _reenter(lock: Path, mode: Mode) -> bool:
    with _held_guard:
        held = _held.get(lock)
        if held is None:
            return False
        if held.mode == "read" and mode == "write":
            raise TerminalError(
                f"this process reads {lock.name} and asked to write it: open it for writing first"
            )
        held.count += 1
        return True


def _release(lock: Path) -> None:
    with _held_guard:
        held = _held[lock]
        held.count -= 1
        if held.count:
            return
        del _held[lock]
    for fd in held.fds:
        os.close(fd)  # closing the last descriptor of the open file releases its flock


# --------------------------------------------------------------------------- the state file


@contextmanager
def state_lock(
    state: Path, *, write: bool, wait: float | None = None, on_wait: OnWait = _stderr_line
) -> Iterator[None]:
    """Hold the state file's reader or writer lock for a block (re-entrant in one process).

    ``wait``: seconds before giving up with :class:`~pipelines.errors.BusyError`; None is the
    default of the kind (readers :func:`reader_wait_seconds`, writers 15 minutes). ``on_wait``
    gets one line when the lock is not free at once (stderr by default)."""
    lock = state.with_name(state.name + ".lock")
    mode: Mode = "write" if write else "read"
    if not _reenter(lock, mode):
        seconds = wait if wait is not None else (DEFAULT_WRITER_WAIT_S if write else reader_wait_seconds())
        fds = (_take_writer if write else _take_reader)(lock, seconds, on_wait)
        with _held_guard:
            _held[lock] = _Held(mode, fds)
    try:
        yield
    finally:
        _release(lock)


def _take_reader(lock: Path, seconds: float, on_wait: OnWait) -> tuple[int, ...]:
    holder = lock.with_name(lock.name + ".holder")
    deadline = _deadline(seconds)

    said: list[bool] = []

    def say() -> None:  # one line, though the wait may miss the gate and then the lock
        if said:
            return
        said.append(True)
        on_wait(
            f"waiting up to {seconds:g}s for {lock.parent / lock.stem}: {describe_holder(read_holder(holder))} "
            f"is writing it (${ENV_READER_WAIT} sets the wait)"
        )

    gate = _open_lock_file(lock.with_name(lock.name + ".gate"))
    fd = _open_lock_file(lock)
    try:
        if not (_acquire(gate, fcntl.LOCK_SH, deadline, say) and _acquire(fd, fcntl.LOCK_SH, deadline, say)):
            raise BusyError(
                f"{lock.parent / lock.stem} is still being written by {describe_holder(read_holder(holder))} "
                f"after {seconds:g}s; nothing was read. Run the command again when the night's step has "
                "ended (recycle status --date D shows the night), or wait longer: "
                f"{ENV_READER_WAIT}=600 recycle ..."
            )
    except BaseException:
        os.close(fd)
        os.close(gate)
        raise
    os.close(gate)  # a reader holds the gate only to get in: a writer that comes next is not starved
    return (fd,)


def _take_writer(lock: Path, seconds: float, on_wait: OnWait) -> tuple[int, ...]:
    holder = lock.with_name(lock.name + ".holder")
    deadline = _deadline(seconds)
    state = lock.parent / lock.stem
    gate = _open_lock_file(lock.with_name(lock.name + ".gate"))
    fd = _open_lock_file(lock)
    try:
        if not _acquire(
            gate,
            fcntl.LOCK_EX,
            deadline,
            lambda: on_wait(f"waiting for {describe_holder(read_holder(holder))} to finish writing {state}"),
        ):
            raise BusyError(
                f"{state} is still written by {describe_holder(read_holder(holder))} after {seconds:g}s; "
                "run the step again when it has finished (recycle status --date D)"
            )
        # From here on this process is the writer (waiting for readers, then writing): say so.
        _write_holder(holder, purpose=_purpose.get() or "a writer")
        if not _acquire(
            fd, fcntl.LOCK_EX, deadline, lambda: on_wait(f"waiting for readers of {state} to finish")
        ):
            raise BusyError(
                f"readers still hold {state} after {seconds:g}s (an operator's command that hangs?); "
                "stop it, then run the step again"
            )
    except BaseException:
        os.close(fd)
        os.close(gate)
        raise
    return (fd, gate)


# --------------------------------------------------------------------------- the night


@contextmanager
def night_lock(
    data_dir: Path,
    days: Sequence[dt.date],
    *,
    wait: float = 0.0,
    purpose: str = "recycle run",
    on_wait: OnWait = _stderr_line,
) -> Iterator[None]:
    """Hold ``<data_dir>/night.lock`` for a block: one nightly run per data directory.

    Re-entrant in one process (``recycle run`` holds it for all its dates; each step takes it
    again). Another holder: wait up to ``wait`` seconds (0: refuse at once) and raise
    :class:`~pipelines.errors.BusyError` naming it (pid, dates, start)."""
    lock = data_dir / NIGHT_LOCK_NAME
    if not _reenter(lock, "write"):
        holder = lock.with_name(lock.name + ".holder")
        # A library caller (a test, an Airflow task on a first night) may come before any
        # directory exists, as open_state does; `recycle run` has refused a missing one already.
        data_dir.mkdir(parents=True, exist_ok=True)
        fd = _open_lock_file(lock)

        def say() -> None:
            on_wait(f"waiting up to {wait:g}s for the nightly run {describe_night(read_holder(holder))}")

        # Never less than a moment: `recycle status` probes the lock (night_holder) and must
        # not make a run that starts in that instant refuse.
        if not _acquire(
            fd, fcntl.LOCK_EX, _deadline(max(wait, PROBE_GRACE_S)), say if wait > 0 else lambda: None
        ):
            os.close(fd)
            raise BusyError(
                f"another nightly run holds {data_dir}: {describe_night(read_holder(holder))}; one night "
                "runs at a time. Wait for it to end (recycle status --date D), or queue behind it: "
                "recycle run ... --wait SECONDS"
            )
        span = f"{days[0]} .. {days[-1]}" if len(days) > 1 else str(days[0]) if days else "?"
        _write_holder(holder, purpose=purpose, dates=span)
        with _held_guard:
            _held[lock] = _Held("write", (fd,))
    try:
        yield
    finally:
        _release(lock)


def night_holder(data_dir: Path) -> dict[str, object] | None:
    """The holder of ``data_dir``'s night lock when another process holds it now, else None."""
    lock = data_dir / NIGHT_LOCK_NAME
    if lock in _held or not lock.exists():
        return None
    fd = os.open(lock, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)  # momentary: a run waits PROBE_GRACE_S for it
    except BlockingIOError:
        return read_holder(lock.with_name(lock.name + ".holder"))
    finally:
        os.close(fd)
    return None


def describe_night(holder: dict[str, object]) -> str:
    if not holder:
        return "(pid unknown)"
    return (
        f"pid {holder.get('pid', '?')}, {holder.get('purpose', '?')} of {holder.get('dates', '?')}, "
        f"started {holder.get('since', '?')}"
    )
