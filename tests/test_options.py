"""Options check themselves: every range check the command line makes fires from Python, with the same message.

Each case is written as command-line overrides. From Python the options object of that section is built
with the same values (``OptimConfig(lr=-1.0)``); from the command line the overrides are composed by
Hydra and turned into the typed ``Config``, as the app does. Both must raise the same ConfigError. A
guard collects the keys that the options' ``check`` methods test and fails when one has no case here.
"""
from __future__ import annotations

import dataclasses
import math
import typing

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser

import stabilityscope as ss
from stabilityscope import config
from stabilityscope.config import (
    AnalysisConfig,
    BackgroundConfig,
    BatchingConfig,
    CalibrationConfig,
    CheckpointSchedule,
    Config,
    ControlConfig,
    DatasetConfig,
    MarsConfig,
    ModelConfig,
    OptimConfig,
    PhaseDiagramConfig,
    ScalingConfig,
    StorageConfig,
    TrainConfig,
    as_options,
    validate,
)
from stabilityscope.errors import ConfigError

SECTIONS = {cls.section: cls for cls in (MarsConfig, ModelConfig, DatasetConfig, OptimConfig, CheckpointSchedule,
                                         TrainConfig, StorageConfig, AnalysisConfig, PhaseDiagramConfig,
                                         BackgroundConfig, BatchingConfig, ScalingConfig, CalibrationConfig,
                                         ControlConfig)}

