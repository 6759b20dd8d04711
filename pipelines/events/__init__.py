"""Push, the CAMARA way (docs/events.md): subscriptions, signed CloudEvents, delivery.

The wire format (build, sign, :func:`verify_event`) is the light client's
``number_recycling_client.events``, one copy for both sides; ``subscriptions`` the CAMARA subscription model;
``store`` the events store (``<data>/server/events.sqlite``: subscriptions, the event log,
deliveries, the delivery log); ``outbox`` turns published feed days into events; ``deliver``
sends them (at-least-once, retries over days, dead letters); ``config`` the delivery settings.
"""

from typing import TYPE_CHECKING

from number_recycling_client.events import (
    EVENT_TYPES,
    SUBSCRIPTION_ENDS,
    BadSignatureError,
    EventError,
    NotACloudEventError,
    StaleTimestampError,
    UnknownKeyError,
    keys_from_root,
    verify_event,
)

from pipelines.lazy import lazy_attributes

if TYPE_CHECKING:
    from pipelines.events.config import EventsConfig
    from pipelines.events.deliver import deliver_once, delivery_loop
    from pipelines.events.outbox import open_store
    from pipelines.events.subscriptions import Subscriptions

_LAZY = {
    "EventsConfig": "pipelines.events.config",
    "deliver_once": "pipelines.events.deliver",
    "delivery_loop": "pipelines.events.deliver",
    "open_store": "pipelines.events.outbox",
    "Subscriptions": "pipelines.events.subscriptions",
}

__getattr__ = lazy_attributes(__name__, _LAZY)

__all__ = [
    "EVENT_TYPES",
    "SUBSCRIPTION_ENDS",
    "BadSignatureError",
    "EventError",
    "EventsConfig",
    "NotACloudEventError",
    "StaleTimestampError",
    "Subscriptions",
    "UnknownKeyError",
    "deliver_once",
    "delivery_loop",
    "keys_from_root",
    "open_store",
    "verify_event",
]
