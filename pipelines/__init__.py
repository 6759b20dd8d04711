"""number-recycling: the carrier-side pipeline and signed consent ledger for recycled numbers.

The tree is the architecture. One subpackage per concern, each ``__init__`` saying what it
owns and exporting its small public surface; business logic is plain typed functions over
explicit inputs (logical date, paths, settings), never Airflow.

Foundations (top level)
    ``config``   one frozen ``Settings`` from the TOML file and ``RECYCLE_*`` variables
    ``errors``   ``RecycleError`` with ``diagnostics()``; terminal vs transient
    ``layout``   every path under the data directory; atomic writes
    ``numbers``  E.164 normalisation and masking for display and logs
    ``lazy``     package attributes that load their module on first use
    ``db/``      the one DuckDB seam: connect, transactions, options, quoting, the table list

The night, in order (``nightly/`` runs them as ``STEPS``: CLI, Airflow DAG and tests alike)
    ``ingest/``     drop files -> accepted rows or quarantine (reason code, original line)
    ``reminders/``  receipts, the schedule, rendered outbox, channel adapters, sending
    ``lifecycle/``  tenures and number state, events, the freeze clock, the release gate
    ``ledger/``     the signed C2SP tlog-tiles log of hiding commitments; evidence bundles, tenure statements
    ``feeds/``      wire types, the signed daily feed and manifest chain, the query snapshot

Around the night
    ``server/``      the platforms' HTTP service: feeds, tiles, CAMARA check, bulk, acks
    ``client/``      the platform side: verify a feed before storing it, answer locally
    ``compliance/``  alerts, the auditors' report, exports, evidence summaries, notification proof
    ``cli/``         ``recycle``, one module per command group
    ``dev/``         synthetic drops, loopback gateway simulators, ``make demo``
"""