# (overrides, the key the error names); several overrides belong to one section
CASES = [
    (["model.mars.widen_scale=-0.1"], "model.mars.widen_scale"),
    (["model.width=0"], "model.width"), (["model.depth=0"], "model.depth"), (["model.img_size=0"], "model.img_size"),
    (["model.input_size=0"], "model.input_size"), (["model.init_J=-0.5"], "model.init_J"),
    (["dataset.train_subset=0"], "dataset.train_subset"), (["dataset.test_subset=-3"], "dataset.test_subset"),
    (["dataset.subsample_fraction=0"], "dataset.subsample_fraction"),
    (["dataset.subsample_fraction=1.5"], "dataset.subsample_fraction"),
    (["dataset.subsample=boundary"], "dataset.subsample_reference"),
    (["dataset.validation=-1"], "dataset.validation"), (["dataset.binarize=greater_than_5"], "dataset.binarize"),
    (["dataset.binarize=[1,1]"], "dataset.binarize"),
    (["optim.lr=0"], "optim.lr"), (["optim.lr=-0.1"], "optim.lr"), (["optim.lr=nan"], "optim.lr"),
    (["optim.lr=inf"], "optim.lr"), (["optim.momentum=1.0"], "optim.momentum"),
    (["optim.momentum=-0.1"], "optim.momentum"), (["optim.weight_decay=-1e-4"], "optim.weight_decay"),
    (["optim.warmup_epochs=-1"], "optim.warmup_epochs"), (["optim.min_lr=0.5"], "optim.min_lr"),
    (["train.checkpoints.every=0"], "train.checkpoints.every"), (["train.checkpoints.num=0"], "train.checkpoints.num"),
    (["train.checkpoints.epochs=[3,-1]"], "train.checkpoints.epochs"),
    (["train.checkpoints.steps=[-5]"], "train.checkpoints.steps"),
    (["train.checkpoints.unit=step", "train.checkpoints.kind=list", "train.checkpoints.epochs=[3]"],
     "train.checkpoints.epochs"),
    (["train.checkpoints.unit=epoch", "train.checkpoints.kind=list", "train.checkpoints.steps=[5]"],
     "train.checkpoints.steps"),
    (["train.epochs=0"], "train.epochs"), (["train.batch_size=0"], "train.batch_size"),
    (["train.label_smoothing=1.0"], "train.label_smoothing"),
    (["train.threads=0"], "train.threads"), (["train.keep_states=0"], "train.keep_states"),
    (["train.device=tpu"], "train.device"),
    (["storage.weights_every=0"], "storage.weights_every"),
    (["analysis.n_inputs=0"], "analysis.n_inputs"), (["analysis.steps=1"], "analysis.steps"),
    (["analysis.depth_inputs=0"], "analysis.depth_inputs"), (["analysis.depth_probes=0"], "analysis.depth_probes"),
    (["analysis.depth_vectors=0"], "analysis.depth_vectors"),
    (["analysis.block_map_inputs=0"], "analysis.block_map_inputs"),
    (["analysis.block_map_steps=1"], "analysis.block_map_steps"),
    (["analysis.hold_tol=0"], "analysis.hold_tol"),
    (["analysis.depth_lanczos=-1"], "analysis.depth_lanczos"),
    (["analysis.spectrum_k=-1"], "analysis.spectrum_k"), (["analysis.spectrum_inputs=0"], "analysis.spectrum_inputs"),
    (["analysis.geometry_delta=0.5"], "analysis.geometry_delta"),
    (["analysis.geometry_samples=0"], "analysis.geometry_samples"),
    (["analysis.explainability_boot=-1"], "analysis.explainability_boot"),
    (["analysis.explainability_confidence=1.0"], "analysis.explainability_confidence"),
    (["analysis.baseline_l2=-1.0"], "analysis.baseline_l2"), (["analysis.baseline_tol=0"], "analysis.baseline_tol"),
    (["analysis.baseline_max_iter=0"], "analysis.baseline_max_iter"),
    (["phase_diagram.j0_over_j.num=0"], "phase_diagram.j0_over_j.num"),
    (["phase_diagram.inv_j.num=0"], "phase_diagram.inv_j.num"), (["phase_diagram.n=1"], "phase_diagram.n"),
    (["phase_diagram.inv_j.start=0"], "phase_diagram.inv_j"),
    (["phase_diagram.sampling=random"], "phase_diagram.sampling"),
    (["phase_background.n=1"], "phase_background.n"), (["phase_background.steps=0"], "phase_background.steps"),
    (["phase_background.j0_over_j.num=0"], "phase_background.j0_over_j.num"),
    (["phase_background.inv_j.num=0"], "phase_background.inv_j.num"),
    (["phase_background.inv_j.start=-0.1"], "phase_background.inv_j.start"),
    (["batching.max_group=0"], "batching.max_group"),
    (["scaling.layer=''"], "scaling.layer"), (["scaling.window=0"], "scaling.window"),
    (["scaling.plateau_fraction=0"], "scaling.plateau_fraction"), (["scaling.confidence=1.0"], "scaling.confidence"),
    (["calibration.tolerance=0"], "calibration.tolerance"), (["calibration.n_boot=-1"], "calibration.n_boot"),
    (["calibration.j2_window=[0.6,0.3]"], "calibration.j2_window"), (["calibration.power=1.0"], "calibration.power"),
    (["control.every=0"], "control.every"), (["control.decay_min=0"], "control.decay_min"),
    (["control.decay_min=0.5", "control.decay_max=0.1"], "control.decay_min"),
    (["control.decay_init=2.0"], "control.decay_init"), (["control.target=0"], "control.target"),
    (["control.target=inf"], "control.target"), (["control.proportional_gain=-1"], "control.proportional_gain"),
    (["control.integral_gain=nan"], "control.integral_gain"), (["control.max_step=0"], "control.max_step"),
    (["control.smoothing=1.0"], "control.smoothing"), (["control.probe_inputs=0"], "control.probe_inputs"),
    (["control.probes=0"], "control.probes"), (["control.layers='(hidden'"], "control.layers"),
]


def _split(override: str) -> tuple[type, list[str], object]:
    """(section class, field path inside it, value as Hydra parses it) of ``a.b.c=value``."""
    parsed = OverridesParser.create().parse_overrides([override])[0]
    parts = parsed.key_or_group.split(".")
    cut = max(i for i in range(1, len(parts)) if ".".join(parts[:i]) in SECTIONS)
    return SECTIONS[".".join(parts[:cut])], parts[cut:], parsed.value()


def from_python(overrides: list[str]) -> object:
    """The section's options built in Python with the overrides' values (each as its field's type)."""
    cls = None
    kwargs: dict = {}
    for override in overrides:
        cls, path, value = _split(override)
        default = cls()
        kwargs = kwargs or {f.name: getattr(default, f.name) for f in dataclasses.fields(cls)}
        if len(path) == 2:  # a grid axis: the section's own axis with one value changed
            axis = kwargs[path[0]]
            kwargs[path[0]] = dataclasses.replace(axis, **{path[1]: _as_field(type(axis), path[1], value)})
        else:
            kwargs[path[0]] = _as_field(cls, path[0], value)
    return cls(**kwargs)


