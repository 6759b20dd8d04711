"""Three real nights for the statement tests: go-live, a cancel, a reissue of the cancelled number.

The drops are written by hand (each fact is the one a test names); the nights run every real
step in-process with loopback gateways. The reissue comes the day after the cancel, so it is a
(recorded) violation: the night records its alert instead of failing.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from pipelines.config import Settings
from pipelines.nightly.steps import RunContext, run_day

NIGHTS = (dt.date(2026, 1, 5), dt.date(2026, 1, 6), dt.date(2026, 1, 7))
RECYCLED = "+8613800138000"  # held by SUB-A since 2020-03-01, cancelled, reissued to SUB-B
LIVE = "+8613900139000"  # held by SUB-C since 2021-05-05, untouched
NEVER = "+8613700137000"  # never ours
PRIOR_START, CANCELLED, REISSUED = dt.date(2020, 3, 1), NIGHTS[1], NIGHTS[2]
LIVE_START = dt.date(2021, 5, 5)

_DROPS = {
    NIGHTS[0]: (
        "subscribers",
        "msisdn,tenure_start,region,subscriber_ref,contact_email,contact_phone,language\n"
        f"{RECYCLED},{PRIOR_START},GD,SUB-A,a@example.com,,zh-CN\n"
        f"{LIVE},{LIVE_START},GD,SUB-C,c@example.com,,en\n",
    ),
    NIGHTS[1]: (
        "lifecycle",
        "msisdn,event,effective_date,region,subscriber_ref,tenure_start,contact_email,contact_phone,language\n"
        f"{RECYCLED},cancel,{CANCELLED},GD,SUB-A,{PRIOR_START},a@example.com,,zh-CN\n",
    ),
    NIGHTS[2]: ("reissue", f"msisdn,reissue_date,region,subscriber_ref\n{RECYCLED},{REISSUED},GD,SUB-B\n"),
}


def build_nights(data: Path) -> Settings:
    """Run the three nights in ``data``; return their settings."""
    settings = Settings(data_dir=data)
    for night, (kind, text) in _DROPS.items():
        inbox = data / "inbox" / str(night)
        inbox.mkdir(parents=True, exist_ok=True)
        (inbox / f"{kind}_{night}.csv").write_text(text, encoding="utf-8")
    # Each night carries one hand-written drop, not the BSS's pair: the other kind is waived.
    ctx = RunContext(simulate_gateways=True, alerts_mode="record", empty_night=True)
    for night in NIGHTS:
        run_day(settings, night, ctx)
    return settings
