"""One-page run reports: the figures of :mod:`stabilityscope.plots` and the key numbers, in Markdown.

``python -m stabilityscope task=report trace=<path or glob>`` writes, into its own run directory
(``checkpoints/report/<timestamp>/``):

- one trace: ``report.md`` and ``figures/`` (PNG and PDF);
- several (a glob, a sweep directory): ``report.md`` with one row per run and the comparison figure,
  and each run's own report under ``runs/<nn>_<run name>/``.

A training run writes its report into its run directory when it ends (``report=true``, the default;
``figures=false`` leaves the figures out). From Python::

    from stabilityscope.reports import write_report
    write_report("checkpoints/fmnist_fc-fashion_mnist/2026-11-22_12-00-00", "my_report")

The key numbers (EOC-training's reading of a run): the optimal checkpoint (argmin of the test loss),
each layer's coupling J, J/J_c and signed edge distance ½ ln χ there, the final phase, accuracy, the
slope A of the linear growth of J², and the label-free checkpoint pick (:mod:`stabilityscope.analysis.pick`,
rule ``pick=``). A run trained with ``train.control=edge`` gets a section on its weight-decay controller.
"""
from __future__ import annotations

import logging
import math
import re
import warnings
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

import numpy as np

from stabilityscope.analysis.collection import flatten_config, run_summary, varying_config
from stabilityscope.analysis.explainability import explainability_summary, explainability_table
from stabilityscope.analysis.readout import linear_growth_fit, optimal_index, run_activation
from stabilityscope.config import BackgroundConfig, Config, as_options
from stabilityscope.errors import ConfigError, TraceError
from stabilityscope.plots.comparison import plot_comparison
from stabilityscope.plots.phase import BackgroundSpec
from stabilityscope.plots.run import draw_figures
from stabilityscope.plots.style import save_figure
from stabilityscope.recording.trace import Trace, config_section, open_trace
from stabilityscope.reports.markdown import figure_section
from stabilityscope.theory.meanfield import critical_coupling

log = logging.getLogger(__name__)

__all__ = ["background_from_config", "finish_run", "write_index", "write_report"]

PHASE_NAMES = {"P": "P (paramagnetic, ordered)", "F": "F (ferromagnetic, ordered)", "SG": "SG (spin glass, chaotic)",
               "P2": "P2 (period-2, ordered)", "": "—"}
CAPTIONS = {
    "phase_path": ("Training path on the phase diagram",
                   "Each recorded layer's phase coordinates (J0/J, 1/J) over checkpoints (○ start, ■ end, ★ optimal "
                   "checkpoint) on the numerical phase diagram of random networks with the run's activation "
                   "(grey: asymptotic separation of two nearby trajectories, dark = chaotic); black: the mean-field "
                   "edge of chaos χ = 1. Non-square layers are shown as their mean-field surrogate."),
    "coupling": ("Coupling over training",
                 "J² and J0 against epoch; dashed: the linear growth of J² fitted over the ordered part of the first "
                 "50 epochs (EOC-training: slope A ∝ η/((1−α)B)); black: the edge J² = J_c²."),
    "metrics": ("Loss and accuracy",
                "Train and test cross-entropy (without the decay term) and accuracy. Dotted: the optimal checkpoint "
                "(minimum test loss)."),
    "layer_stability": ("Stability of the iterated layer maps",
                        "Per square layer: asymptotic Jacobian norm s (edge s = 1), largest Lyapunov exponent λ_max "
                        "(edge 0) and asymptotic distance D∞ of two nearby orbits (0 when ordered), test loss on "
                        "the right axis (EOC-optimality)."),
    "poincare": ("Poincaré return maps", "(X_t, X_{t+1}) over the second half of each orbit, X_t the projection "
                                         "on the mean start state: a fixed point is one dot, a period-L cycle L "
                                         "dots, a torus a closed curve, chaos a cloud."),
    "eigenvalues": ("Eigenvalues", "Eigenvalues of the square layer's weight matrix with the unit circle and the "
                                   "circular-law radius J of a random matrix with the same spread."),
    "geometry": ("Decision-region geometry",
                 "Per FC layer, on a fixed sample of training inputs: J², the mean and median transition-band "
                 "half-width c_φ(δ)/‖w_k‖ with the mean |signed distance|, the mean in-band fraction, and the share "
                 "of the per-sample squared gradient norm carried by in-band samples (our instantiation of "
                 "FC-geometry, van den Berg arXiv:1605.00329): as J² grows the bands narrow and fewer samples carry "
                 "gradient."),
    "decision_regions": ("Decision regions",
                         "The model's decision regions on the 2-D input with the first layer's hyperplanes and their "
                         "transition bands (our instantiation), at the newest saved state."),
    "explainability": ("Linear explainability over training (SGD-complexity)",
                       "Left: I(F_t;Y), the network's information about the test labels, and μ_Y(F_t;L), the part "
                       "the linear baseline L explains (bands: bootstrap intervals); black: I(L;Y). Right: the "
                       "share μ/I(F_t;Y); dotted: the last checkpoint of the linear phase (share ≥ 0.9)."),
    "control": ("Weight decay held at the edge (train.control=edge)",
                "Left: the statistic the controller read at every update (lines) with the checkpoints' full "
                "measurement of the same quantity (○) and its target (dashed). Middle: the weight decay it set for "
                "each controlled parameter group (a bounded PI step on ln λ). Right: the test loss."),
    "complexity_matrix": ("Increasing complexity",
                          "μ_Y(F_t;F_s)/I(F_t;Y): how much of checkpoint t's information about the labels "
                          "checkpoint s explains (1 = all of it); below the diagonal, earlier checkpoints."),
}

