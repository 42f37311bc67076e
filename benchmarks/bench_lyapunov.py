"""Benchmark the Lyapunov machinery of stabilityscope.dynamics.lyapunov (EOC-optimality, SCIENCE.md §2).

0. The machine's limit: the rate of one N×N GEMM, and from it the least time per step of the QR
   method, (2N³ for J·Q + 4/3 N³ for a QR without forming Q) / GEMM rate, against the
   2N³ + 8/3 N³ (GEMM, geqrf, orgqr) of a plain loop.
1. Full Lyapunov spectrum (k = N = 784) of a random tanh map x → tanh(W x), J = 1.5:
   ``lyapunov_spectrum`` with its defaults (reflector frame, ``reorthonormalize_every="auto"``),
   with a QR every step, and with CholeskyQR2, against a straightforward numpy loop that forms
   J_t = diag(φ') W and calls np.linalg.qr every step (float64), for the same steps and start frame.
1s. The short orbit: the same full spectrum over ``--short-steps`` (60) steps with a transient of
   ``--short-transient`` (20), where fixed costs (the start frame, the first blocks of "auto") weigh most.
2. The common case: the top k = 32 exponents of 16 start states, against that loop run per start state, and
   the ceiling of any float64 method: the loop's time over that of the products W·x and J·Q as one GEMM.
3. ``map_measures`` on the canonical tracking case: LayerMap 784×784 tanh, 100 start states,
   T = 500, chaotic (J = 1.5) and ordered (J = 0.5) phase.

Every configuration runs ``--repeat`` times, interleaved, so load changes hit all alike; the min and
the median are reported, as wall time and as CPU time of this process. With one thread, CPU time
does not count the time other jobs on a shared machine take the core, so its ratios are the stable
ones there; wall time is what a user waits. max |Δλ| compares float64 spectra with the numpy loop
(the same orbit up to rounding: at λ_1 ≈ 0.07 and 100 steps a rounding difference grows ~e^7).

Usage:
    python benchmarks/bench_lyapunov.py [--steps 100] [--device cpu|cuda] [--threads 0] [--repeat 3]
        [--skip-numpy] [--skip-measures] [--skip-full] [--skip-short] [--short-steps 60] [--short-transient 20]
    The short-orbit case alone: ... --skip-full --skip-top --skip-measures
    Fair single-thread CPU timing (numpy's BLAS reads OMP/OPENBLAS_NUM_THREADS, torch --threads):
    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 python benchmarks/bench_lyapunov.py --threads 1
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time
from typing import Callable

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))  # run from a checkout
from stabilityscope.dynamics import lyapunov  # noqa: E402
from stabilityscope.dynamics.lyapunov import STOP_REASONS, lyapunov_spectrum, map_measures  # noqa: E402
from stabilityscope.dynamics.maps import LayerMap  # noqa: E402


def numpy_spectrum(w: np.ndarray, x0: np.ndarray, q0: np.ndarray, steps: int, transient: int) -> np.ndarray:
    """The reference loop: explicit Jacobian, np.linalg.qr every step, float64; x0 (N,), q0 (N, k)."""
    x, q = x0.copy(), q0.copy()
    logsum = np.zeros(q.shape[1])
    for t in range(steps):
        y = np.tanh(w @ x)
        jac = (1.0 - y * y)[:, None] * w  # diag(φ'(Wx)) W, (N, N)
        q, r = np.linalg.qr(jac @ q)
        if t >= transient:
            logsum += np.log(np.abs(np.diag(r)))
        x = y
    return np.sort(logsum / (steps - transient))[::-1]


def timed(fn: Callable[[], object], device: torch.device) -> tuple[object, float, float]:
    """(result, wall seconds, CPU seconds of this process) of fn(), synchronising CUDA around it."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    w0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return out, time.perf_counter() - w0, time.process_time() - c0


def gemm_rate(n: int, dtype: torch.dtype, device: torch.device, repeat: int = 7) -> float:
    """Best GFLOP/s of an n×n GEMM over ``repeat`` runs: by CPU time with one CPU thread (the core's own
    rate, whatever else runs on the machine), by wall time otherwise."""
    a, b = torch.randn(n, n, dtype=dtype, device=device), torch.randn(n, n, dtype=dtype, device=device)
    a @ b
    runs = [timed(lambda: a @ b, device) for _ in range(repeat)]
    by_cpu = device.type == "cpu" and torch.get_num_threads() == 1
    return 2 * n ** 3 / min(r[2] if by_cpu else r[1] for r in runs) / 1e9


def race(configs: dict[str, Callable[[], np.ndarray]], repeat: int, device: torch.device
         ) -> tuple[dict[str, np.ndarray], dict[str, list[float]], dict[str, list[float]]]:
    """Run every configuration ``repeat`` times, interleaved: (results, wall times, CPU times)."""
    out, wall, cpu = {}, {k: [] for k in configs}, {k: [] for k in configs}
    for _ in range(repeat):
        for label, fn in configs.items():
            out[label], w, c = timed(fn, device)
            wall[label].append(w)
            cpu[label].append(c)
    return out, wall, cpu


