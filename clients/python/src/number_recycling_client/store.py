"""The light client's verified copy: ``<state>/feed.sqlite`` (the stdlib's sqlite3) with the
rows, the pending list (``notice_rows``), the manifests and the trust state (``client_state``:
root, timestamp version, last seq, last checkpoint).

sqlite3 because it ships with Python: a platform installs nothing but this package, gets one
file with transactions (a pull stores all of it or nothing) and an index on the number, which
answers a check in well under a millisecond at a nation's size (README, "Costs").
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from pathlib import Path

from number_recycling_client.errors import TerminalError
from number_recycling_client.feedfiles import FEED_COLUMNS, NOTICE_COLUMNS, Column
from number_recycling_client.trust import LastPull, Row, VerifiedPull
from number_recycling_client.wire import Envelope, Root, sha256_hex

STATE_DB = "feed.sqlite"
_SQL_TYPES = {"string": "TEXT", "date": "TEXT", "int64": "INTEGER", "int8": "INTEGER", "bool": "INTEGER"}


def _table(name: str, columns: tuple[Column, ...]) -> str:
    cols = ", ".join(f"{c.name} {_SQL_TYPES[c.kind]}" for c in columns)
    return f"CREATE TABLE IF NOT EXISTS {name} ({cols}, feed_date TEXT NOT NULL)"


DDL = (
    _table("feed_rows", FEED_COLUMNS),
    "CREATE INDEX IF NOT EXISTS feed_rows_msisdn ON feed_rows (msisdn, seq)",
    _table("notice_rows", NOTICE_COLUMNS),
    "CREATE INDEX IF NOT EXISTS notice_rows_msisdn ON notice_rows (msisdn, seq)",
    "CREATE TABLE IF NOT EXISTS manifests (seq INTEGER PRIMARY KEY, feed_date TEXT NOT NULL, "
    "sha256 TEXT NOT NULL, manifest BLOB NOT NULL)",
    "CREATE TABLE IF NOT EXISTS client_state (key TEXT PRIMARY KEY, value BLOB NOT NULL)",
)


def connect(state_dir: Path, read_only: bool = False) -> sqlite3.Connection:
    """The store; dates come back as ``datetime.date`` (declared TEXT, converted here)."""
    if read_only:
        if not (state_dir / STATE_DB).exists():
            raise TerminalError(f"{state_dir} holds no pulled feed; run `nrc pull` (or `recycle pull`) first")
        con = sqlite3.connect(f"file:{state_dir / STATE_DB}?mode=ro", uri=True)
        return con
    state_dir.mkdir(parents=True, exist_ok=True)
    con = sqlite3.connect(state_dir / STATE_DB, isolation_level=None)
    for stmt in DDL:
        con.execute(stmt)
    return con


def _state(con: sqlite3.Connection) -> dict[str, bytes]:
    return {k: bytes(v) for k, v in con.execute("SELECT key, value FROM client_state").fetchall()}


def load_last_pull(con: sqlite3.Connection) -> LastPull:
    """What the last pull stored (the stored root is parsed strictly, like any root)."""
    state = _state(con)
    return LastPull(
        root=Envelope.from_bytes(state["root"], Root, "stored root") if "root" in state else None,
        timestamp_version=int(state.get("timestamp_version", b"0")),
        seq=int(state.get("seq", b"0")),
        manifest_sha256=state["manifest_sha256"].decode() if "manifest_sha256" in state else None,
        feed_date=dt.date.fromisoformat(state["feed_date"].decode()) if "feed_date" in state else None,
        last_row_seq=int(state.get("last_row_seq", b"0")),
        checkpoint=state.get("checkpoint"),
        last_notice_seq=int(state.get("last_notice_seq", b"0")),
    )


def _new_state(got: VerifiedPull) -> dict[str, bytes]:
    state: dict[str, bytes] = {
        "root": got.root.to_bytes(),
        "timestamp_version": str(got.timestamp.version).encode(),
    }
    if got.manifests:
        env, data = got.manifests[-1]
        state |= {
            "seq": str(env.signed.seq).encode(),
            "manifest_sha256": sha256_hex(data).encode(),
            "feed_date": env.signed.feed_date.isoformat().encode(),
            "last_row_seq": str(got.last_row_seq).encode(),
            "last_notice_seq": str(got.last_notice_seq).encode(),
        }
    if got.checkpoint_note is not None:
        state["checkpoint"] = got.checkpoint_note
    return state


def _insert(con: sqlite3.Connection, table: str, width: int, batches: tuple[list[Row], ...]) -> None:
    marks = ", ".join("?" * (width + 1))
    for rows in batches:
        con.executemany(f"INSERT INTO {table} VALUES ({marks})", rows)


def store_pull(con: sqlite3.Connection, got: VerifiedPull) -> None:
    """Rows, manifests and the new trust state, in one transaction: all of a pull or nothing."""
    state = _new_state(got)
    con.execute("BEGIN IMMEDIATE")
    try:
        _insert(con, "feed_rows", len(FEED_COLUMNS), got.tables)
        _insert(con, "notice_rows", len(NOTICE_COLUMNS), got.notices)
        for env, data in got.manifests:
            con.execute(
                "INSERT INTO manifests VALUES (?, ?, ?, ?)",
                [env.signed.seq, env.signed.feed_date, sha256_hex(data), data],
            )
        con.executemany("INSERT OR REPLACE INTO client_state VALUES (?, ?)", state.items())
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise


def stored_root(state_dir: Path) -> Envelope[Root] | None:
    con = connect(state_dir, read_only=True)
    try:
        return load_last_pull(con).root
    finally:
        con.close()