REGRESSION_METRICS_CAPTION = ("Mean squared error and R²",
                              "Train and test mean squared error (without the decay term) and R² = 1 − SSE/SST. "
                              "Dotted: the optimal checkpoint (minimum test MSE).")


def _fmt(v: Any, digits: int = 4) -> str:
    if v is None:
        return "—"
    if isinstance(v, (float, np.floating)):
        return "—" if not math.isfinite(float(v)) else f"{float(v):.{digits}g}"
    return str(v)


def _pct(v: Any) -> str:
    return "—" if v is None or not math.isfinite(float(v)) else f"{100 * float(v):.2f} %"


def _config_line(cfg: Mapping[str, Any]) -> str:
    """The run's configuration in one line: model, data, optimiser, schedule, analysis."""
    m, d, o, t, a = (config_section(cfg, k) for k in ("model", "dataset", "optim", "train", "analysis"))
    model = f"model {m.get('name', '?')}"
    extra = [f"{k} {m[k]}" for k in ("activation", "width") if k in m]
    extra += [f"{k} {m[k]}" for k, plain in (("depth", 1), ("init", "random")) if m.get(k, plain) != plain]
    if extra:
        model += f" ({', '.join(extra)})"
    data = f"dataset {d.get('name', '?')}"
    subsets = [f"{k.split('_')[0]} subset {d[k]}" for k in ("train_subset", "test_subset") if d.get(k)]
    if subsets:
        data += f" ({', '.join(subsets)})"
    optim = f"{o.get('name', '?')} lr {o.get('lr', '?')}"
    if o.get("name") == "sgd":
        optim += f", momentum {o.get('momentum', '?')}"
    optim += f", weight decay {o.get('weight_decay', 0)} (PyTorch convention; Keras λ = half)"
    train = f"batch {t.get('batch_size', '?')}, {t.get('epochs', '?')} epochs, seed {t.get('seed', '?')}"
    return " · ".join([model, data, optim, train, f"analysis {a.get('name', '?')}"])


def _layer_rows(tr: Trace, best: int) -> list[str]:
    """Markdown rows: each layer at the optimal and at the last checkpoint."""
    rows = []
    for layer in tr.layers:
        info, stats = tr.layer_info(layer), set(tr.stats(layer))

        def at(name: str, i: int) -> Any:
            return tr.stat(layer, name)[i] if name in stats else None

        jc = critical_coupling(str(info.get("meanfield_activation") or "tanh"))
        j = at("J", best)
        kind = str(info.get("kind", ""))
        if kind not in ("chain", "model_map"):  # chains and model maps: iterated as a module, no single matrix
            kind = "square" if info.get("square") else "surrogate"
        phase, phase_end = at("phase", best), at("phase", -1)
        attractor = at("attractor", -1)
        rows.append("| " + " | ".join([
            f"`{layer}`", f"{info.get('fan_in')} → {info.get('fan_out')} ({kind})", _fmt(j),
            _fmt(at("J0", best)), _fmt(None if j is None else j / jc), _fmt(at("edge_distance", best), 3),
            PHASE_NAMES.get(str(phase), str(phase)) if phase is not None else "—",
            _fmt(at("s_mean", best), 3), _fmt(at("lambda_max", best), 3), _fmt(at("J", -1)),
            PHASE_NAMES.get(str(phase_end), str(phase_end)) if phase_end is not None else "—",
            str(attractor).replace("_", " ") if attractor is not None and str(attractor) else "—",
        ]) + " |")
    return rows


