r"""Benchmark: batched phase diagram vs the original per-cell loop, and vs plain matmul throughput.

Measures, in one run and on the same grid, N and T:

1. ``phase_diagram`` (all cells batched; common random numbers: one matmul per step);
2. the original's per-cell loop in numpy (docs/science/mean-field.md: one cell at a time): draw W, iterate both
   trajectories with one matrix-vector product each per step, float64 (numpy's default). For
   large N only ``--loop-cells`` cells (and optionally ``--loop-steps`` steps) are timed and the
   per-cell time is extrapolated; the output says so. ``--loop-tuned`` adds a stronger baseline
   (float32, both trajectories as one N×2 product) so the speed-up is not just float64 vs float32;
3. the FLOP rate of a plain large float32 matmul (torch), the ceiling for (1).

The batched effective rate counts 4·N² flops per cell per step (2 trajectories × 2N²).

On a shared machine whose other jobs keep the cores busy, OpenMP threads that spin-wait at every
parallel region lose whole scheduler time slices; prefix the command with OMP_WAIT_POLICY=PASSIVE
there (it applies to the plain matmul too). The load average is printed at start and end.

    python benchmarks/bench_phase_diagram.py --n 1000
    python benchmarks/bench_phase_diagram.py --n 10000 --grid 10 10 --steps 100 --repeats 2 \
        --loop-cells 2 --loop-steps 10
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))  # run from a checkout
from stabilityscope.theory.numerical_phase_diagram import DEFAULT_STEPS, phase_diagram  # noqa: E402


def loop_cell(n: int, j0: float, j: float, steps: int, n_avg: int, seed: int,
              tuned: bool = False) -> tuple[float, float, float]:
    """One cell the original way; returns (seconds drawing W, seconds iterating, separation)."""
    rng = np.random.default_rng(seed)
    dtype = np.float32 if tuned else np.float64
    t0 = time.perf_counter()
    w = rng.normal(j0 / n, j / math.sqrt(n), size=(n, n)).astype(dtype, copy=False)
    x = rng.normal(size=n).astype(dtype)
    xp = (x + 1e-4 * rng.normal(size=n)).astype(dtype)
    t1 = time.perf_counter()
    sep, sum_x = 0.0, np.zeros(n, dtype)
    if tuned:
        xx = np.stack([x, xp], axis=1)  # (N, 2): one product for both trajectories
        for t in range(steps):
            xx = np.tanh(w @ xx)
            if t >= steps - n_avg:
                sep += float(np.linalg.norm(xx[:, 0] - xx[:, 1]))
                sum_x += xx[:, 0]
    else:
        for t in range(steps):
            x = np.tanh(w @ x)
            xp = np.tanh(w @ xp)
            if t >= steps - n_avg:
                sep += float(np.linalg.norm(x - xp))
                sum_x += x
    t2 = time.perf_counter()
    return t1 - t0, t2 - t1, sep / n_avg


def matmul_gflops(size: int, repeats: int) -> float:
    """Best-of-``repeats`` GFLOP/s of a size×size float32 torch matmul (after one warm-up)."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    c = torch.empty(size, size)
    torch.mm(a, b, out=c)
    best = min(_timed(lambda: torch.mm(a, b, out=c)) for _ in range(repeats))
    return 2 * size**3 / best / 1e9


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=1000, help="network width N")
    p.add_argument("--grid", type=int, nargs=2, default=(20, 20), metavar=("NX", "NY"),
                   help="cells along J0/J and 1/J")
    p.add_argument("--steps", type=int, default=DEFAULT_STEPS["tanh"], help="iterations T")
    p.add_argument("--repeats", type=int, default=3, help="batched and matmul runs; the best is kept")
    p.add_argument("--loop-cells", type=int, default=8, help="cells timed in the per-cell loop")
    p.add_argument("--loop-steps", type=int, default=None,
                   help="steps timed per loop cell (default T); fewer are extrapolated to T")
    p.add_argument("--loop-tuned", action="store_true", help="also time a float32, N×2 loop")
    p.add_argument("--matmul-size", type=int, default=4096, help="size of the plain matmul")
    p.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    args = p.parse_args()

    n, steps = args.n, args.steps
    nx, ny = args.grid
    x_grid, y_grid = np.linspace(-2.0, 3.0, nx), np.linspace(0.1, 2.5, ny)
    cells = nx * ny
    n_avg = max(1, round(0.2 * steps))
    flops = 4 * n * n * cells * steps
    print(f"N = {n}, grid {nx} x {ny} = {cells} cells, T = {steps}, torch threads = "
          f"{torch.get_num_threads()}, torch {torch.__version__}, numpy {np.__version__}")
    print(f"load average at start: {_load()} (other processes on a shared machine slow every figure)")

    # (1) batched, interleaved with (3) the plain-matmul ceiling so that both see the same machine
    # load (other work on a shared machine slows both; best-of-repeats filters the worst of it).
    times, mm_rates = [], []
    for _ in range(args.repeats):
        mm_rates.append(matmul_gflops(args.matmul_size, 2))
        d = phase_diagram(x_grid, y_grid, n=n, steps=steps, device=args.device)
        times.append(d.elapsed_s)
    batched = min(times)
    print(f"batched phase_diagram ({d.device}, {d.dtype}, common sampling): best {batched:.3f} s of "
          f"{', '.join(f'{t:.3f}' for t in times)}  ({batched / cells * 1e3:.3f} ms/cell)")

    # (2) per-cell loop on a subset of cells spread over the grid
    loop_steps = steps if args.loop_steps is None else min(args.loop_steps, steps)
    picks = np.unique(np.linspace(0, cells - 1, min(args.loop_cells, cells)).round().astype(int))
    variants = [("original (float64, 2 matvecs/step)", False)]
    if args.loop_tuned:
        variants.append(("tuned (float32, one N×2 product/step)", True))
    loop_results = {}
    for label, tuned in variants:
        per_cell = []
        for c in picks:
            j = 1.0 / y_grid[c // nx]
            draw, iterate, _ = loop_cell(n, x_grid[c % nx] * j, j, loop_steps,
                                         min(n_avg, loop_steps), seed=int(c), tuned=tuned)
            per_cell.append(draw + iterate * steps / loop_steps)
        # Every cell repeats the same work, so the fastest one is the loop's best-of (as for (1)).
        per_cell_s = float(np.min(per_cell))
        total = per_cell_s * cells
        how = "measured" if len(picks) == cells and loop_steps == steps else (
            f"EXTRAPOLATED from {len(picks)} of {cells} cells"
            + (f", {loop_steps} of {steps} steps per cell" if loop_steps < steps else ""))
        print(f"per-cell numpy loop, {label}: best {per_cell_s:.3f} s/cell (mean {np.mean(per_cell):.3f}) "
              f"-> {total:.1f} s for the grid ({how})")
        loop_results[label] = total

    mm_rates.append(matmul_gflops(args.matmul_size, 2))
    mm = max(mm_rates)
    effective = flops / batched / 1e9
    print(f"plain float32 matmul {args.matmul_size}^2 (torch): best {mm:.1f} GFLOP/s of "
          f"{', '.join(f'{r:.1f}' for r in mm_rates)}")
    for label, total in loop_results.items():
        print(f"speed-up batched vs loop {label}: {total / batched:.1f}x")
    print(f"batched effective rate: {effective:.1f} GFLOP/s = {effective / mm:.2f} of the plain matmul rate")
    print(f"load average at end: {_load()}")


def _load() -> str:
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "n/a"


if __name__ == "__main__":
    main()
