"""Comparing the runs of a sweep: one pandas table over runs, keyed by what the sweep varied, and one figure.

Runs ``python -m stabilityscope -m optim.lr=0.01,0.02,0.04 ...`` (three canonical runs, trained as one batched
group), then reads the sweep with ``ss.open_traces``: each run's optimal epoch, its best test loss, and the
hidden layer's J at the optimum and at the end. Higher learning rates move J faster toward the edge J = 1.

    python examples/compare_sweep.py            # 6 epochs on 6,000 images
    python examples/compare_sweep.py --smoke    # what CI runs
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import stabilityscope as ss
from stabilityscope import plots

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--smoke", action="store_true", help="tiny sizes, for CI")
parser.add_argument("--out", default="runs/compare_sweep")
args = parser.parse_args()
sizes = ["dataset.train_subset=512", "dataset.test_subset=128", "train.epochs=2"] if args.smoke else \
        ["dataset.train_subset=6000", "dataset.test_subset=2000", "train.epochs=6"]

subprocess.run([sys.executable, "-m", "stabilityscope", "-m", "optim.lr=0.01,0.02,0.04", "analysis=economy",
                "figures=false", "report=false", f"checkpoint_root={args.out}", *sizes], check=True)
(sweep,) = Path(args.out).glob("multirun/*")

runs = ss.open_traces(sweep)
table = runs.set_index(ss.varying_config(runs))[["status", "optimal_epoch", "test_loss_min", "hidden/J_at_optimal",
                                                  "hidden/J_final", "hidden/phase_final"]]
print(table.to_string())
fig = plots.plot_comparison(ss.collection.find_traces(sweep), layer="hidden")
plots.save_figure(fig, args.out, "comparison")
print(f"figure: {Path(args.out) / 'comparison.png'}")
