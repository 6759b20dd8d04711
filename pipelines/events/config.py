"""How events are delivered: the retry schedule, concurrency, timeouts, the public URL that
names an event's ``source``, and whether plain-HTTP loopback sinks are allowed (development).

Built from the environment (``RECYCLE_EVENTS_*``, ``RECYCLE_PUBLIC_URL``, ``RECYCLE_PROFILE``)
beside the package's Settings; every field can be passed directly by tests.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

from pipelines.errors import ConfigError

# Retries after the first attempt fails, as Standard Webhooks recommends and stretched over
# days: 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h, 24 h, 24 h (about 3 days 3 hours in all), so
# a sink down over a weekend night still gets every event. The last failure is a dead letter.
DEFAULT_SCHEDULE = "5s,5m,30m,2h,5h,10h,10h,24h,24h"
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_DELAY = re.compile(r"([0-9]+(?:\.[0-9]+)?)([smhd])")


def parse_schedule(text: str) -> tuple[float, ...]:
    """``"5s,5m,2h"`` -> seconds; an empty text means no retry (one attempt, then dead)."""
    delays = []
    for item in (t.strip() for t in text.split(",")):
        if not item:
            continue
        m = _DELAY.fullmatch(item)
        if m is None:
            raise ConfigError(
                f"events retry schedule {text!r}: write delays like 5s,5m,2h,1d (RECYCLE_EVENTS_RETRY)"
            )
        delays.append(float(m.group(1)) * _UNITS[m.group(2)])
    return tuple(delays)


@dataclass(frozen=True)
class EventsConfig:
    retry_schedule: tuple[float, ...] = parse_schedule(DEFAULT_SCHEDULE)
    # In flight at once over one pooled client. 64 kept a loopback sink answering in 1 ms
    # busy from one core (benchmarks/bench_events.py); more only queues in the sinks.
    concurrency: int = 64
    timeout_s: float = 10.0  # per attempt (connect, read, write): a hung sink costs this, then a retry
    poll_s: float = 5.0  # how often `recycle serve` and `recycle events deliver --loop` look for work
    lease_s: float = 120.0  # a claimed delivery is not claimed again for this long (crash safety)
    batch: int = 1000  # deliveries claimed per pass
    public_url: str = "https://carrier.example"  # the events' source: <public_url>/number-recycling/...
    allow_http_loopback: bool = False  # development: http://127.0.0.1 and http://localhost sinks

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> EventsConfig:
        env = os.environ if env is None else env
        base = cls()
        return cls(
            retry_schedule=parse_schedule(env.get("RECYCLE_EVENTS_RETRY", DEFAULT_SCHEDULE)),
            concurrency=int(env.get("RECYCLE_EVENTS_CONCURRENCY", base.concurrency)),
            timeout_s=float(env.get("RECYCLE_EVENTS_TIMEOUT_S", base.timeout_s)),
            poll_s=float(env.get("RECYCLE_EVENTS_POLL_S", base.poll_s)),
            public_url=env.get("RECYCLE_PUBLIC_URL", base.public_url).rstrip("/"),
            allow_http_loopback=env.get("RECYCLE_PROFILE", "") == "development",
        )

    @property
    def max_attempts(self) -> int:
        return len(self.retry_schedule) + 1
