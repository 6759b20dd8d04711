"""The one seam between the package and DuckDB, modelled on dlt's ``sql_client``.

Everything that talks to a DuckDB file goes through here: :func:`connect` / :func:`open_state`
(the nightly settings, tables created from :mod:`pipelines.db.schema`), :func:`transaction`
and :func:`nightly_step`, option toggles (:func:`current_options`, :func:`set_options`,
:func:`duckdb_options`) and literal quoting (:func:`sql_str`). Only the nightly run's writing
tasks write the state file (DuckDB allows one writer process), under the writer lock of
:mod:`pipelines.db.locks`, which operators' commands wait for as readers; the server reads
published query snapshots instead.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import duckdb

from pipelines.contacts.vault import ContactVault, register_functions
from pipelines.db.locks import state_lock
from pipelines.errors import ConfigError
from pipelines.layout import PRIVATE_FILE_MODE, check_private, private_dir, private_umask

if TYPE_CHECKING:
    from pipelines.config import Settings

Con = duckdb.DuckDBPyConnection

ENV_MEMORY_LIMIT = "RECYCLE_DUCKDB_MEMORY_LIMIT"
# A province's night (10M tenures, 1M lifecycle rows) runs in it with a peak RSS under 4 GiB;
# what does not fit spills to the temp directory instead of failing.
DEFAULT_MEMORY_LIMIT = "3GB"


_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B|B)?\s*", re.IGNORECASE)
_UNIT = {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12}
_UNIT |= {"KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}


def memory_share(fraction: float) -> str:
    """``fraction`` of the configured DuckDB memory limit, for a step that opens more than one
    database and must keep their sum within it (the ledger step: the state and the openings
    store). The limit itself when it is not a size this understands."""
    limit = os.environ.get(ENV_MEMORY_LIMIT) or DEFAULT_MEMORY_LIMIT
    m = _SIZE.fullmatch(limit)
    if not m:
        return limit
    size = float(m.group(1)) * _UNIT[(m.group(2) or "B").upper()]
    return f"{max(int(size * fraction) // 2**20, 64)}MiB"


def _usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))  # CPUs this process may run on (cgroups, taskset)
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def connect(
    path: Path,
    *,
    read_only: bool = False,
    memory_limit: str | None = None,
    threads: int | None = None,
) -> duckdb.DuckDBPyConnection:
    """Open the state file (creating tables when writable) with the nightly run's settings.

    ``memory_limit`` (DuckDB syntax, e.g. ``"3GB"``) defaults to ``$RECYCLE_DUCKDB_MEMORY_LIMIT``,
    else 3GB; ``threads`` to the CPUs this process may use. DuckDB spills what exceeds the limit
    to ``<state file>.tmp`` beside the state file, on the data volume.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    limit = memory_limit or os.environ.get(ENV_MEMORY_LIMIT) or DEFAULT_MEMORY_LIMIT
    n_threads = threads or _usable_cpus()
    temp_dir = path.with_name(path.name + ".tmp")
    wal = path.with_name(path.name + ".wal")
    if not read_only:
        # Numbers and contacts: refuse to write to a state others can read (fix it, then run);
        # the WAL and spill directory are only tightened (DuckDB re-creates them).
        check_private(path)
        if wal.exists():
            os.chmod(wal, PRIVATE_FILE_MODE)
        private_dir(temp_dir)
    # A new state file (and any WAL written while connecting) is created 0600.
    with private_umask():
        con = duckdb.connect(str(path), read_only=read_only)
    _set_limits(con, limit, n_threads)
    # Contacts are sealed at rest (pipelines.contacts): every connection can seal and open them.
    register_functions(con, ContactVault.for_state(path))
    if con.execute("SELECT current_setting('temp_directory')").fetchone() != (str(temp_dir),):
        con.execute(f"SET temp_directory = {sql_str(temp_dir)}")
    if not read_only:
        with private_umask():
            create_tables(con)
            _start_private_wal(con)
    return con


