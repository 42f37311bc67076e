"""Numerical phase diagram (EOC-training; docs/science/mean-field.md): physics checks with real numbers, on small N.

Tolerances live in one place (below). N = 300 keeps the file fast on 2 CPU cores; the physics
checks sit deep inside each phase, where finite N and T do not blur the answer.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from stabilityscope.errors import ConfigError
from stabilityscope.plots.phase import plot_phase_diagram
from stabilityscope.theory.numerical_phase_diagram import DEFAULT_STEPS, PhaseDiagram, phase_diagram

N = 300
ORDERED_MAX = 1e-3  # separation of an ordered cell (it decays from 1e-4·sqrt(N) ≈ 2e-3 towards 0)
SATURATION_RTOL = 0.2  # chaotic separation vs sqrt(2N·q)
CHAOTIC_MIN = 0.3 * np.sqrt(2 * N)  # a "clearly chaotic" cell in the classification tests

# Deep-phase cells, as (J0/J, 1/J).
CHAOS = (0.0, 0.2)  # J = 5: spin glass
ORDER = (0.0, 3.0)  # J = 1/3: paramagnet, x -> 0
PARA = (0.0, 1.5)  # J = 2/3: paramagnet, u = 0
FERRO = (3.0, 1.5)  # J0 = 2 > 1: ferromagnet, u = tanh(2u + ...) ≈ 0.95


@pytest.fixture(scope="module")
def grid() -> PhaseDiagram:
    """One common-sampling diagram whose cells cover every deep-phase point above."""
    return phase_diagram([-1.5, 0.0, 0.5, 3.0], [0.2, 0.5, 1.5, 3.0], n=N, seed=0, device="cpu")


def cell(d: PhaseDiagram, field: str, point: tuple[float, float]) -> float:
    i = int(np.argmin(np.abs(d.inv_j - point[1])))
    j = int(np.argmin(np.abs(d.j0_over_j - point[0])))
    return float(getattr(d, field)[i, j])


def test_shapes_and_metadata(grid: PhaseDiagram) -> None:
    for field in ("separation", "u", "q0", "q"):
        assert getattr(grid, field).shape == (4, 4)
    assert (grid.n, grid.steps, grid.seed) == (N, DEFAULT_STEPS["tanh"], 0)
    assert (grid.activation, grid.sampling, grid.dtype, grid.device) == ("tanh", "common", "float32", "cpu")
    assert grid.perturbation == 1e-4 and grid.average_steps == 100 and grid.elapsed_s > 0
    d = phase_diagram([0.0, 1.0, 2.0], [0.5, 1.0], n=50, steps=20, device="cpu")
    assert d.separation.shape == (2, 3)


def test_chaotic_cell_saturates_at_sqrt_2nq(grid: PhaseDiagram) -> None:
    sep, q = cell(grid, "separation", CHAOS), cell(grid, "q", CHAOS)
    assert q > 0.7  # J = 5: entries are nearly ±1
    assert sep == pytest.approx(np.sqrt(2 * N * q), rel=SATURATION_RTOL)
    assert 0.6 * np.sqrt(2 * N) < sep <= np.sqrt(2 * N) * 1.01
    assert cell(grid, "q0", CHAOS) < 0.05  # chaos: time averages of x_i are near 0


def test_ordered_cells_go_to_zero(grid: PhaseDiagram) -> None:
    assert cell(grid, "separation", ORDER) < ORDERED_MAX
    assert cell(grid, "separation", FERRO) < ORDERED_MAX
    assert cell(grid, "separation", (-1.5, 1.5)) < ORDERED_MAX  # period-2 region, still ordered


def test_magnetisation_para_vs_ferro(grid: PhaseDiagram) -> None:
    assert abs(cell(grid, "u", PARA)) < 1e-3
    assert cell(grid, "q", PARA) < 1e-6
    u_ferro = cell(grid, "u", FERRO)
    assert abs(u_ferro) > 0.8
    assert cell(grid, "q0", FERRO) == pytest.approx(u_ferro**2, rel=0.1)  # frozen, nearly uniform


def test_seed_reproducibility() -> None:
    args = ([0.0, 0.5], [0.3, 2.0])
    a = phase_diagram(*args, n=100, steps=60, seed=3, device="cpu")
    b = phase_diagram(*args, n=100, steps=60, seed=3, device="cpu")
    c = phase_diagram(*args, n=100, steps=60, seed=4, device="cpu")
    for field in ("separation", "u", "q0", "q"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    assert not np.array_equal(a.separation, c.separation)


def test_common_and_independent_agree_on_clear_cells() -> None:
    x, y = [0.0, 0.5, 3.0], [0.3, 2.5]
    common = phase_diagram(x, y, n=N, seed=1, device="cpu")
    indep = phase_diagram(x, y, n=N, seed=1, device="cpu", sampling="independent")
    assert indep.sampling == "independent"
    for d in (common, indep):
        chaotic = d.separation > CHAOTIC_MIN
        ordered = d.separation < ORDERED_MAX
        assert np.all(chaotic | ordered), d.separation  # every cell here is clear-cut
        np.testing.assert_array_equal(chaotic, [[True, True, False], [False, False, False]])
    np.testing.assert_allclose(indep.separation[0, :2], common.separation[0, :2], rtol=0.15)


def test_chunked_equals_unchunked() -> None:
    """Chunks of >= 8 cells keep the BLAS kernel (and so every bit) the same as one big matmul."""
    x, y = [-1.0, 0.0, 0.5, 1.0, 3.0], [0.3, 0.8, 1.2, 2.0]  # 20 cells -> chunks of 8 and 12
    full = phase_diagram(x, y, n=200, steps=150, device="cpu")
    with pytest.warns(ResourceWarning):
        tiny = phase_diagram(x, y, n=200, steps=150, device="cpu", max_memory_bytes=1)
    for field in ("separation", "u", "q0", "q"):
        np.testing.assert_array_equal(getattr(tiny, field), getattr(full, field))

    # Independent sampling: one cell per chunk. Each cell has its own generator, so the dynamics are
    # the same; only the reductions' summation order changes with the batch layout.
    full = phase_diagram(x[:3], y[:2], n=100, steps=80, device="cpu", sampling="independent")
    with pytest.warns(ResourceWarning):
        tiny = phase_diagram(x[:3], y[:2], n=100, steps=80, device="cpu", sampling="independent",
                             max_memory_bytes=1)
    for field in ("separation", "u", "q0", "q"):
        np.testing.assert_allclose(getattr(tiny, field), getattr(full, field), rtol=1e-5, atol=1e-6)


def test_float64_option() -> None:
    d64 = phase_diagram([0.0, 3.0], [0.2, 3.0], n=N, device="cpu", dtype=torch.float64)
    assert d64.dtype == "float64" and d64.separation.dtype == np.float64
    assert d64.separation[0, 0] == pytest.approx(np.sqrt(2 * N * d64.q[0, 0]), rel=SATURATION_RTOL)
    assert d64.separation[1, 0] < ORDERED_MAX


def test_relu_default_steps_and_order() -> None:
    d = phase_diagram([0.0], [1.0, 2.0], n=N, activation="relu", device="cpu")  # J = 1, 0.5 < √2
    assert d.steps == DEFAULT_STEPS["relu"] == 100
    assert np.all(d.separation < ORDERED_MAX)
    assert np.all(np.abs(d.u) < 1e-3)


def test_hdf5_round_trip(grid: PhaseDiagram, tmp_path) -> None:
    import h5py

    path = grid.save(tmp_path / "phase.h5")
    with h5py.File(path, "r") as f:  # the spec's names are always there
        assert (f.attrs["N"], f.attrs["T"], f.attrs["seed"]) == (N, grid.steps, 0)
    back = PhaseDiagram.load(path)
    for field in ("separation", "u", "q0", "q", "j0_over_j", "inv_j"):
        np.testing.assert_array_equal(getattr(back, field), getattr(grid, field))
        assert getattr(back, field).dtype == getattr(grid, field).dtype
    for field in ("n", "steps", "seed", "activation", "sampling", "perturbation", "average_fraction",
                  "dtype", "device", "elapsed_s"):
        assert getattr(back, field) == getattr(grid, field)
        assert type(getattr(back, field)) is type(getattr(grid, field))


def _assert_png(path) -> None:
    from matplotlib.image import imread

    assert path.stat().st_size > 5_000
    img = imread(path)
    assert img.ndim == 3 and img.shape[0] > 200 and img.shape[1] > 200
    assert img[..., :3].var() > 1e-3  # a heatmap, not a blank canvas


def test_plot_without_overlay(grid: PhaseDiagram, tmp_path) -> None:
    _assert_png(plot_phase_diagram(grid, tmp_path / "phase.png", edge=False))


def test_plot_with_theory_overlay(grid: PhaseDiagram, tmp_path) -> None:
    meanfield = pytest.importorskip("stabilityscope.theory.meanfield")
    edge = meanfield.edge_curve(np.linspace(0.05, 3.0, 60), activation="tanh")
    _assert_png(plot_phase_diagram(grid, tmp_path / "explicit.png", edge=edge))
    _assert_png(plot_phase_diagram(grid, tmp_path / "auto.png"))  # edge=None computes it


def test_invalid_arguments() -> None:
    with pytest.raises(ConfigError, match="inv_j"):
        phase_diagram([0.0], [0.0, 1.0], n=10, steps=5, device="cpu")
    with pytest.raises(ConfigError, match="activation"):
        phase_diagram([0.0], [1.0], n=10, steps=5, activation="sigmoid", device="cpu")
    with pytest.raises(ConfigError, match="sampling"):
        phase_diagram([0.0], [1.0], n=10, steps=5, sampling="shared", device="cpu")  # type: ignore[arg-type]
