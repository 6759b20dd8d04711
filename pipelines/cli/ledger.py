"""`recycle show | evidence | evidence-summary | statement | verify | audit-log | erase`: a number's
record, its proofs from the signed ledger, signed tenure statements, offline verification, the
public-log audit and erasure."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from pipelines.cli.common import (
    DATA_DIR_EXIT,
    ConfigOpt,
    DataOpt,
    JsonOpt,
    NumberArg,
    NumberOpt,
    err,
    out,
    parse_date,
    parse_number,
    settings_from,
    state_connection,
)

__all__ = ["audit_log_cmd", "erase", "evidence", "evidence_summary_cmd", "show", "statement", "verify"]

VkeyOpt = Annotated[
    str | None,
    typer.Option("--vkey", help="verifier key string or file (default: the bundle's or ledger's vkey)"),
]
OriginOpt = Annotated[str | None, typer.Option("--origin", help="expected checkpoint origin")]


def show(
    number: NumberArg,
    config: ConfigOpt = None,
    data: DataOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """A number's timeline: tenures, state changes, reminders and receipts (operators only).

    With --json, the whole record unmasked. A number not on record exits 1."""
    from pipelines.cli.timeline import render_timeline
    from pipelines.lifecycle import number_history
    from pipelines.numbers import mask

    settings = settings_from(config, data)
    e164 = parse_number(number, settings)
    with state_connection(settings, read_only=True) as con:
        history = number_history(con, e164)
    if history["state"] is None and not history["tenures"] and not history["history"]:
        seen = len(history["quarantined"])
        also = f"; {seen} quarantined row(s) name it (recycle show NUMBER --json)" if seen else ""
        err.print(
            f"{mask(e164)} is not on record in {settings.data_dir}{also}; check the number, "
            "or the data directory (--data)",
            highlight=False,
        )
        raise typer.Exit(1)
    if as_json:
        out.print_json(json.dumps(history, default=str, ensure_ascii=False))
    else:
        render_timeline(history, out)


def evidence(
    number: NumberOpt,
    out_dir: Annotated[Path, typer.Option("--out", help="folder for the bundle")],
    config: ConfigOpt = None,
    data: DataOpt = None,
) -> None:
    """Write the evidence bundle of a number: one C2SP tlog-proof per ledger entry + index.json."""
    from pipelines.ledger.evidence import write_number_evidence
    from pipelines.ledger.nightly import open_ledger

    settings = settings_from(config, data)
    e164 = parse_number(number, settings)
    with state_connection(settings) as con, open_ledger(settings) as ledger:
        try:
            index_path, n = write_number_evidence(con, ledger, e164, out_dir)
        except LookupError as exc:
            err.print(f"[red]{exc}[/red]")
            raise typer.Exit(1) from None
    err.print(f"wrote {n} proofs and {index_path}; check with: recycle verify {out_dir}")


def evidence_summary_cmd(
    number: NumberOpt,
    out_dir: Annotated[Path, typer.Option("--out", help="folder for the bundle and summary.html")],
    config: ConfigOpt = None,
    data: DataOpt = None,
) -> None:
    """A number's evidence bundle plus a one-page human summary (summary.html) for a dispute."""
    from pipelines.compliance.evidence_summary import render_evidence_summary
    from pipelines.ledger.nightly import open_ledger

    settings = settings_from(config, data)
    e164 = parse_number(number, settings, "--number")
    with state_connection(settings) as con, open_ledger(settings) as ledger:
        try:
            path = render_evidence_summary(con, ledger, e164, out_dir)
        except LookupError as exc:
            err.print(f"[red]{exc}[/red]")
            raise typer.Exit(1) from None
    out.print(f"wrote {path}; check the proofs with: recycle verify {out_dir}")


