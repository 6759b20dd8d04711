"""The nightly run for one logical date: an ordered list of named steps.

Each step is a plain function ``(settings, day, context) -> report`` that opens what it needs
and is idempotent for its day, so ``recycle run`` (in-process) and the Airflow DAG (one task
per step) run exactly the same code. The report of every step is written to
``<data>/runs/<D>/steps/<step>.json``; the state file never holds wall-clock times, so a
rerun of a day leaves the state byte-identical.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pipelines.config import Settings
from pipelines.db import night_lock, open_state, transaction, writing_for
from pipelines.errors import ConfigError
from pipelines.layout import Layout, atomic_write_bytes

log = logging.getLogger(__name__)


@dataclass
class RunContext:
    """Per-run options that are not configuration (they differ between a demo and production)."""

    simulate_gateways: bool = False  # loopback gateways take the reminders (demo, tests)
    gateway_seed: int = 7  # the simulated receipts' seed
    alerts_mode: AlertsMode = "raise"  # "record": log a compliance stop instead of failing
    exception_rate_window_days: int = 30
    empty_night: bool = False  # --empty-night: run without the required drops, on purpose (preflight)


AlertsMode = Literal["raise", "record"]
ALERTS_MODES: tuple[AlertsMode, ...] = ("raise", "record")

StepFn = Callable[[Settings, dt.date, RunContext], Mapping[str, Any]]


Scope = Literal["province", "national"]


@dataclass(frozen=True)
class Step:
    name: str
    fn: StepFn
    writes_state: bool = True  # steps that write the DuckDB file share an Airflow pool of size 1
    doc: str = ""
    # With ``provinces`` set, a "province" step runs once per province on that province's own
    # settings (data directory, state file); a "national" one once, as the sequencer, over all
    # of them. With none set, every step runs once on the one state: the embedded default.
    scope: Scope = "province"


def _jsonable(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {k: _jsonable(v) for k, v in dataclasses.asdict(obj).items()}
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, dt.date | Path):
        return str(obj)
    return obj


# --------------------------------------------------------------------------- steps
# Each step opens the state file itself: in Airflow every step is its own process.


def step_ingest(settings: Settings, day: dt.date, ctx: RunContext) -> Mapping[str, Any]:
    from pipelines.ingest.drops import ingest_day
    from pipelines.storage.drops import fetch_drops

    fetch_drops(settings, day)  # storage inbox/<D>/ -> the local inbox (no-op: local storage)
    with open_state(Layout(settings.data_dir).state_db) as con:
        report = ingest_day(settings, day, con)
    # The night's totals beside the files (properties, which asdict leaves out): the step's
    # log line and the Airflow task log show them without reading every file's figures.
    totals = {
        "rows_in": report.rows_in,
        "accepted": report.accepted,
        "quarantined": report.quarantined,
        "failed_files": len(report.failed),
    }
    return {"ingest": {**_jsonable(report), **totals}}


def step_receipts(settings: Settings, day: dt.date, ctx: RunContext) -> Mapping[str, Any]:
    from pipelines.reminders import apply_receipts

    with open_state(Layout(settings.data_dir).state_db) as con, transaction(con):
        return {"receipts": _jsonable(apply_receipts(con, settings, day))}


def step_advance(settings: Settings, day: dt.date, ctx: RunContext) -> Mapping[str, Any]:
    from pipelines.lifecycle import advance_time

    with open_state(Layout(settings.data_dir).state_db) as con, transaction(con):
        return {"advance": _jsonable(advance_time(con, settings, day))}


def step_events(settings: Settings, day: dt.date, ctx: RunContext) -> Mapping[str, Any]:
    from pipelines.lifecycle import apply_events

    with open_state(Layout(settings.data_dir).state_db) as con, transaction(con):
        return {"events": _jsonable(apply_events(con, settings, day))}


def step_schedule(settings: Settings, day: dt.date, ctx: RunContext) -> Mapping[str, Any]:
    from pipelines.reminders import schedule_reminders

    with open_state(Layout(settings.data_dir).state_db) as con, transaction(con):
        return {"schedule": _jsonable(schedule_reminders(con, settings, day))}


def step_send(settings: Settings, day: dt.date, ctx: RunContext) -> Mapping[str, Any]:
    """Outbox -> channels. With ``simulate_gateways``, loopback SMTP/SMS simulators (and an SMSC
    when ``[channels.smpp]`` is set) take the reminders through the real adapters and write the
    next night's ``receipts_*`` drop. SMPP receipts that arrive on the bind count this night."""
    from pipelines.reminders import send_reminders
    from pipelines.reminders.bind_receipts import finish_smpp_night
    from pipelines.reminders.channels import Channel, LetterBatchChannel, SmsHttpChannel, SmtpChannel
    from pipelines.reminders.smpp import SmppChannel

    layout = Layout(settings.data_dir)
    letters_dir = layout.outbox_dir / "letters"
    journal_dir = layout.outbox_dir / "journal"  # no second send after a kill: reminders.journal
    next_inbox = layout.inbox(day + dt.timedelta(days=1))
    with open_state(layout.state_db) as con, contextlib.ExitStack() as pools:
        channels: dict[str, Channel]
        if not ctx.simulate_gateways:
            smpp = SmppChannel(settings.smpp, zone=settings.zone) if settings.smpp else None
            channels = {  # the pooled channels' connections close with the step
                "email": pools.enter_context(SmtpChannel(settings.smtp)),
                "sms": smpp or pools.enter_context(SmsHttpChannel(settings.sms)),
                "letter": LetterBatchChannel(letters_dir, day),
            }
            report = send_reminders(con, settings, day, channels, journal_dir=journal_dir)
            smpp_report = finish_smpp_night(con, settings, day, smpp, next_inbox) if smpp else None
            return {"send": _jsonable(report), "smpp": _jsonable(smpp_report)}
        from pipelines.dev.simulators import GatewaySimulator, write_receipts
        from pipelines.dev.smsc import simulated_smpp

        with (
            GatewaySimulator() as sim,
            simulated_smpp(settings, day, ctx.gateway_seed) as (smsc, smpp),
            pools,
        ):
            channels = {
                "email": pools.enter_context(SmtpChannel(sim.smtp_settings())),
                "sms": smpp or pools.enter_context(SmsHttpChannel(sim.sms_settings())),
                "letter": LetterBatchChannel(letters_dir, day),
            }
            report = send_reminders(con, settings, day, channels, journal_dir=journal_dir)
            accepted = sim.drain()
            smpp_report = None
            if smsc is not None and smpp is not None:
                smpp.close()  # the grace period first: what the SMSC holds after it is "late"
                late = smsc.undelivered_receipts()
                smpp_report = finish_smpp_night(con, settings, day, smpp, next_inbox, late)
        receipts = write_receipts(accepted, letters_dir, day, next_inbox, ctx.gateway_seed)
        return {
            "send": _jsonable(report),
            "smpp": _jsonable(smpp_report),
            "simulated_receipts": str(receipts) if receipts else None,
        }


