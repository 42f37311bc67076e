"""Numerical phase diagram of random recurrent networks: the asymptotic distance (EOC-training;
docs/science/mean-field.md).

For every cell (J0/J, 1/J) of a grid we draw a random coupling matrix W with entries
Normal(J0/N, J²/N), start two trajectories a distance ~``perturbation`` apart and iterate
``x_{t+1} = φ(W x_t)`` (no bias) for T steps. Over the last ``average_fraction``·T steps we record

- ``separation``: the time average of ||x_t − x'_t||  (≈ 0 ordered, ≈ sqrt(2N·q) chaotic),
- ``u``:          the mean of all entries of x_t        (≠ 0 in the ferromagnetic phase),
- ``q0``:         mean_i (time average of x_i)²          (frozen order; ≈ 0 for chaos),
- ``q``:          the time average of mean_i x_i²        (the instantaneous second moment; our
                  addition, it sets the chaotic saturation level sqrt(2N·q)).

``u``, ``q0`` and ``q`` are measured on the reference trajectory x (not x').

The original (EOC-training's public code) looped over 100 × 151 cells in Python at N = 10,000. Here
every cell is simulated at once. With ``sampling="common"`` (default, common random numbers) all
cells share one standard Gaussian G (N×N), so that

    W_cell = (J0/N)·11ᵀ + (J/√N)·G      ⇒      W_cell x = (J/√N)·(G x) + (J0/N)·(1ᵀx)·1

and the states of both trajectories of every cell form one N × 2C matrix X: a time step is ONE
matmul ``[G; 1ᵀ] @ X`` (the extra row of ones yields the column sums) followed by two elementwise
passes. ``sampling="independent"`` draws an independent G (and start state) per cell, as the
original did; it runs as a batched ``bmm`` over chunks of cells, costs N² memory per cell and is
memory-bound (matrix-vector products), so it is far slower.

Memory decides how many cells share a matmul (chunks of at least 8 cells, one chunk whenever it fits;
see ``max_memory_bytes``); a chunk of C cells holds about 6·N·C numbers beside the (N+1)·N matrix.
``benchmarks/bench_phase_diagram.py`` measures the speed-up over the per-cell loop and the
effective FLOP rate against a plain matmul. On an oversubscribed CPU (more busy threads than cores)
OpenMP's spin-waiting makes every parallel region cost a scheduler time slice; running with
``OMP_WAIT_POLICY=PASSIVE`` in the environment avoids it.

Example::

    import numpy as np
    from stabilityscope.theory.numerical_phase_diagram import phase_diagram
    d = phase_diagram(np.linspace(0, 2, 41), np.linspace(0.2, 2, 37), n=2000)
    d.save("phase.h5")

    from stabilityscope.plots.phase import plot_phase_diagram   # the heatmap with the mean-field edge
    plot_phase_diagram(d, "phase.png")
"""
from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Callable, Literal, Optional, Sequence, Union

import h5py
import numpy as np
import torch

from stabilityscope.errors import ConfigError, TraceError

__all__ = ["PhaseDiagram", "phase_diagram", "cell_edges", "DEFAULT_STEPS"]

# docs/science/mean-field.md: T = 500 for tanh, 100 for ReLU (ReLU is unbounded; longer runs only overflow).
DEFAULT_STEPS = {"tanh": 500, "relu": 100}
# In-place activations; both map the (N, 2, C) state onto itself without allocating.
_ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "tanh": torch.Tensor.tanh_,
    "relu": torch.Tensor.relu_,
}
_SAMPLINGS = ("common", "independent")
_DTYPES = {"float32": torch.float32, "float64": torch.float64}
# Below 16 columns (8 cells × 2 trajectories) BLAS switches to small-matrix kernels: slower per flop,
# and a different summation order from the wide kernel. Common-sampling chunks are never narrower.
_MIN_CHUNK_CELLS = 8
_FORMAT_VERSION = 1