def statement(
    number: NumberOpt,
    tenure: Annotated[
        str | None, typer.Option("--tenure", help="the tenure's start date YYYY-MM-DD (or its id T...)")
    ] = None,
    at: Annotated[
        str | None, typer.Option("--at", help="the tenure that covered this date YYYY-MM-DD")
    ] = None,
    out_file: Annotated[
        Path | None, typer.Option("--out", help="statement file (default: statement-<tenure id>.txt)")
    ] = None,
    config: ConfigOpt = None,
    data: DataOpt = None,
) -> None:
    """Issue a signed tenure statement (default: the number's latest tenure), logged in the ledger.

    The file holds the number in clear (it is the subscriber's document) and is written 0600;
    anyone verifies it offline with `recycle verify FILE --vkey KEY`."""
    import datetime as dt

    from pipelines.layout import Layout, write_private
    from pipelines.ledger.nightly import open_ledger
    from pipelines.ledger.statement_issue import issue_statement
    from pipelines.numbers import mask

    if tenure is not None and at is not None:
        raise typer.BadParameter("give --tenure or --at, not both", param_hint="--at")
    settings = settings_from(config, data)
    e164 = parse_number(number, settings, "--number")
    when = None if at is None else parse_date(at, "--at")
    with state_connection(settings) as con, open_ledger(settings) as ledger:
        issued = issue_statement(
            con, ledger, e164, issued_at=dt.datetime.now(dt.UTC), zone=settings.zone, tenure=tenure, at=when
        )
    path = out_file or Path(f"statement-{issued.facts.tenure_id}.txt")
    write_private(path, issued.data)
    err.print(
        f"wrote {path} (0600): tenure {issued.facts.tenure_id} of {mask(e164)}, ledger entry "
        f"{issued.index}; check with: recycle verify {path} --vkey {Layout(settings.ledger_home).ledger_dir / 'vkey'}",
        highlight=False,
        soft_wrap=True,
    )


