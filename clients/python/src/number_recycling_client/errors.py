"""The errors a platform meets, one hierarchy shared with the carrier's package.

*Terminal* errors mean retrying cannot help (a bad signature, a tampered file, a refused token):
a person has to act. *Transient* errors (network, a server that is down) are worth retrying.
Every message says what failed and what to do next. ``pipelines.errors`` builds the carrier's
errors on these classes, so a ``SignatureError`` is the same class on both sides.
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


class CommitmentError(VerificationError):
    """An opening and canonical value do not reproduce the commitment in a ledger entry."""


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
