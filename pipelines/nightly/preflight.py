"""Before a night writes anything: may night D run now?

Checked before the first step by every entry point (``run_day``, so ``recycle run`` and the
demo; the Airflow DAG's ``drops`` sensor and ``preflight`` task), from the settings, the date,
the clock and what the data directory says of earlier nights, and nothing else: a refusal
raises :class:`~pipelines.errors.NightRefusedError` having written nothing at all.

The rules, in the order tried (each refusal is one line naming the date, the reason and the
next command):

1. **Not in the carrier's future.** Night D reads the drops *of* day D, which the BSS exports
   after D ends, so D may run once D has ended in the carrier's time zone: D < the carrier's
   today (``Settings.carrier_day(now)``). D = today is *not ready* (wait: the sensor does);
   D > today is a mistyped date, refused outright.
2. **Never backwards.** A night already complete is replayed (idempotent, allowed whatever
   came after it). Otherwise no later night may have run: its state already went past D.
3. **In order.** The previous night D-1 is complete, unless no night ran in this data
   directory yet (its first night) or D is the only night that ran (finishing it).
4. **Its drops are in.** A ``lifecycle_*`` and a ``reissue_*`` file (the BSS exports one of
   each every night, header-only when nothing happened): a night without them is not an empty
   night but a late or lost drop, and running it would release numbers a late restore should
   have held. ``--empty-night`` (Airflow: ``params.empty_night``) waives this on purpose, and
   the waiver is recorded in ``runs/<D>/preflight.json`` (``recycle status`` shows it). The
   ledger records no run facts (its entries are facts about tenures and feeds), so the waiver
   is not in it. Receipts and the go-live subscribers snapshot are not required.

Which nights ran is read from the run folder (``runs/<D>/steps/<step>.json``, written after
each step succeeds), the same record ``recycle status`` reads a night's outcome from.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelines.config import Settings
from pipelines.errors import NightNotReadyError, NightRefusedError
from pipelines.ingest.spec import drop_specs
from pipelines.layout import Layout, atomic_write_bytes
from pipelines.nightly.steps import step_names, steps_here

log = logging.getLogger(__name__)

REQUIRED_KINDS: tuple[str, ...] = ("lifecycle", "reissue")
RECORD_NAME = "preflight.json"  # beside runs/<D>/steps/, not one of them: no step ran it


@dataclass(frozen=True)
class NightCheck:
    """A night allowed to run, and on what grounds (``runs/<D>/preflight.json``)."""

    day: dt.date
    replay: bool  # the night is complete: running it again replays it
    first_night: bool  # no other night ran in this data directory
    waived_drops: tuple[str, ...]  # required drop kinds missing and waived with --empty-night


def steps_done(layout: Layout, day: dt.date, names: Sequence[str] | None = None) -> list[str]:
    """The steps of ``day`` that completed, in ``STEPS`` order (of ``names``, default all)."""
    steps_dir = layout.run_dir(day) / "steps"
    return [s for s in (names or step_names()) if (steps_dir / f"{s}.json").exists()]


def nights_of(settings: Settings) -> dict[dt.date, bool]:
    """:func:`nights_run` of the settings' data directory; with provinces, a night is complete
    when the nation's steps and every province's are (a date any of them ran counts)."""
    nights = nights_run(Layout(settings.data_dir), steps_here(settings))
    parts = [nights]
    for code in settings.provinces:
        province = settings.for_province(code)
        parts.append(nights_run(Layout(province.data_dir), steps_here(province)))
    days = {d for part in parts for d in part}
    return {d: all(part.get(d, False) for part in parts) for d in sorted(days)}


def nights_run(layout: Layout, names: Sequence[str] | None = None) -> dict[dt.date, bool]:
    """Every date at least one step ran for -> whether all of them did (the night is complete).
    ``names``: the steps this data directory runs (:func:`pipelines.nightly.steps.steps_here`)."""
    names = names or step_names()
    nights: dict[dt.date, bool] = {}
    runs = layout.root / "runs"
    if not runs.is_dir():
        return nights
    for folder in runs.iterdir():
        try:
            day = dt.date.fromisoformat(folder.name)
        except ValueError:
            continue  # not a night's folder
        done = steps_done(layout, day, names)
        if done:
            nights[day] = len(done) == len(names)
    return nights


def missing_drops(settings: Settings, day: dt.date) -> tuple[str, ...]:
    """The required drop kinds with no file in ``inbox/<D>/``, here or in storage (with
    provinces: missing from any province's inbox). Dot files are uploads still in flight (as
    ingest skips them); a symlink or anything but a regular file does not count."""
    from pipelines.storage.drops import drop_names

    if settings.provinces:
        found = {k for code in settings.provinces for k in missing_drops(settings.for_province(code), day)}
        return tuple(k for k in REQUIRED_KINDS if k in found)
    inbox = Layout(settings.data_dir).inbox(day)
    names = [p.name for p in inbox.iterdir() if _regular(p)] if inbox.is_dir() else []
    names += drop_names(settings, day)  # drops in storage count: ingest fetches them first
    prefixes = {kind: drop_specs()[kind].file_prefix for kind in REQUIRED_KINDS}
    return tuple(
        kind
        for kind, prefix in prefixes.items()
        if not any(n.startswith(prefix) and not n.startswith(".") for n in names)
    )


def _regular(path: Path) -> bool:
    return path.is_file() and not path.is_symlink()


def check_night(
    settings: Settings, day: dt.date, *, now: dt.datetime, empty_night: bool = False
) -> NightCheck:
    """May night ``day`` run at ``now``? The grounds, or :class:`NightRefusedError`."""
    return _check(settings, day, now, empty_night, nights_of(settings))


def check_nights(
    settings: Settings, days: Sequence[dt.date], *, now: dt.datetime, empty_night: bool = False
) -> list[NightCheck]:
    """:func:`check_night` for consecutive ``days`` (a backfill) before the first one runs: each
    is checked as if the ones before it in ``days`` had completed, so a bad date at the end of
    a backfill refuses it before its first night writes anything."""
    nights = nights_of(settings)
    checks = []
    for day in days:
        checks.append(_check(settings, day, now, empty_night, nights))
        nights[day] = True
    return checks


def _check(
    settings: Settings, day: dt.date, now: dt.datetime, empty_night: bool, nights: Mapping[dt.date, bool]
) -> NightCheck:
    if nights.get(day):
        return NightCheck(day, replay=True, first_night=len(nights) == 1, waived_drops=())
    _not_in_future(settings, day, now)
    _in_order(day, nights)
    missing = missing_drops(settings, day)
    if missing and not empty_night:
        inbox = _inbox_missing(settings, day)
        wanted = " and ".join(f"{drop_specs()[k].file_prefix}*" for k in missing)
        raise NightNotReadyError(
            f"night {day} refused: no {wanted} drop in {inbox} (a late or lost drop is not an empty "
            f"night); wait for the drops, or run it as an empty night on purpose: "
            f"recycle run --date {day} --empty-night (Airflow: params.empty_night=true)"
        )
    others = [d for d in nights if d != day]
    return NightCheck(day, replay=False, first_night=not others, waived_drops=missing)


def _inbox_missing(settings: Settings, day: dt.date) -> Path:
    """The inbox a required drop of ``day`` is missing from (the first province's that lacks one)."""
    for code in sorted(settings.provinces):
        province = settings.for_province(code)
        if missing_drops(province, day):
            return Layout(province.data_dir).inbox(day)
    return Layout(settings.data_dir).inbox(day)


def _not_in_future(settings: Settings, day: dt.date, now: dt.datetime) -> None:
    today = settings.carrier_day(now)
    if day > today:
        raise NightRefusedError(
            f"night {day} refused: {day} is in the future (today is {today} in {settings.timezone}); "
            f"fix --date: a night runs after its day ends, the latest now is {today - dt.timedelta(days=1)}"
        )
    if day == today:
        raise NightNotReadyError(
            f"night {day} refused: {day} has not ended in {settings.timezone} and its drops come after "
            f"it ends; run it after midnight: recycle run --date {day}"
        )


def _in_order(day: dt.date, nights: Mapping[dt.date, bool]) -> None:
    later = sorted(d for d in nights if d > day)
    if later:
        raise NightRefusedError(
            f"night {day} refused: the later night {later[-1]} already ran, and state never goes "
            f"backwards; fix --date (the next night to run is {_next_night(nights)})"
        )
    previous = day - dt.timedelta(days=1)
    if not [d for d in nights if d != day] or nights.get(previous):
        return
    if previous in nights:
        raise NightRefusedError(
            f"night {day} refused: the previous night {previous} is incomplete; "
            f"finish it first (recycle status --date {previous}): recycle run --date {previous}"
        )
    first_missing = _next_night(nights)
    raise NightRefusedError(
        f"night {day} refused: the nights {first_missing} .. {previous} have not run (the last "
        f"night that ran is {max(nights)}); run them in order: recycle run --from {first_missing} --to {day}"
    )


def _next_night(nights: Mapping[dt.date, bool]) -> dt.date:
    """The night to run next: the one after the last that ran, or that one when incomplete."""
    last = max(nights)
    return last + dt.timedelta(days=1) if nights[last] else last


def record_check(settings: Settings, check: NightCheck) -> None:
    """Write the grounds of a night that runs (``runs/<D>/preflight.json``) and log them. A
    replay keeps the record of the night's first run (its waiver stays on record)."""
    line = json.dumps(
        {"event": "nightly_preflight", "date": check.day.isoformat(), "replay": check.replay,
         "first_night": check.first_night, "empty_night": bool(check.waived_drops),
         "waived_drops": list(check.waived_drops)},
        sort_keys=True, separators=(",", ":"),
    )  # fmt: skip
    log.info("%s", line)
    if check.replay:
        return
    out = Layout(settings.data_dir).run_dir(check.day) / RECORD_NAME
    atomic_write_bytes(out, json.dumps(json.loads(line), indent=2, sort_keys=True).encode() + b"\n")


def waiting_for(
    settings: Settings, day: dt.date, *, now: dt.datetime, empty_night: bool = False
) -> str | None:
    """What night ``day`` still waits for (its day to end, its drops), or None when it may run.
    The Airflow sensor pokes this; a refusal that waiting cannot fix (a future date, a gap,
    a later night) raises :class:`NightRefusedError` at once."""
    try:
        check_night(settings, day, now=now, empty_night=empty_night)
    except NightNotReadyError as exc:
        return str(exc)
    return None


def read_record(layout: Layout, day: dt.date) -> dict[str, Any] | None:
    """The recorded grounds of ``day``'s run, or None (a night from before the preflight)."""
    path = layout.run_dir(day) / RECORD_NAME
    if not path.is_file():
        return None
    record: dict[str, Any] = json.loads(path.read_text())
    return record