@dataclass(frozen=True)
class PhaseDiagram:
    """The asymptotic-distance phase diagram of random networks (EOC-training; docs/science/mean-field.md).

    Arrays are shaped ``(len(inv_j), len(j0_over_j))``: rows are 1/J (y axis), columns J0/J (x axis).
    """

    separation: np.ndarray  # time-averaged ||x_t − x'_t|| over the averaging window
    u: np.ndarray  # time-averaged mean activity of x
    q0: np.ndarray  # mean_i (time average of x_i)²
    q: np.ndarray  # time average of mean_i x_i² (chaotic saturation ≈ sqrt(2N·q))
    j0_over_j: np.ndarray  # x grid, J0/J
    inv_j: np.ndarray  # y grid, 1/J
    n: int  # network width N
    steps: int  # iterations T
    seed: int
    activation: str
    sampling: str  # "common" (one G for all cells) or "independent" (one G per cell)
    perturbation: float  # std of the initial offset x0' − x0 per entry
    average_fraction: float  # the last average_fraction·T steps are averaged
    dtype: str  # "float32" | "float64"
    device: str  # where it was computed
    elapsed_s: float  # wall-clock seconds of the computation

    @property
    def average_steps(self) -> int:
        """Number of steps in the averaging window."""
        return _average_steps(self.steps, self.average_fraction)

    def save(self, path: Union[str, Path]) -> Path:
        """Write the diagram to HDF5: arrays as datasets, everything else (N, T, seed, ...) as attrs.

        Args:
            path: Target ``.h5`` file (overwritten).

        Returns:
            The path written.
        """
        path = Path(path)
        with h5py.File(path, "w") as f:
            f.attrs["format"] = "stabilityscope.theory.numerical_phase_diagram"
            f.attrs["format_version"] = _FORMAT_VERSION
            f.attrs["source"] = "EOC-training (asymptotic distance; docs/science/mean-field.md)"
            for fld in fields(self):
                value = getattr(self, fld.name)
                if isinstance(value, np.ndarray):
                    f.create_dataset(fld.name, data=value)
                else:
                    f.attrs[fld.name] = value
            # The spec's names, so a reader never has to guess what "n" and "steps" mean.
            f.attrs["N"] = self.n
            f.attrs["T"] = self.steps
        return path

    @classmethod
    def load(cls, path: Union[str, Path]) -> "PhaseDiagram":
        """Read a diagram written by :meth:`save`.

        Raises:
            TraceError: The file is not a phase-diagram file or lacks a field.
        """
        path = Path(path)
        try:
            with h5py.File(path, "r") as f:
                if f.attrs.get("format") != "stabilityscope.theory.numerical_phase_diagram":
                    raise TraceError(f"{path} is not a stabilityscope phase-diagram file")
                kwargs: dict[str, Any] = {}
                for fld in fields(cls):
                    if fld.name in f:
                        kwargs[fld.name] = f[fld.name][()]
                    elif fld.name in f.attrs:
                        kwargs[fld.name] = _python_scalar(f.attrs[fld.name])
                    else:
                        raise TraceError(f"{path} lacks the field {fld.name!r}")
        except OSError as err:
            raise TraceError(f"cannot read phase diagram {path}: {err}") from err
        return cls(**kwargs)


