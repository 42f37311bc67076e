"""The phase diagram of random networks: numerical (batched over every cell) against the mean-field edge.

For each cell (J0/J, 1/J) a random tanh network x -> tanh(Wx) of size N is iterated from two nearby start states;
their asymptotic separation is ~0 in the ordered phase and ~sqrt(2N) in the chaotic one. The black line is the
mean-field edge of chaos chi = 1 (the J = 1 segment and the de Almeida-Thouless line).

    python examples/phase_diagram.py            # N = 500, 41 x 25 cells, T = 200: about 10 s on 2 CPU cores
    python examples/phase_diagram.py --smoke    # what CI runs
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

import stabilityscope as ss
from stabilityscope.plots.phase import plot_phase_diagram

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--smoke", action="store_true", help="tiny sizes, for CI")
parser.add_argument("--out", default="runs/phase_diagram")
args = parser.parse_args()
n, steps, cells = (64, 40, (9, 6)) if args.smoke else (500, 200, (41, 25))

x = np.linspace(-2.0, 2.0, cells[0])  # J0/J
y = np.linspace(0.1, 2.5, cells[1])   # 1/J
d = ss.phase_diagram(x, y, n=n, steps=steps, seed=0)
chaotic = d.separation > 0.5 * np.sqrt(2 * n)
print(f"N = {n}, T = {steps}: {chaotic.mean():.0%} of {chaotic.size} cells chaotic")
j0 = np.argmin(np.abs(x))  # the column J0 = 0: the edge is at 1/J = 1 in mean-field theory
onset = y[chaotic[:, j0]].max() if chaotic[:, j0].any() else float("nan")
print(f"at J0 = 0, the largest 1/J with a chaotic cell: {onset:.2f} (mean-field edge: 1/J = 1; finite N and T blur it)")

out = Path(args.out)
out.mkdir(parents=True, exist_ok=True)
print(f"figure: {plot_phase_diagram(d, out / 'phase_diagram.png')}")
