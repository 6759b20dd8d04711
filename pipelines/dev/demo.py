"""`make demo`: a few weeks of synthetic drops, run night by night through the Airflow DAG.

Time is compressed (a 10-day freeze instead of 90) so whole lives — cancel, reminders,
release, reissue — fit into a few minutes. Everything runs on the embedded default:
DuckDB state, files under the data directory, Airflow with SQLite metadata.

Unlike the rest of the package the demo needs a checkout, not just the wheel: Airflow loads
the DAG from the repository's ``dags/`` folder (found beside this package's directory).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from pipelines.config import Settings

console = Console()

# The demo's policy (the tests' too): time compressed ~9x so a few nights show whole lives.
DEMO_POLICY = """\
[policy.default]
freeze_days = 10
suspend_days = 5
reminder_offsets = [0, 4, -3]
min_effective_reminders = 2
max_hold_days = 4
"""

DEMO_CONFIG = (
    """\
# Demo policy: time compressed ~9x so a few weeks show whole lives. Production uses 60-90 days.
data_dir = "{data_dir}"
default_region = "CN"

"""
    + DEMO_POLICY
)


@contextlib.contextmanager
def _quiet(log_path: Path) -> Iterator[None]:
    """Send Airflow's own chatter (it writes to fds 1 and 2) to a log file while a run executes."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(log_path, "ab") as fh:
        os.dup2(fh.fileno(), 1)
        os.dup2(fh.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def prepare_airflow(airflow_home: Path, dags_folder: Path) -> dict[str, str]:
    """Environment for an embedded Airflow (SQLite metadata) and its migrated database."""
    env = {
        "AIRFLOW_HOME": str(airflow_home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
    }
    os.environ.update(env)
    airflow = Path(sys.executable).with_name("airflow")
    log = airflow_home / "setup.log"
    airflow_home.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as fh:
        subprocess.run([str(airflow), "db", "migrate"], check=True, stdout=fh, stderr=fh, env=os.environ)
        subprocess.run(
            [str(airflow), "pools", "set", "recycle_state", "1", "DuckDB state: one writer"],
            check=True,
            stdout=fh,
            stderr=fh,
            env=os.environ,
        )
    return env


@contextlib.contextmanager
def task_logs_in_airflow_home() -> Iterator[None]:
    """Write each task's log where the UI reads it while ``dag.test()`` runs nights in-process.

    ``dag.test()`` runs tasks in this process and logs them to the console only, so the UI
    said "not found on worker" for every demo night. A worker writes JSON lines to
    ``<base_log_folder>/<log_filename_template>``; this does the same for each in-process task.
    """
    from airflow.sdk.execution_time import supervisor

    run_in_process = supervisor.run_task_in_process

    def run_and_log(ti: Any, task: Any, client: Any = None) -> Any:
        import logging

        import structlog
        from airflow.sdk.log import configure_logging, init_log_file, reset_logging

        # Put back the console's handlers and structlog config afterwards: configure_logging()
        # a second time keeps the first call's stream (logging.config mutates a shared dict).
        handlers, config = logging.root.handlers[:], structlog.get_config()
        with open(init_log_file(_task_log_path(ti)), "ab") as fh:
            reset_logging()  # type: ignore[no-untyped-call]
            configure_logging(json_output=True, output=fh, cache_logger_on_first_use=False)
            try:
                return run_in_process(ti, task, client)
            finally:
                reset_logging()  # type: ignore[no-untyped-call]
                structlog.configure(**config)
                logging.root.handlers[:] = handlers

    supervisor.run_task_in_process = run_and_log  # type: ignore[assignment]
    try:
        yield
    finally:
        supervisor.run_task_in_process = run_in_process  # type: ignore[assignment]


def _task_log_path(ti: Any) -> str:
    """The task's log file, relative to the log folder, as the UI's file handler names it."""
    import jinja2
    from airflow.sdk.configuration import conf

    template = conf.get("logging", "log_filename_template")
    return str(jinja2.Template(template).render(ti=ti, try_number=ti.try_number))


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    data: Path = args.data.resolve()
    start = (
        dt.date.fromisoformat(args.start)
        if args.start
        # the carrier's today (runs use logical dates; this only picks where the demo's weeks end)
        else Settings().carrier_day(dt.datetime.now(dt.UTC)) - dt.timedelta(days=args.days)
    )
    last = start + dt.timedelta(days=args.days - 1)
    refusal = _may_empty(data, fresh=args.fresh, interactive=sys.stdin.isatty())
    if refusal:
        console.print(refusal, highlight=False, soft_wrap=True)  # the command in it stays copyable
        return 1
    config = _fresh_data_dir(data)

    t0 = time.monotonic()
    from pipelines.dev.synth import generate

    console.rule("[bold]1. synthetic drops")
    summary = generate(
        data, start, args.days, args.rows_per_day, args.seed, 0.02, freeze_days=10, suspend_days=5
    )
    console.print(f"{summary}")

    console.rule("[bold]2. Airflow (SQLite metadata) and the nightly DAG")
    failures = _run_nights(data, start, args.days)

    console.rule("[bold]3. summary")
    from pipelines.config import load_settings

    settings = load_settings(config)
    print_summary(settings, start, args.days)

    console.rule("[bold]4. compliance alerts (a production night fails loudly on these)")
    _cli("alerts", "check", "--config", str(config), "--date", str(last))
    report_dir = data / "report"
    failures += _cli(
        "report", "--from", str(start), "--to", str(last), "--out", str(report_dir), "--config", str(config)
    )

    console.rule("[bold]5. auditor: verify the signed ledger from public files alone")
    failures += _cli("verify", str(data / "ledger"))
    failures += _cli("audit-log", "--config", str(config))

    console.rule("[bold]6. platform: serve, pull and verify the signed feed, ask about a number")
    failures += platform_epilogue(data, config, start)
    console.print(f"\ndemo finished in {time.monotonic() - t0:.0f}s; data in {data}")
    console.print(f"Airflow logs: {data / 'airflow' / 'dag-test.log'}")
    return 1 if failures else 0


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=Path("var/demo"))
    parser.add_argument(
        "--start",
        default=None,
        help="first logical date (default: so that the last night is yesterday, keeping the "
        "signed feed fresh for the platform client's expiry check)",
    )
    parser.add_argument("--days", type=int, default=21)
    parser.add_argument("--rows-per-day", type=int, default=120)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument(
        "--fresh",
        action="store_true",
        help="empty an existing data directory without asking (the demo always starts from an empty one)",
    )
    return parser.parse_args(argv)


def _may_empty(data: Path, *, fresh: bool, interactive: bool) -> str | None:
    """None when the demo may (re)create ``data``; otherwise why not, and what to run instead.

    An existing, non-empty directory is emptied only with ``--fresh`` or a "y" at the prompt,
    and only when it is a demo's (it has the ``recycle.toml`` the demo writes): ``--data`` may
    point anywhere, and a mistyped path must not cost anyone their files.
    """
    if not data.exists() or not any(data.iterdir()):
        return None
    if not (data / "recycle.toml").is_file():
        return (
            f"{data} exists and is not a demo's data directory (no recycle.toml): nothing deleted. "
            "Choose another one with --data DIR."
        )
    if fresh:
        return None
    rerun = shlex.join([_shown(sys.executable), "-m", "pipelines.dev.demo", "--data", str(data), "--fresh"])
    if not interactive:
        return f"{data} holds an earlier demo: nothing deleted. To start again from empty, run: {rerun}"
    answer = console.input(f"{data} holds an earlier demo. Delete it and start again? [y/N] ")
    if answer.strip().lower() in ("y", "yes"):
        return None
    return f"kept {data}. To start again from empty, run: {rerun} (or choose another --data DIR)"


def _fresh_data_dir(data: Path) -> Path:
    """Empty ``data`` (:func:`_may_empty` said so) and write the demo's config there; the
    process uses it from now on."""
    if data.exists():
        shutil.rmtree(data)  # the demo always starts from an empty embedded default
    data.mkdir(parents=True)
    config = data / "recycle.toml"
    config.write_text(DEMO_CONFIG.format(data_dir=data), encoding="utf-8")
    os.environ["RECYCLE_CONFIG"] = str(config)
    os.environ.pop("RECYCLE_DATA_DIR", None)
    return config


def _run_nights(data: Path, start: dt.date, days: int) -> int:
    """Each night through the Airflow DAG of the checkout's dags/ folder; how many failed."""
    repo = Path(__file__).resolve().parents[2]
    prepare_airflow(data / "airflow", repo / "dags")
    sys.path.insert(0, str(repo / "dags"))
    with _quiet(data / "airflow" / "dag-test.log"):
        from number_recycling_nightly import nightly_dag  # type: ignore[import-not-found]

        dag = nightly_dag
    failures = 0
    for i in range(days):
        day = start + dt.timedelta(days=i)
        t = time.monotonic()
        with _quiet(data / "airflow" / "dag-test.log"), task_logs_in_airflow_home():
            run = dag.test(
                logical_date=dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC),
                # the synthetic drops carry early reissues on purpose: record the alerts, show them below
                run_conf={"simulate_gateways": True, "alerts_mode": "record"},
            )
        state = str(getattr(run, "state", "?"))
        failures += state != "success"
        console.print(f"  {day}  dag run {state:8}  {time.monotonic() - t:5.1f}s")
    return failures


