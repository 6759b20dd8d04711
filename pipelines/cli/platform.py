"""`recycle serve | platform add/scopes/named/revoke/list | pull | check | acks import | notifications |
new-owner | root rotate`: the platform-facing commands."""

from __future__ import annotations

import json
from contextlib import closing
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from pipelines.cli.common import (
    ConfigOpt,
    DataOpt,
    JsonOpt,
    NumberArg,
    err,
    out,
    parse_date,
    parse_number,
    settings_from,
)
from pipelines.config import Settings
from pipelines.numbers import mask
from pipelines.server import DEFAULT_SCOPES

__all__ = [
    "acks_import",
    "check",
    "new_owner",
    "notifications",
    "platform_add",
    "platform_list",
    "platform_named",
    "platform_revoke",
    "platform_scopes",
    "pull",
    "root_rotate",
    "serve",
]


def serve(
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port")] = 8080,
    config: ConfigOpt = None,
    data: DataOpt = None,
) -> None:
    """Serve feeds, ledger tiles, the CAMARA check and the bulk check over HTTP."""
    from pipelines.server import serve as run_server

    run_server(settings_from(config, data), host, port)


def platform_add(
    name: Annotated[str, typer.Argument(help="platform name, e.g. bank-a")],
    scope: Annotated[
        str, typer.Option(help="comma-separated: check,bulk,feeds,ack,subscriptions (metrics: operators)")
    ] = DEFAULT_SCOPES,
    rate: Annotated[float, typer.Option(help="requests per second")] = 50.0,
    burst: Annotated[int, typer.Option(help="requests allowed at once")] = 100,
    named: Annotated[
        bool, typer.Option("--named", help="it agreed to be named to a recycled number's new holder")
    ] = False,
    config: ConfigOpt = None,
    data: DataOpt = None,
) -> None:
    """Register a platform and print its token ONCE (only its SHA-256 is stored)."""
    from pipelines.server import TokenStore, parse_scopes

    with closing(TokenStore.open(settings_from(config, data).data_dir)) as store:
        token = store.add(name, parse_scopes(scope), rate, burst, named=named)
    err.print(f"platform {name} added with scopes {scope}; its token (shown only now):")
    out.print(token, highlight=False, soft_wrap=True)


def platform_scopes(
    name: Annotated[str, typer.Argument(help="platform name")],
    scope: Annotated[
        str, typer.Option(help="comma-separated: check,bulk,feeds,ack,subscriptions (metrics: operators)")
    ],
    config: ConfigOpt = None,
    data: DataOpt = None,
) -> None:
    """Replace an active platform's scopes (e.g. grant ack); the token stays the same."""
    from pipelines.server import TokenStore, parse_scopes

    with closing(TokenStore.open(settings_from(config, data).data_dir)) as store:
        store.set_scopes(name, parse_scopes(scope))
    err.print(f"platform {name} now has scopes {scope}")


def platform_named(
    name: Annotated[str, typer.Argument(help="platform name")],
    agreed: Annotated[
        bool, typer.Option("--yes/--no", help="it agreed (or no longer agrees) to be named to new holders")
    ],
    config: ConfigOpt = None,
    data: DataOpt = None,
) -> None:
    """Record whether a platform agreed to be named to a recycled number's new holder.

    Unnamed platforms are only counted in the holder's notice and `recycle new-owner`. A
    notice already sent keeps what it said; the view follows the flag at once."""
    from pipelines.server import TokenStore

    with closing(TokenStore.open(settings_from(config, data).data_dir)) as store:
        store.set_named(name, agreed)
    err.print(f"platform {name} is {'named' if agreed else 'only counted'} in new holders' notices")


def platform_revoke(
    name: Annotated[str, typer.Argument(help="platform name")],
    config: ConfigOpt = None,
    data: DataOpt = None,
) -> None:
    """Revoke a platform's token at once (the server checks the store on every request)."""
    from pipelines.server import TokenStore

    with closing(TokenStore.open(settings_from(config, data).data_dir)) as store:
        store.revoke(name)
    err.print(f"platform {name} revoked")


