"""Tables the compliance package owns: operators' acknowledgements of alerts, and the FCC RND
disconnections already reported.

Created by :func:`pipelines.db.connect` from the list in :mod:`pipelines.db.schema`.
"""

DDL: tuple[str, ...] = (
    """
    CREATE TABLE IF NOT EXISTS alert_acks (    -- append-only; key (msisdn, on_date, kind)
        msisdn VARCHAR NOT NULL,               -- E.164
        on_date DATE NOT NULL,                 -- reissue date (violation) / release date (exception)
        kind VARCHAR NOT NULL,                 -- reissue_violation | release_exception
        reason VARCHAR NOT NULL,
        acked_by VARCHAR NOT NULL,
        acked_at TIMESTAMP NOT NULL            -- UTC wall clock of the person's action: audit trail only
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS fcc_reported (  -- key: tenure_id; one row per disconnection
        tenure_id VARCHAR NOT NULL,
        msisdn VARCHAR NOT NULL,               -- E.164
        disconnected_on DATE NOT NULL,         -- the tenure's end, the date reported
        report_month DATE NOT NULL,            -- first day of the month of the report that took it
        nanp BOOLEAN NOT NULL,                 -- false: not a US number, counted as skipped
        permanent_on DATE                      -- first day no restore could undo it (NULL: taken
                                               -- before this column existed)
    )
    """,
    # State files made before permanent_on existed get it (their rows keep NULL).
    "ALTER TABLE fcc_reported ADD COLUMN IF NOT EXISTS permanent_on DATE",
    """
    CREATE TABLE IF NOT EXISTS fcc_reports (   -- key: report_month
        report_month DATE NOT NULL,
        company_id VARCHAR NOT NULL,
        cutoff DATE NOT NULL,                  -- disconnections up to this date are in it
        max_rows BIGINT NOT NULL,
        numbers BIGINT NOT NULL,               -- rows in the files (one per number)
        disconnections BIGINT NOT NULL,        -- US disconnections they cover
        skipped_non_nanp BIGINT NOT NULL
    )
    """,
)
