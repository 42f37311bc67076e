"""`pip install .` (not editable) gives a working `python -m stabilityscope` with conf/ inside."""
from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
CONF_FILES = sorted(p.relative_to(REPO / "conf").as_posix() for p in (REPO / "conf").rglob("*.yaml"))


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out),
                    str(REPO)], check=True, capture_output=True, text=True)
    (whl,) = out.glob("stabilityscope-*.whl")
    return whl


def test_the_version_is_written_once_and_printed(wheel):
    """pyproject.toml reads stabilityscope.__version__; the wheel carries it; --version prints it."""
    import stabilityscope

    assert wheel.name.startswith(f"stabilityscope-{stabilityscope.__version__}-")
    proc = subprocess.run([sys.executable, "-m", "stabilityscope", "--version"], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == f"stabilityscope {stabilityscope.__version__}"


def test_wheel_ships_every_config(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    missing = [f for f in CONF_FILES if f"stabilityscope/conf/{f}" not in names]
    assert not missing and "stabilityscope/conf/config.yaml" in names


def test_wheel_ships_every_module(wheel):
    """Every module of the source tree is in the wheel (the package list in pyproject.toml is explicit)."""
    names = set(zipfile.ZipFile(wheel).namelist())
    modules = sorted(p.relative_to(REPO).as_posix() for p in (REPO / "stabilityscope").rglob("*.py"))
    assert modules and [m for m in modules if m not in names] == []


def test_wheel_ships_the_packaged_calibration(wheel):
    """The laws recommend() reads, the runs table they were fitted on and the canonical run's table."""
    names = set(zipfile.ZipFile(wheel).namelist())
    folder = "stabilityscope/analysis/laws/fmnist_fc-fashion_mnist/"
    assert {folder + name for name in ("laws.json", "runs.json", "canonical.runs.json")} <= names


def test_installed_wheel_runs_the_app_outside_the_checkout(wheel, tmp_path):
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                   check=True, capture_output=True, text=True)
    env = {**os.environ, "PYTHONPATH": str(target)}
    proc = subprocess.run([sys.executable, "-m", "stabilityscope", "--cfg", "job", "model.width=100"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    cfg = yaml.safe_load(proc.stdout)
    assert cfg["model"]["width"] == 100 and cfg["optim"]["lr"] == 0.02
    where = subprocess.run([sys.executable, "-c", "import stabilityscope.cli.app as a; print(a.conf_dir())"],
                           cwd=tmp_path, env=env, capture_output=True, text=True)
    assert where.stdout.strip().startswith(str(target))
