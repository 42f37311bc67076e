"""The app's tasks other than training: each takes the composed config and a run directory.

- ``task=phase_diagram``: the numerical phase diagram as ``phase_diagram.h5`` (separation, u, q0 per
  cell with N, T, seed and sampling) and ``phase_diagram.png`` (log-scale heatmap, theoretical edge
  overlaid);
- ``task=report trace=<path or glob>``: the report(s) of existing traces (:mod:`stabilityscope.reports.run`),
  with the label-free checkpoint pick of rule ``pick=`` (default ``auto``; :func:`stabilityscope.pick_checkpoint`);
- ``task=scaling sweep=<dir or glob>``: the scaling laws of a sweep
  (:mod:`stabilityscope.reports.scaling`);
- ``analysis=describe``: the dissection table of the composed model, without training
  (:mod:`stabilityscope.models.describe`);
- ``analysis=inspect``: the one-shot inspection table of the composed model (at initialisation, with
  ``model.pretrained=true``, or ``model.checkpoint=<file>``), without training
  (:mod:`stabilityscope.recording.inspect`);
- ``task=analyze checkpoints=<glob>``: a trace from saved weights (:mod:`stabilityscope.training.replay`);
- ``task=atlas runs=<dirs or globs>``: the atlas of runs recorded with ``analysis=atlas``
  (:mod:`stabilityscope.reports.atlas`).
"""
from __future__ import annotations

import copy
import logging
from pathlib import Path

import numpy as np

from stabilityscope.analysis.calibration import LAWS_DIR
from stabilityscope.analysis.collection import find_traces
from stabilityscope.analysis.runs_table import is_runs_table
from stabilityscope.analysis.scaling import analyze_sweep
from stabilityscope.config import (
    RUNS_ALLOWED,
    SWEEP_ALLOWED,
    Config,
    GridAxis,
    PhaseDiagramConfig,
    as_options,
    validate,
    value_of,
)
from stabilityscope.errors import ConfigError, TraceError
from stabilityscope.models.describe import describe_model
from stabilityscope.models.registry import build_model, model_family
from stabilityscope.plots.phase import plot_phase_diagram
from stabilityscope.recording.inspect import inspect
from stabilityscope.reports.run import background_from_config, finish_run, write_index, write_report
from stabilityscope.reports.scaling import write_scaling_report
from stabilityscope.theory.numerical_phase_diagram import phase_diagram
from stabilityscope.training.data import dataset_info, load_dataset
from stabilityscope.training.replay import fit_keys, load_weights, trace_from_checkpoints
from stabilityscope.training.trainer import resolve_device

log = logging.getLogger(__name__)


def grid(axis: GridAxis) -> np.ndarray:
    """The points of a grid axis (its options checked that it has at least one)."""
    return np.linspace(axis.start, axis.stop, axis.num)


def run_phase_diagram_task(cfg: PhaseDiagramConfig, run_dir: Path) -> tuple[Path, Path]:
    """Compute the diagram described by ``cfg`` (a PhaseDiagramConfig) and save it under ``run_dir``."""
    cfg = as_options(cfg, PhaseDiagramConfig, "phase_diagram")  # checks the grid, n and the sampling
    x, y = grid(cfg.j0_over_j), grid(cfg.inv_j)
    device = None if cfg.device == "auto" else cfg.device
    activation = value_of(cfg.activation)
    d = phase_diagram(x, y, cfg.n, cfg.steps, activation=activation, seed=cfg.seed, device=device,
                      sampling=cfg.sampling)
    run_dir.mkdir(parents=True, exist_ok=True)
    h5 = d.save(run_dir / "phase_diagram.h5")
    png = plot_phase_diagram(d, run_dir / "phase_diagram.png")
    log.info("Phase diagram (%d×%d cells, N=%d, T=%d, %.1f s): %s, %s", len(y), len(x), d.n, d.steps,
             d.elapsed_s, h5.resolve(), png.resolve())
    return h5, png


