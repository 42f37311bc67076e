"""Benchmark the Lyapunov machinery of stabilityscope.dynamics.lyapunov (EOC-optimality, SCIENCE.md §2).

1. Full Lyapunov spectrum (all N exponents) of a random tanh map x → tanh(W x), N = 784, J = 1.5:
   ``lyapunov_spectrum`` (batched jvp + re-orthonormalisation) with ``qr_method`` "auto" (the
   default), "householder" (torch.linalg.qr) and "cholesky" (CholeskyQR2), against a
   straightforward numpy loop that forms J_t = diag(φ') W and calls np.linalg.qr every step, for
   the same number of steps. Each configuration runs ``--repeat`` times, interleaved, and the
   median time is reported; max |Δλ| compares the float64 spectra (equal accuracy).
2. ``map_measures`` on the canonical tracking case: LayerMap 784×784 tanh, 100 start states,
   T = 500, chaotic (J = 1.5) and ordered (J = 0.5) phase.

Usage:
    python benchmarks/bench_lyapunov.py [--steps 100] [--device cpu|cuda] [--threads 0] [--repeat 3]
        [--skip-numpy] [--skip-measures]
    Fair single-thread CPU timing (numpy's BLAS reads OMP/OPENBLAS_NUM_THREADS, torch --threads):
    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 python benchmarks/bench_lyapunov.py --threads 1
"""
from __future__ import annotations

import argparse
import math
import os
import time

import numpy as np
import torch

from stabilityscope.dynamics.lyapunov import STOP_REASONS, _resolve_qr_method, lyapunov_spectrum, map_measures
from stabilityscope.dynamics.maps import LayerMap


def numpy_spectrum(w: np.ndarray, x0: np.ndarray, q0: np.ndarray, steps: int, transient: int) -> np.ndarray:
    """The reference loop: explicit Jacobian, np.linalg.qr every step, float64."""
    n = w.shape[0]
    x, q = x0.copy(), q0.copy()
    logsum = np.zeros(n)
    for t in range(steps):
        y = np.tanh(w @ x)
        jac = (1.0 - y * y)[:, None] * w  # diag(φ'(Wx)) W, (N, N)
        q, r = np.linalg.qr(jac @ q)
        if t >= transient:
            logsum += np.log(np.abs(np.diag(r)))
        x = y
    return np.sort(logsum / (steps - transient))[::-1]


