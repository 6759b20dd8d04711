"""The table the contacts package owns: the record of every contacts key retired and erased.

Created by :func:`pipelines.db.connect` from the list in :mod:`pipelines.db.schema`.
"""

DDL: tuple[str, ...] = (
    """
    CREATE TABLE IF NOT EXISTS contact_keys (       -- key: epoch; the audit record of crypto-shredding
        epoch VARCHAR NOT NULL,                     -- live-<n> | released-<YYYY-MM-DD>
        began_logical DATE NOT NULL,                -- live: first night seen; released: the release day
        retired_logical DATE,                       -- live: the night its values moved to the next generation
        erased_logical DATE,                        -- the night its key file was deleted
        tenures BIGINT                              -- released: tenures whose contacts it sealed
    )
    """,
)
