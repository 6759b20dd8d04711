"""Tables the reminders stage owns: the reminder schedule and the rendered outbox.

Created by :func:`pipelines.db.connect` from the list in :mod:`pipelines.db.schema`.
No PRIMARY KEY on purpose (see :mod:`pipelines.lifecycle.schema`); keys are noted per table.
"""

DDL: tuple[str, ...] = (
    """
    CREATE TABLE IF NOT EXISTS reminders (          -- key: reminder_id
        reminder_id VARCHAR NOT NULL,               -- 'R' + 20 hex of sha256(tenure|disconnected_on|slot|channel)
        tenure_id VARCHAR NOT NULL,
        msisdn VARCHAR NOT NULL,
        disconnected_on DATE NOT NULL,              -- the disconnection episode it belongs to
        slot VARCHAR NOT NULL,                      -- offset:<n> | hold | fallback:<origin slot>
        reminder_no INTEGER NOT NULL,
        final BOOLEAN NOT NULL,
        channel VARCHAR NOT NULL,                   -- sms | email | letter
        address BLOB NOT NULL,                      -- sealed (pipelines.contacts): phone, e-mail, or
                                                    -- subscriber_ref for letters
        language VARCHAR NOT NULL,
        due_on DATE NOT NULL,
        status VARCHAR NOT NULL,                    -- scheduled|sent|failed|cancelled|delivered|acknowledged|expired
        attempts INTEGER NOT NULL,
        provider_ref VARCHAR,
        sent_on DATE,
        effective_on DATE,
        scheduled_logical DATE NOT NULL,
        origin_id VARCHAR,                          -- the failed reminder a fallback replaces
        fallback_handled BOOLEAN NOT NULL,
        fallback_due DATE,                          -- failed: first day a fallback may be scheduled
        release_on DATE NOT NULL,                   -- the release date the text announces
        cause VARCHAR NOT NULL                      -- cancel | suspend: which text
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS outbox (             -- key: reminder_id
        reminder_id VARCHAR NOT NULL,
        idempotency_key VARCHAR NOT NULL,
        channel VARCHAR NOT NULL,
        address BLOB NOT NULL,                      -- sealed, copied from reminders
        language VARCHAR NOT NULL,
        subject VARCHAR NOT NULL,
        text VARCHAR NOT NULL,
        html VARCHAR,
        due_on DATE NOT NULL,
        status VARCHAR NOT NULL,                    -- pending | sent | failed | cancelled
        attempts INTEGER NOT NULL,
        last_attempt_on DATE,
        last_error VARCHAR,
        rendered_logical DATE NOT NULL
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS holder_notices (     -- key: notice_id (pipelines.reminders.holder_notice)
        notice_id VARCHAR NOT NULL,                 -- 'H' + 20 hex of sha256(new tenure|new_holder|channel);
                                                    -- also its outbox reminder_id and idempotency key
        msisdn VARCHAR NOT NULL,                    -- the recycled number: also the address (SMS to itself)
        tenure_id VARCHAR NOT NULL,                 -- the new holder's tenure
        prior_tenure_id VARCHAR NOT NULL,           -- the recycled tenure: its ledger entries' tenure
        prior_start DATE,
        prior_end DATE NOT NULL,                    -- platforms' answers count from this day
        reissue_date DATE NOT NULL,
        as_of DATE NOT NULL,                        -- the carrier day the answers were taken as of
        channel VARCHAR NOT NULL,                   -- sms
        language VARCHAR NOT NULL,
        outcomes VARCHAR NOT NULL,                  -- JSON platform_outcomes as rendered (platform
                                                    -- names only of those that agreed to be named)
        status VARCHAR NOT NULL,                    -- pending | sent | failed
        sent_on DATE,
        scheduled_logical DATE NOT NULL
    )
    """,
)
