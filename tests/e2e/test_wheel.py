"""The wheel is the product: built from the checkout, installed into a fresh venv outside the
repository, it generates drops, runs a night and reports it, reading its data contracts
(``schemas/``, shipped as ``pipelines.schemas``) from the installed package alone.

The quick test holds pyproject.toml's explicit package list to the tree, so a new subpackage
cannot silently go missing from the wheel while the editable install still finds it.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import venv
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[2]
DAY = "2026-09-01"


def _pyproject() -> dict[str, Any]:
    with open(REPO / "pyproject.toml", "rb") as fh:
        return tomllib.load(fh)


def test_pyproject_lists_every_package_and_ships_every_schema_file() -> None:
    setuptools_config = _pyproject()["tool"]["setuptools"]
    listed = set(setuptools_config["packages"])
    on_disk = {
        ".".join(init.parent.relative_to(REPO).parts) for init in (REPO / "pipelines").rglob("__init__.py")
    }
    assert setuptools_config["package-dir"] == {"pipelines.schemas": "schemas"}
    assert (REPO / "schemas" / "__init__.py").is_file()
    assert listed - {"pipelines.schemas"} == on_disk, "add the new subpackage to pyproject.toml's packages"

    shipped = {
        path
        for pattern in setuptools_config["package-data"]["pipelines.schemas"]
        for path in (REPO / "schemas").glob(pattern)
    }
    data_files = {
        path
        for path in (REPO / "schemas").rglob("*")
        if path.is_file() and path.suffix not in {".py", ".pyc"}
    }
    assert data_files - shipped == set(), "add a package-data glob for the new schema file"


def _build_requirements_met() -> bool:
    """Whether this environment can build the wheel itself (then nothing is downloaded)."""
    for spec in _pyproject()["build-system"]["requires"]:
        requirement = Requirement(spec)
        try:
            version = importlib.metadata.version(requirement.name)
        except importlib.metadata.PackageNotFoundError:
            return False
        if not requirement.specifier.contains(version, prereleases=True):
            return False
    return True


def _build_wheel(tmp: Path) -> Path:
    """Build from a copy of what the wheel is made of: a build leaves build/ and *.egg-info
    behind, and a stale build/lib in the checkout would put deleted modules into a wheel."""
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    for name in ("pipelines", "schemas"):
        shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    # The venv of `make install` has an older setuptools than pyproject asks for: pip then
    # builds in an isolated environment, fetching setuptools from the package index.
    isolation = ["--no-build-isolation"] if _build_requirements_met() else []
    dist = tmp / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", *isolation, "-w", str(dist), str(src)],
        check=True,
    )
    (wheel,) = dist.glob("number_recycling-*.whl")
    return wheel


def _build_client_wheel(tmp: Path) -> Path:
    """The light client (``clients/python``), a dependency of the main wheel: the checkout's
    editable install of it is not on the .pth path below, so the venv gets its wheel too."""
    src = tmp / "client-src"
    shutil.copytree(
        REPO / "clients" / "python", src, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "build")
    )
    isolation = ["--no-build-isolation"] if _build_requirements_met() else []
    dist = tmp / "client-dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", *isolation, "-w", str(dist), str(src)],
        check=True,
    )
    (wheel,) = dist.glob("number_recycling_client-*.whl")
    return wheel


def _venv_with_wheel(tmp: Path, *wheels: Path) -> tuple[Path, Path]:
    """A fresh venv holding only the wheel, and its site-packages; the dependencies are those
    of this interpreter."""
    env_dir = tmp / "venv"
    venv.create(env_dir, with_pip=False)
    python = env_dir / "bin" / "python"
    site_packages = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    # The dependencies (Airflow, DuckDB, GX...) come from this test's own environment through a
    # .pth line, so the test does not download them again. Its .pth files are not run from
    # there, so the checkout's editable install does not come along: `pipelines` is the wheel's.
    (site_packages / "_test_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "--no-deps",
            "--quiet",
            *map(str, wheels),
        ],
        check=True,
    )
    return env_dir, site_packages


@pytest.mark.slow
def test_wheel_installs_and_runs_a_night_outside_the_repository(tmp_path: Path) -> None:
    assert not tmp_path.resolve().is_relative_to(REPO), "the test must run outside the checkout"
    env_dir, site_packages = _venv_with_wheel(tmp_path, _build_wheel(tmp_path), _build_client_wheel(tmp_path))
    work = tmp_path / "work"
    work.mkdir()
    env = {
        k: v for k, v in os.environ.items() if k != "PYTHONPATH" and not k.startswith(("RECYCLE_", "AIRFLOW"))
    }
    env["AIRFLOW_HOME"] = str(tmp_path / "airflow")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(args, cwd=work, env=env, capture_output=True, text=True, check=False)

    where = run(
        str(env_dir / "bin" / "python"),
        "-c",
        "import importlib.resources, pipelines; "
        "print(pipelines.__file__); print(importlib.resources.files('pipelines.schemas'))",
    )
    assert where.returncode == 0, where.stderr
    package_file, schemas_dir = (Path(line) for line in where.stdout.splitlines())
    assert package_file == site_packages / "pipelines" / "__init__.py"
    assert schemas_dir == site_packages / "pipelines" / "schemas"

    recycle = str(env_dir / "bin" / "recycle")
    gen = run(recycle, "gen", "--out", "D", "--start", DAY, "--days", "2", "--rows-per-day", "50")
    assert gen.returncode == 0, gen.stdout + gen.stderr
    night = run(recycle, "run", "--date", DAY, "--data", "D", "--simulate-gateways", "--alerts", "record")
    assert night.returncode == 0, night.stdout + night.stderr

    status = run(recycle, "status", "--date", DAY, "--data", "D", "--json")
    assert status.returncode == 0, status.stdout + status.stderr
    report = json.loads(status.stdout)
    assert report["date"] == DAY
    assert report["outcome"] == "complete"
    steps = work / "D" / "runs" / DAY / "steps"
    assert "ingest" in report["steps_done"]
    assert {p.stem for p in steps.glob("*.json")} == set(report["steps_done"])
    assert report["files"], "the night ingested no file"
    assert all(f["status"] == "ingested" for f in report["files"])