def verify(
    path: Annotated[
        Path,
        typer.Argument(
            help="an evidence bundle folder, a .tlog-proof file, a tenure statement, a ledger folder "
            "or a checkpoint"
        ),
    ],
    vkey: VkeyOpt = None,
    origin: OriginOpt = None,
) -> None:
    """Verify offline; exit 1 with the precise reason on any mismatch.

    A ledger folder with files beyond its signed checkpoint still verifies (rc 0), with a
    warning naming them (``beyond_checkpoint_advice`` says why it is not a failure)."""
    from number_recycling_client.ledger.note import MAX_NOTE_BYTES
    from number_recycling_client.ledger.proof import MAX_PROOF_BYTES

    from pipelines.errors import VerificationError
    from pipelines.ledger import open_checkpoint, verify_log, verify_proof_file, verify_statement
    from pipelines.ledger.evidence import INDEX_FILE, read_capped, verify_bundle
    from pipelines.ledger.statement import is_statement
    from pipelines.ledger.verify import beyond_checkpoint_advice

    if not path.exists():
        # Nothing to verify is not a failed verification (rc 1): a wrong path, like a wrong --data.
        err.print(
            f"error: no such file or folder {path}; give an evidence bundle, a .tlog-proof, "
            "a ledger folder (<data>/ledger) or a checkpoint",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(DATA_DIR_EXIT)
    try:
        if path.is_dir() and (path / INDEX_FILE).exists():
            bundle = verify_bundle(path, _verifier_key(path, vkey), origin)
            out.print(
                f"OK: {len(bundle.verified)} proofs verified ({bundle.erased} erased) against the "
                f"checkpoint of size {bundle.checkpoint.size}"
            )
        elif path.is_dir():
            report = verify_log(path, _verifier_key(path, vkey), origin)
            out.print(
                f"OK: ledger of {report.entries} entries, {report.tiles_checked} tiles and "
                f"{report.bundles_checked} entry bundles recomputed; root matches the signed checkpoint"
            )
            for line in beyond_checkpoint_advice(report):
                err.print(line, markup=False, highlight=False, soft_wrap=True)
        elif is_statement(path):
            data = read_capped(path, MAX_PROOF_BYTES, "tenure statement")
            stated = verify_statement(data, _verifier_key(path.parent, vkey), origin)
            out.print(f"OK: {stated.describe()}", highlight=False, soft_wrap=True)
        elif path.suffix == ".tlog-proof":
            data = read_capped(path, MAX_PROOF_BYTES, "tlog-proof")
            verified = verify_proof_file(data, _verifier_key(path.parent, vkey), origin)
            out.print(f"OK: entry {verified.index} ({verified.entry.entry_type.label}) is in the log")
        else:
            data = read_capped(path, MAX_NOTE_BYTES, "signed checkpoint")
            cp = open_checkpoint(data, _verifier_key(path.parent, vkey), origin)
            out.print(f"OK: checkpoint {cp.origin} size {cp.size}")
    except VerificationError as exc:
        err.print(f"[red]FAILED:[/red] {exc.diagnostics()}", soft_wrap=True)
        raise typer.Exit(1) from None


def _verifier_key(folder: Path, vkey: str | None) -> str:
    """``--vkey`` (a key string or a file holding one), else the ``vkey`` file in ``folder``."""
    if vkey is not None:
        return _key_file_text(Path(vkey)) or vkey
    found = folder / "vkey"
    if not found.exists():
        raise typer.BadParameter(f"no --vkey given and no vkey file in {folder}")
    err.print(f"[yellow]using {found}; compare it with the carrier's published key[/yellow]")
    return found.read_text().strip()


def _key_file_text(path: Path) -> str | None:
    """The key in file ``path``, or None when ``--vkey`` is not a readable file (a key string).

    A key string longer than the OS allows for a file name makes ``is_file`` raise, not
    return False (ENAMETOOLONG); a key file is one line, so 64 KiB bounds the read."""
    try:
        if not path.is_file():
            return None
        with path.open("rb") as fh:
            return fh.read(64 << 10).decode("utf-8", "replace").strip()
    except OSError:
        return None


def audit_log_cmd(
    config: ConfigOpt = None,
    data: DataOpt = None,
    ledger_dir: Annotated[
        Path | None, typer.Option("--ledger", help="a ledger folder (default: <data>/ledger)")
    ] = None,
    min_effective: Annotated[
        int | None, typer.Option("--min", help="required effective reminders (default: policy)")
    ] = None,
) -> None:
    """From the public log alone: no tenure released with fewer effective-reminder entries than required."""
    from pipelines.layout import Layout
    from pipelines.ledger import audit_log

    settings = settings_from(config, data, needs="nothing" if ledger_dir is not None else "state")
    folder = ledger_dir or Layout(settings.ledger_home).ledger_dir
    if not (folder / "vkey").is_file():
        err.print(
            f"error: no ledger in {folder} (no vkey file); give a ledger folder with --ledger, "
            "or run a night first: recycle run --date D",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(DATA_DIR_EXIT)
    need = min_effective if min_effective is not None else settings.policy("default").min_effective_reminders
    err.print(
        f"covers: the public ledger alone: every release had {need}+ effective-reminder entries and a "
        "closure (night's alerts: recycle alerts check; everything: recycle doctor)",
        highlight=False,
        soft_wrap=True,
    )
    report = audit_log(folder, (folder / "vkey").read_text().strip(), need)
    out.print(
        f"checkpoint size {report.checkpoint.size}: {report.released} released, "
        f"{len(report.under_reminded)} under-reminded, {len(report.exceptions)} exceptions, "
        f"{len(report.violations)} reissue violations, {len(report.released_without_closure)} "
        f"released without a closure, {len(report.effective_without_sent)} effective without a sent entry"
    )
    for finding in report.effective_without_sent:
        err.print(finding.describe())
    if not report.passed:
        err.print("[red]AUDIT FAILED[/red]")
        raise typer.Exit(1)
    out.print("AUDIT PASSED")


def erase(
    number: Annotated[str, typer.Option("--number", help="the number whose ledger entries to crypto-shred")],
    config: ConfigOpt = None,
    data: DataOpt = None,
    yes: Annotated[bool, typer.Option("--yes", help="confirm: this cannot be undone")] = False,
) -> None:
    """Crypto-shred a number's ledger openings (erasure request); the log stays verifiable."""
    from pipelines.ledger.evidence import erase_number
    from pipelines.ledger.nightly import open_ledger
    from pipelines.numbers import mask

    settings = settings_from(config, data)
    e164 = parse_number(number, settings)
    if not yes:
        raise typer.BadParameter("erasure cannot be undone; repeat with --yes")
    with state_connection(settings) as con, open_ledger(settings) as ledger:
        n = erase_number(con, ledger, e164)
    err.print(f"erased the openings of {n} entries about {mask(e164)}")