def step_ledger(settings: Settings, day: dt.date, ctx: RunContext) -> Mapping[str, Any]:
    """The night's queued facts into the log, one batch and one checkpoint; with provinces, the
    sequencer appends every province's queue in the codes' order (pipelines.provinces)."""
    from pipelines.db import memory_share
    from pipelines.ledger.nightly import STATE_SHARE, append_queued_events, open_ledger
    from pipelines.provinces import append_provinces
    from pipelines.storage.publish import publish_ledger

    with open_ledger(settings) as ledger:
        if settings.provinces:
            report = {"ledger": _jsonable(append_provinces(settings, ledger))}
        else:
            state = Layout(settings.data_dir).state_db
            with open_state(state, memory_limit=memory_share(STATE_SHARE)) as con:
                report = {"ledger": _jsonable(append_queued_events(con, ledger))}
    publish_ledger(settings)  # tiles, then the checkpoint
    return report


def step_feeds(settings: Settings, day: dt.date, ctx: RunContext) -> Mapping[str, Any]:
    from pipelines.feeds.publish import publish_feed
    from pipelines.ledger.nightly import open_ledger
    from pipelines.provinces import reading_state
    from pipelines.storage.publish import publish_feeds

    with reading_state(settings) as con, open_ledger(settings) as ledger:
        report = {"feeds": _jsonable(publish_feed(settings, day, con, ledger))}
    publish_feeds(settings, day)  # the ledger first, the day's files, ..., the timestamp last
    return report


def step_snapshot(settings: Settings, day: dt.date, ctx: RunContext) -> Mapping[str, Any]:
    """The server's query snapshot; with provinces, one for the nation (merged from theirs)."""
    from pipelines.feeds.query_snapshot import publish_snapshot
    from pipelines.provinces import reading_state
    from pipelines.storage.publish import publish_snapshot as push_snapshot

    with reading_state(settings) as con:
        report = {"snapshot": _jsonable(publish_snapshot(settings, day, con))}
    push_snapshot(settings)  # the snapshot's files, then the pointer
    return report