def _recycle() -> str:
    return str(Path(sys.executable).with_name("recycle"))


def _shown(executable: str) -> str:
    """An executable's path as the user can type it: relative to the cwd when inside it."""
    path = Path(executable)
    with contextlib.suppress(ValueError):
        return str(path.relative_to(Path.cwd()))
    return str(path)


_E164 = re.compile(r"\+\d{8,15}")
_TOKEN = re.compile(r"(nrp_)[A-Za-z0-9_-]+")


def _masked(text: str) -> str:
    """Numbers masked as in every log (for prose: commands are shown runnable); tokens never shown."""
    from pipelines.numbers import mask

    return _TOKEN.sub(r"\1…", _E164.sub(lambda m: mask(m.group(0)), text))


def _cli(*args: str, env: dict[str, str] | None = None) -> int:
    """Run a ``recycle`` command and show it as the user can run it again, then all its output.

    The command is shown whole (a masked number would not run); what the command prints is
    the product's own output, which masks numbers itself. ``env`` holds extra variables, such
    as the platform token, which stay out of the shown command.
    """
    console.print(f"[dim]$ {shlex.join([_shown(_recycle()), *args])}[/dim]", highlight=False, soft_wrap=True)
    done = subprocess.run(
        [_recycle(), *args], capture_output=True, text=True, check=False, env={**os.environ, **(env or {})}
    )
    for line in (done.stdout + done.stderr).splitlines():
        console.print(f"  {line}", highlight=False, soft_wrap=True)
    if done.returncode:
        console.print(f"  [red](exit status {done.returncode})[/red]")
    return 1 if done.returncode else 0


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def platform_epilogue(data: Path, config: Path, go_live: dt.date) -> int:
    """`recycle serve` on loopback; a platform gets a token, pulls and verifies, then checks."""
    env = {**os.environ, "RECYCLE_CONFIG": str(config)}
    token = (
        subprocess.run(
            [_recycle(), "platform", "add", "demo-bank", "--scope", "check,bulk,feeds,ack"],
            capture_output=True,
            text=True,
            check=True,
            env=env,
        )
        .stdout.strip()
        .splitlines()[-1]
    )
    console.print(
        f"[dim]$ {_shown(_recycle())} platform add demo-bank --scope check,bulk,feeds,ack[/dim]"
        "  (its token is printed once and stored hashed)",
        highlight=False,
        soft_wrap=True,
    )
    port = _free_port()
    server = subprocess.Popen(
        [_recycle(), "serve", "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        if not _wait_for_server(url, server):
            console.print("[red]the server did not start[/red]")
            return 1
        console.print(f"[dim]$ {_shown(_recycle())} serve --port {port}[/dim]  (running)", highlight=False)
        console.print("[dim](the token is passed in $RECYCLE_PLATFORM_TOKEN, never shown)[/dim]")
        failures = _cli(
            "pull",
            "--from",
            url,
            "--state",
            str(data / "platform-demo-bank"),
            "--root",
            str(data / "feeds" / "root.json"),
            env={"RECYCLE_PLATFORM_TOKEN": token},
        )
        msisdn = _a_reissued_number(data)
        if msisdn is not None:
            failures += _ask_about(msisdn, data, config, url, token, go_live)
        return failures
    finally:
        server.terminate()
        server.wait(10)


def _wait_for_server(url: str, server: subprocess.Popen[bytes]) -> bool:
    """Whether ``recycle serve`` answers within a minute (False at once if it exited)."""
    import httpx

    deadline = time.monotonic() + 60
    while True:
        try:
            httpx.get(f"{url}/status", timeout=1.0)
            return True
        except httpx.TransportError:
            if time.monotonic() > deadline or server.poll() is not None:
                return False
            time.sleep(0.3)


def _a_reissued_number(data: Path) -> str | None:
    """The first lawful reissue's number, or None when the demo made none."""
    from pipelines.db import open_state

    with open_state(data / "state.duckdb", read_only=True) as con:
        row = con.execute(
            "SELECT msisdn FROM reissues WHERE NOT violation ORDER BY reissue_date, msisdn LIMIT 1"
        ).fetchone()
    return None if row is None else str(row[0])


def _ask_about(msisdn: str, data: Path, config: Path, url: str, token: str, go_live: dt.date) -> int:
    """A platform's questions about one reissued number, and its acknowledgement; failures."""
    import httpx

    # an account bound at go-live, while the prior owner still held the number
    bound_on = go_live
    console.print("was a number recycled since an account was bound to it at go-live?")
    failures = _cli("check", msisdn, "--since", str(bound_on), "--state", str(data / "platform-demo-bank"))
    answer = httpx.post(
        f"{url}/number-recycling/v0.2/check",
        json={"phoneNumber": msisdn, "specifiedDate": str(bound_on)},
        headers={"Authorization": f"Bearer {token}", "x-correlator": "demo-1"},
    )
    console.print(
        f"  CAMARA POST /number-recycling/v0.2/check -> {answer.status_code} {_masked(answer.text)}",
        highlight=False,
    )
    # the platform closes the loop: it unbound the prior owner's account
    ack = httpx.post(
        f"{url}/number-recycling/v0.2/acknowledgements",
        json={"acknowledgements": [{"phoneNumber": msisdn, "status": "unbound"}]},
        headers={"Authorization": f"Bearer {token}"},
    )
    console.print(
        f"  POST /number-recycling/v0.2/acknowledgements (unbound) -> {ack.status_code} {_masked(ack.text)}",
        highlight=False,
    )
    failures += ack.status_code != 200
    console.print("what a court asks — was the platform told, when, and what did it do:")
    failures += _cli("notifications", msisdn, "--config", str(config))
    console.print("the new holder's view (counts only, nothing of the prior owner):")
    failures += _cli("new-owner", msisdn, "--config", str(config))
    return failures


def print_summary(settings: object, start: dt.date, days: int) -> None:
    from pipelines.nightly.status import day_status

    assert isinstance(settings, Settings)
    table = Table(title="ingest per night")
    for col in ("date", "outcome", "files", "rows in", "accepted", "quarantined"):
        table.add_column(col, justify="right")
    last: dict[str, object] = {}
    for i in range(days):
        day = start + dt.timedelta(days=i)
        st = day_status(settings, day)
        last = dict(st)
        files = st["files"]
        table.add_row(
            day.isoformat(),
            st["outcome"],
            str(len(files)),
            str(sum(f["rows_in"] for f in files)),
            str(sum(f["accepted"] for f in files)),
            str(sum(f["quarantined"] for f in files)),
        )
    console.print(table)
    life = last.get("lifecycle")
    if isinstance(life, dict):
        from pipelines.nightly.status import render_lifecycle

        render_lifecycle(life, console)


if __name__ == "__main__":
    raise SystemExit(main())
