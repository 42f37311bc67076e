"""stabilityscope: where a neural network sits between order and chaos, and how training moves it.

A fully connected layer with weights W (N = fan-in) is read as the coupling matrix of a random
recurrent network x_{t+1} = φ(W x_t) (EOC-training). Its phase coordinates are J = std(W)·√N and
J0 = mean(W)·N; the edge of chaos is the mean-field stability χ = 1 (J = 1 for tanh at J0 = 0).
Training moves a network along a path in (J0/J, 1/J); the best test loss lies near the edge.

Typical use in a notebook::

    import stabilityscope as ss

    tr = ss.open_trace("checkpoints/fmnist_fc-fashion_mnist/2026-11-22_12-00-00")
    epochs, J = tr.checkpoints, tr.stat("hidden", "J")        # numpy arrays over checkpoints
    best = tr.checkpoints[tr.metric("test_loss").argmin()]    # EOC-training's optimal epoch
    runs = ss.open_traces("checkpoints/multirun/*/*")         # one pandas row per run, config columns
                                                              # (optim.lr, ...) and the key numbers

    from stabilityscope import plots                          # Figure objects, shown inline in Jupyter
    plots.plot_phase_path(tr)                                 # path on the phase diagram; also plot_coupling,
                                                              # plot_metrics, plot_layer_stability, plot_poincare,
                                                              # plot_eigenvalues, plot_comparison
    ss.reports.write_report(tr, "out")                        # out/report.md with the figures

    records = ss.dissect(model)                               # every FC map of any timm/torchvision/torch model:
    [(r.name, r.shape, r.role, r.square) for r in records]    # ('blocks.0.attn.qkv.q', (192, 192), 'attn_q', True), ...
    records[0].weight(model)                                  # its (fan_out, fan_in) matrix (views, 1×1 convs too)

    J0, J = ss.phase_coordinates(weight)                      # any matrix or stack of matrices
    u, q, chi = ss.meanfield.order_parameters(0.0, 1.5)       # q = 0.3526, χ = 1.1393
    d = ss.phase_diagram(np.linspace(-2, 3, 51), np.linspace(0.1, 2, 39), n=1000, steps=500)
    d.separation                                              # (39, 51) asymptotic distance per cell

    F = ss.LayerMap(W, b, activation="tanh")                  # x → tanh(Wx + b); ss.ModuleMap(module, shape)
    m = ss.map_measures(F, x0, steps=500)                     # M1–M5, Benettin λ_max, attractor class (EOC-optimality)
    spec = ss.lyapunov_spectrum(F, x0, k=10)                  # top-10 exponents by QR, with convergence trace

    g = ss.geometry.layer_geometry(W, b, X, "tanh", delta=0.1)  # FC-geometry (ours): hyperplanes, patterns,
    g.summary()                                               # band half-widths c(δ)/‖w_k‖, in-band fraction,
                                                              # gradient share of in-band samples

    a = ss.analyze_sweep("checkpoints/multirun/<stamp>")      # scaling laws of a sweep: A = C·η/((1−α)B), collapse
    a.combined.C, a.decay.weight_decay_star                   # against τ, the decay λ* whose J² plateau is the edge
    r = ss.recommend(60)                                      # lr, batch, decay predicted to reach the edge in 60
    print(r.explain())                                        # epochs, from the packaged calibrated laws
    cal = ss.calibration.calibrate(["<growth sweep>", "<decay sweep>"])   # measure those laws on your runs
    rep = ss.reproduction.reproduce("checkpoints/multirun/*")  # the papers' claims, one verdict each
    ss.verdicts.judge(1.06, (0.72, 1.40), ss.verdicts.Margin(0.85, 1.15), n=2)  # an interval against a margin:
                                                              # inconclusive, 4 seeds for 80% power

    model = ss.build_model(ss.ModelConfig(), (1, 28, 28), 10)    # typed options, no Hydra needed
    opts = ss.AnalysisConfig(maps=True, n_inputs=16)
    tracker = ss.LayerTracker(model, ss.tracked_records(model, ss.ModelConfig(), opts, (1, 28, 28)), opts,
                              probe_inputs=x_test[:16])
    tracker.measure(model)                                    # one checkpoint's statistics per FC map

    with ss.Recorder(model, "runs/my_run", probe_inputs=x_test[:16]) as rec:   # your own training loop
        rec.checkpoint(epoch, step=step, metrics={"test_loss": loss})          # same trace.h5 as the app
    ctl = ss.EdgeController(model, opt, ss.ControlConfig(statistic="chi"), steps_per_epoch=len(loader))
    ctl.step()                                                # after opt.step(): the decay that holds χ at 1
    ss.pick_checkpoint(tr).epoch                              # label-free: where χ first reached the edge
    ss.inspect(model, inputs=x_test[:16])                     # one table: where each FC map sits now

    ss.explainability.explainability_table(tr)                # SGD-complexity: I(F;Y), μ_Y(F;L) vs a linear L
    ss.explainability.complexity_matrix(tr)                   # μ_Y(F_t; F_s) for every pair of checkpoints
    fit = ss.spline.fit_mars(x_train, y_train, knots=32)     # degree-1 MARS (Spline-FC): hinges, GCV pruning
    net = ss.spline.widen(ss.spline.to_network(fit), 256)    # the exact ReLU network, padded to width 256
    ss.init_comparison.compare_inits(sweep_dir, targets=("mars", 4.7))  # model.init=mars vs random: epochs and
                                                              # seconds to a test target, final test loss ± std

The implementation lives in sub-packages, lowest first: :mod:`~stabilityscope.theory`,
:mod:`~stabilityscope.dynamics`, :mod:`~stabilityscope.models`, :mod:`~stabilityscope.recording`,
:mod:`~stabilityscope.control` (the weight-decay controller), :mod:`~stabilityscope.training`,
:mod:`~stabilityscope.integrations`, :mod:`~stabilityscope.analysis`
(computations), :mod:`~stabilityscope.plots` (figures), :mod:`~stabilityscope.reports` (Markdown reports)
and :mod:`~stabilityscope.cli` (the Hydra app, ``python -m stabilityscope --help``); each uses only those
before it.
"""
from stabilityscope import runtime  # first of all: the OpenMP wait policy must be set before torch loads
from stabilityscope.analysis.collection import open_traces, varying_config
from stabilityscope.analysis.control_comparison import ControlComparison, compare_arms
from stabilityscope.analysis.guideline import Recommendation, recommend
from stabilityscope.analysis.pick import CheckpointPick, pick_checkpoint
from stabilityscope.analysis.scaling import SweepAnalysis, analyze_sweep
from stabilityscope.config import (
    AnalysisConfig,
    Config,
    ControlConfig,
    DatasetConfig,
    LoggingConfig,
    ModelConfig,
    OptimConfig,
    RecordingConfig,
    StorageConfig,
    TrainConfig,
)
from stabilityscope.control import EdgeController
from stabilityscope.dynamics import geometry, weight_structure
from stabilityscope.dynamics.lyapunov import (
    ATTRACTORS,
    classify_attractor,
    largest_lyapunov,
    lyapunov_spectrum,
    map_measures,
)
from stabilityscope.dynamics.maps import IteratedMap, LayerMap, ModuleMap
from stabilityscope.errors import ConfigError, DataError, DivergedError, FitError, StabilityscopeError, TraceError
from stabilityscope.models.dissect import LayerRecord, dissect, select_layers, tracked_records
from stabilityscope.models.registry import build_model
from stabilityscope.models.wrappers import unwrap_model
from stabilityscope.recording.inspect import inspect
from stabilityscope.recording.recorder import ExplainabilityInputs, GeometryInputs, Recorder
from stabilityscope.recording.trace import Trace, open_trace
from stabilityscope.recording.tracking import LayerTracker
from stabilityscope.theory import logistic, meanfield
from stabilityscope.theory.meanfield import edge_curve, order_parameters, phase_coordinates, phase_label
from stabilityscope.theory.numerical_phase_diagram import PhaseDiagram, phase_diagram
from stabilityscope.training.data import load_dataset
from stabilityscope.version import __version__ as __version__  # the package's version (stabilityscope/version.py)