def step_push(settings: Settings, day: dt.date, ctx: RunContext) -> Mapping[str, Any]:
    """The night's events: the published feed day into the event log, fanned out to the
    subscriptions, and one delivery pass of at most a minute (retries are the server's
    background loop's, or `recycle events deliver`'s, over the following days). No events
    store yet (the server creates it): no platform has subscribed, nothing to do."""
    import asyncio

    from pipelines.events.config import EventsConfig
    from pipelines.events.deliver import deliver_once
    from pipelines.events.outbox import open_store
    from pipelines.events.store import EVENTS_DB

    if not (Layout(settings.data_dir).root / "server" / EVENTS_DB).exists():
        return {"push": None}
    store = open_store(settings)
    try:
        report = asyncio.run(deliver_once(settings, store, EventsConfig.from_env(), budget_s=PUSH_BUDGET_S))
    finally:
        store.close()
    return {"push": _jsonable(report)}


# A sink that hangs costs the night at most this (the timeout per attempt comes on top).
PUSH_BUDGET_S = 60.0


def step_contacts(settings: Settings, day: dt.date, ctx: RunContext) -> Mapping[str, Any]:
    """Retention: contacts released ``contact_retention_days`` ago are crypto-shredded, and the
    clear copies (drops, GX results, letters) of nights that old are deleted."""
    from pipelines.contacts import ContactVault
    from pipelines.contacts.retention import purge_clear_copies, retire_contacts
    from pipelines.storage.publish import purge_storage

    layout = Layout(settings.data_dir)
    days = settings.contact_retention_days
    with open_state(layout.state_db) as con:
        vault = ContactVault.for_state(layout.state_db)
        shredded = retire_contacts(con, vault, day, days)
    purged = purge_clear_copies(settings.data_dir, day, days)
    purge_storage(settings, day - dt.timedelta(days=days))  # storage's drops of those nights too
    return {"contacts": _jsonable(shredded), "clear_copies": _jsonable(purged)}


def step_alerts(settings: Settings, day: dt.date, ctx: RunContext) -> Mapping[str, Any]:
    """Last: the feed is out before a compliance stop fails the night loudly."""
    from pipelines.compliance.alerts import nightly_alerts

    return nightly_alerts(settings, day, mode=ctx.alerts_mode, window_days=ctx.exception_rate_window_days)


STEPS: tuple[Step, ...] = (
    Step("ingest", step_ingest, doc="drop files -> accepted rows and quarantine"),
    Step("receipts", step_receipts, doc="delivery receipts and acknowledgements -> reminders"),
    Step("advance", step_advance, doc="suspensions become final; freeze ends; the release gate"),
    Step("events", step_events, doc="subscriber snapshot, lifecycle events and reissues of the day"),
    Step("schedule", step_schedule, doc="reminder schedule, fallbacks and the rendered outbox"),
    Step("send", step_send, doc="outbox -> e-mail, SMS gateway and letter batch"),
    Step(
        "ledger", step_ledger, doc="queued facts -> signed transparency log, one checkpoint", scope="national"
    ),
    Step("feeds", step_feeds, doc="signed daily recycled-number feed, snapshot, timestamp", scope="national"),
    Step("snapshot", step_snapshot, doc="immutable query snapshot for the server", scope="national"),
    Step(
        "push",
        step_push,
        writes_state=False,
        doc="the night's events to subscribed platforms",
        scope="national",
    ),
    Step("contacts", step_contacts, doc="retention: contacts erased a set time after release"),
    Step("alerts", step_alerts, doc="compliance: reissue violations, exceptions, exception rates"),
)


def step_names() -> tuple[str, ...]:
    return tuple(s.name for s in STEPS)


def steps_here(settings: Settings) -> tuple[str, ...]:
    """The steps whose reports a night leaves in ``settings``' own run folder: all of them in
    the embedded default, the province steps in a province's, the national ones in the
    nation's when the work is split (pipelines.nightly.preflight reads a night's completeness
    from them)."""
    if settings.province:
        return tuple(s.name for s in STEPS if s.scope == "province")
    if settings.provinces:
        return tuple(s.name for s in STEPS if s.scope == "national")
    return step_names()


def get_step(name: str) -> Step:
    for s in STEPS:
        if s.name == name:
            return s
    raise KeyError(f"unknown step {name!r}; steps are {', '.join(step_names())}")


