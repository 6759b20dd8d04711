"""One error hierarchy for the whole package.

*Terminal* errors mean retrying cannot help (a broken data contract, a bad signature, an
illegal state transition): the Airflow task fails without retry. *Transient* errors (I/O,
a gateway that is down) are worth retrying. Every message names the file, row or masked
number involved and says what the operator should do.
"""

from __future__ import annotations


class RecycleError(Exception):
    """Base of every error this package raises on purpose."""

    # The `recycle` command's exit status for it (`cli.app.main`): 2 unless a subclass says.
    exit_code = 2

    def diagnostics(self) -> str:
        """A human-readable explanation for the operator (the message, by default)."""
        return str(self)


class TerminalError(RecycleError):
    """Retrying the same input cannot succeed; a person has to act."""


class TransientError(RecycleError):
    """A passing condition (I/O, network, a gateway down); a retry may succeed."""


class BusyError(TransientError):
    """Another process holds the state file or the night (:mod:`pipelines.db.locks`): try again later."""

    # sysexits.h EX_TEMPFAIL: a script can tell "busy, retry" from a failure or a usage error.
    exit_code = 75


class ConfigError(TerminalError):
    """The configuration file or a RECYCLE_* variable is invalid."""


class DataContractError(TerminalError):
    """A drop file breaks its contract as a whole (unknown kind, missing columns, unreadable)."""


class DuplicateFileNameError(DataContractError):
    """A different file arrived under a name that was already ingested."""


class IllegalTransitionError(TerminalError):
    """A lifecycle event that the rules forbid for the number's current state."""


class VerificationError(TerminalError):
    """A signature, hash, proof or chain did not verify. Verification raises; it never returns False."""


class SignatureError(VerificationError):
    """A signature is missing, malformed or does not verify under the expected key."""


class InconsistentCheckpointError(VerificationError):
    """A checkpoint does not extend the previously signed or seen one."""


class FormatError(VerificationError):
    """Bytes break their strict wire format (signed note, checkpoint, tlog-proof, ledger entry, key)."""


class ProofError(VerificationError):
    """An inclusion proof does not lead from the entry to the signed root hash."""


class LogIntegrityError(VerificationError):
    """Tiles, entry bundles and checkpoint on disk disagree: the ledger was damaged or tampered with."""


class EvidenceBundleError(VerificationError):
    """An evidence bundle is empty, truncated, or its index.json disagrees with its proof files."""


class CommitmentError(VerificationError):
    """An opening and canonical value do not reproduce the commitment in a ledger entry."""


class StatementError(TerminalError):
    """A tenure statement cannot be issued: no such number or tenure, an erased tenure, no night run."""


class OpeningErasedError(TerminalError):
    """A ledger entry's opening was destroyed on purpose (crypto-shredding); it cannot be opened."""


class TamperedFileError(VerificationError):
    """A downloaded feed file's length, SHA-256 or row content differs from its signed manifest."""


class RollbackError(VerificationError):
    """Metadata older than (or forked from) what the client already trusts: a rollback attack."""


class ExpiredMetadataError(VerificationError):
    """Signed metadata is past its expiry: a freeze attack, or the publisher stopped publishing."""


class FeedGapError(VerificationError):
    """A manifest or a row sequence number is missing from the feed."""


class FeedOrderError(VerificationError):
    """Manifests arrive out of order or do not chain (seq, feed date or previous-manifest hash)."""


class FeedConflictError(TerminalError):
    """A feed day was already published with different content; published feeds never change."""


class ComplianceViolationError(TerminalError):
    """The nightly run found a reissue that broke the release gate, or too many exceptions."""


class QuarantineExportError(TerminalError):
    """``recycle quarantine export`` has nothing it may write: no such line, or a file in the way."""


class NightRefusedError(TerminalError):
    """A night's preconditions do not hold (its date, the nights before and after it, its drops);
    it was refused before its first step, so nothing of it was written."""


class NightNotReadyError(NightRefusedError):
    """The night cannot run *yet*: its carrier day has not ended or a required drop is missing.
    Refused like any other by ``recycle run``; the Airflow sensor waits on it instead."""


class GatewayError(TransientError):
    """A reminder channel (SMTP, SMS gateway, print house) refused or did not answer."""


class PermanentDeliveryError(TerminalError):
    """A channel rejected a reminder for good (bad address); fall back to the next channel."""