def _growth_line(tr: Trace) -> Optional[str]:
    """The fitted slope A of J² of the first square layer (else the first layer), if it can be fitted."""
    coupled = [n for n in tr.layers if "J" in tr.stats(n)]  # chains and model maps have no single J
    layers = [n for n in coupled if tr.layer_info(n).get("square")] or coupled
    if not layers:
        return None
    layer = layers[0]
    jc2 = critical_coupling(run_activation(tr)) ** 2
    # fractional under step checkpoints
    slope, _ = linear_growth_fit(tr.epoch_fraction, tr.stat(layer, "J") ** 2, edge=jc2)
    if not math.isfinite(slope):
        return f"| J² growth (`{layer}`) | not fitted: fewer than two ordered checkpoints in the first 50 epochs |"
    return f"| J² growth (`{layer}`, ordered part of the first 50 epochs) | A = {slope:.4g} per epoch |"


def report_markdown(tr: Trace, figures: Mapping[str, Path], skipped: Mapping[str, str], base: Path,
                    pick: Optional[str] = "auto") -> str:
    """The report text; figure links are relative to ``base`` (the report's folder); ``pick``: the rule of the
    label-free checkpoint pick shown among the key numbers (None: none)."""
    s = run_summary(tr)
    epochs = tr.checkpoints
    best = optimal_index(tr)
    cfg = tr.config or {}
    score = "r2" if tr.is_regression else "acc"
    acc = tr.metric(f"test_{score}")
    top = int(np.nanargmax(acc)) if np.isfinite(acc).any() else None
    at_top = f" at epoch {int(epochs[top])}" if top is not None else ""
    if tr.is_regression:  # MSE and R², no accuracy
        key_rows = [
            f"| optimal checkpoint (minimum test MSE) | **epoch {s['optimal_epoch']}**: test MSE "
            f"{_fmt(s['test_loss_min'])}, test R² {_fmt(s['test_r2_at_optimal'], 4)} |",
            f"| final checkpoint | epoch {s['last_epoch']}: test MSE {_fmt(s['final_test_loss'])}, test R² "
            f"{_fmt(s['final_test_r2'], 4)}, train R² {_fmt(s['final_train_r2'], 4)} |",
            f"| best test R² | {_fmt(s['best_test_r2'], 4)}{at_top} |"]
    else:
        key_rows = [
            f"| optimal checkpoint (minimum test loss) | **epoch {s['optimal_epoch']}**: test loss "
            f"{_fmt(s['test_loss_min'])}, test accuracy {_pct(s['test_acc_at_optimal'])} |",
            f"| final checkpoint | epoch {s['last_epoch']}: test loss {_fmt(s['final_test_loss'])}, test accuracy "
            f"{_pct(s['final_test_acc'])}, train accuracy {_pct(s['final_train_acc'])} |",
            f"| best test accuracy | {_pct(s['best_test_acc'])}{at_top} |"]
    lines = [
        f"# Run report: {tr.attrs.get('model', '?')} on {tr.attrs.get('dataset', '?')}",
        "",
        f"Trace `{tr.path.resolve()}` · status **{tr.status}** · {len(epochs)} checkpoints (epochs "
        f"{int(epochs[0])}–{int(epochs[-1])})" + (" · the run was still writing when this was "
                                                  "made" if tr.status == "running" else ""),
        "",
        _config_line(cfg),
        "",
        "## Key numbers",
        "",
        "| quantity | value |",
        "|---|---|",
        *key_rows,
    ]
    init = _spline_init_line(tr)
    if init:
        lines.append(init)
    growth = _growth_line(tr)
    if growth:
        lines.append(growth)
    if pick is not None and not tr.is_regression:
        lines.append(_pick_line(tr, pick))
    lines += [
        "",
        f"### Layers at the optimal checkpoint (epoch {int(epochs[best])}) and at the end (epoch {int(epochs[-1])})",
        "",
        "| layer | shape | J | J0 | J/J_c | edge distance ½ ln χ | phase | s | λ_max | final J | final phase | final "
        "attractor |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
        *_layer_rows(tr, best),
        "",
        "J = std(W)·√N and J0 = mean(W)·N (N = fan-in); J_c is the edge at J0 = 0 (1 for tanh, √2 for ReLU). "
        "The edge distance ½ ln χ is the mean-field estimate of the largest Lyapunov exponent: negative is "
        "ordered, positive chaotic, 0 on the edge. A non-square layer's values describe its mean-field "
        "surrogate (a random square matrix with the same entry statistics); s and λ_max belong to the iterated "
        "map of a square layer.",
    ]
    lines += _control_lines(tr)
    lines += _geometry_lines(tr, best)
    lines += _explainability_lines(tr)
    captions = {**CAPTIONS, "metrics": REGRESSION_METRICS_CAPTION} if tr.is_regression else CAPTIONS
    lines += figure_section(figures, skipped, base, captions)
    return "\n".join(lines) + "\n"


