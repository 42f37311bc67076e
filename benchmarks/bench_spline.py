"""Cost of a degree-1 MARS fit (stabilityscope.models.spline) on Fashion-MNIST and Abalone.

Fashion-MNIST: pixels / 255 (n, 784), one-hot targets (n, 10), the default options (max_terms
min(200, 2·784) + 1 = 201, 32 quantile knots, penalty 2, threshold 1e-3). Abalone: the 3,133 training rows
(n, 10), target Rings. Baseline, measured in the same process on the same data: one ordinary
least-squares fit of the targets on [1, x] (torch.linalg.lstsq, float64). The ratio fit / baseline says
how many linear regressions a MARS fit costs; the absolute seconds depend on the machine and its load.
Also printed: forward-pass terms, kept terms, hidden units of the network, R² and the held-out score.

    python benchmarks/bench_spline.py [--n 60000] [--knots 32] [--max-terms 201] [--device cpu]
"""
from __future__ import annotations

import argparse
import os
import time

import torch

from stabilityscope.models.spline import fit_mars
from stabilityscope.training.data import load_dataset


def least_squares_seconds(x: torch.Tensor, y: torch.Tensor) -> float:
    start = time.perf_counter()
    design = torch.cat([torch.ones(len(x), 1, dtype=torch.float64), x.double()], 1)
    torch.linalg.lstsq(design, y.double(), driver="gelsd")
    return time.perf_counter() - start


def report(name: str, fit, baseline: float, held_out: str) -> None:
    print(f"{name}: fit {fit.seconds:.2f} s = {fit.seconds / baseline:.0f} × one least-squares fit ({baseline:.2f} s); "
          f"forward {len(fit.forward)} terms, kept {len(fit.terms)} ({fit.linear_feature.numel()} linear), "
          f"{fit.n_units} hidden units; train R² {fit.r2:.4f}; {held_out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=60000, help="Fashion-MNIST training examples")
    parser.add_argument("--knots", type=int, default=32)
    parser.add_argument("--max-terms", type=int, default=None)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    root = os.environ.get("STABILITYSCOPE_DATA", "data")

    aba = load_dataset("abalone", root)
    baseline = least_squares_seconds(aba.x_train, aba.y_train)
    fit = fit_mars(aba.x_train, aba.y_train, knots=args.knots, device=args.device)
    mse = float(((fit.predict(aba.x_test) - aba.y_test.double()) ** 2).mean())
    report("abalone 3133 × 10", fit, baseline, f"test MSE {mse:.3f} (1,044 rows)")

    fm = load_dataset("fashion_mnist", root, train_subset=args.n)
    x, x_test = fm.x_train.reshape(len(fm.x_train), -1), fm.x_test.reshape(len(fm.x_test), -1)
    y = torch.nn.functional.one_hot(fm.y_train, 10).double()
    baseline = least_squares_seconds(x, y)
    fit = fit_mars(x, y, knots=args.knots, max_terms=args.max_terms, device=args.device)
    accuracy = float((fit.predict(x_test).argmax(1) == fm.y_test).double().mean())
    report(f"fashion_mnist {len(x)} × 784 × 10", fit, baseline, f"test accuracy (argmax) {accuracy:.4f}")


if __name__ == "__main__":
    main()