def platform_list(config: ConfigOpt = None, data: DataOpt = None) -> None:
    """Platforms, scopes, limits and whether they are revoked."""
    from pipelines.server import TokenStore

    with closing(TokenStore.open(settings_from(config, data).data_dir)) as store:
        platforms = store.list()
    table = Table(title="platforms")
    for col in ("name", "scopes", "named", "rate/s", "burst", "created", "revoked"):
        table.add_column(col)
    for p in platforms:
        table.add_row(
            p.name,
            ",".join(sorted(p.scopes)),
            "yes" if p.named else "",
            f"{p.rate:g}",
            str(p.burst),
            p.created_at,
            p.revoked_at or "",
        )
    out.print(table)


def pull(
    from_url: Annotated[
        str, typer.Option("--from", help="server base URL, e.g. https://feeds.carrier.example")
    ],
    state: Annotated[Path, typer.Option("--state", help="directory for the verified local copy")],
    token: Annotated[
        str,
        typer.Option(
            "--token", envvar="RECYCLE_PLATFORM_TOKEN", help="platform token (or $RECYCLE_PLATFORM_TOKEN)"
        ),
    ],
    root: Annotated[Path | None, typer.Option("--root", help="pinned root.json for the first pull")] = None,
) -> None:
    """Fetch the signed feed, verify it completely, then store it (nothing on failure)."""
    from pipelines.client import pull as run_pull

    report = run_pull(from_url, token, state, root)
    if report.up_to_date:
        err.print(f"up to date at seq {report.to_seq} (root v{report.root_version})")
    else:
        err.print(
            f"verified and stored seq {report.from_seq + 1}..{report.to_seq}: {report.rows} "
            f"row(s), root v{report.root_version}, ledger size {report.checkpoint_size}"
        )


def check(
    number: Annotated[str, typer.Argument(help="phone number, E.164 (+86...)")],
    since: Annotated[str, typer.Option("--since", help="date the account was bound, YYYY-MM-DD")],
    state: Annotated[Path, typer.Option("--state", help="directory of `recycle pull`")],
    as_json: JsonOpt = False,
) -> None:
    """Answer from the pulled feed: was NUMBER recycled since DATE? (yes/no, and the row why)."""
    from pipelines.client import check_local

    answer = check_local(state, number, parse_date(since, "--since"))
    row = None if answer.row is None else {**answer.row, "msisdn": mask(answer.row["msisdn"])}
    if as_json:
        out.print_json(
            json.dumps(
                {"recycled": answer.recycled, "row": row, "covered_from": answer.covered_from},
                default=str,
            )
        )
        return
    out.print("yes" if answer.recycled else "no")
    if row is not None:
        out.print(
            f"  {row['event']} (seq {row['seq']}): disconnected_on {row['disconnected_on']}, "
            f"released_on {row['released_on']}, reissued_on {row['reissued_on']}"
        )
    if parse_date(since, "--since") < answer.covered_from:
        err.print(
            f"note: the pulled feed starts on {answer.covered_from}; earlier disconnections are not in it"
        )


def acks_import(
    file: Annotated[
        Path,
        typer.Argument(
            help="CSV with header phone_number,status,feed_date,observed_at", exists=True, dir_okay=False
        ),
    ],
    platform: Annotated[str, typer.Option("--platform", help="the platform that sent the file")],
    config: ConfigOpt = None,
    data: DataOpt = None,
) -> None:
    """Import a platform's acknowledgements CSV: every line checked, all stored or none."""
    from pipelines.compliance.notifications import AckStore, read_acknowledgements, validate_acknowledgements
    from pipelines.errors import DataContractError
    from pipelines.feeds.publish import FeedPaths
    from pipelines.server import utc_now

    settings = settings_from(config, data)
    _require_platform(settings, platform)
    received = utc_now()
    try:
        valid = validate_acknowledgements(
            read_acknowledgements(file.read_bytes(), "text/csv"),
            published=FeedPaths.of(settings).published_days(),
            now=received,
        )
    except DataContractError as exc:
        err.print(f"[red]{file}:[/red] {exc}", soft_wrap=True)
        raise typer.Exit(1) from None
    with closing(AckStore.open(settings.data_dir)) as store:
        receipt = store.add(platform, valid, received, f"import:{file.name}")
    err.print(
        f"imported {receipt.accepted} acknowledgement(s) from {platform}: {receipt.stored} new, "
        f"{receipt.accepted - receipt.stored} already stored (batch {receipt.batch_id})"
    )


