"""Where the verifier of signed CloudEvents lands (``docs/events.md``, "Signatures").

Not written here on purpose: the server's side of events is being built at the same time and
its ``verify_event`` (``pipelines/events/wire.py``, stdlib + cryptography only) is the one
verifier. When both have landed it moves into this module, unchanged, and
``pipelines.events.wire`` imports it from here — one copy, like the feed's wire formats.
Until then this module exports nothing, and no code here pretends to verify an event.
"""

__all__: list[str] = []