def phase_diagram(
    j0_over_j: Sequence[float] | np.ndarray,
    inv_j: Sequence[float] | np.ndarray,
    n: int,
    steps: Optional[int] = None,
    activation: str = "tanh",
    seed: int = 0,
    device: Optional[Union[str, torch.device]] = None,
    *,
    sampling: Literal["common", "independent"] = "common",
    perturbation: float = 1e-4,
    average_fraction: float = 0.2,
    dtype: torch.dtype = torch.float32,
    max_memory_bytes: Optional[int] = None,
) -> PhaseDiagram:
    """Simulate all grid cells at once and measure their asymptotic distance (EOC-training; docs/science/mean-field.md).

    Cell (i, j) has J = 1/inv_j[i] and J0 = j0_over_j[j]·J; W has entries Normal(J0/N, J²/N),
    x0 ~ Normal(0, I_N), x0' = x0 + Normal(0, perturbation²·I_N), and x_{t+1} = φ(W x_t).

    Sampling. ``"common"`` (default) uses common random numbers: one G, one x0 and one offset shared
    by every cell, so cells differ only through (J0, J). That removes the cell-to-cell sampling noise
    (the boundary comes out smooth, and the whole grid costs one N×N matrix) and lets a step be a
    single matmul. The price: cells are *correlated*, not independent samples; a rare G biases the
    whole diagram the same way, so use several seeds to see the sample-to-sample spread.
    ``"independent"`` draws G, x0 and the offset per cell (the original's choice): independent
    errors per cell, N² memory and a matrix-vector product per cell and step.

    Caveats. Finite N and T smear the transition strongly: near the edge relaxation and divergence
    are slow, so the measured boundary moves with N and T (always keep N, T and seed with the
    result; :meth:`PhaseDiagram.save` does). Chaotic tanh cells saturate near sqrt(2N·q) (two
    decorrelated vectors with second moment q per entry; at most sqrt(2N) for ±1 entries); ordered
    cells go to ~0 (both trajectories reach the same fixed point, or period-2 cycle for J0/J < −1).
    ReLU is unbounded: outside its ordered region the state grows geometrically and can overflow to
    inf/NaN (treat non-finite as divergent, or use float64). The same seed gives the same arrays on
    the same device and BLAS; on CPU (MKL) they do not depend on the chunking either (chunks of
    >= 8 cells keep BLAS on one kernel). Across devices or BLAS libraries the summation order
    changes, and chaotic cells amplify such rounding differences to O(1): their statistics agree,
    their bits do not.

    Args:
        j0_over_j: x grid, J0/J.
        inv_j: y grid, 1/J; every value must be positive and finite.
        n: Network width N.
        steps: Iterations T; None takes EOC-training's T (500 tanh, 100 ReLU).
        activation: "tanh" or "relu".
        seed: Seed of the torch.Generator on ``device``.
        device: None picks CUDA when available, else CPU.
        sampling: "common" or "independent" (see above).
        perturbation: Per-entry std of the initial offset between the two trajectories.
        average_fraction: Fraction of the last steps averaged (EOC-training: 1/5).
        dtype: torch.float32 (default) or torch.float64.
        max_memory_bytes: Memory the simulation may use; None takes half of what is free
            (/proc/meminfo MemAvailable, or torch.cuda.mem_get_info). Sets how many cells
            run per chunk.

    Returns:
        A :class:`PhaseDiagram` with arrays shaped (len(inv_j), len(j0_over_j)).

    Raises:
        ConfigError: An argument is out of range.
    """
    x_grid = np.asarray(j0_over_j, dtype=np.float64).reshape(-1)
    y_grid = np.asarray(inv_j, dtype=np.float64).reshape(-1)
    _validate(x_grid, y_grid, n, activation, sampling, perturbation, average_fraction, dtype)
    steps = DEFAULT_STEPS[activation] if steps is None else int(steps)
    if steps < 1:
        raise ConfigError(f"steps must be >= 1, got {steps}")
    dev = torch.device(device) if device is not None else _default_device()
    n_avg = _average_steps(steps, average_fraction)

    # Per-cell couplings, cells in row-major grid order (row = 1/J, column = J0/J).
    j = np.repeat(1.0 / y_grid, len(x_grid))  # (C,)
    j0 = np.tile(x_grid, len(y_grid)) * j  # (C,)
    gain = torch.as_tensor(j / math.sqrt(n), dtype=dtype, device=dev)  # J/√N, multiplies G x
    shift = torch.as_tensor(j0 / n, dtype=dtype, device=dev)  # J0/N, multiplies 1ᵀx

    budget = _memory_budget(dev, max_memory_bytes)
    phi = _ACTIVATIONS[activation]
    run = _run_common if sampling == "common" else _run_independent
    # TF32/bf16 matmuls round x and x' to ~1e-3 relative precision, coarser than the 1e-4 offset
    # between them: force full float32 for the duration (restored afterwards).
    precision = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    try:
        start = time.perf_counter()
        out = run(n, steps, n_avg, gain, shift, phi, seed, perturbation, budget)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        elapsed = time.perf_counter() - start
    finally:
        torch.set_float32_matmul_precision(precision)

    shape = (len(y_grid), len(x_grid))
    sep, u, q0, q = (t.reshape(shape).cpu().numpy() for t in out)
    return PhaseDiagram(
        separation=sep, u=u, q0=q0, q=q, j0_over_j=x_grid, inv_j=y_grid, n=int(n), steps=steps,
        seed=int(seed), activation=activation, sampling=sampling, perturbation=float(perturbation),
        average_fraction=float(average_fraction), dtype=str(dtype).removeprefix("torch."),
        device=str(dev), elapsed_s=elapsed,
    )


