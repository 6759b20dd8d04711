"""`recycle storage pull | status`: the data directory and its storage (``storage`` in the
config, :mod:`pipelines.storage`): bring a rebuilt worker's data directory up from storage, or
list what the data directory holds that storage lacks."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from pipelines.cli.common import ConfigOpt, DataOpt, JsonOpt, out, settings_from
from pipelines.errors import ConfigError

__all__ = ["storage_pull", "storage_status"]

WhatOpt = Annotated[
    str, typer.Option("--what", help="comma-separated: ledger, feeds, snapshot (default: all three)")
]
SHOWN = 10  # paths listed per area; the rest are counted


def storage_pull(
    what: WhatOpt = "ledger,feeds,snapshot",
    config: ConfigOpt = None,
    data: DataOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Copy the ledger, feeds and query snapshot from storage into the data directory (tiles
    before the checkpoint, files before the timestamp); never moves them backwards."""
    from pipelines.storage.sync import AREAS, pull

    areas = tuple(a.strip() for a in what.split(",") if a.strip())
    unknown = sorted(set(areas) - set(AREAS))
    if unknown or not areas:
        raise ConfigError(f"--what {what!r}: choose from {', '.join(AREAS)} (comma-separated)")
    settings = settings_from(config, data, needs="dir")
    report = pull(settings, areas)
    if as_json:
        out.print_json(json.dumps({"fetched": report.fetched, "skipped": report.skipped}))
        return
    for area in areas:
        got = report.fetched.get(area, [])
        why = report.skipped.get(area)
        out.print(f"{area}: {len(got)} file(s) pulled" + (f" ({why})" if why else ""), highlight=False)


def storage_status(config: ConfigOpt = None, data: DataOpt = None, as_json: JsonOpt = False) -> None:
    """What the data directory holds that storage lacks (or holds with another size), per area.
    Exit 1 when something is missing: publish it by running the night's step again."""
    from pipelines.storage.sync import status

    settings = settings_from(config, data, needs="dir")
    missing = status(settings)
    if as_json:
        out.print_json(json.dumps({"storage": settings.storage, "missing": missing}))
    elif not missing:
        out.print("storage is the data directory itself (config `storage` is empty)", highlight=False)
    else:
        for area, rels in missing.items():
            out.print(f"{area}: {len(rels)} file(s) not in {settings.storage}", highlight=False)
            for rel in rels[:SHOWN]:
                out.print(f"    {rel}", highlight=False, markup=False)
            if len(rels) > SHOWN:
                out.print(f"    ... and {len(rels) - SHOWN} more", highlight=False)
    if any(missing.values()):
        raise typer.Exit(1)
