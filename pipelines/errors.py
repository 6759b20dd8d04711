"""One error hierarchy for the whole package (its base and the verification errors live in
``number_recycling_client.errors``, the light client's, and are re-exported here).

*Terminal* errors mean retrying cannot help (a broken data contract, a bad signature, an
illegal state transition): the Airflow task fails without retry. *Transient* errors (I/O,
a gateway that is down) are worth retrying. Every message names the file, row or masked
number involved and says what the operator should do.
"""

from __future__ import annotations

from number_recycling_client.errors import (
    CommitmentError as CommitmentError,
)
from number_recycling_client.errors import (
    ExpiredMetadataError as ExpiredMetadataError,
)
from number_recycling_client.errors import (
    FeedGapError as FeedGapError,
)
from number_recycling_client.errors import (
    FeedOrderError as FeedOrderError,
)
from number_recycling_client.errors import (
    FormatError as FormatError,
)
from number_recycling_client.errors import (
    InconsistentCheckpointError as InconsistentCheckpointError,
)
from number_recycling_client.errors import (
    LogIntegrityError as LogIntegrityError,
)
from number_recycling_client.errors import (
    ProofError as ProofError,
)
from number_recycling_client.errors import (
    RecycleError as RecycleError,
)
from number_recycling_client.errors import (
    RollbackError as RollbackError,
)
from number_recycling_client.errors import (
    SignatureError as SignatureError,
)
from number_recycling_client.errors import (
    TamperedFileError as TamperedFileError,
)
from number_recycling_client.errors import (
    TerminalError as TerminalError,
)
from number_recycling_client.errors import (
    TransientError as TransientError,
)
from number_recycling_client.errors import (
    VerificationError as VerificationError,
)


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


class EvidenceBundleError(VerificationError):
    """An evidence bundle is empty, truncated, or its index.json disagrees with its proof files."""


class StatementError(TerminalError):
    """A tenure statement cannot be issued: no such number or tenure, an erased tenure, no night run."""


class OpeningErasedError(TerminalError):
    """A ledger entry's opening was destroyed on purpose (crypto-shredding); it cannot be opened."""


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


class StorageError(TransientError):
    """Object storage (``storage = "s3://…"``) or the storage directory did not answer or refused
    a request: retry the step (uploads are idempotent)."""


class StorageConflictError(TerminalError):
    """Storage and the data directory disagree in a way a retry cannot mend (a drop with other
    bytes under the same name, a newer ledger in storage than here)."""
