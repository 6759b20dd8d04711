"""Tables the lifecycle owns: tenures, number state and its history, releases, reissues, the
pending recycle notices (``notice_events``) and the queue of facts for the ledger (``ledger_events``).

Created by :func:`pipelines.db.connect` from the list in :mod:`pipelines.db.schema`.
"""

# No PRIMARY KEY / UNIQUE on these tables on purpose: DuckDB's ART indexes over 10M+ rows
# double build time and memory and slow every UPDATE. Logical keys are noted per table and
# kept unique by the steps (anti-joins on deterministic ids); tests check them.
DDL: tuple[str, ...] = (
    """
    CREATE TABLE IF NOT EXISTS tenures (            -- key: tenure_id
        tenure_id VARCHAR NOT NULL,                 -- 'T' + 20 hex of sha256(msisdn|tenure_start)
        msisdn VARCHAR NOT NULL,
        tenure_start DATE NOT NULL,
        tenure_end DATE,                            -- permanent disconnection: cancel / 双停 suspension date
        end_reason VARCHAR,                         -- cancel | suspend | port_out | reissue
        subscriber_ref VARCHAR NOT NULL,
        region VARCHAR NOT NULL,
        contact_email BLOB,                         -- sealed (pipelines.contacts): live, then released-<day>
        contact_phone BLOB,
        language VARCHAR,
        opened_by VARCHAR NOT NULL,                 -- snapshot | cancel | suspend | port_in | reissue
        opened_logical DATE NOT NULL
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS number_state (       -- key: msisdn
        msisdn VARCHAR NOT NULL,
        state VARCHAR NOT NULL,                     -- see lifecycle.STATES
        tenure_id VARCHAR NOT NULL,                 -- current or last tenure
        since DATE NOT NULL,                        -- date of the last transition (out_of_order check)
        disconnected_on DATE,                       -- start of the live disconnection episode
        cause VARCHAR,                              -- cancel | suspend: what began the episode
        suspended_on DATE,
        frozen_on DATE,
        freeze_ends DATE,                           -- projected while suspended
        hold_started DATE,
        released_on DATE,
        region VARCHAR NOT NULL,
        changed_logical DATE NOT NULL               -- logical date of the last change
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS state_history (
        msisdn VARCHAR NOT NULL,
        tenure_id VARCHAR NOT NULL,
        from_state VARCHAR,
        to_state VARCHAR NOT NULL,
        on_date DATE NOT NULL,
        logical_date DATE NOT NULL,
        cause VARCHAR NOT NULL,
        file_sha256 VARCHAR,                        -- the ingest row that caused it, if any
        line_no BIGINT
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS releases (
        msisdn VARCHAR NOT NULL,
        tenure_id VARCHAR NOT NULL,
        disconnected_on DATE NOT NULL,
        released_on DATE NOT NULL,
        effective_reminders INTEGER NOT NULL,
        exception BOOLEAN NOT NULL,
        logical_date DATE NOT NULL,
        region VARCHAR NOT NULL
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS reissues (
        msisdn VARCHAR NOT NULL,
        prior_tenure_id VARCHAR,
        new_tenure_id VARCHAR NOT NULL,
        reissue_date DATE NOT NULL,
        disconnected_on DATE,                       -- end of the prior tenure
        released_on DATE,
        violation BOOLEAN NOT NULL,
        logical_date DATE NOT NULL,
        region VARCHAR NOT NULL,
        file_sha256 VARCHAR NOT NULL,
        line_no BIGINT NOT NULL
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS ledger_events (      -- key: idempotency_key; read ORDER BY seq
        seq BIGINT NOT NULL,
        idempotency_key VARCHAR NOT NULL,
        logical_date DATE NOT NULL,
        on_date DATE NOT NULL,
        type VARCHAR NOT NULL,
        msisdn VARCHAR NOT NULL,
        tenure_id VARCHAR,
        tenure_start DATE,
        tenure_end DATE,
        fields JSON NOT NULL,
        appended BOOLEAN NOT NULL
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS notice_events (      -- key: (event, tenure_id, disconnected_on); read ORDER BY seq
        seq BIGINT NOT NULL,                        -- contiguous from 1, in the order listed (the push seam)
        event VARCHAR NOT NULL,                     -- pending | withdrawn
        msisdn VARCHAR NOT NULL,
        tenure_id VARCHAR NOT NULL,
        disconnected_on DATE NOT NULL,              -- the permanent disconnection the notice is about
        earliest_release_on DATE NOT NULL,          -- freeze end or end of the notice, the later
        cause VARCHAR NOT NULL,                     -- cancel | suspend
        region VARCHAR NOT NULL,
        logical_date DATE NOT NULL                  -- the night it was listed / withdrawn
    )
    """,
)
