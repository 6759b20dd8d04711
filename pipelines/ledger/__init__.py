"""The signed consent ledger: a C2SP tlog-tiles transparency log of hiding commitments.

Writers (the nightly run) use :class:`Ledger` with a :class:`CheckpointSigner` and an
:class:`OpeningsStore`; auditors and platforms use :func:`verify_proof_file`,
:func:`verify_log` and :func:`audit_log`, which need only public files and the verifier key.
Formats and the audit procedure are described in ``docs/ledger.md``.
"""

from pipelines.ledger.entries import (
    CanonicalValue,
    Entry,
    EntryType,
    PreparedEntry,
    commitment,
    tenure_ref_for,
)
from pipelines.ledger.ledger import Ledger
from pipelines.ledger.merkle import verify_consistency, verify_inclusion
from pipelines.ledger.note import Checkpoint, Verifier, open_checkpoint
from pipelines.ledger.openings import Opening, OpeningsStore
from pipelines.ledger.signer import CheckpointSigner, FileSigner, Signer, load_or_create_signer
from pipelines.ledger.verify import (
    AuditFinding,
    AuditReport,
    LogReport,
    VerifiedEntry,
    audit_log,
    verify_log,
    verify_proof_file,
)

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
    "Verifier",
    "audit_log",
    "commitment",
    "load_or_create_signer",
    "open_checkpoint",
    "tenure_ref_for",
    "verify_consistency",
    "verify_inclusion",
    "verify_log",
    "verify_proof_file",
]