def _set_limits(con: duckdb.DuckDBPyConnection, limit: str, n_threads: int) -> None:
    """The nightly run's memory limit and threads on ``con`` (closed, ConfigError, if refused).

    SET, not connect(config=...): a second connection to the same file in this process (a
    plain duckdb.connect, say) would otherwise be refused for a different configuration."""
    try:
        con.execute(f"SET memory_limit = '{limit.replace(chr(39), '')}'")
        con.execute(f"SET threads = {int(n_threads)}")
    except (duckdb.Error, ValueError) as exc:
        con.close()
        raise ConfigError(
            f"DuckDB memory limit {limit!r} or threads {n_threads!r} rejected ({exc}); set "
            f"{ENV_MEMORY_LIMIT} to a size such as 3GB or 1500MB"
        ) from exc


def _start_private_wal(con: Con) -> None:
    """Have DuckDB create the WAL now, under umask 077, with a write that leaves nothing behind.

    Appends keep the file's mode, so a write outside :func:`transaction` / :func:`nightly_step`
    (an autocommit statement) lands in a 0600 WAL too, until DuckDB's next checkpoint deletes
    it; the next commit through :func:`_commit` creates it 0600 again.
    """
    probe = f"_private_wal_probe_{os.getpid()}"
    con.execute(f"BEGIN TRANSACTION; CREATE TABLE {probe} (x INTEGER); DROP TABLE {probe}; COMMIT")


@contextmanager
def open_state(
    path: Path, *, read_only: bool = False, wait: float | None = None, memory_limit: str | None = None
) -> Iterator[duckdb.DuckDBPyConnection]:
    """The state file, opened under its reader or writer lock (:mod:`pipelines.db.locks`).

    Every opener of the state file comes through here, so an operator's command and a nightly
    step wait for each other (``wait`` seconds, None: the default of the kind) instead of
    failing on DuckDB's own lock. The lock is taken before DuckDB opens the file and released
    after it is closed. (:func:`connect` alone takes no lock: tests and benchmarks own their file.)
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with state_lock(path, write=not read_only, wait=wait):
        con = connect(path, read_only=read_only, memory_limit=memory_limit)
        try:
            yield con
        finally:
            con.close()


@contextmanager
def open_union(paths: Sequence[Path]) -> Iterator[duckdb.DuckDBPyConnection]:
    """Several state files read as one: each attached read-only under its reader lock, and
    every table a temporary view of the UNION ALL of that table in each file (files that lack
    it, an older or still empty state, add nothing). The provinces' states read as the nation's
    by the sequencer's feed and snapshot (pipelines.provinces). No contact functions: nothing
    read this way opens a contact. Files that do not exist yet are skipped."""
    with contextlib.ExitStack() as stack:
        present = [p for p in paths if p.exists()]
        for path in present:
            stack.enter_context(state_lock(path, write=False))
        con = duckdb.connect()
        _set_limits(con, os.environ.get(ENV_MEMORY_LIMIT) or DEFAULT_MEMORY_LIMIT, _usable_cpus())
        stack.callback(con.close)
        tables: dict[str, list[str]] = {}
        for i, path in enumerate(present):
            con.execute(f"ATTACH {sql_str(path)} AS s{i} (READ_ONLY)")
            for (name,) in con.execute(
                "SELECT table_name FROM duckdb_tables() WHERE database_name = ? ORDER BY table_name",
                [f"s{i}"],
            ).fetchall():
                tables.setdefault(str(name), []).append(f"s{i}.main.{name}")
        for name, parts in tables.items():
            union = " UNION ALL BY NAME ".join(f"SELECT * FROM {part}" for part in parts)
            con.execute(f'CREATE TEMP VIEW "{name}" AS {union}')
        yield con


def create_tables(con: Con) -> None:
    """Create every table of the state file (idempotent): the packages' DDL, in one list."""
    from pipelines.db.schema import all_ddl

    for stmt in all_ddl():
        con.execute(stmt)


