"""Tables the ingest stage owns: the file registry, one row table per drop kind, quarantine.

Created by :func:`pipelines.db.connect` from the list in :mod:`pipelines.db.schema`.
"""

# Ingest-owned tables. `logical_date` is the day whose inbox carried the row; `line_no` is the
# 1-based physical line in the file (header = line 1) or the 1-based Parquet row number.
# The row tables have no PRIMARY KEY on (file_sha256, line_no) although it is unique: the file
# registry admits a file once, and a key would cost an index insert per row plus an index,
# held in memory, that grows with every night's million rows. The ingest tests check it.
# Columns of (nearly) unique strings are zstd-compressed: DuckDB's default analyses every
# method and picks FSST, which takes twice the time to write a night's rows and thrice the
# space; zstd reads as fast (benchmarks/bench_ingest.py, docs/architecture.md).
DDL: tuple[str, ...] = (
    """
    CREATE TABLE IF NOT EXISTS files (
        file_name VARCHAR NOT NULL,
        kind VARCHAR NOT NULL,
        sha256 VARCHAR NOT NULL,
        logical_date DATE NOT NULL,
        status VARCHAR NOT NULL,          -- ingested | failed
        rows_in BIGINT NOT NULL,
        accepted BIGINT NOT NULL,
        quarantined BIGINT NOT NULL,
        encoding VARCHAR,
        delimiter VARCHAR,
        error VARCHAR,
        PRIMARY KEY (file_name, sha256)
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS lifecycle_events (
        file_sha256 VARCHAR NOT NULL,
        line_no BIGINT NOT NULL,
        logical_date DATE NOT NULL,
        msisdn VARCHAR USING COMPRESSION zstd NOT NULL,          -- E.164
        event VARCHAR NOT NULL,           -- cancel | suspend | restore | port_out | port_in
        effective_date DATE NOT NULL,
        region VARCHAR NOT NULL,          -- province code, e.g. GD
        subscriber_ref VARCHAR USING COMPRESSION zstd NOT NULL,
        tenure_start DATE,
        contact_email BLOB,               -- sealed (pipelines.contacts): ciphertext does not compress
        contact_phone BLOB,               -- sealed E.164, another number of the same owner
        language VARCHAR NOT NULL        -- zh-CN | en
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS reissue_events (
        file_sha256 VARCHAR NOT NULL,
        line_no BIGINT NOT NULL,
        logical_date DATE NOT NULL,
        msisdn VARCHAR USING COMPRESSION zstd NOT NULL,
        reissue_date DATE NOT NULL,
        region VARCHAR NOT NULL,
        subscriber_ref VARCHAR USING COMPRESSION zstd NOT NULL
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS subscriber_rows (
        file_sha256 VARCHAR NOT NULL,
        line_no BIGINT NOT NULL,
        logical_date DATE NOT NULL,
        msisdn VARCHAR USING COMPRESSION zstd NOT NULL,
        tenure_start DATE NOT NULL,
        region VARCHAR NOT NULL,
        subscriber_ref VARCHAR USING COMPRESSION zstd NOT NULL,
        contact_email BLOB,               -- sealed (pipelines.contacts)
        contact_phone BLOB,
        language VARCHAR NOT NULL
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS receipt_rows (
        file_sha256 VARCHAR NOT NULL,
        line_no BIGINT NOT NULL,
        logical_date DATE NOT NULL,
        reminder_id VARCHAR USING COMPRESSION zstd NOT NULL,
        channel VARCHAR NOT NULL,         -- email | sms | letter
        status VARCHAR NOT NULL,          -- delivered | failed | expired | acknowledged
        "at" TIMESTAMP NOT NULL,          -- UTC; quoted: AT is a keyword in DuckDB 2
        provider_ref VARCHAR USING COMPRESSION zstd
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS quarantine (
        file_name VARCHAR NOT NULL,
        file_sha256 VARCHAR NOT NULL,
        kind VARCHAR NOT NULL,
        logical_date DATE NOT NULL,
        line_no BIGINT NOT NULL,
        stage VARCHAR NOT NULL,           -- ingest | lifecycle | receipts
        reason VARCHAR NOT NULL,          -- a reason code, see pipelines.reasons
        detail VARCHAR,                   -- for reading: numbers and contacts in it masked
        original_line BLOB,               -- ingest: the line, sealed (pipelines.contacts); else NULL
        PRIMARY KEY (file_sha256, line_no, stage)
    )
    """,
)