def report(results: dict[str, np.ndarray], wall: dict[str, list[float]], cpu: dict[str, list[float]], steps: int,
           base: str | None, ref: np.ndarray | None, extra: dict[str, str]) -> None:
    """One line per configuration: times per step, speed-up against ``base`` and max |Δλ| against ``ref``."""
    for label in results:
        w, c = np.array(wall[label]), np.array(cpu[label])
        line = (f"  {label:34s} wall {1e3 * w.min() / steps:7.1f} min {1e3 * np.median(w) / steps:7.1f} med  "
                f"cpu {1e3 * c.min() / steps:7.1f} min {1e3 * np.median(c) / steps:7.1f} med ms/step")
        if base is not None and label != base:
            bw, bc = np.array(wall[base]), np.array(cpu[base])
            line += (f"  speed-up wall {bw.min() / w.min():4.2f}x min {np.median(bw) / np.median(w):4.2f}x med, "
                     f"cpu {bc.min() / c.min():4.2f}x min {np.median(bc) / np.median(c):4.2f}x med")
        if ref is not None and label != base:
            line += f"  max|Δλ| {np.abs(results[label] - ref).max():.1e}"
        print(line + extra.get(label, ""))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=784)
    p.add_argument("--steps", type=int, default=100, help="steps of the spectrum comparisons (transient: half)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch default)")
    p.add_argument("--skip-numpy", action="store_true")
    p.add_argument("--skip-measures", action="store_true", help="skip part [3]")
    p.add_argument("--skip-full", action="store_true", help="skip part [1] (the full spectrum)")
    p.add_argument("--skip-short", action="store_true", help="skip part [1s] (the short orbit)")
    p.add_argument("--skip-top", action="store_true", help="skip part [2] (top 32 of 16 start states)")
    p.add_argument("--short-steps", type=int, default=60)
    p.add_argument("--short-transient", type=int, default=20)
    p.add_argument("--repeat", type=int, default=3, help="timed runs per configuration, interleaved")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    n, steps, transient = args.n, args.steps, args.steps // 2
    print(f"device={dev} torch={torch.__version__} numpy={np.__version__} threads={torch.get_num_threads()} "
          f"cpus={os.cpu_count()} loadavg={os.getloadavg()[0]:.1f}")

    rates = {dt: gemm_rate(n, dt, dev) for dt in (torch.float64, torch.float32)}
    clock = "CPU time" if dev.type == "cpu" and torch.get_num_threads() == 1 else "wall time"
    print(f"\n[0] limit: {n}×{n} GEMM at {rates[torch.float64]:.1f} GFLOP/s (float64), "
          f"{rates[torch.float32]:.1f} (float32), best of 7 by {clock}")
    for dt, rate in rates.items():
        floor_r1 = (2 + 4 / 3) * n ** 3 / rate / 1e6  # ms: J·Q plus geqrf, Q kept as reflectors
        floor_r2 = (2 + 2 / 3) * n ** 3 / rate / 1e6  # ms: QR every second step
        loop = (2 + 8 / 3) * n ** 3 / rate / 1e6  # ms: GEMM, geqrf and orgqr every step
        print(f"  {str(dt):14s} least ms/step at the GEMM rate: QR every step {floor_r1:.1f}, "
              f"every 2nd {floor_r2:.1f}; GEMM + geqrf + orgqr {loop:.1f}")

    gen = torch.Generator().manual_seed(0)
    w = torch.randn(n, n, generator=gen, dtype=torch.float64) * 1.5 / math.sqrt(n)
    x0 = torch.randn(16, n, generator=gen, dtype=torch.float64)
    maps = {dt: (LayerMap(w.to(dev, dt)), x0.to(dev, dt)) for dt in (torch.float64, torch.float32)}

    def spectrum(dt: torch.dtype, k: int | None, b: int, T: int, a: int, **kw) -> Callable[[], np.ndarray]:
        f, xs = maps[dt]
        return lambda: lyapunov_spectrum(f, xs[:b], k=k, steps=T, transient=a, **kw)

    def explicit(fn: Callable[[], object]) -> Callable[[], object]:
        """fn with the frame always formed as Q (GEMM + geqrf + orgqr), the pre-reflector path."""
        def run():
            saved, lyapunov.REFLECTOR_FRAME = lyapunov.REFLECTOR_FRAME, math.inf
            try:
                return fn()
            finally:
                lyapunov.REFLECTOR_FRAME = saved
        return run

    parts = [("1", None, 1, steps, transient, f"full spectrum, N = k = {n}, 1 start state"),
             ("1s", None, 1, args.short_steps, args.short_transient, f"short orbit: full spectrum, N = k = {n}, "
              "1 start state"),
             ("2", 32, 16, steps, transient, "top k = 32 exponents, 16 start states")]
    skip = {"1": args.skip_full, "1s": args.skip_short, "2": args.skip_top}
    for part, k, b, T, a, title in parts:
        if skip[part]:
            continue
        kk = n if k is None else k
        # lyapunov_spectrum's start frames (seed 0, float64, CPU): one (N, k) frame per start state
        q0 = torch.linalg.qr(torch.randn(b, n, kk, generator=torch.Generator().manual_seed(0), dtype=torch.float64))[0]
        raw = {"float64 default (auto)": spectrum(torch.float64, k, b, T, a),
               "float64 QR every step": spectrum(torch.float64, k, b, T, a, reorthonormalize_every=1),
               "float64 QR every step, Q formed": explicit(spectrum(torch.float64, k, b, T, a,
                                                                    reorthonormalize_every=1)),
               "float64 cholesky, QR every step": spectrum(torch.float64, k, b, T, a, reorthonormalize_every=1,
                                                           qr_method="cholesky"),
               "float32 default (auto)": spectrum(torch.float32, k, b, T, a)}
        if part == "1s":  # the short orbit: the float64 paths only
            raw = {key: fn for key, fn in raw.items() if key in ("float64 default (auto)", "float64 QR every step")}
        for fn in raw.values():  # warm-up (kernels, allocator)
            fn()
        extra, spectra = {}, {}

        def wrap(label: str, fn: Callable[[], object]) -> Callable[[], np.ndarray]:
            def run():
                sp = fn()
                est = float(sp.rounding_error.nan_to_num(0).max())
                extra[label] = f"  QRs {sp.qr_steps}, est. rounding ≤ {est:.0e}"
                return sp.exponents.double().cpu().numpy()
            return run

        configs = {label: wrap(label, fn) for label, fn in raw.items()}
        if not args.skip_numpy:
            wn, xn, qn = w.numpy(), x0.numpy(), q0.numpy()
            configs = {"numpy loop, float64, per start state":
                       lambda: np.stack([numpy_spectrum(wn, xn[i], qn[i], T, a) for i in range(b)]),
                       **configs}
        print(f"\n[{part}] {title}, J = 1.5 tanh, {T} steps (transient {a}); "
              f"{args.repeat} interleaved runs each")
        spectra, wall, cpu = race(configs, args.repeat, dev)
        base = None if args.skip_numpy else "numpy loop, float64, per start state"
        report(spectra, wall, cpu, T, base, None if base is None else spectra[base], extra)
        if k is not None and base is not None:
            # the ceiling: every method forms W·x and J·Q each step, the B orbit states and the B·k tangent
            # vectors through the N×N weights: one GEMM at best
            rows = torch.randn(b * (k + 1), n, dtype=torch.float64, device=dev)
            w64 = maps[torch.float64][0].weight
            rows @ w64.mT
            runs = [timed(lambda: rows @ w64.mT, dev) for _ in range(7)]
            product = min(r[2] if clock == "CPU time" else r[1] for r in runs)
            loop = min(cpu[base] if clock == "CPU time" else wall[base]) / T
            print(f"  ceiling (float64): the products W·x and J·Q alone, one ({b * (k + 1)}, {n})×({n}, {n}) GEMM, "
                  f"take {1e3 * product:.1f} ms per step against the loop's {1e3 * loop:.1f} ms: no float64 "
                  f"method that forms them can exceed {loop / product:.1f}x")
        if base is None:
            ref = spectra["float64 QR every step"]
            print(f"  max |Δλ| default vs QR every step (float64): "
                  f"{np.abs(spectra['float64 default (auto)'] - ref).max():.1e}")
    if args.skip_measures:
        return

    print("\n[3] map_measures, LayerMap 784×784 tanh, B=100 start states, T=500, float32")
    xb = torch.randn(100, 784, generator=gen).to(dev)
    for j in (1.5, 0.5):
        f = LayerMap((torch.randn(784, 784, generator=gen) * j / math.sqrt(784)).to(dev))
        map_measures(f, xb, steps=4)  # warm-up
        m, sec, _ = timed(lambda: map_measures(f, xb, steps=500), dev)
        print(f"  J={j}: {sec:6.2f} s  steps_run={int(m.steps_run)} ({STOP_REASONS[int(m.stop_reason)]})  "
              f"s={float(m.s_mean):.3f}±{float(m.s_std):.3f}  λ_max={float(m.lyapunov_max.mean()):+.4f}  "
              f"M2={float(m.jacobian_product_exponent.mean()):+.4f}  M4={float(m.asymptotic_distance.mean()):.3g}  "
              f"attractor={m.attractor_names[0]}")
        m, sec, _ = timed(lambda: map_measures(f, xb, steps=500, m2_passes=0), dev)
        print(f"  J={j} without M2 (m2_passes=0): {sec:6.2f} s")


if __name__ == "__main__":
    main()
