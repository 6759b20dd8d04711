"""`recycle serve | platform add/scopes/revoke/list | pull | check | acks import | notifications |
new-owner | root rotate`: the platform-facing commands.

``pipelines.cli.app`` calls :func:`register` to add them to the ``recycle`` app.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from pipelines.cli.common import ConfigOpt, DataOpt
from pipelines.cli.common import parse_date as _date
from pipelines.cli.common import parse_number as _e164
from pipelines.cli.common import settings_from as _settings
from pipelines.numbers import mask
from pipelines.server import DEFAULT_SCOPES

_err = Console(stderr=True)
_out = Console()


def register(app: typer.Typer) -> None:
    """Add ``serve``, ``platform`` (add/scopes/revoke/list), ``pull``, ``check``, ``acks import``,
    ``notifications``, ``new-owner`` and ``root rotate`` to ``app``."""
    platform_app = typer.Typer(help="Platform tokens for the server.", no_args_is_help=True)
    app.add_typer(platform_app, name="platform")
    acks_app = typer.Typer(
        help="Platforms' acknowledgements (unbound / no_account / step_up_enabled).", no_args_is_help=True
    )
    app.add_typer(acks_app, name="acks")
    root_app = typer.Typer(help="The feed's root of trust (root.json).", no_args_is_help=True)
    app.add_typer(root_app, name="root")

    @app.command()
    def serve(
        host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
        port: Annotated[int, typer.Option(help="TCP port")] = 8080,
        config: ConfigOpt = None,
        data: DataOpt = None,
    ) -> None:
        """Serve feeds, ledger tiles, the CAMARA check and the bulk check over HTTP."""
        from pipelines.server import serve as run_server

        run_server(_settings(config, data), host, port)

    @platform_app.command("add")
    def platform_add(
        name: Annotated[str, typer.Argument(help="platform name, e.g. bank-a")],
        scope: Annotated[str, typer.Option(help="comma-separated: check,bulk,feeds,ack")] = DEFAULT_SCOPES,
        rate: Annotated[float, typer.Option(help="requests per second")] = 50.0,
        burst: Annotated[int, typer.Option(help="requests allowed at once")] = 100,
        config: ConfigOpt = None,
        data: DataOpt = None,
    ) -> None:
        """Register a platform and print its token ONCE (only its SHA-256 is stored)."""
        from pipelines.server import TokenStore, parse_scopes

        store = TokenStore.open(_settings(config, data).data_dir)
        try:
            token = store.add(name, parse_scopes(scope), rate, burst)
        finally:
            store.close()
        _err.print(f"platform {name} added with scopes {scope}; its token (shown only now):")
        _out.print(token, highlight=False, soft_wrap=True)

    @platform_app.command("scopes")
    def platform_scopes(
        name: Annotated[str, typer.Argument(help="platform name")],
        scope: Annotated[str, typer.Option(help="comma-separated: check,bulk,feeds,ack")],
        config: ConfigOpt = None,
        data: DataOpt = None,
    ) -> None:
        """Replace an active platform's scopes (e.g. grant ack); the token stays the same."""
        from pipelines.server import TokenStore, parse_scopes

        store = TokenStore.open(_settings(config, data).data_dir)
        try:
            store.set_scopes(name, parse_scopes(scope))
        finally:
            store.close()
        _err.print(f"platform {name} now has scopes {scope}")

    @platform_app.command("revoke")
    def platform_revoke(
        name: Annotated[str, typer.Argument(help="platform name")],
        config: ConfigOpt = None,
        data: DataOpt = None,
    ) -> None:
        """Revoke a platform's token at once (the server checks the store on every request)."""
        from pipelines.server import TokenStore

        store = TokenStore.open(_settings(config, data).data_dir)
        try:
            store.revoke(name)
        finally:
            store.close()
        _err.print(f"platform {name} revoked")

    @platform_app.command("list")
    def platform_list(config: ConfigOpt = None, data: DataOpt = None) -> None:
        """Platforms, scopes, limits and whether they are revoked."""
        from pipelines.server import TokenStore

        store = TokenStore.open(_settings(config, data).data_dir)
        try:
            platforms = store.list()
        finally:
            store.close()
        table = Table(title="platforms")
        for col in ("name", "scopes", "rate/s", "burst", "created", "revoked"):
            table.add_column(col)
        for p in platforms:
            table.add_row(
                p.name,
                ",".join(sorted(p.scopes)),
                f"{p.rate:g}",
                str(p.burst),
                p.created_at,
                p.revoked_at or "",
            )
        _out.print(table)

    @app.command()
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
        root: Annotated[
            Path | None, typer.Option("--root", help="pinned root.json for the first pull")
        ] = None,
    ) -> None:
        """Fetch the signed feed, verify it completely, then store it (nothing on failure)."""
        from pipelines.client.pull import pull as run_pull

        report = run_pull(from_url, token, state, root)
        if report.up_to_date:
            _err.print(f"up to date at seq {report.to_seq} (root v{report.root_version})")
        else:
            _err.print(
                f"verified and stored seq {report.from_seq + 1}..{report.to_seq}: {report.rows} "
                f"row(s), root v{report.root_version}, ledger size {report.checkpoint_size}"
            )

    @app.command()
    def check(
        number: Annotated[str, typer.Argument(help="phone number, E.164 (+86...)")],
        since: Annotated[str, typer.Option("--since", help="date the account was bound, YYYY-MM-DD")],
        state: Annotated[Path, typer.Option("--state", help="directory of `recycle pull`")],
        as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
    ) -> None:
        """Answer from the pulled feed: was NUMBER recycled since DATE? (yes/no, and the row why)."""
        from pipelines.client import check_local

        answer = check_local(state, number, _date(since, "--since"))
        row = None if answer.row is None else {**answer.row, "msisdn": mask(answer.row["msisdn"])}
        if as_json:
            _out.print_json(
                json.dumps(
                    {"recycled": answer.recycled, "row": row, "covered_from": answer.covered_from},
                    default=str,
                )
            )
            return
        _out.print("yes" if answer.recycled else "no")
        if row is not None:
            _out.print(
                f"  {row['event']} (seq {row['seq']}): disconnected_on {row['disconnected_on']}, "
                f"released_on {row['released_on']}, reissued_on {row['reissued_on']}"
            )
        if _date(since, "--since") < answer.covered_from:
            _err.print(
                f"note: the pulled feed starts on {answer.covered_from}; earlier disconnections are not in it"
            )

    @acks_app.command("import")
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
        from pipelines.compliance.notifications import (
            AckStore,
            read_acknowledgements,
            validate_acknowledgements,
        )
        from pipelines.errors import DataContractError
        from pipelines.feeds.publish import FeedPaths
        from pipelines.server import TokenStore, utc_now

        settings = _settings(config, data)
        tokens = TokenStore.open(settings.data_dir)
        try:
            known = {p.name for p in tokens.list()}
        finally:
            tokens.close()
        if platform not in known:
            raise typer.BadParameter(
                f"no platform named {platform!r}; see `recycle platform list`", param_hint="--platform"
            )
        received = utc_now()
        try:
            valid = validate_acknowledgements(
                read_acknowledgements(file.read_bytes(), "text/csv"),
                published=FeedPaths.of(settings).published_days(),
                now=received,
            )
        except DataContractError as exc:
            _err.print(f"[red]{file}:[/red] {exc}", soft_wrap=True)
            raise typer.Exit(1) from None
        store = AckStore.open(settings.data_dir)
        try:
            receipt = store.add(platform, valid, received, f"import:{file.name}")
        finally:
            store.close()
        _err.print(
            f"imported {receipt.accepted} acknowledgement(s) from {platform}: {receipt.stored} new, "
            f"{receipt.accepted - receipt.stored} already stored (batch {receipt.batch_id})"
        )

    @app.command()
    def notifications(
        number: Annotated[str, typer.Argument(help="the number, national or E.164")],
        as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
        config: ConfigOpt = None,
        data: DataOpt = None,
    ) -> None:
        """Proof of notification: feed days listing NUMBER, downloads, acknowledgements.

        Which feed days listed the number, which platforms downloaded a file listing it and
        when, and what each acknowledged. The number is masked in both forms."""
        from pipelines.compliance.notifications import evidence_lines, notification_evidence

        settings = _settings(config, data)
        evidence = notification_evidence(settings, _e164(number, settings))
        if as_json:
            _out.print_json(json.dumps({**evidence, "msisdn": mask(evidence["msisdn"])}))
            return
        for line in evidence_lines(evidence):
            _out.print(line, highlight=False, soft_wrap=True)

    @app.command("new-owner")
    def new_owner(
        number: Annotated[str, typer.Argument(help="the number, national or E.164")],
        as_of: Annotated[
            str | None, typer.Option("--as-of", help="date YYYY-MM-DD (default: today, UTC)")
        ] = None,
        as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
        config: ConfigOpt = None,
        data: DataOpt = None,
    ) -> None:
        """The current holder's view of NUMBER: counts of platforms notified and unbound.

        Since the number was recycled to its holder: how many platforms were notified, and how
        many confirmed unbinding, had no account or enabled stronger verification. Counts only."""
        from pipelines.compliance.notifications import new_owner_view
        from pipelines.server import utc_now

        settings = _settings(config, data)
        day = utc_now().date() if as_of is None else _date(as_of, "--as-of")
        view = new_owner_view(settings, _e164(number, settings), day)
        if as_json:
            _out.print_json(json.dumps(view))
            return
        if not view["recycled"]:
            _out.print(
                f"{view['number']}: held since {view['holder_since']}; the number was not "
                "recycled to this holder, so no platform had to be told",
                soft_wrap=True,
            )
            return
        _out.print(
            f"{view['number']}, held since {view['holder_since']}, as of {view['as_of']}: "
            f"{view['platforms_notified']} platform(s) notified, "
            f"{view['unbound']} confirmed unbinding, {view['no_account']} had no account, "
            f"{view['step_up_enabled']} enabled stronger verification",
            highlight=False,
            soft_wrap=True,
        )

    @root_app.command("rotate")
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

        settings = _settings(config, data)
        if date is not None:
            day = _date(date, "--date")
        else:
            newest = newest_manifest(settings)
            if newest is None:
                raise typer.BadParameter(
                    "no feed is published yet; give the logical date", param_hint="--date"
                )
            day = newest.signed.feed_date
        env = rotate_root(settings, day, rotate_online=not keep_online_key)
        _err.print(
            f"root rotated to version {env.signed.version} (expires {env.signed.expires:%Y-%m-%d}); "
            f"keys under {settings.data_dir / 'keys'}"
        )
        if not keep_online_key:
            _err.print(
                "[yellow]the online key changed: clients verify the published timestamp and "
                "manifests against the new root only after the next nightly run re-signs them; "
                "rotate just before a run[/yellow]"
            )
