"""The ``world`` fixture of the lifecycle test kit (a fresh state file as a ``World``)."""

from lifecycle_testkit import world  # noqa: F401
