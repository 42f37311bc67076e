"""``python -m stabilityscope task=phase_diagram``: the numerical phase diagram as a file and a figure.

Writes ``phase_diagram.h5`` (separation, u, q0 per cell with N, T, seed and sampling) and
``phase_diagram.png`` (log-scale heatmap, theoretical edge overlaid) into the run directory.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from stabilityscope.config import value_of
from stabilityscope.errors import ConfigError
from stabilityscope.numerical_phase_diagram import phase_diagram, plot_phase_diagram

log = logging.getLogger(__name__)


def grid(axis, key: str) -> np.ndarray:
    if axis.num < 1:
        raise ConfigError(f"Invalid value {key}.num={axis.num}: a grid needs at least one point.")
    return np.linspace(axis.start, axis.stop, axis.num)


def run_phase_diagram_task(cfg, run_dir: Path) -> tuple[Path, Path]:
    """Compute the diagram described by ``cfg`` (a PhaseDiagramConfig) and save it under ``run_dir``."""
    x, y = grid(cfg.j0_over_j, "phase_diagram.j0_over_j"), grid(cfg.inv_j, "phase_diagram.inv_j")
    if cfg.n < 2:
        raise ConfigError(f"Invalid value phase_diagram.n={cfg.n}: the network needs at least 2 units.")
    if (y <= 0).any():
        raise ConfigError(f"Invalid phase_diagram.inv_j grid from {cfg.inv_j.start} to {cfg.inv_j.stop}: 1/J must be > 0.")
    if cfg.sampling not in ("common", "independent"):
        raise ConfigError(f"Invalid value phase_diagram.sampling={cfg.sampling!r}: allowed: common, independent.")
    device = None if cfg.device == "auto" else cfg.device
    activation = value_of(cfg.activation)
    d = phase_diagram(x, y, cfg.n, cfg.steps, activation=activation, seed=cfg.seed, device=device,
                      sampling=cfg.sampling)
    run_dir.mkdir(parents=True, exist_ok=True)
    h5 = d.save(run_dir / "phase_diagram.h5")
    png = plot_phase_diagram(d, run_dir / "phase_diagram.png")
    log.info("Phase diagram (%d×%d cells, N=%d, T=%d, %.1f s): %s, %s", len(y), len(x), d.n, d.steps,
             d.elapsed_s, h5.resolve(), png.resolve())
    return h5, png
