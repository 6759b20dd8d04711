"""A real S3 HTTP server on loopback for tests: moto's server mode (as s3fs's own tests use it),
once per session; each test gets its own empty bucket and fake credentials in its env.

moto cannot live in the project's environment (botocore requires python-dateutil<3, Airflow's
environment has 4.0), so the server runs as a process from a venv of its own: the binary named
by RECYCLE_MOTO_SERVER, default ``<repo>/.venv-s3/bin/moto_server`` (``make install`` creates
it). A test that needs it is skipped, saying how to get it, when neither exists."""

from __future__ import annotations

import itertools
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pyarrow.fs as pafs
import pytest

REPO = Path(__file__).resolve().parents[1]
_buckets = itertools.count(1)


@dataclass(frozen=True)
class S3Server:
    endpoint: str  # http://127.0.0.1:PORT

    def make_bucket(self) -> str:
        name = f"recycle-test-{next(_buckets)}"
        host = self.endpoint.removeprefix("http://")
        fs = pafs.S3FileSystem(
            endpoint_override=host,
            scheme="http",
            access_key="testing",
            secret_key="testing",
            region="us-east-1",
            allow_bucket_creation=True,
        )
        fs.create_dir(name)
        return name


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _binary() -> Path:
    path = Path(os.environ.get("RECYCLE_MOTO_SERVER", REPO / ".venv-s3" / "bin" / "moto_server"))
    if not path.is_file():
        pytest.skip(
            f"no S3 test server at {path}: run `make install` (creates .venv-s3 with moto[server]) "
            "or set RECYCLE_MOTO_SERVER to a moto_server binary"
        )
    return path


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    port = _free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(_binary()), "-H", "127.0.0.1", "-p", str(port)], stdout=out, stderr=subprocess.STDOUT
        )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(endpoint, timeout=1).raise_for_status()
                break
            except httpx.HTTPError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto_server did not start; see {log}") from None
                time.sleep(0.1)
        yield S3Server(endpoint)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def s3_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fake credentials, and no instance-metadata probe (it waits for a timeout off EC2)."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)


@pytest.fixture
def s3_bucket(s3_server: S3Server, s3_env: None) -> str:
    return s3_server.make_bucket()