def report_counts(report: Mapping[str, Any]) -> dict[str, int | float]:
    """The numbers at the top of a step's report and of each of its sections (a report is
    ``{"advance": {"released": 32, ...}}``); a list counts as its length. A name met twice
    is prefixed with its section. Texts, dates and deeper levels are left to the report file."""
    counts: dict[str, int | float] = {}

    def add(name: str, value: Any, section: str | None) -> None:
        if isinstance(value, list | tuple):
            value = len(value)
        if isinstance(value, bool) or not isinstance(value, int | float):
            return
        counts[f"{section}.{name}" if name in counts and section else name] = value

    for key, value in _jsonable(report).items():
        if isinstance(value, Mapping):
            for inner, inner_value in value.items():
                add(inner, inner_value, key)
        else:
            add(key, value, None)
    return counts


def step_log_line(name: str, day: dt.date, elapsed_s: float, report: Mapping[str, Any]) -> str:
    """One JSON line per step, for the Airflow task log and log shippers (``"event":
    "nightly_step"`` finds them); the full report stays in ``runs/<D>/steps/<step>.json``."""
    line = {
        "event": "nightly_step",
        "step": name,
        "date": day.isoformat(),
        "elapsed_s": elapsed_s,
        "counts": report_counts(report),
    }
    return json.dumps(line, sort_keys=True, separators=(",", ":"))


def run_step(
    settings: Settings,
    day: dt.date,
    name: str,
    ctx: RunContext | None = None,
    province: str | None = None,
) -> Mapping[str, Any]:
    """Run one named step for ``day`` under the night lock (``recycle run`` already holds it for
    all its dates; an Airflow task takes it here and refuses, transiently, while a `recycle run`
    holds it), naming the step as the state file's writer (:mod:`pipelines.db.locks`). With
    ``provinces`` set, a province step names its ``province`` and runs in that province's data
    directory, under that directory's night lock."""
    target = _step_settings(settings, get_step(name), province)
    purpose = f"nightly step {name} of {day}" + (f" in {province}" if province else "")
    with night_lock(target.data_dir, [day], purpose=purpose), writing_for(purpose):
        return _run_step(target, day, name, ctx)


def _step_settings(settings: Settings, step: Step, province: str | None) -> Settings:
    if province is None:
        if settings.provinces and step.scope == "province":
            raise ConfigError(
                f"step {step.name} runs once per province ({', '.join(settings.provinces)}); name one"
            )
        return settings
    if step.scope != "province" or not settings.provinces:
        raise ConfigError(f"step {step.name} is not run per province here; run it without a province")
    return settings.for_province(province)


def _run_step(settings: Settings, day: dt.date, name: str, ctx: RunContext | None) -> Mapping[str, Any]:
    """Run one named step for ``day`` and record its report under the run's folder."""
    step = get_step(name)
    started = time.monotonic()
    report = step.fn(settings, day, ctx or RunContext())
    elapsed = round(time.monotonic() - started, 3)
    out = Layout(settings.data_dir).run_dir(day) / "steps" / f"{name}.json"
    # The run folder is a log for operators (it has timings); the state file never does.
    body = {**_jsonable(report), "elapsed_s": elapsed}
    atomic_write_bytes(out, json.dumps(body, indent=2, sort_keys=True).encode() + b"\n")
    from pipelines.storage.publish import push_records

    push_records(settings, day)  # runs/<D>/ to storage (no-op: local storage)
    log.info("%s", step_log_line(name, day, elapsed, report))
    return report


def run_day(
    settings: Settings,
    day: dt.date,
    ctx: RunContext | None = None,
    on_step: Callable[[str], None] | None = None,
) -> dict[str, Mapping[str, Any]]:
    """Run every step for ``day`` in order, in this process, once the night's preconditions
    hold (``pipelines.nightly.preflight``: a refused night raises before anything is written)."""
    from pipelines.nightly import preflight

    ctx = ctx or RunContext()
    # The wall clock only decides whether day D has ended in the carrier's zone; steps use D.
    check = preflight.check_night(settings, day, now=dt.datetime.now(dt.UTC), empty_night=ctx.empty_night)
    preflight.record_check(settings, check)
    reports: dict[str, Mapping[str, Any]] = {}
    for step, province in night_plan(settings):
        if on_step:
            on_step(step.name)
        key = f"{step.name}/{province}" if province else step.name
        reports[key] = run_step(settings, day, step.name, ctx, province)
    return reports


def night_plan(settings: Settings) -> list[tuple[Step, str | None]]:
    """The night's steps in order, each with its province (None: run once). A province step runs
    for every province, in the codes' sorted order, before the next step, as the DAG maps it."""
    plan: list[tuple[Step, str | None]] = []
    for step in STEPS:
        if settings.provinces and step.scope == "province":
            plan.extend((step, code) for code in sorted(settings.provinces))
        else:
            plan.append((step, None))
    return plan