# Modules reachable as ``ss.<name>`` and ``from stabilityscope import <name>`` (loaded on first use:
# plots and reports bring in matplotlib), by their home. ``figures``, ``geometry_figures``,
# ``scaling_figures``, ``report`` and ``calibration_report`` are the older names of plots and reports.
_MODULES = {
    "plots": "stabilityscope.plots", "figures": "stabilityscope.plots",
    "geometry_figures": "stabilityscope.plots.geometry", "scaling_figures": "stabilityscope.plots.scaling",
    "reports": "stabilityscope.reports", "report": "stabilityscope.reports.run",
    "scaling_report": "stabilityscope.reports.scaling", "calibration_report": "stabilityscope.reports.calibration",
    "collection": "stabilityscope.analysis.collection", "scaling": "stabilityscope.analysis.scaling",
    "guideline": "stabilityscope.analysis.guideline", "decay": "stabilityscope.analysis.decay",
    "explainability": "stabilityscope.analysis.explainability",
    "init_comparison": "stabilityscope.analysis.init_comparison", "calibration": "stabilityscope.analysis.calibration",
    "reproduction": "stabilityscope.analysis.reproduction", "saved_run": "stabilityscope.analysis.saved_run",
    "verdicts": "stabilityscope.analysis.verdicts", "runs_table": "stabilityscope.analysis.runs_table",
    "lyapunov": "stabilityscope.dynamics.lyapunov", "maps": "stabilityscope.dynamics.maps",
    "numerical_phase_diagram": "stabilityscope.theory.numerical_phase_diagram",
    "information": "stabilityscope.theory.information", "dissect": "stabilityscope.models.dissect",
    "spline": "stabilityscope.models.spline", "spline_init": "stabilityscope.models.spline_init",
    "trace": "stabilityscope.recording.trace", "tracking": "stabilityscope.recording.tracking",
    "control": "stabilityscope.control", "pick": "stabilityscope.analysis.pick",
}