def _as_field(cls: type, name: str, value: object) -> object:
    """``value`` as OmegaConf stores it in the field: a float field holds a float."""
    hint = typing.get_type_hints(cls)[name]
    return float(value) if hint is float or (hint == typing.Optional[float] and value is not None) else value


@pytest.mark.parametrize("overrides,key", CASES, ids=[" ".join(o) for o, _ in CASES])
def test_every_cli_range_check_fires_from_python_with_the_same_message(compose_cfg, overrides, key):
    with pytest.raises(ConfigError) as from_py:
        from_python(overrides)
    assert f"{key}=" in str(from_py.value) or f"{key} grid" in str(from_py.value)
    with pytest.raises(ConfigError) as from_cli:
        as_options(compose_cfg(*overrides), Config)  # what the app does with the composed config
    assert str(from_cli.value) == str(from_py.value)


def test_every_range_check_has_a_case(monkeypatch):
    """The keys every options' check() tests (recorded on valid defaults), each covered by a case above."""
    checked = set()
    require = config._require

    def recording(ok, key, value, allowed):
        import sys

        if sys._getframe(1).f_code.co_name in ("check", "_check_binarize"):
            checked.add(key)
        return require(ok, key, value, allowed)

    monkeypatch.setattr(config, "_require", recording)
    for cls in SECTIONS.values():
        cls()
    checked.add("phase_diagram.inv_j")  # the grid's 1/J > 0 raises its own message
    assert len(checked) > 50
    assert checked - {key for _, key in CASES} == set()


def test_a_changed_option_is_checked_again_where_it_is_used():
    options = ss.AnalysisConfig(n_inputs=4)
    options.steps = 0  # valid when built, changed since
    with pytest.raises(ConfigError, match="analysis.steps=0"):
        as_options(options, AnalysisConfig)
    cfg = Config()
    cfg.optim.lr = -1.0
    with pytest.raises(ConfigError, match="optim.lr=-1.0"):
        validate(cfg)


def test_types_are_checked_and_enum_values_accepted():
    assert ss.ModelConfig(activation="relu").activation is config.Activation.relu
    assert ss.TrainConfig(checkpoints={"every": 3}).checkpoints == CheckpointSchedule(every=3)
    with pytest.raises(ConfigError, match=r"optim.lr='0.1': a number"):
        ss.OptimConfig(lr="0.1")
    with pytest.raises(ConfigError, match=r"train.epochs=True: an integer"):
        ss.TrainConfig(epochs=True)
    with pytest.raises(ConfigError, match=r"model.activation='sine': allowed: tanh, relu"):
        ss.ModelConfig(activation="sine")
    assert math.isclose(ss.OptimConfig(lr=1).lr, 1)


def test_bad_options_fail_at_once_in_the_library_entry_points():
    """The issue's case: a notebook's bad options used to fail deep inside a run, or never."""
    model = ss.build_model(ss.ModelConfig(width=8), (1, 4, 4), 3)
    records = ss.tracked_records(model, ss.ModelConfig(), ss.AnalysisConfig(maps=False), None)
    with pytest.raises(ConfigError, match="analysis.steps=0"):
        ss.LayerTracker(model, records, {"steps": 0})
    with pytest.raises(ConfigError, match="optim.lr=-1"):
        ss.Config(optim={"lr": -1})


@pytest.mark.parametrize("task,message", [("report", "task=report needs the traces"),
                                          ("scaling", "task=scaling needs the runs"),
                                          ("calibrate", "task=calibrate needs the runs"),
                                          ("reproduce", "task=reproduce needs the runs")])
def test_validate_keeps_the_checks_across_sections(task, message):
    cfg = Config(task=task)  # each section is valid on its own
    with pytest.raises(ConfigError, match=message):
        validate(cfg)
    validate(Config(task=task, trace="t", sweep="s", runs=["r"]))