def timed(fn, device: torch.device):
    """(result, seconds) of fn(), synchronising CUDA around it."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return out, time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=784)
    p.add_argument("--steps", type=int, default=100, help="steps of the full-spectrum comparison")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch default)")
    p.add_argument("--skip-numpy", action="store_true")
    p.add_argument("--skip-measures", action="store_true", help="skip part [2]")
    p.add_argument("--repeat", type=int, default=1, help="timed runs per configuration (median reported)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    n, steps, transient = args.n, args.steps, args.steps // 2
    print(f"device={dev} torch={torch.__version__} numpy={np.__version__} threads={torch.get_num_threads()} "
          f"cpus={os.cpu_count()} loadavg={os.getloadavg()[0]:.1f}")

    gen = torch.Generator().manual_seed(0)
    w = torch.randn(n, n, generator=gen, dtype=torch.float64) * 1.5 / math.sqrt(n)
    x0 = torch.randn(1, n, generator=gen, dtype=torch.float64)

    auto64 = _resolve_qr_method("auto", dev, 1)
    print(f"\n[1] full spectrum, N={n}, J=1.5 tanh, {steps} steps (transient {transient}), QR every step; "
          f"{args.repeat} run(s) each, median; auto = {auto64} on {dev.type}")
    # configurations: label → (dtype, qr_method); "auto" is not rerun when it is one of the others
    configs = {"float64 householder": (torch.float64, "householder"),
               "float64 cholesky": (torch.float64, "cholesky"),
               "float32 auto": (torch.float32, "auto")}
    maps = {dtype: (LayerMap(w.to(dev, dtype)), x0.to(dev, dtype)) for dtype in (torch.float64, torch.float32)}
    for dtype, method in configs.values():  # warm-up (kernels, allocator)
        lyapunov_spectrum(*maps[dtype], steps=4, transient=2, qr_method=method)
    q0 = torch.linalg.qr(torch.randn(1, n, n, generator=torch.Generator().manual_seed(0), dtype=torch.float64))[0][0]

    def run_numpy():
        # the start frame lyapunov_spectrum draws (seed 0, float64, CPU), so float64 results must agree
        return numpy_spectrum(w.numpy(), x0[0].numpy(), q0.numpy(), steps, transient)

    times: dict[str, list[float]] = {label: [] for label in configs}
    spectra: dict[str, np.ndarray] = {}
    if not args.skip_numpy:
        times["numpy"] = []
    for _ in range(args.repeat):  # interleaved, so load changes hit every configuration alike
        for label, (dtype, method) in configs.items():
            sp, sec = timed(lambda: lyapunov_spectrum(*maps[dtype], steps=steps, transient=transient,
                                                      qr_method=method), dev)
            times[label].append(sec)
            spectra[label] = sp.exponents[0].double().cpu().numpy()
        if not args.skip_numpy:
            ref, sec = timed(run_numpy, torch.device("cpu"))
            times["numpy"].append(sec)
            spectra["numpy"] = ref
    med = {label: float(np.median(ts)) for label, ts in times.items()}
    times["float64 auto"] = times[f"float64 {auto64}"]
    med["float64 auto"], spectra["float64 auto"] = med[f"float64 {auto64}"], spectra[f"float64 {auto64}"]

    house = spectra["float64 householder"]
    for label in ("float64 auto", "float64 householder", "float64 cholesky", "float32 auto", "numpy"):
        if label not in med:
            continue
        sec, exps = med[label], spectra[label]
        runs = " ".join(f"{t:.2f}" for t in times[label])
        print(f"  {label:20s}: {sec:7.2f} s  ({1e3 * sec / steps:6.1f} ms/step; runs {runs})  "
              f"λ_1={exps[0]:+.4f} λ_N={exps[-1]:+.4f}  max |Δλ| vs torch householder: {np.abs(exps - house).max():.2e}")
    if "numpy" in med:
        ref = spectra["numpy"]
        for label in ("float64 auto", "float64 householder", "float64 cholesky", "float32 auto"):
            print(f"  speed-up numpy/torch {label:20s}: {med['numpy'] / med[label]:5.2f}x   "
                  f"max |Δλ| vs numpy: {np.abs(spectra[label] - ref).max():.2e}")
    f, xs = maps[torch.float64]
    for r in (2, 3):
        sp, sec = timed(lambda: lyapunov_spectrum(f, xs, steps=steps, transient=transient, reorthonormalize_every=r), dev)
        nth = {2: "2nd", 3: "3rd"}[r]
        print(f"  torch float64 auto, QR every {nth} step: {sec:7.2f} s (1 run)  λ_1={float(sp.exponents[0, 0]):+.4f} "
              f"max |Δλ| vs QR every step: {np.abs(sp.exponents[0].cpu().numpy() - spectra['float64 auto']).max():.2e}")
    if args.skip_measures:
        return

    print("\n[2] map_measures, LayerMap 784×784 tanh, B=100 start states, T=500, float32")
    xb = torch.randn(100, 784, generator=gen).to(dev)
    for j in (1.5, 0.5):
        f = LayerMap((torch.randn(784, 784, generator=gen) * j / math.sqrt(784)).to(dev))
        map_measures(f, xb, steps=4)  # warm-up
        m, sec = timed(lambda: map_measures(f, xb, steps=500), dev)
        print(f"  J={j}: {sec:6.2f} s  steps_run={int(m.steps_run)} ({STOP_REASONS[int(m.stop_reason)]})  "
              f"s={float(m.s_mean):.3f}±{float(m.s_std):.3f}  λ_max={float(m.lyapunov_max.mean()):+.4f}  "
              f"M2={float(m.jacobian_product_exponent.mean()):+.4f}  M4={float(m.asymptotic_distance.mean()):.3g}  "
              f"attractor={m.attractor_names[0]}")
        m, sec = timed(lambda: map_measures(f, xb, steps=500, m2_passes=0), dev)
        print(f"  J={j} without M2 (m2_passes=0): {sec:6.2f} s")


if __name__ == "__main__":
    main()