# ----------------------------------------------------------------------------- simulation


class _Window:
    """Accumulates the averaged statistics over the last ``n_avg`` steps for C cells."""

    def __init__(self, n: int, n_cells: int, n_avg: int, like: torch.Tensor) -> None:
        self.n, self.n_avg = n, n_avg
        self.sum_x = like.new_zeros(n, n_cells)  # (N, C) running Σ_t x_t, for u and q0
        self.sep = like.new_zeros(n_cells)  # (C,) Σ_t ||x_t − x'_t||
        self.sq = like.new_zeros(n_cells)  # (C,) Σ_t ||x_t||²
        self.diff = like.new_empty(n, n_cells)  # (N, C) scratch for x_t − x'_t

    def add(self, xa: torch.Tensor, xb: torch.Tensor) -> None:
        """Add one step; ``xa``, ``xb`` are the (N, C) states of the two trajectories (views)."""
        torch.sub(xa, xb, out=self.diff)
        self.sep += torch.linalg.vector_norm(self.diff, dim=0)
        self.sq += torch.linalg.vector_norm(xa, dim=0).square_()
        self.sum_x += xa

    def result(self) -> tuple[torch.Tensor, ...]:
        """(separation, u, q0, q), each (C,)."""
        mean_x = self.sum_x / self.n_avg  # (N, C) time average of x_i
        u = mean_x.mean(dim=0)
        q0 = mean_x.square_().mean(dim=0)
        return self.sep / self.n_avg, u, q0, self.sq / (self.n_avg * self.n)


def _iterate(
    matmul: Callable[[], None],
    x: torch.Tensor,
    y: torch.Tensor,
    gain: torch.Tensor,
    shift: torch.Tensor,
    phi: Callable[[torch.Tensor], torch.Tensor],
    steps: int,
    window: _Window,
) -> tuple[torch.Tensor, ...]:
    """Run ``steps`` steps of x ← φ(gain·(G x) + shift·(1ᵀx)) on logical (N, 2, C) views.

    ``matmul()`` writes [G; 1ᵀ] x into ``y`` (logical (N+1, 2, C)); x and y are reused every step,
    so the loop allocates nothing of size N·C.
    """
    n = x.shape[0]
    col_shift = y.new_empty(y.shape[1:])  # (2, C) shift·(1ᵀx)
    y_main, y_sum = y[:n], y[n]  # (N, 2, C) = G x, (2, C) = 1ᵀx
    for t in range(steps):
        matmul()
        torch.mul(y_sum, shift, out=col_shift)
        torch.addcmul(col_shift, y_main, gain, out=x)  # x = shift·1ᵀx + gain·G x, broadcast
        phi(x)
        if t >= steps - window.n_avg:
            window.add(x[:, 0], x[:, 1])
    return window.result()


