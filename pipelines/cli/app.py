"""`recycle`: the Typer app. The callback, the sub-apps and every command registered in help
order; the commands themselves live in one module per group."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from pipelines.cli import audit, doctor, events, ledger, nightly, platform, provinces, quarantine, storage
from pipelines.cli.common import CONFIG_HELP, DATA_HELP, GlobalOptions, err, out, set_global_options
from pipelines.errors import RecycleError

__all__ = ["app", "main", "package_version"]

DISTRIBUTION = "number-recycling"


def package_version() -> str:
    """The installed distribution's version (``pyproject.toml``), or say it is not installed."""
    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:
        return "unknown (not installed: pip install -e .)"


def _print_version(value: bool) -> None:
    if value:
        out.print(f"recycle {package_version()}", highlight=False)
        raise typer.Exit()


def _main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="log every step")] = False,
    config: Annotated[Path | None, typer.Option("--config", help=f"{CONFIG_HELP}; for every command")] = None,
    data: Annotated[Path | None, typer.Option("--data", help=f"{DATA_HELP}; for every command")] = None,
    show_version: Annotated[
        bool,
        typer.Option("--version", callback=_print_version, is_eager=True, help="print the version and exit"),
    ] = False,
) -> None:
    """Options here apply to every command; a command's own --config/--data win over them."""
    set_global_options(GlobalOptions(config=config, data=data))
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # Great Expectations logs every ephemeral context at INFO; it says nothing an operator needs.
    logging.getLogger("great_expectations").setLevel(logging.WARNING)


# (name, help, its commands in help order) of each sub-app.
_GROUPS: tuple[tuple[str, str, tuple[tuple[str, Callable[..., None]], ...]], ...] = (
    (
        "platform",
        "Platform tokens for the server.",
        (
            ("add", platform.platform_add),
            ("scopes", platform.platform_scopes),
            ("named", platform.platform_named),
            ("revoke", platform.platform_revoke),
            ("list", platform.platform_list),
        ),
    ),
    (
        "acks",
        "Platforms' acknowledgements (unbound / no_account / step_up_enabled).",
        (("import", platform.acks_import),),
    ),
    ("root", "The feed's root of trust (root.json).", (("rotate", platform.root_rotate),)),
    (
        "quarantine",
        "A night's refused lines: listed masked, exported in clear (0600) to fix and resubmit.",
        (("list", quarantine.quarantine_list), ("export", quarantine.quarantine_export)),
    ),
    (
        "alerts",
        "Compliance alerts: check a night, acknowledge known items.",
        (("ack", audit.ack_cmd), ("check", audit.check_cmd), ("list", audit.list_cmd)),
    ),
    (
        "events",
        "Pushed events: deliver, delivery log, dead letters and replay.",
        (
            ("deliver", events.deliver),
            ("status", events.status),
            ("log", events.log_cmd),
            ("dead-letters", events.dead_letters),
            ("replay", events.replay),
        ),
    ),
    (
        "storage",
        "Storage (config `storage`): pull a rebuilt worker's data up, list what is not pushed.",
        (("pull", storage.storage_pull), ("status", storage.storage_status)),
    ),
    (
        "provinces",
        "Work split by province (config `provinces`): split a national drop, list the provinces.",
        (("split", provinces.provinces_split), ("list", provinces.provinces_list)),
    ),
)


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
        ("statement", ledger.statement),
        ("verify", ledger.verify),
        ("audit-log", ledger.audit_log_cmd),
        ("erase", ledger.erase),
        ("serve", platform.serve),
        ("pull", platform.pull),
        ("check", platform.check),
        ("notifications", platform.notifications),
        ("new-owner", platform.new_owner),
        ("unbind-token", platform.unbind_token),
        ("report", audit.report_cmd),
        ("export-fcc", audit.export_fcc_cmd),
        ("export-cn", audit.export_cn_cmd),
        ("evidence-summary", ledger.evidence_summary_cmd),
        ("doctor", doctor.doctor),
    ):
        cli.command(name)(command)
    for group, help_text, commands in _GROUPS:
        sub = typer.Typer(help=help_text, no_args_is_help=True)
        for name, command in commands:
            sub.command(name)(command)
        cli.add_typer(sub, name=group)
    return cli


app = build_app()


def main() -> None:
    try:
        app()
    except RecycleError as exc:
        # One line (soft_wrap: no folding at 80 columns in a log), the message taken literally.
        err.print(f"[red]error:[/red] {escape(exc.diagnostics())}", highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
