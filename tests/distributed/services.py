"""PostgreSQL and Redis from Debian's packages and moto's S3 server, on loopback only (the workplace's network rules
allow no other address), each in a temp directory of its own and stopped when its context
ends, also when the test failed. Every wait is bounded."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

LOOPBACK = "127.0.0.1"
REPO = Path(__file__).resolve().parents[2]
# Measured here: initdb 1.5 s, pg_ctl start 0.3 s, redis 0.05 s; a minute is a broken install.
START_TIMEOUT_S = 60.0


class ServiceError(RuntimeError):
    """A service did not start; the message carries the tail of its log."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def postgres_bindir() -> Path | None:
    """Where initdb and pg_ctl are: on PATH, else Debian's /usr/lib/postgresql/<major>/bin."""
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    majors = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]))
    return majors[-1].parent if majors else None


def moto_server() -> Path:
    """moto's S3 server, from its own venv (its botocore cannot live beside Airflow's
    python-dateutil 4): ``$RECYCLE_MOTO_SERVER``, default ``<repo>/.venv-s3/bin/moto_server``."""
    return Path(os.environ.get("RECYCLE_MOTO_SERVER", REPO / ".venv-s3" / "bin" / "moto_server"))


def missing_binaries() -> list[str]:
    """The services whose programs are not installed, each saying how to get it."""
    missing = [] if postgres_bindir() else ["PostgreSQL (apt-get install postgresql; .ci/run does)"]
    if not shutil.which("redis-server"):
        missing.append("Redis (apt-get install redis-server; .ci/run does)")
    if not moto_server().is_file():
        missing.append(f"moto's S3 server at {moto_server()} (`make install` creates .venv-s3)")
    return missing


def tail(path: Path, chars: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except FileNotFoundError:
        return f"({path} was not written)"


@dataclass(frozen=True)
class Postgres:
    port: int
    user: str
    password: str
    database: str

    def url(self, scheme: str = "postgresql+psycopg2") -> str:
        return f"{scheme}://{self.user}:{self.password}@{LOOPBACK}:{self.port}/{self.database}"


@contextlib.contextmanager
def postgres(database: str = "airflow") -> Iterator[Postgres]:
    """A fresh PostgreSQL cluster on 127.0.0.1 (socket in its own directory), one database."""
    bindir = postgres_bindir()
    if bindir is None:
        raise ServiceError("PostgreSQL is not installed: apt-get install postgresql (.ci/run does)")
    # PostgreSQL refuses to run as root: as root, the cluster belongs to Debian's postgres user,
    # in a directory of /tmp that user can reach (pytest's tmp_path is root's, mode 0700).
    run_as = "postgres" if os.geteuid() == 0 else None
    root = Path(tempfile.mkdtemp(prefix="recycle-pg-"))
    server = Postgres(free_port(), "recycle", secrets.token_hex(12), database)
    (root / "pwfile").write_text(server.password)
    (root / "socket").mkdir()
    if run_as:
        for path in (root, root / "pwfile", root / "socket"):
            shutil.chown(path, run_as, run_as)
    data, log = root / "data", root / "postgres.log"
    try:
        _as(run_as, _initdb(bindir, data, server, root / "pwfile"), root)
        # Throw-away data: no fsync (a crash loses nothing we need), loopback and our socket only.
        options = f"-c listen_addresses={LOOPBACK} -p {server.port} -k {root / 'socket'} -c fsync=off"
        start: list[Path | str] = [
            "start",
            "-w",
            "-t",
            str(int(START_TIMEOUT_S)),
            "-D",
            data,
            "-l",
            log,
            "-o",
            options,
        ]
        _as(run_as, [bindir / "pg_ctl", *start], root)
    except ServiceError as exc:
        _stop_postgres(bindir, run_as, data)  # pg_ctl may have started it before giving up
        shutil.rmtree(root, ignore_errors=True)
        raise ServiceError(f"{exc}\n{tail(log)}") from None
    try:
        _create_database(server)
        yield server
    finally:
        _stop_postgres(bindir, run_as, data)
        shutil.rmtree(root, ignore_errors=True)


def _initdb(bindir: Path, data: Path, server: Postgres, pwfile: Path) -> list[Path | str]:
    """The cluster's superuser is ours, with a password over TCP (as Airflow connects)."""
    auth = ["--auth-local=trust", "--auth-host=scram-sha-256"]
    return [
        bindir / "initdb",
        "-D",
        data,
        "-U",
        server.user,
        "--pwfile",
        pwfile,
        *auth,
        "-E",
        "UTF8",
        "--no-sync",
    ]


def _as(user: str | None, argv: list[Path | str], cwd: Path) -> None:
    done = subprocess.run(
        [str(a) for a in argv], user=user, cwd=cwd, capture_output=True, text=True,
        timeout=START_TIMEOUT_S, check=False,
    )  # fmt: skip
    if done.returncode:
        raise ServiceError(f"{Path(argv[0]).name} failed ({done.returncode}): {done.stdout}{done.stderr}")


def _create_database(server: Postgres) -> None:
    import psycopg2

    con = psycopg2.connect(
        host=LOOPBACK, port=server.port, user=server.user, password=server.password, dbname="postgres"
    )
    try:
        con.autocommit = True  # CREATE DATABASE cannot run inside a transaction
        with con.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{server.database}"')
    finally:
        con.close()


def _stop_postgres(bindir: Path, run_as: str | None, data: Path) -> None:
    """``pg_ctl stop -m fast``; if that fails, SIGKILL to the postmaster named in its pid file."""
    with contextlib.suppress(ServiceError, subprocess.TimeoutExpired):
        _as(run_as, [bindir / "pg_ctl", "stop", "-D", data, "-m", "fast", "-w", "-t", "30"], data.parent)
        return
    with contextlib.suppress(FileNotFoundError, ValueError, ProcessLookupError):
        os.kill(int((data / "postmaster.pid").read_text().split()[0]), signal.SIGKILL)


@contextlib.contextmanager
def redis(workdir: Path) -> Iterator[str]:
    """A Redis server on 127.0.0.1, nothing persisted; yields its broker URL."""
    port, log = free_port(), workdir / "redis.log"
    argv = ["redis-server", "--bind", LOOPBACK, "--port", str(port), "--save", "", "--appendonly", "no",
            "--dir", str(workdir), "--logfile", str(log)]  # fmt: skip
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, cwd=workdir)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _redis_pongs(port):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise ServiceError(f"redis-server did not answer PING on port {port}:\n{tail(log)}")
            time.sleep(0.1)
        yield f"redis://{LOOPBACK}:{port}/0"
    finally:
        stop_group(proc, "redis-server", grace_s=10, group=False)