def _require_platform(settings: Settings, platform: str) -> None:
    """Refuse a name `recycle platform list` does not show (it lists revoked platforms too)."""
    from pipelines.server import TokenStore

    with closing(TokenStore.open(settings.data_dir)) as tokens:
        known = {p.name for p in tokens.list()}
    if platform not in known:
        raise typer.BadParameter(
            f"no platform named {platform!r}; see `recycle platform list`", param_hint="--platform"
        )


def notifications(
    number: NumberArg,
    as_json: JsonOpt = False,
    config: ConfigOpt = None,
    data: DataOpt = None,
) -> None:
    """Proof of notification: feed days listing NUMBER, downloads, acknowledgements.

    Which feed days listed the number, which platforms downloaded a file listing it and
    when, and what each acknowledged. The number is masked in both forms."""
    from pipelines.compliance.notifications import evidence_lines, notification_evidence

    settings = settings_from(config, data)
    evidence = notification_evidence(settings, parse_number(number, settings))
    if as_json:
        out.print_json(json.dumps({**evidence, "msisdn": mask(evidence["msisdn"])}))
        return
    for line in evidence_lines(evidence):
        out.print(line, highlight=False, soft_wrap=True)


def new_owner(
    number: NumberArg,
    as_of: Annotated[
        str | None, typer.Option("--as-of", help="date YYYY-MM-DD (default: the carrier's today)")
    ] = None,
    as_json: JsonOpt = False,
    config: ConfigOpt = None,
    data: DataOpt = None,
) -> None:
    """The current holder's view of NUMBER: counts of platforms notified and unbound.

    Since the number was recycled to its holder: how many platforms were notified, and how
    many confirmed unbinding, had no account or enabled stronger verification. Counts only."""
    from pipelines.compliance.notifications import new_owner_view
    from pipelines.reminders.templates import holder_lines
    from pipelines.server import utc_now

    settings = settings_from(config, data)
    day = settings.carrier_day(utc_now()) if as_of is None else parse_date(as_of, "--as-of")
    view = new_owner_view(settings, parse_number(number, settings), day)
    if as_json:
        out.print_json(json.dumps(view))
        return
    if not view["recycled"]:
        out.print(
            f"{view['number']}: held since {view['holder_since']}; the number was not "
            "recycled to this holder, so no platform had to be told",
            soft_wrap=True,
        )
        return
    out.print(
        f"{view['number']}, held since {view['holder_since']}, as of {view['as_of']}: "
        f"{view['platforms_notified']} platform(s) notified, "
        f"{view['unbound']} confirmed unbinding, {view['no_account']} had no account, "
        f"{view['step_up_enabled']} enabled stronger verification",
        highlight=False,
        soft_wrap=True,
    )
    # The same named + counted lines as the holder's notice (platform_outcomes: one rule).
    for line in holder_lines(view["named"], view["others"]):
        out.print("  " + line, highlight=False, soft_wrap=True)


def root_rotate(
    date: Annotated[
        str | None,
        typer.Option("--date", help="logical date YYYY-MM-DD (default: the newest published feed day)"),
    ] = None,
    keep_online_key: Annotated[
        bool,
        typer.Option(
            "--keep-online-key",
            help="rotate only the root key; keep the online (manifest/timestamp/receipt) key",
        ),
    ] = False,
    config: ConfigOpt = None,
    data: DataOpt = None,
) -> None:
    """Replace the root key: root version N+1 signed by the old and the new root key."""
    from pipelines.feeds.publish import newest_manifest, rotate_root

    settings = settings_from(config, data)
    if date is not None:
        day = parse_date(date, "--date")
    else:
        newest = newest_manifest(settings)
        if newest is None:
            raise typer.BadParameter("no feed is published yet; give the logical date", param_hint="--date")
        day = newest.signed.feed_date
    env = rotate_root(settings, day, rotate_online=not keep_online_key)
    err.print(
        f"root rotated to version {env.signed.version} (expires {env.signed.expires:%Y-%m-%d}); "
        f"keys under {settings.data_dir / 'keys'}"
    )
    if not keep_online_key:
        err.print(
            "[yellow]the online key changed: clients verify the published timestamp and "
            "manifests against the new root only after the next nightly run re-signs them; "
            "rotate just before a run[/yellow]"
        )
