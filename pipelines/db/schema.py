"""Every table of the state file, in one explicit list: each package declares the tables it
owns in its own ``schema.py``; nothing exists because some module happened to be imported."""

from __future__ import annotations

from pipelines.compliance import schema as compliance
from pipelines.contacts import schema as contacts
from pipelines.ingest import schema as ingest
from pipelines.lifecycle import schema as lifecycle
from pipelines.reminders import schema as reminders

OWNERS = (ingest, lifecycle, reminders, compliance, contacts)


def all_ddl() -> tuple[str, ...]:
    """``CREATE TABLE IF NOT EXISTS`` statements of every owner, in :data:`OWNERS` order."""
    return tuple(stmt for owner in OWNERS for stmt in owner.DDL)
