"""Shared fixtures: the real datasets, Hydra composition, and running the CLI."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from stabilityscope.cli.app import conf_dir

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory):
    """Phase-diagram backgrounds cached by the tests (and their subprocesses) stay in the session."""
    old = os.environ.get("STABILITYSCOPE_CACHE")
    os.environ["STABILITYSCOPE_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    yield
    if old is None:
        os.environ.pop("STABILITYSCOPE_CACHE", None)
    else:
        os.environ["STABILITYSCOPE_CACHE"] = old


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a test module, restored afterwards. The engine's tests use small
    tensors that gain nothing from threads, and on a busy 2-core machine spin-waiting OpenMP workers
    made them ~10x slower (e.g. a 1000×1000 eigvals at 13–40 s against ≈ 1 s single-threaded)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The folder with the real datasets; tests needing it fail (not skip) under CI."""
    root = os.environ.get("STABILITYSCOPE_DATA")
    if root and (Path(root) / "FashionMNIST" / "raw").is_dir():
        return Path(root)
    msg = f"real datasets not found (STABILITYSCOPE_DATA={root!r}); set it to a torchvision-layout folder"
    if os.environ.get("CI"):
        pytest.fail(msg)
    pytest.skip(msg)


@pytest.fixture
def compose_cfg():
    """compose_cfg(*overrides) → the composed DictConfig, exactly as the app would see it."""

    def _compose(*overrides: str):
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=conf_dir(), version_base="1.3"):
            return compose(config_name="config", overrides=list(overrides))

    yield _compose
    GlobalHydra.instance().clear()


def compose_with_hydra(*overrides: str):
    """The composed config with its ``hydra`` section (sweeper params, launcher), as a multirun sees it."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=conf_dir(), version_base="1.3"):
        cfg = compose(config_name="config", overrides=list(overrides), return_hydra_config=True)
    GlobalHydra.instance().clear()
    return cfg


def run_cli(*args: str, cwd: Path, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run ``python -m stabilityscope`` with ``args`` in ``cwd``; returns the completed process."""
    full_env = {**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-m", "stabilityscope", *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


# Reduced presets for the sweep tests and the scaling notebook: a few epochs on data subsets.
REDUCED = ("dataset.train_subset=1000", "dataset.test_subset=300", "train.epochs=4", "figures=false", "report=false")


@pytest.fixture(scope="session")
def reduced_sweeps(tmp_path_factory, data_root) -> dict[str, Path]:
    """The reduced learning-rate and weight-decay presets, run once per session through the launcher.

    Returns each sweep's directory (checkpoints/multirun/<stamp>) by name: ``lr`` (10 runs, one
    batched group) and ``decay`` (8 decays × 2 seeds, one batched group of 16).
    """
    root = tmp_path_factory.mktemp("reduced_sweeps")
    out = {}
    for name, preset in (("lr", "eoc_scaling_lr_quick"), ("decay", "eoc_weight_decay_quick")):
        proc = run_cli("-m", f"experiment={preset}", *REDUCED, f"checkpoint_root={root / name}", cwd=root,
                       env={"STABILITYSCOPE_DATA": str(data_root)})
        assert proc.returncode == 0, proc.stderr[-3000:]
        (out[name],) = (root / name).glob("multirun/*")
    return out