def __getattr__(name: str):  # noqa: ANN202 (PEP 562: a module attribute on first use)
    if name in _MODULES:
        import importlib

        module = importlib.import_module(_MODULES[name])
        globals()[name] = module
        return module
    raise AttributeError(f"module 'stabilityscope' has no attribute {name!r}")


__all__ = [
    "ATTRACTORS", "IteratedMap", "LayerMap", "ModuleMap", "PhaseDiagram", "classify_attractor", "largest_lyapunov",
    "geometry", "logistic", "lyapunov_spectrum", "map_measures", "phase_diagram", "weight_structure",
    "ConfigError", "DataError", "DivergedError", "FitError", "LayerRecord", "StabilityscopeError", "Trace",
    "TraceError", "build_model", "dissect", "edge_curve", "meanfield", "open_trace", "open_traces", "order_parameters",
    "phase_coordinates", "phase_label", "varying_config", "select_layers",
    "Recommendation", "SweepAnalysis", "analyze_sweep", "recommend",
    "AnalysisConfig", "Config", "DatasetConfig", "LayerTracker", "ModelConfig", "OptimConfig", "TrainConfig",
    "tracked_records", "Recorder", "inspect", "load_dataset", "runtime",
    "ExplainabilityInputs", "GeometryInputs", "LoggingConfig", "RecordingConfig", "StorageConfig", "unwrap_model",
    "CheckpointPick", "ControlComparison", "ControlConfig", "EdgeController", "compare_arms", "pick_checkpoint",
]
