"""The client's verified copy: ``<state>/feed.duckdb`` with the rows, the pending list
(``notice_rows``), the manifests and the trust state (``client_state``: root, timestamp version, last seq, last checkpoint).

Its own small database, not the carrier's state file: :func:`pipelines.db.connect` would create
the carrier's tables in it, so the connection is opened here with the client's own tables;
writes go through :func:`pipelines.db.transaction` like every other writer.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import duckdb
import pyarrow as pa

from pipelines.client.trust import LastPull, VerifiedPull
from pipelines.db import transaction
from pipelines.feeds.wire import Envelope, Root, sha256_hex

STATE_DB = "feed.duckdb"

DDL = (
    """CREATE TABLE IF NOT EXISTS feed_rows (
        seq BIGINT NOT NULL, msisdn VARCHAR NOT NULL, event VARCHAR NOT NULL,
        disconnected_on DATE, released_on DATE, reissued_on DATE, region VARCHAR,
        feed_date DATE NOT NULL)""",
    # a store made before feeds carried how the prior tenure ended
    "ALTER TABLE feed_rows ADD COLUMN IF NOT EXISTS prior_end VARCHAR",
    # ... and before they carried the risk grade
    "ALTER TABLE feed_rows ADD COLUMN IF NOT EXISTS reminders_reached TINYINT",
    "ALTER TABLE feed_rows ADD COLUMN IF NOT EXISTS release_exception BOOLEAN",
    "ALTER TABLE feed_rows ADD COLUMN IF NOT EXISTS violation BOOLEAN",
    "ALTER TABLE feed_rows ADD COLUMN IF NOT EXISTS risk VARCHAR",
    # the pending list: notices listed and withdrawn, by their own seq
    """CREATE TABLE IF NOT EXISTS notice_rows (
        seq BIGINT NOT NULL, msisdn VARCHAR NOT NULL, event VARCHAR NOT NULL,
        disconnected_on DATE NOT NULL, earliest_release_on DATE NOT NULL, cause VARCHAR, region VARCHAR,
        feed_date DATE NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS manifests (
        seq BIGINT NOT NULL, feed_date DATE NOT NULL, sha256 VARCHAR NOT NULL, manifest BLOB NOT NULL)""",
    "CREATE TABLE IF NOT EXISTS client_state (key VARCHAR PRIMARY KEY, value BLOB NOT NULL)",
)


def connect(state_dir: Path, read_only: bool = False) -> duckdb.DuckDBPyConnection:
    state_dir.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(str(state_dir / STATE_DB), read_only=read_only)
    if not read_only:
        for stmt in DDL:
            con.execute(stmt)
    return con


def _state(con: duckdb.DuckDBPyConnection) -> dict[str, bytes]:
    return {k: bytes(v) for k, v in con.execute("SELECT key, value FROM client_state").fetchall()}


def load_last_pull(con: duckdb.DuckDBPyConnection) -> LastPull:
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


def store_pull(con: duckdb.DuckDBPyConnection, got: VerifiedPull) -> None:
    """Rows, manifests and the new trust state, in one transaction: all of a pull or nothing."""
    state = _new_state(got)
    with transaction(con):
        if got.tables:
            con.register("pulled_rows", pa.concat_tables(got.tables))
            con.execute("INSERT INTO feed_rows BY NAME SELECT * FROM pulled_rows")
            con.unregister("pulled_rows")
        if got.notices:
            con.register("pulled_notices", pa.concat_tables(got.notices))
            con.execute("INSERT INTO notice_rows BY NAME SELECT * FROM pulled_notices")
            con.unregister("pulled_notices")
        for env, data in got.manifests:
            con.execute(
                "INSERT INTO manifests VALUES (?, ?, ?, ?)",
                [env.signed.seq, env.signed.feed_date, sha256_hex(data), data],
            )
        for key, value in state.items():
            con.execute("INSERT OR REPLACE INTO client_state VALUES (?, ?)", [key, value])


def stored_root(state_dir: Path) -> Envelope[Root] | None:
    con = connect(state_dir, read_only=True)
    try:
        return load_last_pull(con).root
    finally:
        con.close()