def _pick_line(tr: Trace, rule: str) -> Optional[str]:
    """The key-number row of the label-free checkpoint pick (``ss.pick_checkpoint``), or why there is none."""
    from stabilityscope.analysis.pick import pick_checkpoint

    try:
        p = pick_checkpoint(tr, rule)
    except (ConfigError, TraceError, ImportError) as exc:
        return f"| label-free pick (rule `{rule}`) | none: {str(exc).splitlines()[0]} |"
    return f"| label-free pick (rule `{rule}`: {p.statistic} reaches {p.edge:g}) | {p.describe()} |"


def _control_lines(tr: Trace) -> list[str]:
    """The weight-decay controller's section (runs trained with train.control=edge), else nothing."""
    log = tr.control
    if log is None:
        return []
    law = log.law
    lines = ["", "### Weight decay held at the edge", "",
             f"The controller read {log.statistic_name} of {', '.join(f'`{m}`' for m in log.maps)} every "
             f"{law.get('every', '?')} steps ({len(log)} updates) and set the weight decay of {len(log.groups)} "
             f"parameter group(s) by a bounded PI step on ln λ (k_p = {_fmt(law.get('proportional_gain'))}, k_i = "
             f"{_fmt(law.get('integral_gain'))} per epoch, at most {_fmt(law.get('max_step'))} per update, λ in "
             f"[{_fmt(law.get('decay_min'))}, {_fmt(law.get('decay_max'))}]).", ""]
    if not len(log):
        return lines + ["No update yet."]
    lines += ["| group | maps | target S* | S at the last update | λ at the last update | λ median over the last "
              "fifth | ln(S/S*) range over the last fifth |", "|---|---|---|---|---|---|---|"]
    tail = slice(len(log) - max(1, len(log) // 5), None)
    for g, maps in enumerate(log.groups):
        s_last = np.median(log.statistic[-1, maps])
        e = log.error[tail, g]
        e = e[np.isfinite(e)]
        band = f"{e.min():+.3f} … {e.max():+.3f}" if e.size else "—"
        lines.append(f"| {g} | {', '.join(f'`{log.maps[m]}`' for m in maps)} | "
                     f"{_fmt(float(np.median(log.targets[maps])))} | {_fmt(float(s_last))} | "
                     f"{_fmt(float(log.weight_decay[-1, g]))} | {_fmt(float(np.median(log.weight_decay[tail, g])))} | "
                     f"{band} |")
    return lines


def _spline_init_line(tr: Trace) -> Optional[str]:
    """The key-number row of a spline-initialised run (model.init=mars): the MARS fit it started from."""
    a = tr.attrs
    if "mars_terms" not in a:
        return None
    score = (f"test MSE {_fmt(a['mars_test_mse'])}, test R² {_fmt(a['mars_test_r2'], 4)}" if "mars_test_mse" in a
             else f"test accuracy of argmax {_pct(a['mars_test_acc'])}" if "mars_test_acc" in a else "")
    return (f"| initialisation (Spline-FC, model.init=mars) | MARS fit of {int(a['mars_terms'])} terms "
            f"({int(a['mars_units'])} units) in {float(a['mars_fit_seconds']):.3g} s (included in the wall time), "
            f"train R² {_fmt(a['mars_train_r2'], 4)}" + (f", {score}" if score else "") + " |")


def _explainability_lines(tr: Trace) -> list[str]:
    """The SGD-complexity section (traces recorded with analysis.explainability=true), else nothing."""
    if tr.baseline is None:
        return []
    s = explainability_summary(tr)
    table = explainability_table(tr)
    steps, frac = table["step"], table["epoch_fraction"]
    picks = sorted(set(np.unique(np.linspace(0, len(steps) - 1, min(len(steps), 8)).round().astype(int))))
    rows = [f"| {int(steps[i])} | {frac[i]:.3g} | {_fmt(table['info_F_Y'][i], 3)} "
            f"[{_fmt(table['info_F_Y_low'][i], 3)}, {_fmt(table['info_F_Y_high'][i], 3)}] | "
            f"{_fmt(table['mu_F_L'][i], 3)} [{_fmt(table['mu_F_L_low'][i], 3)}, {_fmt(table['mu_F_L_high'][i], 3)}] | "
            f"{_fmt(table['info_F_Y_given_L'][i], 3)} |" for i in picks]
    end = s["linear_phase_end_step"]
    if end is None:
        where = "no checkpoint (the share never reached the threshold)"
    elif s["linear_phase_ended"]:
        where = f"step {end} (epoch {s['linear_phase_end_epoch']:.3g})"
    else:
        where = f"the end of training (step {end}): the share never fell below it"
    warn = [] if s["baseline_converged"] else ["", f"**Warning:** {tr.baseline.get('warning', '')}"]
    return ["", "## Linear explainability over training (SGD-complexity)", "",
            f"Baseline L (logistic regression on the flattened training inputs): test accuracy "
            f"{_pct(s['baseline_test_acc'])}, I(L;Y) = {_fmt(s['info_L_Y'], 4)} bits.", *warn, "",
            f"- μ_Y(F_t;L) / I(F_t;Y) ≥ {s['threshold']:g} (L explains the network) up to {where}; the share is "
            f"read from the first trained checkpoint with ≥ 10% of I(L;Y) on, its largest value "
            f"{_fmt(s['max_share'], 3)} (step {s['max_share_step']}), its final value {_fmt(s['final_share'], 3)}.",
            f"- At the end (step {s['final_step']}): I(F;Y) = {_fmt(s['final_info_F_Y'], 4)} bits, "
            f"μ_Y(F;L) = {_fmt(s['final_mu_F_L'], 4)} bits; I(F;Y) − I(L;Y) = {_fmt(s['gap_F_L'], 3)} bits, "
            f"μ − I(L;Y) = {_fmt(s['mu_minus_L'], 3)} bits.", "",
            "| step | epoch | I(F_t;Y) [interval] | μ_Y(F_t;L) [interval] | I(F_t;Y\\|L) |", "|---|---|---|---|---|",
            *rows, "",
            "Bits, plug-in estimates on the test set with percentile-bootstrap intervals "
            "(analysis.explainability_boot resamples). Plug-in information is biased upward by about "
            "(cells)/(2n ln 2) bits: K³ cells for I(F;Y|L), so compare binary tasks (K = 2) most safely."]


def _geometry_lines(tr: Trace, best: int) -> list[str]:
    """The decision-region geometry section (traces recorded with analysis.geometry=true), else nothing."""
    stats = ("band_halfwidth_mean", "in_band_fraction", "gradient_share_in_band", "occupied_patterns",
             "mean_abs_distance")
    layers = [n for n in tr.layers if all(s in tr.stats(n) for s in stats)]
    if not layers:
        return []
    analysis = (tr.config or {}).get("analysis") or {}
    epochs = tr.checkpoints
    rows = []
    for n in layers:
        for label, i in (("start", 0), ("optimal", best), ("end", len(epochs) - 1)):
            v = {s: tr.stat(n, s)[i] for s in stats}
            j = tr.stat(n, "J")[i] if "J" in tr.stats(n) else float("nan")
            rows.append(f"| {n} | {label} (epoch {int(epochs[i])}) | {_fmt(j * j)} | {_fmt(v['band_halfwidth_mean'])} "
                        f"| {_fmt(v['in_band_fraction'])} | {_fmt(v['gradient_share_in_band'])} | "
                        f"{_fmt(v['occupied_patterns'])} | {_fmt(v['mean_abs_distance'])} |")
    return ["", "## Decision-region geometry (FC-geometry; our instantiation)", "",
            f"On the first {analysis.get('geometry_samples', '?')} training inputs, band threshold "
            f"δ = {analysis.get('geometry_delta', '?')}.", "",
            "| layer | checkpoint | J² | band half-width (mean) | in-band fraction | gradient share in band | "
            "occupied patterns | mean \\|d\\| |",
            "|---|---|---|---|---|---|---|---|", *rows, "",
            "Band half-width c_φ(δ)/‖w_k‖ with c = ½ ln((1−δ)/δ) for tanh and ln((1−δ)/δ) for sigmoid; ReLU-like "
            "units have no band and report their active fraction instead; a layer without an activation (a head) "
            "has none (—). The gradient share is the part of the per-sample squared gradient norm of the layer's "
            "weights carried by in-band (sample, unit) pairs."]


def write_report(trace: Union[str, Path, Trace], out_dir: Union[str, Path], *, figures: bool = True,
                 background: Union[bool, BackgroundSpec] = True, cache: Optional[Union[str, Path]] = None,
                 formats: Sequence[str] = ("png", "pdf"), pick: Optional[str] = "auto") -> Path:
    """Write ``<out_dir>/report.md`` (and the figures into ``<out_dir>/figures/``) for one run.

    Args:
        trace: a trace, its ``trace.h5`` or its run directory.
        out_dir: the report's folder (created).
        figures: draw the figures and link them; False: the key numbers only.
        background: as in :func:`stabilityscope.plots.phase.plot_phase_path`.
        cache: folder of cached phase-diagram backgrounds (None: the user cache).
        formats: figure files to write; PNG always (the report shows it), PDF linked when written.
        pick: the rule of the label-free checkpoint pick among the key numbers
            (:func:`~stabilityscope.analysis.pick.pick_checkpoint`; None: left out).

    Returns:
        The path of ``report.md``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    own = not isinstance(trace, Trace)
    tr = open_trace(trace) if own else trace
    try:
        if len(tr) == 0:
            raise TraceError(f"{tr.path} holds no checkpoint yet; there is nothing to report.")
        written, skipped = (draw_figures(tr, out / "figures", background=background, cache=cache, formats=formats)
                            if figures else ({}, {}))
        text = report_markdown(tr, written, skipped, out, pick)
    finally:
        if own:
            tr.close()
    path = out / "report.md"
    path.write_text(text, encoding="utf-8")
    return path


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "run"


def write_index(paths: Sequence[Path], out_dir: Union[str, Path], *, figures: bool = True,
                background: Union[bool, BackgroundSpec] = True, cache: Optional[Union[str, Path]] = None,
                formats: Sequence[str] = ("png", "pdf"), pick: Optional[str] = "auto") -> Path:
    """Reports for several runs: each under ``runs/``, and ``report.md`` comparing them in one table
    (what the runs' configs vary, the optimum, accuracy, the first square layer at the optimum) with the
    comparison figure. Unreadable runs are listed, not fatal."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows, failed, traces = [], [], []
    for i, path in enumerate(paths):
        sub = out / "runs" / f"{i:02d}_{_safe(path.parent.name)}"
        try:
            with open_trace(path) as tr:
                report = write_report(tr, sub, figures=figures, background=background, cache=cache, formats=formats,
                                      pick=pick)
                coupled = [n for n in tr.layers if "J" in tr.stats(n)]  # chains and model maps have no J
                layer = next((n for n in coupled if tr.layer_info(n).get("square")), coupled[0] if coupled else None)
                rows.append({"report": report.relative_to(out).as_posix(), "path": str(path),
                             **flatten_config(tr.config or {}), **run_summary(tr), "status": tr.status,
                             "_layer": layer})
                traces.append(path)
        except TraceError as exc:
            failed.append(f"- `{path}`: {exc}")
            warnings.warn(f"report skipped an unreadable trace: {path}: {exc}", stacklevel=2)
    keys = varying_config(rows)
    lines = [f"# Report on {len(paths)} runs", ""]
    if keys:
        lines += [f"The runs differ in: {', '.join(f'`{k}`' for k in keys)}.", ""]
    regression = [("test_r2_at_optimal" in r) for r in rows]  # MSE runs: R², never an accuracy
    score = "test R²" if rows and all(regression) else "test acc / R²" if any(regression) else "test acc"
    head = ["run", *keys, "status", "optimal epoch", "min test loss", f"{score} at optimum", f"final {score}",
            "layer", "J at optimum", "edge distance at optimum", "final phase"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r, is_regression in zip(rows, regression):
        layer = r["_layer"]
        scores = ([f"R² {_fmt(r['test_r2_at_optimal'], 4)}", f"R² {_fmt(r['final_test_r2'], 4)}"] if is_regression
                  else [_pct(r["test_acc_at_optimal"]), _pct(r["final_test_acc"])])
        cells = [f"[{Path(r['path']).parent.name}]({r['report']})", *(_fmt(r.get(k)) for k in keys), r["status"],
                 _fmt(r["optimal_epoch"]), _fmt(r["test_loss_min"]), *scores, f"`{layer}`",
                 _fmt(r.get(f"{layer}/J_at_optimal")),
                 _fmt(r.get(f"{layer}/edge_distance_at_optimal"), 3), _fmt(r.get(f"{layer}/phase_final"))]
        lines.append("| " + " | ".join(cells) + " |")
    if failed:
        lines += ["", "Not reported (unreadable or empty):", "", *failed]
    if figures and len(traces) > 1:
        try:
            fig = plot_comparison(traces, background=background, cache=cache)
            png = save_figure(fig, out / "figures", "comparison", ("png", *(f for f in formats if f != "png")))[0]
            lines += ["", "## Comparison", "", f"![Comparison of the runs]({png.relative_to(out).as_posix()})", "",
                      "One layer of every run: its path on the phase plane (○ start, ■ end, ★ optimal), J² against "
                      "epoch with the edge J² = J_c², and the test loss with each run's minimum (★)."]
        except TraceError as exc:
            lines += ["", f"No comparison figure: {exc}"]
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# ------------------------------------------------------------------------------ the app's entry points


def background_from_config(section: BackgroundConfig) -> Union[bool, BackgroundSpec]:
    """The ``phase_background`` config section as a BackgroundSpec (False when disabled)."""
    section = as_options(section, BackgroundConfig, "phase_background")
    if not section.enabled:
        return False
    return BackgroundSpec(n=int(section.n), steps=int(section.steps), seed=int(section.seed),
                          j0_over_j=(float(section.j0_over_j.start), float(section.j0_over_j.stop),
                                     int(section.j0_over_j.num)),
                          inv_j=(float(section.inv_j.start), float(section.inv_j.stop), int(section.inv_j.num)))


def finish_run(cfg: Config, run_dir: Path) -> None:
    """After training: the report (``report=true``) and/or the figures (``figures=true``) of the run."""
    cfg = as_options(cfg, Config)
    options = dict(background=background_from_config(cfg.phase_background), cache=cfg.phase_background.cache_dir)
    trace = run_dir / "trace.h5"
    if cfg.report:
        path = write_report(trace, run_dir, figures=bool(cfg.figures), pick=str(cfg.pick), **options)
        log.info("Report: %s", path.resolve())
        if cfg.figures:
            log.info("Figures: %s", (run_dir / "figures").resolve())
    elif cfg.figures:
        written, _ = draw_figures(trace, run_dir / "figures", **options)
        log.info("Figures: %s", ", ".join(str(p.resolve()) for p in written.values()))
    if cfg.figures and cfg.dataset.name == "toy2d":
        from stabilityscope.analysis.saved_run import load_run_model
        from stabilityscope.plots.geometry import plot_decision_regions
        from stabilityscope.training.data import load_dataset

        model, _ = load_run_model(run_dir)
        d = cfg.dataset
        data = load_dataset(d.name, d.root, train_subset=d.train_subset, test_subset=d.test_subset, binarize=d.binarize)
        save_figure(plot_decision_regions(model, data.x_train, data.y_train, delta=cfg.analysis.geometry_delta),
                    run_dir / "figures", "decision_regions")