def _run_common(
    n: int, steps: int, n_avg: int, gain: torch.Tensor, shift: torch.Tensor,
    phi: Callable[[torch.Tensor], torch.Tensor], seed: int, perturbation: float, budget: int,
) -> tuple[torch.Tensor, ...]:
    """Common random numbers: one [G; 1ᵀ] for all cells, one (N+1)×N @ N×2C matmul per step."""
    dev, dtype = gain.device, gain.dtype
    gen = torch.Generator(device=dev).manual_seed(seed)
    g_aug = torch.empty(n + 1, n, dtype=dtype, device=dev)  # (N+1, N): G, then a row of ones
    torch.randn(n, n, generator=gen, dtype=dtype, device=dev, out=g_aug[:n])
    g_aug[n] = 1.0
    x0 = torch.randn(n, generator=gen, dtype=dtype, device=dev)
    x0b = x0 + perturbation * torch.randn(n, generator=gen, dtype=dtype, device=dev)

    size = dtype.itemsize
    fixed = (n + 1) * n * size
    per_cell = size * (2 * n + 2 * (n + 1) + 2 * n + 8)  # x, y, window sum_x + diff, small vectors
    # As many cells per chunk as memory allows: capping chunks to keep X and Y in the CPU cache was
    # measured slower (N = 1000, 3600 cells), since G is then streamed once per chunk and step.
    limit = max(0, budget - fixed) // per_cell
    chunks = _chunks(len(gain), limit, _MIN_CHUNK_CELLS, fixed, per_cell, budget)

    results = []
    for lo, hi in chunks:
        c = hi - lo
        x = torch.empty(n, 2, c, dtype=dtype, device=dev)  # (N, 2, C): [trajectory x | x'] per cell
        x[:, 0] = x0[:, None]
        x[:, 1] = x0b[:, None]
        y = torch.empty(n + 1, 2, c, dtype=dtype, device=dev)  # (N+1, 2, C) = [G; 1ᵀ] x
        x2d, y2d = x.view(n, 2 * c), y.view(n + 1, 2 * c)

        def matmul() -> None:
            torch.mm(g_aug, x2d, out=y2d)  # the one matmul of the step

        window = _Window(n, c, n_avg, x)
        results.append(_iterate(matmul, x, y, gain[lo:hi], shift[lo:hi], phi, steps, window))
    return tuple(torch.cat(parts) for parts in zip(*results))


