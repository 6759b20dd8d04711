"""`recycle provinces split | list`: work split by province (config `provinces`,
:mod:`pipelines.provinces`): route a national drop into the provinces' inboxes, and show each
province's data directory and how far its nights went."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from pipelines.cli.common import ConfigOpt, DataOpt, JsonOpt, out, parse_date, settings_from
from pipelines.config import Settings
from pipelines.errors import ConfigError

__all__ = ["provinces_list", "provinces_split"]


def provinces_split(
    date: Annotated[str, typer.Option("--date", help="the night whose national inbox/<D>/ to split")],
    config: ConfigOpt = None,
    data: DataOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Split the national drops of night D (``inbox/<D>/``) into ``provinces/<code>/inbox/<D>/``
    by their region column; lines of no configured province go to the first, to be quarantined."""
    from pipelines.provinces.split import split_drops

    settings = _nation(config, data)
    report = split_drops(settings, parse_date(date, "--date"))
    if as_json:
        out.print_json(json.dumps({"date": date, "files": report.files, "lines": report.lines,
                                   "unrouted": report.unrouted}))  # fmt: skip
        return
    for code, lines in report.lines.items():
        out.print(f"{code}: {lines} line(s) in {report.files} file(s)", highlight=False)
    if report.unrouted:
        first = min(report.lines)
        out.print(f"{report.unrouted} line(s) named no configured province: sent to {first}, whose "
                  "ingest quarantines them with their reason (recycle quarantine list)", highlight=False)  # fmt: skip


def provinces_list(config: ConfigOpt = None, data: DataOpt = None, as_json: JsonOpt = False) -> None:
    """The configured provinces, their data directories and the last night each completed."""
    from pipelines.layout import Layout
    from pipelines.nightly.preflight import nights_run
    from pipelines.nightly.steps import steps_here

    settings = _nation(config, data)
    if not settings.provinces:
        raise ConfigError(
            "no provinces configured: the embedded default keeps one state (config `provinces`)"
        )
    rows = []
    for code in sorted(settings.provinces):
        province = settings.for_province(code)
        nights = nights_run(Layout(province.data_dir), steps_here(province))
        done = [d for d, complete in nights.items() if complete]
        rows.append({"province": code, "data_dir": str(province.data_dir),
                     "last_night": max(done).isoformat() if done else None})  # fmt: skip
    if as_json:
        out.print_json(json.dumps(rows))
        return
    for row in rows:
        out.print(f"{row['province']}: {row['data_dir']} (last night: {row['last_night'] or 'none yet'})",
                  highlight=False)  # fmt: skip


def _nation(config: Path | None, data: Path | None) -> Settings:
    settings = settings_from(config, data, needs="dir")
    if settings.province:
        raise ConfigError(
            f"RECYCLE_PROVINCE={settings.province} is set: `recycle provinces` works on the whole data directory; unset it"
        )
    return settings
