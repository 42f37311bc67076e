"""The README's FC-geometry tables from run traces (public API only).

    python analysis/geometry_tables.py subsample <sweep dir>   # full vs boundary vs random: mean ± std over seeds
    python analysis/geometry_tables.py link <run dir or trace> [...]  # in-band fraction and gradient share vs J²

``subsample``: per ``dataset.subsample`` value, the final and the best test accuracy and loss (mean ± sample
std over seeds), and the wall time of training plus checkpoints (``/checkpoints/wall_time`` at the end).
``link``: per run, the hidden layer's J², band half-width, in-band fraction and gradient share at
selected checkpoints, and least-squares slopes of the in-band fraction and the share against J².
"""
from __future__ import annotations

import sys

import numpy as np

import stabilityscope as ss


def _ms(values: np.ndarray, digits: int = 4) -> str:
    values = np.asarray(values, dtype=float)
    sd = values.std(ddof=1) if len(values) > 1 else float("nan")
    return f"{values.mean():.{digits}f} ± {sd:.{digits}f}"


def subsample_table(sweep: str) -> str:
    runs = ss.open_traces(sweep)
    runs = runs[runs["status"] == "finished"]
    runs = runs.assign(wall_time=[_wall(p) for p in runs["path"]])
    lines = ["| training set | seeds | final test accuracy | final test loss | best test loss | wall time (s) |",
             "|---|---|---|---|---|---|"]
    for kind in ("none", "boundary", "random"):
        r = runs[runs["dataset.subsample"] == kind]
        if not len(r):
            continue
        frac = 1.0 if kind == "none" else float(r["dataset.subsample_fraction"].iloc[0])
        label = {"none": "full", "boundary": f"{frac:.0%} boundary", "random": f"{frac:.0%} random"}[kind]
        lines.append(f"| {label} | {', '.join(str(int(s)) for s in sorted(r['train.seed']))} | "
                     f"{_ms(r['final_test_acc'])} | {_ms(r['final_test_loss'])} | {_ms(r['test_loss_min'])} | "
                     f"{_ms(r['wall_time'], 1)} |")
    return "\n".join(lines)


def _wall(path: str) -> float:
    """Seconds of training and checkpoints when the run ended."""
    with ss.open_trace(path) as tr:
        return float(tr.wall_time[-1])


def link_table(paths: list[str], layer: str = "hidden") -> str:
    lines = []
    for path in paths:
        with ss.open_trace(path) as tr:
            e = tr.checkpoints
            j2 = tr.stat(layer, "J") ** 2
            cols = {s: tr.stat(layer, s) for s in ("band_halfwidth_mean", "in_band_fraction", "gradient_share_in_band",
                                                    "mean_abs_distance")}
            wd = tr.config["optim"]["weight_decay"]
            lines += [f"run {path}: optim.weight_decay = {wd}", "",
                      "| epoch | J² | band half-width (mean) | mean \\|d\\| | in-band fraction | gradient share in band | test loss |",
                      "|---|---|---|---|---|---|---|"]
            picks = sorted(set(np.linspace(0, len(e) - 1, 7).round().astype(int)))
            loss = tr.metric("test_loss")
            for i in picks:
                lines.append(f"| {int(e[i])} | {j2[i]:.3f} | {cols['band_halfwidth_mean'][i]:.3f} | "
                             f"{cols['mean_abs_distance'][i]:.3f} | {cols['in_band_fraction'][i]:.4f} | "
                             f"{cols['gradient_share_in_band'][i]:.4f} | {loss[i]:.4f} |")
            fit = e >= 1  # after the first epoch (epoch 0 is the untrained network)
            s_f = np.polyfit(j2[fit], cols["in_band_fraction"][fit], 1)[0]
            s_g = np.polyfit(j2[fit], cols["gradient_share_in_band"][fit], 1)[0]
            r_f = np.corrcoef(j2[fit], cols["in_band_fraction"][fit])[0, 1]
            lines += ["", f"slopes over epochs ≥ 1: in-band fraction {s_f:+.4f} per unit J² (r = {r_f:+.3f}); "
                          f"gradient share {s_g:+.4f} per unit J²", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    what, *args = sys.argv[1:]
    print(subsample_table(args[0]) if what == "subsample" else link_table(args))