def _run_independent(
    n: int, steps: int, n_avg: int, gain: torch.Tensor, shift: torch.Tensor,
    phi: Callable[[torch.Tensor], torch.Tensor], seed: int, perturbation: float, budget: int,
) -> tuple[torch.Tensor, ...]:
    """Independent G, x0 and offset per cell (the original's sampling), batched ``bmm`` per chunk.

    Each cell draws from its own generator seeded by (seed, cell index), so a cell's numbers do not
    depend on how the grid is chunked.
    """
    dev, dtype = gain.device, gain.dtype
    size = dtype.itemsize
    per_cell = size * ((n + 1) * n + 2 * n + 2 * (n + 1) + 2 * n + 8)
    chunks = _chunks(len(gain), max(0, budget) // per_cell, 1, 0, per_cell, budget)
    cell_seeds = np.random.SeedSequence(seed).generate_state(len(gain), dtype=np.uint64)

    results = []
    for lo, hi in chunks:
        c = hi - lo
        g_aug = torch.empty(c, n + 1, n, dtype=dtype, device=dev)  # (C, N+1, N): G_c, ones row
        x = torch.empty(c, n, 2, dtype=dtype, device=dev)  # (C, N, 2): bmm wants the batch first
        for k in range(c):  # RNG only; the dynamics below are batched over the chunk
            gen = torch.Generator(device=dev).manual_seed(int(cell_seeds[lo + k]) >> 1)
            torch.randn(n, n, generator=gen, dtype=dtype, device=dev, out=g_aug[k, :n])
            x[k, :, 0] = torch.randn(n, generator=gen, dtype=dtype, device=dev)
            x[k, :, 1] = x[k, :, 0] + perturbation * torch.randn(n, generator=gen, dtype=dtype, device=dev)
        g_aug[:, n] = 1.0
        y = torch.empty(c, n + 1, 2, dtype=dtype, device=dev)

        def matmul() -> None:
            torch.bmm(g_aug, x, out=y)  # C matrix-vector pairs

        xl, yl = x.permute(1, 2, 0), y.permute(1, 2, 0)  # logical (N, 2, C) / (N+1, 2, C) views
        window = _Window(n, c, n_avg, x)
        results.append(_iterate(matmul, xl, yl, gain[lo:hi], shift[lo:hi], phi, steps, window))
    return tuple(torch.cat(parts) for parts in zip(*results))


def _chunks(
    n_cells: int, limit: int, minimum: int, fixed: int, per_cell: int, budget: int
) -> list[tuple[int, int]]:
    """Split ``n_cells`` into [lo, hi) ranges of ``limit`` cells, none narrower than ``minimum``.

    A short remainder is merged into the previous chunk (so every chunk has at least ``minimum``
    cells when the grid does); the budget is then exceeded by fewer than ``minimum`` cells.
    """
    if limit < min(minimum, n_cells):
        need = fixed + minimum * per_cell
        warnings.warn(
            f"phase_diagram: {minimum} cell(s) per chunk need ~{need / 2**20:.1f} MiB, more than the "
            f"{budget / 2**20:.1f} MiB allowed; running with {minimum} cell(s) per chunk anyway",
            ResourceWarning, stacklevel=4,
        )
    limit = max(limit, minimum)
    bounds = list(range(0, n_cells, limit)) + [n_cells]
    if len(bounds) > 2 and bounds[-1] - bounds[-2] < minimum:
        del bounds[-2]
    return list(zip(bounds[:-1], bounds[1:]))


# ----------------------------------------------------------------------------- helpers


def _validate(
    x_grid: np.ndarray, y_grid: np.ndarray, n: int, activation: str, sampling: str,
    perturbation: float, average_fraction: float, dtype: torch.dtype,
) -> None:
    if x_grid.size == 0 or y_grid.size == 0:
        raise ConfigError("phase_diagram: both grids need at least one value")
    if not np.all(np.isfinite(x_grid)):
        raise ConfigError("phase_diagram: j0_over_j must be finite")
    if not np.all(np.isfinite(y_grid) & (y_grid > 0)):
        raise ConfigError("phase_diagram: inv_j = 1/J must be positive and finite (J = 1/inv_j)")
    if int(n) < 1:
        raise ConfigError(f"phase_diagram: n must be >= 1, got {n}")
    if activation not in _ACTIVATIONS:
        raise ConfigError(f"phase_diagram: activation {activation!r} not in {sorted(_ACTIVATIONS)}")
    if sampling not in _SAMPLINGS:
        raise ConfigError(f"phase_diagram: sampling {sampling!r} not in {_SAMPLINGS}")
    if not perturbation > 0:
        raise ConfigError(f"phase_diagram: perturbation must be > 0, got {perturbation}")
    if not 0 < average_fraction <= 1:
        raise ConfigError(f"phase_diagram: average_fraction must be in (0, 1], got {average_fraction}")
    if dtype not in _DTYPES.values():
        raise ConfigError(f"phase_diagram: dtype must be torch.float32 or torch.float64, got {dtype}")


def _average_steps(steps: int, average_fraction: float) -> int:
    return max(1, min(steps, round(average_fraction * steps)))


def _default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _memory_budget(device: torch.device, max_memory_bytes: Optional[int]) -> int:
    """Bytes the simulation may use: the caller's cap, else half of the free memory on ``device``."""
    if max_memory_bytes is not None:
        return int(max_memory_bytes)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free // 2
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024 // 2
    except OSError:
        pass
    return 2 * 2**30  # no /proc (not Linux): assume 4 GiB free


def _python_scalar(value: Any) -> Any:
    """h5py attrs come back as numpy scalars/bytes; the dataclass wants plain Python values."""
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.generic):
        return value.item()
    return value


# ----------------------------------------------------------------------------- drawing helper


def cell_edges(centres: np.ndarray) -> np.ndarray:
    """Cell edges for pcolormesh from (possibly uneven) cell centres; a single cell gets width 1."""
    c = np.asarray(centres, dtype=np.float64)
    if c.size == 1:
        return np.array([c[0] - 0.5, c[0] + 0.5])
    mid = (c[1:] + c[:-1]) / 2
    return np.concatenate([[2 * c[0] - mid[0]], mid, [2 * c[-1] - mid[-1]]])