def run_report_task(cfg: Config, run_dir: Path) -> Path:
    """``task=report trace=<path or glob>``: the report(s) of existing traces into ``run_dir``."""
    from stabilityscope.analysis.pick import PICK_RULES

    cfg = as_options(cfg, Config)
    validate(cfg)  # trace= is set
    rule = str(cfg.pick)
    if rule != "auto" and rule not in PICK_RULES and rule not in PICK_RULES.values() and ":" not in rule:
        raise ConfigError(f"Invalid value pick={rule!r}: allowed: auto, {', '.join(PICK_RULES)}, or <stat>:<layer> "
                          f"(e.g. J:hidden, chi:hidden, gain_rms:block:blocks.3).")
    paths = find_traces(str(cfg.trace))
    options = dict(figures=bool(cfg.figures), background=background_from_config(cfg.phase_background),
                   cache=cfg.phase_background.cache_dir, pick=str(cfg.pick))
    path = write_report(paths[0], run_dir, **options) if len(paths) == 1 else write_index(paths, run_dir, **options)
    log.info("Report on %d run(s): %s", len(paths), path.resolve())
    return path


def run_scaling_task(cfg: Config, run_dir: Path) -> Path:
    """``task=scaling sweep=<dir or glob>``: analyse the sweep's traces and write the report into ``run_dir``."""
    cfg = as_options(cfg, Config)
    validate(cfg)  # sweep= is set
    sweep = cfg.sweep
    try:
        find_traces(str(sweep))
    except TraceError:
        raise ConfigError(f"Invalid value sweep={str(sweep)!r}: it matches no trace.h5. Allowed: "
                          f"{SWEEP_ALLOWED}.") from None
    sc = cfg.scaling
    analysis = analyze_sweep(str(sweep), layer=str(sc.layer), window=float(sc.window),
                             ordered_only=bool(sc.ordered_only), plateau_fraction=float(sc.plateau_fraction),
                             confidence=float(sc.confidence))
    path = write_scaling_report(analysis, run_dir, figures=bool(cfg.figures))
    for line in analysis.summary():
        log.info(line)
    log.info("Scaling report: %s (with scaling.json, runs.csv%s in %s)", path.resolve(),
             ", figures/" if cfg.figures else "", run_dir.resolve())
    return path


def _runs_of(cfg: Config) -> list[str]:
    """``runs=`` as a list of paths or globs that match at least one trace (ConfigError otherwise)."""
    validate(cfg)  # runs= is set
    runs = cfg.runs
    items = [str(runs)] if isinstance(runs, str) else [str(r) for r in runs]
    # a packaged calibration by its name (its runs table: what the packaged laws were fitted on), from any directory
    items = [str(LAWS_DIR / i / "runs.json") if not Path(i).exists() and is_runs_table(LAWS_DIR / i / "runs.json")
             else i for i in items]
    for item in items:
        if is_runs_table(item):  # a runs table (runs.json) stands for its runs
            continue
        try:
            find_traces(item)
        except TraceError:
            raise ConfigError(f"Invalid value runs={item!r}: it matches no trace.h5. Allowed: "
                              f"{RUNS_ALLOWED}.") from None
    return items


def run_calibrate_task(cfg: Config, run_dir: Path) -> Path:
    """``task=calibrate runs=<dirs or globs>``: fit the guideline's laws and write the report and laws.json."""
    from stabilityscope.analysis.calibration import calibrate
    from stabilityscope.reports.calibration import write_calibration_report

    cfg = as_options(cfg, Config)
    runs = _runs_of(cfg)
    result = calibrate(runs, layer=str(cfg.scaling.layer), tolerance=float(cfg.calibration.tolerance),
                       plateau_fraction=float(cfg.scaling.plateau_fraction), confidence=float(cfg.scaling.confidence),
                       n_boot=int(cfg.calibration.n_boot), j2_window=cfg.calibration.window)
    for record in result.sweep.records:  # the runs table beside laws.json names the code that trained each run
        record.commit = record.commit or str(cfg.calibration.commit or "")
    path = write_calibration_report(result, run_dir, figures=bool(cfg.figures))
    for line in result.summary():
        log.info(line)
    log.info("Calibration report: %s%s", path.resolve(), " (laws.json beside it: recommend(laws=...))"
             if (run_dir / "laws.json").exists() else " (no laws.json: a law could not be fitted)")
    return path


def run_reproduce_task(cfg: Config, run_dir: Path) -> Path:
    """``task=reproduce runs=<dirs or globs>``: the source papers' claims checked, into reproduction.md."""
    from stabilityscope.analysis.reproduction import reproduce
    from stabilityscope.reports.reproduction import write_reproduction

    cfg = as_options(cfg, Config)
    runs = _runs_of(cfg)
    result = reproduce(runs, layer=str(cfg.scaling.layer), tolerance=float(cfg.calibration.tolerance),
                       confidence=float(cfg.scaling.confidence), power=float(cfg.calibration.power),
                       n_boot=int(cfg.calibration.n_boot), j2_window=cfg.calibration.window)
    path = write_reproduction(result, run_dir, figures=bool(cfg.figures))
    for c in result.claims:
        log.info("%s: %s: %s (%s)", c.paper, c.claim, c.verdict, c.ours)
    log.info("Reproduction report: %s", path.resolve())
    return path