# --------------------------------------------------------------------------- SQL text


def sql_str(value: str | Path) -> str:
    """A SQL string literal (drop-file content never reaches SQL text; config values and paths may)."""
    return "'" + str(value).replace("'", "''") + "'"


# --------------------------------------------------------------------------- transactions


@contextmanager
def transaction(con: Con) -> Iterator[Con]:
    """One DuckDB transaction: everything a step writes lands together or not at all."""
    con.execute("BEGIN TRANSACTION")
    try:
        yield con
    except BaseException:
        con.execute("ROLLBACK")
        raise
    _commit(con)


def _commit(con: Con) -> None:
    # DuckDB deletes its WAL at every checkpoint and re-creates it, with the process umask, at
    # the next commit: a commit runs under umask 077 so the WAL of the state file is 0600.
    with private_umask():
        con.execute("COMMIT")


def in_transaction(con: Con) -> bool:
    """Whether ``con`` is inside an explicit transaction."""
    # Outside a transaction every statement gets its own transaction id.
    first = con.execute("SELECT txid_current()").fetchone()
    return first == con.execute("SELECT txid_current()").fetchone()


_Report = TypeVar("_Report")


def _set_insertion_order(con: Con, value: str, *, quiet: bool = False) -> None:
    try:
        con.execute(f"SET preserve_insertion_order = {value}")
    except duckdb.Error:
        if not quiet:
            raise


def nightly_step(
    step: Callable[[Con, Settings, dt.date], _Report],
) -> Callable[[Con, Settings, dt.date], _Report]:
    """Run a step of the night in a transaction, with DuckDB's ``preserve_insertion_order`` off.

    A step works on rows it found by rowid, and rowids hold only within a transaction (a
    checkpoint may renumber them): called outside one, the step runs in its own, committed
    when it returns and rolled back when it raises.

    The steps take every order they need from columns (ORDER BY, window orderings, keys),
    never from the physical order of rows, so DuckDB may insert and build tables on all
    threads (apply_events about a quarter faster on two cores). The setting is global to the
    database and is put back afterwards, except when the caller's transaction was aborted by
    the error (DuckDB refuses any statement there until ROLLBACK): the run fails then anyway.
    """

    @functools.wraps(step)
    def run(con: Con, settings: Settings, day: dt.date) -> _Report:
        own = not in_transaction(con)
        if own:
            con.execute("BEGIN TRANSACTION")
        row = con.execute("SELECT current_setting('preserve_insertion_order')").fetchone()
        before = "true" if row is None or row[0] else "false"
        _set_insertion_order(con, "false")
        try:
            report = step(con, settings, day)
        except BaseException:
            if own:
                con.execute("ROLLBACK")
            _set_insertion_order(con, before, quiet=True)
            raise
        _set_insertion_order(con, before)
        if own:
            _commit(con)
        return report

    return run


# --------------------------------------------------------------------------- options


def current_options(con: Con, *names: str) -> dict[str, object]:
    """The values of DuckDB options ``names``, to give to :func:`set_options` later."""
    return {name: con.execute(f"SELECT current_setting('{name}')").fetchall()[0][0] for name in names}


def set_options(con: Con, values: Mapping[str, object]) -> None:
    """SET DuckDB options. They are not transactional: a ROLLBACK does not put them back."""
    for name, value in values.items():
        con.execute(f"SET {name} = {_setting_sql(value)}")


@contextmanager
def duckdb_options(con: Con, **values: bool | int | str) -> Iterator[None]:
    """Set DuckDB options for a block and put the caller's values back after it.

    Not for a block inside a transaction that an error may abort: DuckDB then refuses the SET
    that puts the values back until the ROLLBACK (use :func:`current_options` and
    :func:`set_options` around the transaction).
    """
    before = current_options(con, *values)
    try:
        set_options(con, values)
        yield
    finally:
        set_options(con, before)


def _setting_sql(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return sql_str(str(value))
