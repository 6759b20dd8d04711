"""The signed consent ledger: a C2SP tlog-tiles transparency log of hiding commitments.

Writers (the nightly run) use :class:`Ledger` with a :class:`CheckpointSigner` and an
:class:`OpeningsStore`; auditors and platforms use :func:`verify_proof_file`,
:func:`verify_log` and :func:`audit_log`, which need only public files and the verifier key.
Formats and the audit procedure are described in ``docs/ledger.md``; signed tenure statements
(:func:`issue_statement` writes one, :func:`verify_statement` checks one offline) in
``docs/statements.md``.
"""

from typing import TYPE_CHECKING

from number_recycling_client.ledger.entries import (
    CanonicalValue,
    Entry,
    EntryType,
    PreparedEntry,
    commitment,
    tenure_ref_for,
)
from number_recycling_client.ledger.merkle import verify_consistency, verify_inclusion
from number_recycling_client.ledger.note import Checkpoint, Signer, Verifier, open_checkpoint

from pipelines.lazy import lazy_attributes
from pipelines.ledger.signer import CheckpointSigner, FileSigner, load_or_create_signer
from pipelines.ledger.statement import VerifiedStatement, verify_statement
from pipelines.ledger.verify import (
    AuditFinding,
    AuditReport,
    LogReport,
    VerifiedEntry,
    audit_log,
    verify_log,
    verify_proof_file,
)

if TYPE_CHECKING:
    from pipelines.ledger.ledger import Ledger
    from pipelines.ledger.openings import Opening, OpeningsStore
    from pipelines.ledger.statement_issue import issue_statement

# The writer's names (the openings store is a DuckDB file) load on first use: a verifier of
# proofs and statements (a light client) imports this package without DuckDB or pyarrow.
_LAZY = {
    "Ledger": "pipelines.ledger.ledger",
    "Opening": "pipelines.ledger.openings",
    "OpeningsStore": "pipelines.ledger.openings",
    "issue_statement": "pipelines.ledger.statement_issue",
}

__getattr__ = lazy_attributes(__name__, _LAZY)

__all__ = [
    "AuditFinding",
    "AuditReport",
    "CanonicalValue",
    "Checkpoint",
    "CheckpointSigner",
    "Entry",
    "EntryType",
    "FileSigner",
    "Ledger",
    "LogReport",
    "Opening",
    "OpeningsStore",
    "PreparedEntry",
    "Signer",
    "VerifiedEntry",
    "VerifiedStatement",
    "Verifier",
    "audit_log",
    "commitment",
    "issue_statement",
    "load_or_create_signer",
    "open_checkpoint",
    "tenure_ref_for",
    "verify_consistency",
    "verify_inclusion",
    "verify_log",
    "verify_proof_file",
    "verify_statement",
]