@dataclass(frozen=True)
class S3Server:
    endpoint: str  # http://127.0.0.1:PORT
    # moto accepts any credentials; the SDK's names, as a deployment passes them
    key_id: str = "testing"
    secret: str = "testing"
    region: str = "us-east-1"


@contextlib.contextmanager
def s3(workdir: Path, bucket: str) -> Iterator[S3Server]:
    """moto's S3 server on 127.0.0.1 with one empty ``bucket``, in memory."""
    port, log = free_port(), workdir / "moto.log"
    with open(log, "wb") as out:
        argv = [str(moto_server()), "-H", LOOPBACK, "-p", str(port)]
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=workdir)
    server = S3Server(f"http://{LOOPBACK}:{port}")
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _answers(server.endpoint):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise ServiceError(f"moto_server did not answer on port {port}:\n{tail(log)}")
            time.sleep(0.2)
        _make_bucket(server, bucket)
        yield server
    finally:
        stop_group(proc, "moto_server", grace_s=10, group=False)


def _answers(url: str) -> bool:
    import httpx

    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def _make_bucket(server: S3Server, bucket: str) -> None:
    import pyarrow.fs as pafs

    fs = pafs.S3FileSystem(
        endpoint_override=server.endpoint.removeprefix("http://"),
        scheme="http",
        access_key=server.key_id,
        secret_key=server.secret,
        region=server.region,
        allow_bucket_creation=True,
    )
    fs.create_dir(bucket)


def _redis_pongs(port: int) -> bool:
    try:
        with socket.create_connection((LOOPBACK, port), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def stop_group(proc: subprocess.Popen[bytes], name: str, grace_s: float, *, group: bool = True) -> str | None:
    """SIGTERM (to the process group we started when ``group``), a bounded wait, then SIGKILL.
    Returns a complaint when something had to be killed, None when it stopped by itself."""

    def send(sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig) if group else proc.send_signal(sig)

    def gone(wait_s: float) -> bool:
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            proc.poll()
            try:
                os.killpg(proc.pid, 0) if group else os.kill(proc.pid, 0)
            except ProcessLookupError:
                return True
            if not group and proc.returncode is not None:
                return True
            time.sleep(0.2)
        return False

    send(signal.SIGTERM)
    if gone(grace_s):
        return None
    send(signal.SIGKILL)
    if gone(10):
        return f"{name} did not stop within {grace_s:.0f}s of SIGTERM: killed"
    return f"{name} (pid {proc.pid}) survived SIGKILL"