def run_atlas_task(cfg: Config, run_dir: Path) -> Path:
    """``task=atlas runs=<dirs or globs>``: the atlas of the runs' traces, into atlas.md, atlas.json and figures."""
    from stabilityscope.analysis.atlas import atlas
    from stabilityscope.reports.atlas import write_atlas

    cfg = as_options(cfg, Config)
    result = atlas(_runs_of(cfg), confidence=float(cfg.scaling.confidence))
    path = write_atlas(result, run_dir, figures=bool(cfg.figures))
    for row in result.pick_table:
        log.info("pick %s: %d of %d runs, excess test loss %.3g: %s", row["statistic"], row["picked"], row["runs"],
                 row["mean_excess_loss"], row["verdict"])
    log.info("Atlas of %d run(s) in %d families: %s", len(result.runs), len(result.families), path.resolve())
    return path


def run_describe_task(cfg: Config) -> str:
    """``analysis=describe``: the dissection table of ``cfg.model`` for ``cfg.dataset`` under ``cfg.analysis``.

    The model is built on the meta device for the dataset's input shape and classes (read from the
    registry, not from disk), without its pretrained weights: shapes only.
    """
    cfg = as_options(cfg, Config)
    validate(cfg)
    input_shape, num_classes = dataset_info(cfg.dataset.name, cfg.dataset.binarize)
    model_options = copy.deepcopy(cfg.model)
    model_options.pretrained = False  # shapes only: no weights are needed (nor downloaded)
    return describe_model(model_options, cfg.analysis, input_shape, num_classes, dataset=cfg.dataset.name)


def run_inspect_task(cfg: Config, run_dir: Path) -> str:
    """``analysis=inspect``: the inspection table of the composed model, printed and saved in ``run_dir``.

    Writes ``inspect.csv`` and ``inspect.txt``. The iterated maps start from the dataset's first
    ``analysis.n_inputs`` test inputs (read from disk only when maps are on).
    """
    cfg = as_options(cfg, Config)
    validate(cfg)
    input_shape, num_classes = dataset_info(cfg.dataset.name, cfg.dataset.binarize)
    device = resolve_device(str(cfg.train.device))
    model = build_model(cfg.model, input_shape, num_classes).to(device)
    source = "pretrained weights" if cfg.model.pretrained else "initialisation"
    if cfg.model.checkpoint:
        saved = load_weights(cfg.model.checkpoint)
        model.load_state_dict(fit_keys(saved.state_dict, model, saved.path))
        source = f"{saved.path} (epoch {saved.epoch})"
    inputs = None
    if cfg.analysis.maps:
        d = cfg.dataset
        data = load_dataset(d.name, d.root, download=d.download, test_subset=cfg.analysis.n_inputs,
                            train_subset=1, normalize=d.normalize, binarize=d.binarize)
        inputs = data.x_test.to(device)
    table = inspect(model, inputs, cfg.analysis, model_options=cfg.model)
    run_dir.mkdir(parents=True, exist_ok=True)
    table.to_csv(run_dir / "inspect.csv", index=False)
    head = (f"model {cfg.model.name} ({model_family(cfg.model)}) at its {source}, for {cfg.dataset.name}: "
            f"{len(table)} FC maps")
    text = head + "\n" + table.to_string(index=False, float_format=lambda v: f"{v:.4g}") + "\n" + (
        "square = False: J, J0, χ and the phase locate the layer's mean-field surrogate (docs/science/mean-field.md); "
        "s, λ_max and the attractor are the iterated map's, from the first test inputs "
        "(docs/science/iterated-maps.md).")
    (run_dir / "inspect.txt").write_text(text + "\n", encoding="utf-8")
    return text


def run_analyze_task(cfg: Config, run_dir: Path) -> Path:
    """``task=analyze checkpoints=<glob>``: the trace of saved weights, then its report and figures."""
    cfg = as_options(cfg, Config)
    validate(cfg)
    trace = trace_from_checkpoints(cfg, run_dir)
    log.info("Trace: %s", trace.resolve())
    if cfg.figures or cfg.report:
        finish_run(cfg, run_dir)
    return trace
