"""Benchmark the Lyapunov machinery of stabilityscope.lyapunov (EOC-optimality, SCIENCE.md §2).

1. Full Lyapunov spectrum (all N exponents) of a random tanh map x → tanh(W x), N = 784, J = 1.5:
   ``lyapunov_spectrum`` (batched jvp + torch.linalg.qr) against a straightforward numpy loop that
   forms J_t = diag(φ') W and calls np.linalg.qr every step, for the same number of steps.
2. ``map_measures`` on the canonical tracking case: LayerMap 784×784 tanh, 100 start states,
   T = 500, chaotic (J = 1.5) and ordered (J = 0.5) phase.

Usage:
    python benchmarks/bench_lyapunov.py [--steps 100] [--device cpu|cuda] [--threads 0]
"""
from __future__ import annotations

import argparse
import math
import os
import time

import numpy as np
import torch

from stabilityscope.lyapunov import STOP_REASONS, lyapunov_spectrum, map_measures
from stabilityscope.maps import LayerMap


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

    print(f"\n[1] full spectrum, N={n}, J=1.5 tanh, {steps} steps (transient {transient}), QR every step")
    results = {}
    for dtype in (torch.float64, torch.float32):
        f = LayerMap(w.to(dev, dtype))
        xs = x0.to(dev, dtype)
        lyapunov_spectrum(f, xs, steps=4, transient=2)  # warm-up (kernels, allocator)
        sp, sec = timed(lambda: lyapunov_spectrum(f, xs, steps=steps, transient=transient), dev)
        results[dtype] = (sp.exponents[0].double().cpu().numpy(), sec)
        print(f"  torch {str(dtype)[6:]:8s}: {sec:7.2f} s  ({1e3 * sec / steps:6.1f} ms/step)  "
              f"λ_1={results[dtype][0][0]:+.4f} λ_N={results[dtype][0][-1]:+.4f}")
    f = LayerMap(w.to(dev))
    sp, sec = timed(lambda: lyapunov_spectrum(f, x0.to(dev), steps=steps, transient=transient,
                                              reorthonormalize_every=3), dev)
    print(f"  torch float64, QR every 3rd step: {sec:7.2f} s  λ_1={float(sp.exponents[0, 0]):+.4f} "
          f"max |Δλ| vs QR every step: {(sp.exponents[0].cpu().numpy() - results[torch.float64][0]).__abs__().max():.2e}")
    if not args.skip_numpy:
        # the start frame lyapunov_spectrum draws (seed 0, float64, CPU), so float64 results must agree
        q0 = torch.linalg.qr(torch.randn(1, n, n, generator=torch.Generator().manual_seed(0), dtype=torch.float64))[0][0]
        ref, sec_np = timed(lambda: numpy_spectrum(w.numpy(), x0[0].numpy(), q0.numpy(), steps, transient),
                            torch.device("cpu"))
        print(f"  numpy float64: {sec_np:7.2f} s  ({1e3 * sec_np / steps:6.1f} ms/step)  "
              f"λ_1={ref[0]:+.4f} λ_N={ref[-1]:+.4f}")
        for dtype, (exps, sec) in results.items():
            print(f"  speed-up numpy/torch {str(dtype)[6:]}: {sec_np / sec:5.2f}x   "
                  f"max |Δλ| vs numpy: {np.abs(exps - ref).max():.2e}")

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
