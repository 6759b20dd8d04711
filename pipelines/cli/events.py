"""`recycle events deliver | status | log | dead-letters | replay`: the operators' side of push.

``deliver`` runs what ``recycle serve`` runs in the background (read newly published feed days,
fan out, send what is due); the others read and repair the events store
(``<data>/server/events.sqlite``) and never open the nightly state file.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from contextlib import closing
from typing import Annotated

import typer
from rich.table import Table

from pipelines.cli.common import ConfigOpt, DataOpt, JsonOpt, out, settings_from

__all__ = ["dead_letters", "deliver", "log_cmd", "replay", "status"]


def _when(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).isoformat(timespec="seconds")


def deliver(
    loop: Annotated[
        bool, typer.Option("--loop", help="keep delivering every poll interval (a worker)")
    ] = False,
    budget: Annotated[
        float | None, typer.Option("--budget", help="stop claiming new work after this many seconds")
    ] = None,
    config: ConfigOpt = None,
    data: DataOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Deliver due events now (retries, new feed days); --loop keeps going, as `recycle serve` does."""
    from pipelines.events.config import EventsConfig
    from pipelines.events.deliver import deliver_once, delivery_loop
    from pipelines.events.outbox import open_store

    settings = settings_from(config, data, needs="dir")
    events = EventsConfig.from_env()
    with closing(open_store(settings)) as store:
        if loop:
            asyncio.run(delivery_loop(settings, store, events))
            return
        report = asyncio.run(deliver_once(settings, store, events, budget_s=budget))
    if as_json:
        out.print_json(json.dumps(report.__dict__))
    else:
        out.print(
            f"{report.ingested} new event(s), {report.fanned_out} fanned out; {report.attempted} attempt(s): "
            f"{report.delivered} delivered, {report.retried} to retry, {report.dead} dead letter(s)"
        )


def status(config: ConfigOpt = None, data: DataOpt = None, as_json: JsonOpt = False) -> None:
    """Deliveries by status and the next one due."""
    from pipelines.events.outbox import open_store

    settings = settings_from(config, data, needs="dir")
    with closing(open_store(settings)) as store:
        counts, due = store.counts(), store.next_due()
    if as_json:
        out.print_json(json.dumps({"deliveries": counts, "next_due": None if due is None else _when(due)}))
        return
    shown = ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "no deliveries"
    out.print(f"{shown}; next due {'-' if due is None else _when(due)}")


def log_cmd(
    platform: Annotated[str, typer.Argument(help="the platform's name")],
    limit: Annotated[int, typer.Option("--limit", help="latest attempts shown")] = 50,
    config: ConfigOpt = None,
    data: DataOpt = None,
) -> None:
    """A platform's delivery log: every attempt, its status code and latency, newest first."""
    from pipelines.events.outbox import open_store

    settings = settings_from(config, data, needs="dir")
    with closing(open_store(settings)) as store:
        rows = store.delivery_log(platform, limit)
    table = Table("at (UTC)", "event", "attempt", "status", "latency ms", "error")
    for at, event, attempt, code, error, latency in rows:
        table.add_row(
            _when(at), event, str(attempt), "-" if code is None else str(code), f"{latency:.1f}", error or ""
        )
    out.print(table)


def dead_letters(
    platform: Annotated[str | None, typer.Option("--platform", help="only this platform's")] = None,
    config: ConfigOpt = None,
    data: DataOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Deliveries that failed their last retry; replay them with `recycle events replay ID|--all`."""
    from pipelines.events.outbox import open_store

    settings = settings_from(config, data, needs="dir")
    with closing(open_store(settings)) as store:
        dead = store.dead_letters(platform)
    if as_json:
        out.print_json(json.dumps([d.__dict__ for d in dead]))
        return
    table = Table("id", "platform", "event", "attempts", "failed at (UTC)", "last error")
    for d in dead:
        table.add_row(
            str(d.delivery_id),
            d.platform,
            d.event_id,
            str(d.attempts),
            _when(d.failed_at),
            d.last_error or "",
        )
    out.print(table)
    if dead:
        out.print(f"{len(dead)} dead letter(s); when the sink works again: recycle events replay --all")


def replay(
    ids: Annotated[
        list[int] | None, typer.Argument(help="dead letter ids (recycle events dead-letters)")
    ] = None,
    all_: Annotated[bool, typer.Option("--all", help="every dead letter")] = False,
    config: ConfigOpt = None,
    data: DataOpt = None,
) -> None:
    """Make dead letters due again now, with a fresh retry schedule (delivered by the next pass)."""
    from pipelines.events.outbox import open_store

    if bool(ids) == all_:
        raise typer.BadParameter("name dead letter ids, or --all", param_hint="IDS")
    settings = settings_from(config, data, needs="dir")
    with closing(open_store(settings)) as store:
        n = store.replay(None if all_ else ids, dt.datetime.now(dt.UTC).timestamp())
    out.print(f"{n} dead letter(s) due again; `recycle serve` delivers them, or: recycle events deliver")
