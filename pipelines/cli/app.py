"""`recycle`: the Typer app. The callback, the sub-apps and every command registered in help
order; the commands themselves live in one module per group."""

from __future__ import annotations

import logging
import sys
from typing import Annotated

import typer

from pipelines.cli import audit, ledger, nightly, platform
from pipelines.cli.common import err
from pipelines.errors import RecycleError

__all__ = ["app", "main"]


def _main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="log every step")] = False,
) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # Great Expectations logs every ephemeral context at INFO; it says nothing an operator needs.
    logging.getLogger("great_expectations").setLevel(logging.WARNING)


def _platform_app() -> typer.Typer:
    sub = typer.Typer(help="Platform tokens for the server.", no_args_is_help=True)
    sub.command("add")(platform.platform_add)
    sub.command("scopes")(platform.platform_scopes)
    sub.command("revoke")(platform.platform_revoke)
    sub.command("list")(platform.platform_list)
    return sub


def _acks_app() -> typer.Typer:
    sub = typer.Typer(
        help="Platforms' acknowledgements (unbound / no_account / step_up_enabled).", no_args_is_help=True
    )
    sub.command("import")(platform.acks_import)
    return sub


def _root_app() -> typer.Typer:
    sub = typer.Typer(help="The feed's root of trust (root.json).", no_args_is_help=True)
    sub.command("rotate")(platform.root_rotate)
    return sub


def _alerts_app() -> typer.Typer:
    sub = typer.Typer(help="Compliance alerts: check a night, acknowledge known items.", no_args_is_help=True)
    sub.command("ack")(audit.ack_cmd)
    sub.command("check")(audit.check_cmd)
    sub.command("list")(audit.list_cmd)
    return sub


def build_app() -> typer.Typer:
    """The ``recycle`` app. Typer lists commands in registration order, then the sub-apps."""
    cli = typer.Typer(
        name="recycle",
        help="number-recycling: make recycled (reissued) mobile numbers safe.",
        no_args_is_help=True,
        pretty_exceptions_enable=False,
    )
    cli.callback()(_main)
    for name, command in (
        ("gen", nightly.gen),
        ("run", nightly.run),
        ("status", nightly.status),
        ("show", ledger.show),
        ("evidence", ledger.evidence),
        ("verify", ledger.verify),
        ("audit-log", ledger.audit_log_cmd),
        ("erase", ledger.erase),
        ("serve", platform.serve),
        ("pull", platform.pull),
        ("check", platform.check),
        ("notifications", platform.notifications),
        ("new-owner", platform.new_owner),
        ("report", audit.report_cmd),
        ("export-fcc", audit.export_fcc_cmd),
        ("export-cn", audit.export_cn_cmd),
        ("evidence-summary", ledger.evidence_summary_cmd),
    ):
        cli.command(name)(command)
    cli.add_typer(_platform_app(), name="platform")
    cli.add_typer(_acks_app(), name="acks")
    cli.add_typer(_root_app(), name="root")
    cli.add_typer(_alerts_app(), name="alerts")
    return cli


app = build_app()


def main() -> None:
    try:
        app()
    except RecycleError as exc:
        err.print(f"[red]error:[/red] {exc.diagnostics()}")
        sys.exit(2)


if __name__ == "__main__":
    main()
