"""`recycle serve | platform add/revoke/list | pull | check`: the platform-facing commands.

``pipelines.cli`` calls :func:`register` to add them to the ``recycle`` app.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from pipelines.config import Settings, load_settings
from pipelines.numbers import mask

_err = Console(stderr=True)
_out = Console()

ConfigOpt = Annotated[
    Path | None, typer.Option("--config", help="TOML config file (default: $RECYCLE_CONFIG or built-in)")
]
DataOpt = Annotated[Path | None, typer.Option("--data", help="data directory (overrides data_dir)")]


def _settings(config: Path | None, data: Path | None) -> Settings:
    overrides: dict[str, Any] = {} if data is None else {"data_dir": data}
    return load_settings(config, **overrides)


def _date(value: str, option: str) -> dt.date:
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not a date YYYY-MM-DD", param_hint=option) from None


def register(app: typer.Typer) -> None:
    """Add ``serve``, ``platform`` (add/revoke/list), ``pull`` and ``check`` to ``app``."""
    platform_app = typer.Typer(help="Platform tokens for the server.", no_args_is_help=True)
    app.add_typer(platform_app, name="platform")

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
        scope: Annotated[str, typer.Option(help="comma-separated: check,bulk,feeds")] = "check,bulk,feeds",
        rate: Annotated[float, typer.Option(help="requests per second")] = 50.0,
        burst: Annotated[int, typer.Option(help="requests allowed at once")] = 100,
        config: ConfigOpt = None,
        data: DataOpt = None,
    ) -> None:
        """Register a platform and print its token ONCE (only its SHA-256 is stored)."""
        from pipelines.platforms import TokenStore, parse_scopes

        store = TokenStore.open(_settings(config, data).data_dir)
        try:
            token = store.add(name, parse_scopes(scope), rate, burst)
        finally:
            store.close()
        _err.print(f"platform {name} added with scopes {scope}; its token (shown only now):")
        _out.print(token, highlight=False, soft_wrap=True)

    @platform_app.command("revoke")
    def platform_revoke(
        name: Annotated[str, typer.Argument(help="platform name")],
        config: ConfigOpt = None,
        data: DataOpt = None,
    ) -> None:
        """Revoke a platform's token at once (the server checks the store on every request)."""
        from pipelines.platforms import TokenStore

        store = TokenStore.open(_settings(config, data).data_dir)
        try:
            store.revoke(name)
        finally:
            store.close()
        _err.print(f"platform {name} revoked")

    @platform_app.command("list")
    def platform_list(config: ConfigOpt = None, data: DataOpt = None) -> None:
        """Platforms, scopes, limits and whether they are revoked."""
        from pipelines.platforms import TokenStore

        store = TokenStore.open(_settings(config, data).data_dir)
        try:
            platforms = store.list()
        finally:
            store.close()
        table = Table(title="platforms")
        for col in ("name", "scopes", "rate/s", "burst", "created", "revoked"):
            table.add_column(col)
        for p in platforms:
            table.add_row(p.name, ",".join(sorted(p.scopes)), f"{p.rate:g}", str(p.burst), p.created_at,
                          p.revoked_at or "")
        _out.print(table)

    @app.command()
    def pull(
        from_url: Annotated[str, typer.Option("--from", help="server base URL, e.g. https://feeds.carrier.example")],
        state: Annotated[Path, typer.Option("--state", help="directory for the verified local copy")],
        token: Annotated[str, typer.Option("--token", envvar="RECYCLE_PLATFORM_TOKEN",
                                           help="platform token (or $RECYCLE_PLATFORM_TOKEN)")],
        root: Annotated[Path | None, typer.Option("--root", help="pinned root.json for the first pull")] = None,
    ) -> None:
        """Fetch the signed feed, verify it completely, then store it (nothing on failure)."""
        from pipelines.client import pull as run_pull

        report = run_pull(from_url, token, state, root)
        if report.up_to_date:
            _err.print(f"up to date at seq {report.to_seq} (root v{report.root_version})")
        else:
            _err.print(f"verified and stored seq {report.from_seq + 1}..{report.to_seq}: {report.rows} "
                       f"row(s), root v{report.root_version}, ledger size {report.checkpoint_size}")

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
            _out.print_json(json.dumps({"recycled": answer.recycled, "row": row,
                                        "covered_from": answer.covered_from}, default=str))
            return
        _out.print("yes" if answer.recycled else "no")
        if row is not None:
            _out.print(f"  {row['event']} (seq {row['seq']}): disconnected_on {row['disconnected_on']}, "
                       f"released_on {row['released_on']}, reissued_on {row['reissued_on']}")
        if _date(since, "--since") < answer.covered_from:
            _err.print(f"note: the pulled feed starts on {answer.covered_from}; earlier disconnections "
                       "are not in it")
