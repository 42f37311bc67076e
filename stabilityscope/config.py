"""Typed options: the dataclasses every library entry point takes, and the app's config schema.

A notebook builds them directly (``AnalysisConfig(maps=True, n_inputs=16)``); the command line's YAML
files in ``conf/`` fill the same dataclasses (:mod:`stabilityscope.cli.app` registers :class:`Config`
with Hydra's ConfigStore), so a misspelt key (``train.epoch=3``) or a wrong type
(``train.epochs=many``) fails at composition with a message that names the key. Every options object
checks its own values when it is built (``OptimConfig(lr=-1)`` raises
:class:`~stabilityscope.errors.ConfigError` at once, from Python as from the command line, with the
same message); :func:`validate` holds the checks that span sections.

Library entry points accept the dataclass, a Hydra ``DictConfig`` of the same schema, or a plain
mapping, and turn it into the dataclass with :func:`as_options`; this module imports neither Hydra
nor OmegaConf.

Weight-decay convention: ``optim.weight_decay`` is PyTorch's coefficient (the optimiser adds
``weight_decay * w`` to the gradient of every weight matrix, never to biases). Keras' L2
regulariser ``λ·Σw²`` (used by EOC-training) has gradient ``2λw``, so ``weight_decay = 2λ``.
"""
from __future__ import annotations

import dataclasses
import math
import numbers
import os
import re
import types
import typing
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, ClassVar, Mapping, Optional, Sequence, TypeVar, Union

from stabilityscope.errors import ConfigError


class Task(str, Enum):
    """What ``python -m stabilityscope`` does (``task=``)."""

    train = "train"
    phase_diagram = "phase_diagram"
    report = "report"  # figures and a one-page summary of existing traces (trace=<path or glob>)
    scaling = "scaling"  # scaling laws and the weight-decay guideline of a sweep (sweep=<dir or glob>)
    analyze = "analyze"  # a trace from saved weights (checkpoints=<glob>), without training
    calibrate = "calibrate"  # the guideline's growth and plateau laws measured on runs (runs=<dirs or globs>)
    reproduce = "reproduce"  # the source papers' headline claims checked on runs (runs=<dirs or globs>)
    atlas = "atlas"  # order and chaos per family over training, EOC-optimality's claims, label-free picks (runs=...)


class Activation(str, Enum):
    """The nonlinearity of the built-in networks' hidden layers."""

    tanh = "tanh"
    relu = "relu"


class OptimName(str, Enum):
    """The optimiser (``optim.name``)."""

    sgd = "sgd"
    adam = "adam"
    adamw = "adamw"  # Adam with decoupled weight decay (Loshchilov & Hutter): w ← w − lr·weight_decay·w


class LrSchedule(str, Enum):
    """The learning rate over a run (``optim.schedule``)."""

    constant = "constant"  # optim.lr throughout
    cosine = "cosine"  # linear warm-up over optim.warmup_epochs, then cosine decay to optim.min_lr at the last step


class ScheduleKind(str, Enum):
    """How checkpoints are spaced (``train.checkpoints.kind``)."""

    every = "every"  # checkpoint every `every` epochs
    log = "log"  # about `num` log-spaced epochs
    list = "list"  # the explicit `epochs`


class CheckpointUnit(str, Enum):
    """What the checkpoint schedule counts (``train.checkpoints.unit``)."""

    epoch = "epoch"  # the schedule counts epochs (a checkpoint at the end of an epoch)
    step = "step"  # the schedule counts optimiser steps (checkpoints inside an epoch, SGD-complexity)


class WeightsDtype(str, Enum):
    """The precision of stored weight matrices (``storage.weights_dtype``)."""

    float16 = "float16"
    float32 = "float32"


class Subsample(str, Enum):
    """Which part of the training set a run trains on (``dataset.subsample``)."""

    none = "none"  # train on the whole training set
    random = "random"  # a random fraction (seeded by train.seed)
    boundary = "boundary"  # the samples closest to a reference model's decision boundaries (our instantiation)


class InitKind(str, Enum):
    """How the model's weights start (``model.init``)."""

    random = "random"  # the model's own random initialisation
    mars = "mars"  # Spline-FC: first hidden layer and head from a degree-1 MARS fit (stabilityscope.models.spline_init)


class ControlMode(str, Enum):
    """train.control: how the weight decay is set during training."""

    none = "none"  # optim.weight_decay throughout
    edge = "edge"  # an EdgeController sets the decay of the controlled maps' parameter groups (options: control.*)


class EdgeStatistic(str, Enum):
    """control.statistic: what the controller holds at its edge value."""

    auto = "auto"  # the model's default: χ of the FC maps below the head (the canonical network: its hidden layer)
    J2 = "J2"  # J² = N·var(W) of FC maps, from the weights (edge J_c²: 1 for tanh, 2 for ReLU)
    chi = "chi"  # mean-field χ of each FC map's (J0, J), from the weights (edge 1)
    gain = "gain"  # scale-free RMS gain of trunk blocks at real inputs, from a few random directions (edge 1)


class Combine(str, Enum):
    """control.combine: how one parameter group's maps make its error."""

    median = "median"  # a parameter group's error: the median over its maps of ln(S/S*)
    mean = "mean"  # ... their mean
    max = "max"  # ... their largest: no map of the group is let past the target


class ModelFamily(str, Enum):
    """Where ``model.name`` is looked up (``model.family``)."""

    builtin = "builtin"  # stabilityscope.models.registry.MODELS
    timm = "timm"  # any timm.list_models() name
    torchvision = "torchvision"  # any torchvision classification model


class CheckedOptions:
    """Base of the option dataclasses: each checks its own values when it is built.

    On construction (``__post_init__``) every field is checked against its type (an enum field also
    takes its value as a string: ``ModelConfig(activation="relu")``; a nested options field also takes a
    mapping), then :meth:`check` checks the value ranges. A bad value raises
    :class:`~stabilityscope.errors.ConfigError` naming the key as the command line spells it
    (``optim.lr``), the value and what is allowed: the same paragraph from Python as from the CLI.
    :func:`as_options` checks an options object again (it may have been changed since it was built).
    """

    section: ClassVar[str] = ""  # the config path of these options (``optim``), named in errors

    def __post_init__(self) -> None:
        _check_types(self)
        self.check()

    def check(self) -> None:
        """Raise ConfigError for the first value out of its range (these options' own values only)."""


@dataclass
class MarsConfig(CheckedOptions):
    """Degree-1 MARS fit of a spline initialisation (stabilityscope.models.spline.fit_mars)."""

    section: ClassVar[str] = "model.mars"
    max_terms: Optional[int] = None  # forward-pass basis functions with the intercept; null: min(200, max(20, 2d)) + 1
    knots: int = 32  # candidate knots per input: the order statistics at quantile levels i/(knots+1), i = 1..knots
    penalty: float = 2.0  # GCV cost per knot: C(M) = M + penalty·(M − 1)/2 (Friedman's and earth's degree-1 value)
    threshold: float = 1e-3  # forward pass stops when the best candidate raises R² by less than this
    widen_scale: float = 0.1  # model.init=mars: padding units' incoming weights ~ N(0, (widen_scale/√d)²)

    def check(self) -> None:
        _require(self.widen_scale >= 0, "model.mars.widen_scale", self.widen_scale,
                 "the padding units' weight scale must be >= 0")


@dataclass
class ModelConfig(CheckedOptions):
    """The network: which model, its width, depth, activation and initialisation (``model``)."""

    section: ClassVar[str] = "model"

    name: str = "fmnist_fc"  # registry name (builtin) or the library's model name (timm, torchvision)
    family: ModelFamily = ModelFamily.builtin  # where `name` is looked up
    width: int = 784  # builtin fmnist_fc: hidden width; 784 makes the hidden layer square (an iterated map)
    depth: int = 1  # builtin tabular_mlp: hidden layers (the others have one)
    activation: Activation = Activation.tanh  # builtin: nonlinearity of the hidden layers
    init_J: float = 0.5  # fmnist_fc: hidden init std = init_J / sqrt(fan_in): J = 0.5 puts the start at (0, 2)
    init_J0: float = 0.0  # fmnist_fc: hidden init mean = init_J0 / fan_in
    pretrained: bool = False  # timm/torchvision: the library's pretrained weights (its own download and cache)
    img_size: Optional[int] = None  # timm models taking img_size (torchvision ViT/MaxViT): null = the data's size
    small_input: bool = False  # ResNet-style stems: 3×3 stride-1 conv1, no max-pool (the CIFAR ResNet stem)
    input_size: Optional[int] = None  # resize every input to this size (bilinear) before the model; null = as is
    conv1x1: bool = False  # dissection: also treat 1×1 convolutions as fully connected maps
    kwargs: dict[str, Any] = field(default_factory=dict)  # extra constructor arguments (+model.kwargs.k=v)
    # analysis=inspect: load these saved weights first (state_dict, .ckpt, .safetensors)
    checkpoint: Optional[str] = None
    init: InitKind = InitKind.random  # mars: Spline-FC's initialisation from a MARS fit on the training split
    mars: MarsConfig = field(default_factory=MarsConfig)  # the MARS fit of init=mars

    def check(self) -> None:
        _require(self.width >= 1, "model.width", self.width, "the hidden width must be a positive integer")
        _require(self.depth >= 1, "model.depth", self.depth, "the number of hidden layers must be a positive integer")
        for key in ("img_size", "input_size"):
            v = getattr(self, key)
            _require(v is None or v >= 1, f"model.{key}", v, "a size must be a positive integer (or null)")
        _require(self.init_J >= 0, "model.init_J", self.init_J, "the initial coupling J must be >= 0")


@dataclass
class DatasetConfig(CheckedOptions):
    """The data: which dataset, where, which part of it and how prepared (``dataset``)."""

    section: ClassVar[str] = "dataset"

    name: str = "fashion_mnist"  # registry name (stabilityscope.training.data.DATASETS)
    root: str = "${oc.env:STABILITYSCOPE_DATA,data}"  # folder in torchvision's on-disk layout
    download: bool = False  # fetch with torchvision's downloader (needs internet; writes into root)
    train_subset: Optional[int] = None  # first n training examples (quick runs)
    test_subset: Optional[int] = None  # first n test examples
    normalize: bool = False  # standardise with the dataset's channel mean/std (false: pixels / 255)
    augment: bool = False  # random crop (padding 4) + horizontal flip per training batch, on the device
    subsample: Subsample = Subsample.none  # keep part of the training set (stabilityscope.training.subsample)
    subsample_fraction: float = 1.0  # the fraction kept, in (0, 1]
    subsample_reference: Optional[str] = None  # boundary: a run directory, its trace.h5, or a state .pt file
    # A binary task (SGD-complexity): null = the dataset's own labels; greater_than_4 (MNIST, Fashion-MNIST:
    # classes 5–9 → 1); vehicles_vs_animals (CIFAR-10: airplane, automobile, ship, truck → 1, 40% of the
    # examples); or a list of positive classes, e.g. [0,1,8,9]. Any: OmegaConf takes a string or a list.
    binarize: Any = None
    validation: int = 0  # hold out the last n training examples: val_loss, val_acc at every checkpoint (early stopping)

    def check(self) -> None:
        for key in ("train_subset", "test_subset"):
            v = getattr(self, key)
            _require(v is None or v >= 1, f"dataset.{key}", v, "a subset size must be a positive integer (or null for "
                                                               "all)")
        frac = self.subsample_fraction
        _require(0 < frac <= 1, "dataset.subsample_fraction", frac, "the fraction of training samples kept must lie in "
                                                                    "(0, 1]")
        _require(value_of(self.subsample) != "boundary" or self.subsample_reference, "dataset.subsample_reference",
                 self.subsample_reference, "dataset.subsample=boundary needs a reference model: a run directory, "
                 "its trace.h5 or a state .pt file of the same model")
        _check_binarize(self.binarize)
        _require(self.validation >= 0, "dataset.validation", self.validation,
                 "a number of training examples held out for validation, >= 0 (0: none)")


@dataclass
class OptimConfig(CheckedOptions):
    """The optimiser and its learning-rate schedule (``optim``)."""

    section: ClassVar[str] = "optim"

    name: OptimName = OptimName.sgd
    lr: float = 0.02
    momentum: float = 0.5  # SGD only
    # PyTorch convention, weight matrices only; Keras L2 λ = weight_decay / 2 (adamw: decoupled)
    weight_decay: float = 0.0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])  # Adam and AdamW only
    schedule: LrSchedule = LrSchedule.constant  # the learning rate over the run, set before every optimiser step
    warmup_epochs: float = 0.0  # cosine: epochs of linear warm-up from lr/steps_in_warmup to lr
    min_lr: float = 0.0  # cosine: the learning rate at the last step

    def check(self) -> None:
        _require(self.lr > 0 and self.lr == self.lr and self.lr != float("inf"),
                 "optim.lr", self.lr, "the learning rate must be a positive finite number")
        _require(0 <= self.momentum < 1, "optim.momentum", self.momentum, "momentum must lie in [0, 1)")
        _require(self.weight_decay >= 0, "optim.weight_decay", self.weight_decay, "weight decay must be >= 0")
        _require(self.warmup_epochs >= 0, "optim.warmup_epochs", self.warmup_epochs, "must be >= 0")
        _require(0 <= self.min_lr <= self.lr, "optim.min_lr", self.min_lr, "must lie in [0, optim.lr]")


@dataclass
class CheckpointSchedule(CheckedOptions):
    """When checkpoints are taken (``train.checkpoints``)."""

    section: ClassVar[str] = "train.checkpoints"

    unit: CheckpointUnit = CheckpointUnit.epoch  # what `every`, `num` and the lists count: epochs or steps
    kind: ScheduleKind = ScheduleKind.every
    every: int = 1  # kind=every: a checkpoint each `every` epochs (steps)
    num: int = 30  # kind=log: about this many log-spaced epochs (steps)
    epochs: list[int] = field(default_factory=list)  # kind=list, unit=epoch: these epochs
    steps: list[int] = field(default_factory=list)  # kind=list, unit=step: these optimiser steps
    # Checkpoint 0 (the initialisation) and the end of training are always included.

    def check(self) -> None:
        _require(self.every >= 1, "train.checkpoints.every", self.every, "must be a positive integer")
        _require(self.num >= 1, "train.checkpoints.num", self.num, "must be a positive integer")
        bad = [e for e in self.epochs if e < 0]
        _require(not bad, "train.checkpoints.epochs", list(self.epochs), "epochs must be >= 0")
        bad = [s for s in self.steps if s < 0]
        _require(not bad, "train.checkpoints.steps", list(self.steps), "steps must be >= 0")
        unit, kind = value_of(self.unit), value_of(self.kind)
        _require(not (kind == "list" and unit == "step" and self.epochs and not self.steps), "train.checkpoints.epochs",
                 list(self.epochs), "with train.checkpoints.unit=step a list schedule takes train.checkpoints.steps "
                 "(optimiser steps), not epochs")
        _require(not (kind == "list" and unit == "epoch" and self.steps and not self.epochs), "train.checkpoints.steps",
                 list(self.steps), "a list of steps needs train.checkpoints.unit=step (the unit is epoch)")


@dataclass
class TrainConfig(CheckedOptions):
    """The training run: epochs, batch, seed, device, checkpoints, threads (``train``)."""

    section: ClassVar[str] = "train"

    epochs: int = 10
    batch_size: int = 32
    seed: int = 0
    # of the training loss (classification); test and train metrics stay plain cross-entropy
    label_smoothing: float = 0.0
    device: str = "auto"  # auto (CUDA when present), cpu, cuda, cuda:N
    checkpoints: CheckpointSchedule = field(default_factory=CheckpointSchedule)
    keep_states: int = 2  # resumable states kept on disk (the newest ones)
    threads: Optional[int] = None  # torch CPU threads; null = torch's default (1 per job under hydra/launcher=parallel)
    fast_step: bool = True  # fmnist_fc + SGD: train through the hand-written SGD step (training.stacked), not autograd
    overlap_checkpoints: bool = True  # with fast_step on a CPU: a checkpoint runs in a thread (on half the
    # torch threads, training on the other half: trainer.CoreShare) while training goes on
    control: ControlMode = ControlMode.none  # edge: the weight decay held at the edge in closed loop (control.*)

    def check(self) -> None:
        _require(self.epochs >= 1, "train.epochs", self.epochs, "the number of epochs must be a positive integer")
        _require(self.batch_size >= 1, "train.batch_size", self.batch_size, "the batch size must be a positive integer")
        _require(0 <= self.label_smoothing < 1, "train.label_smoothing", self.label_smoothing, "must lie in [0, 1)")
        _require(self.threads is None or self.threads >= 1, "train.threads", self.threads,
                 "a positive number of threads, or null for torch's default")
        _require(self.keep_states >= 1, "train.keep_states", self.keep_states, "keep at least one state")
        dev = str(self.device)
        _require(dev in ("auto", "cpu", "cuda") or dev.startswith("cuda:"), "train.device", dev,
                 "allowed: auto, cpu, cuda, cuda:N")


@dataclass
class ControlConfig(CheckedOptions):
    """The weight-decay controller of ``train.control=edge`` (:class:`stabilityscope.control.EdgeController`).

    Every ``every`` optimiser steps it reads a cheap edge statistic S of the chosen maps and sets the weight
    decay λ of the parameter groups that hold them by a bounded PI step on ln λ (the docs' guide "Holding the
    edge: the weight-decay controller" states the law): with e = ln(S/S*) combined over a group's maps,
    Δ ln λ = k_p·(e − e_prev) + k_i·e·Δt (Δt in epochs), at most ``max_step`` in size, λ kept in
    [``decay_min``, ``decay_max``]. λ is in the optimiser's own convention (PyTorch's; AdamW's decoupled).
    """

    section: ClassVar[str] = "control"
    statistic: EdgeStatistic = EdgeStatistic.auto  # what is held at the edge (auto: see EdgeStatistic)
    layers: Optional[str] = None  # the maps read: a regex on FC map names (J2, chi) or trunk block modules (gain);
    # null: every FC map but the head (J2, chi), every trunk block (gain)
    target: Optional[float] = None  # S*: null = the statistic's edge value (χ = 1, gain = 1, J² = J_c²)
    combine: Combine = Combine.median  # one decay per parameter group, driven by this over the group's maps
    every: int = 100  # optimiser steps between two updates
    decay_min: float = 1.0e-6  # bounds of λ (> 0: the law steps ln λ)
    decay_max: float = 1.0
    decay_init: Optional[float] = None  # λ before the first update (null: decay_min)
    proportional_gain: float = 10.0  # k_p: Δ ln λ per unit change of ln(S/S*) between two updates
    integral_gain: float = 100.0  # k_i: Δ ln λ per epoch per unit of ln(S/S*)
    max_step: float = 0.5  # the largest |Δ ln λ| of one update (a factor e^0.5 ≈ 1.65)
    smoothing: float = 0.0  # e filtered as e_f ← smoothing·e_f + (1 − smoothing)·e (0: none; noisy statistics)
    probe_inputs: int = 4  # gain: test inputs the blocks are read at
    # gain: random directions per input (the RMS gain's estimate; its noise falls as 1/√(inputs·probes))
    probes: int = 4

    def check(self) -> None:
        _require(self.every >= 1, "control.every", self.every, "a positive number of optimiser steps")
        _require(0 < self.decay_min < self.decay_max, "control.decay_min", self.decay_min,
                 f"the bounds must satisfy 0 < control.decay_min < control.decay_max (= {self.decay_max}): the "
                 f"law steps ln λ, so the smallest decay is positive; choose it far below the decay the edge "
                 f"needs (the default 1e-6 is 100 times below the canonical network's)")
        _require(self.decay_init is None or self.decay_min <= self.decay_init <= self.decay_max,
                 "control.decay_init", self.decay_init, f"within [control.decay_min, control.decay_max] = "
                 f"[{self.decay_min}, {self.decay_max}], or null for decay_min")
        _require(self.target is None or (self.target > 0 and math.isfinite(self.target)), "control.target",
                 self.target, "a positive finite value of the statistic, or null for its edge value")
        for key in ("proportional_gain", "integral_gain", "max_step"):
            v = getattr(self, key)
            _require(v >= 0 and math.isfinite(v), f"control.{key}", v, "a finite number >= 0")
        _require(self.max_step > 0, "control.max_step", self.max_step, "must be > 0 (0 would never move λ)")
        _require(0 <= self.smoothing < 1, "control.smoothing", self.smoothing, "must lie in [0, 1)")
        _require(self.probe_inputs >= 1, "control.probe_inputs", self.probe_inputs, "must be a positive integer")
        _require(self.probes >= 1, "control.probes", self.probes, "must be a positive integer")
        if self.layers is not None:
            try:
                re.compile(self.layers)
            except re.error as exc:
                _require(False, "control.layers", self.layers, f"a regular expression ({exc})")


@dataclass
class StorageConfig(CheckedOptions):
    """What the trace stores beyond per-checkpoint statistics."""

    section: ClassVar[str] = "storage"
    weights: bool = False  # store full weight matrices of the recorded layers
    weights_every: int = 1  # ... at every k-th checkpoint (0 and the last always)
    weights_dtype: WeightsDtype = WeightsDtype.float32

    def check(self) -> None:
        _require(self.weights_every >= 1, "storage.weights_every", self.weights_every, "must be a positive integer")


@dataclass
class AnalysisConfig(CheckedOptions):
    """What is measured at every checkpoint (see stabilityscope.recording.tracking)."""

    section: ClassVar[str] = "analysis"
    name: str = "standard"
    layers: str = "all"  # which FC layers: all, head, or a regex on qualified names
    meanfield: bool = True  # χ, edge distance and phase of each layer's (J0, J) surrogate
    maps: bool = True  # iterate square layers: s (M1), λ_max, M4, attractor
    n_inputs: int = 100  # real test inputs used as start states
    steps: int = 500  # T of the iterated map
    # a map whose two orbits settle at a fixed point to this relative tolerance is held there and only its tangent
    # vectors are iterated for the rest of the T steps (λ_max and M2 as before; d_t at rounding); null: never
    hold_tol: Optional[float] = 1.0e-5
    spectrum_k: int = 0  # top-k Lyapunov exponents (QR) of square layers; 0 = off
    spectrum_inputs: int = 10  # start states (the first test inputs) for the spectrum
    weight_structure: bool = True  # oscillation–diffusion diagnostics (interpretations)
    eigen: bool = True  # spectral radius / norm / complex fraction (eigendecomposition)
    chains: bool = True  # iterate MLP blocks d → h → d as maps (M1–M4, λ_max, attractor)
    map_layer: Optional[str] = None  # iterate the whole model input → this module (null: the model's own, if any)
    # Depth-wise readings of residual and normalised networks (stabilityscope.dynamics.depthwise): per trunk
    # block the scale-free gains of its Jacobian at real test inputs, and the trunk's depth Lyapunov exponents.
    depthwise: bool = False
    trunk: Optional[str] = None  # the trunk's blocks: a regex on module names (null: found by structure)
    depth_inputs: int = 8  # test inputs the depth-wise readings are taken at
    depth_probes: int = 16  # random directions per input for a block's RMS gain (exact below 257 entries)
    depth_vectors: int = 8  # directions propagated through depth for the depth Lyapunov exponents
    depth_lanczos: int = 10  # Golub–Kahan–Lanczos steps for a block's top gain (0: the largest probed gain)
    block_maps: bool = False  # also iterate each trunk block as a map (M1–M4, λ_max, attractor; traps labelled)
    block_map_inputs: int = 4  # start states of the block maps (the blocks' real inputs on the first test inputs)
    block_map_steps: int = 100  # T of the block maps (a block costs ~N/d times a chain per step)
    describe: bool = False  # print the dissection table (analysis=describe) and exit without training
    inspect: bool = False  # print the one-shot inspection table (analysis=inspect) and exit without training
    geometry: bool = False  # decision-region geometry of FC layers with flat inputs (FC-geometry, ours)
    geometry_delta: float = 0.1  # band threshold δ ∈ (0, ½): the band keeps φ in the inner (1 − 2δ) of its range
    geometry_samples: int = 1000  # the first n training inputs, the fixed sample the geometry is measured on
    # SGD-complexity: I(F;Y), I(F;Y|L), μ_Y(F;L) against a linear baseline L per checkpoint
    explainability: bool = False
    explainability_boot: int = 200  # bootstrap resamples of the test set for the intervals of μ and I(F;Y)
    explainability_confidence: float = 0.95  # level of those intervals
    miller_madow: bool = False  # add the Miller–Madow bias correction to every entropy
    baseline_l2: float = 1e-4  # L2 of the logistic-regression baseline (per example, in the mean loss)
    baseline_tol: float = 1e-5  # L-BFGS stops when the largest |gradient entry| falls below this
    baseline_max_iter: int = 1000  # ... or after this many iterations (then a warning is recorded in the trace)

    def check(self) -> None:
        _require(self.n_inputs >= 1, "analysis.n_inputs", self.n_inputs, "must be a positive integer")
        _require(self.steps >= 2, "analysis.steps", self.steps, "the map needs at least 2 steps")
        _require(self.hold_tol is None or 0 < self.hold_tol < 1, "analysis.hold_tol", self.hold_tol,
                 "a relative tolerance in (0, 1), or null to iterate every orbit all analysis.steps steps")
        for key in ("depth_inputs", "depth_probes", "depth_vectors", "block_map_inputs"):
            _require(getattr(self, key) >= 1, f"analysis.{key}", getattr(self, key), "must be a positive integer")
        _require(self.block_map_steps >= 2, "analysis.block_map_steps", self.block_map_steps,
                 "the map needs at least 2 steps")
        _require(self.depth_lanczos >= 0, "analysis.depth_lanczos", self.depth_lanczos, "must be >= 0 (0: no Lanczos)")
        _require(self.spectrum_k >= 0, "analysis.spectrum_k", self.spectrum_k, "must be >= 0 (0 = off)")
        _require(self.spectrum_inputs >= 1, "analysis.spectrum_inputs", self.spectrum_inputs,
                 "must be a positive integer")
        _require(0 < self.geometry_delta < 0.5, "analysis.geometry_delta", self.geometry_delta,
                 "the band threshold δ must lie in the open interval (0, 0.5)")
        _require(self.geometry_samples >= 1, "analysis.geometry_samples", self.geometry_samples,
                 "must be a positive integer")
        _require(self.explainability_boot >= 0, "analysis.explainability_boot", self.explainability_boot,
                 "the number of bootstrap resamples must be >= 0 (0: no intervals)")
        _require(0 < self.explainability_confidence < 1, "analysis.explainability_confidence",
                 self.explainability_confidence, "a confidence level lies in the open interval (0, 1)")
        _require(self.baseline_l2 >= 0, "analysis.baseline_l2", self.baseline_l2, "must be >= 0")
        _require(self.baseline_tol > 0, "analysis.baseline_tol", self.baseline_tol, "must be > 0")
        _require(self.baseline_max_iter >= 1, "analysis.baseline_max_iter", self.baseline_max_iter,
                 "must be a positive integer")


@dataclass
class GridAxis(CheckedOptions):
    """One axis of a grid: ``num`` points from ``start`` to ``stop`` (numpy.linspace)."""

    start: float = 0.0
    stop: float = 1.0
    num: int = 11


@dataclass
class PhaseDiagramConfig(CheckedOptions):
    """``task=phase_diagram``: the numerical phase diagram's grid, network size, steps and sampling."""

    section: ClassVar[str] = "phase_diagram"

    j0_over_j: GridAxis = field(default_factory=lambda: GridAxis(-2.0, 3.0, 51))
    inv_j: GridAxis = field(default_factory=lambda: GridAxis(0.1, 2.0, 39))
    n: int = 1000  # network size N (the original used 10,000)
    steps: Optional[int] = None  # T; None → 500 for tanh, 100 for relu
    activation: Activation = Activation.tanh
    seed: int = 0
    sampling: str = "common"  # common (shared Gaussian, one matmul per step) or independent
    device: str = "auto"

    def check(self) -> None:
        for key in ("j0_over_j", "inv_j"):
            axis = getattr(self, key)
            _require(axis.num >= 1, f"phase_diagram.{key}.num", axis.num, "a grid needs at least one point")
        _require(self.n >= 2, "phase_diagram.n", self.n, "the network needs at least 2 units")
        y = self.inv_j
        if (y.start if y.num == 1 else min(y.start, y.stop)) <= 0:
            raise ConfigError(f"Invalid phase_diagram.inv_j grid from {y.start} to {y.stop}: 1/J must be > 0.")
        _require(self.sampling in ("common", "independent"), "phase_diagram.sampling", self.sampling,
                 "allowed: common, independent")


@dataclass
class BackgroundConfig(CheckedOptions):
    """The numerical phase diagram drawn behind training paths (stabilityscope.plots.phase.BackgroundSpec).

    Computed once per (activation, grid, N, T, seed) and cached in ``cache_dir`` (null:
    $STABILITYSCOPE_CACHE/phase_diagrams, else ~/.cache/stabilityscope/phase_diagrams).
    """

    section: ClassVar[str] = "phase_background"
    enabled: bool = True  # false: the theoretical edge only
    j0_over_j: GridAxis = field(default_factory=lambda: GridAxis(-2.0, 2.0, 41))
    inv_j: GridAxis = field(default_factory=lambda: GridAxis(0.1, 2.5, 25))
    n: int = 500  # network size N: a picture, not a measurement (task=phase_diagram for that)
    steps: int = 200  # T
    seed: int = 0
    cache_dir: Optional[str] = None

    def check(self) -> None:  # drawn when a run ends: refuse a bad grid before training, not after
        if not self.enabled:
            return
        _require(self.n >= 2, "phase_background.n", self.n, "the network needs at least 2 units")
        _require(self.steps >= 1, "phase_background.steps", self.steps, "must be a positive integer")
        for key in ("j0_over_j", "inv_j"):
            axis = getattr(self, key)
            _require(axis.num >= 1, f"phase_background.{key}.num", axis.num, "a grid needs at least one point")
        _require(min(self.inv_j.start, self.inv_j.stop) > 0, "phase_background.inv_j.start", self.inv_j.start,
                 "1/J must be > 0 over the whole grid")


@dataclass
class BatchingConfig(CheckedOptions):
    """Sweeps of the canonical network train as batched groups (stabilityscope.training.batched, .sweep)."""

    section: ClassVar[str] = "batching"
    enabled: bool = True  # false: every sweep job trains on its own
    max_group: int = 32  # runs per batched group (stacked weights: about 7.4 MB per run at width 784)

    def check(self) -> None:
        _require(self.max_group >= 1, "batching.max_group", self.max_group, "a group holds at least one run")


@dataclass
class ScalingConfig(CheckedOptions):
    """``task=scaling``: what is fitted over a sweep's runs (see stabilityscope.analysis.scaling)."""

    section: ClassVar[str] = "scaling"
    layer: str = "hidden"  # the layer whose J² is fitted (the canonical network's square hidden layer)
    window: int = 50  # fit the slope A of J² over checkpoints with epoch <= window ...
    ordered_only: bool = True  # ... and in the ordered phase only (χ < 1)
    plateau_fraction: float = 0.2  # the J² plateau of a decay run: mean over this last fraction of its epochs
    confidence: float = 0.95  # level of the confidence intervals of the fits

    def check(self) -> None:
        _require(bool(self.layer), "scaling.layer", self.layer,
                 "name the layer whose J² is fitted (the canonical network's: hidden)")
        _require(self.window > 0, "scaling.window", self.window, "the fit window must be a positive number of epochs")
        _require(0 < self.plateau_fraction <= 1, "scaling.plateau_fraction", self.plateau_fraction,
                 "a fraction of the epochs in (0, 1], e.g. 0.2 for the last fifth")
        _require(0 < self.confidence < 1, "scaling.confidence", self.confidence,
                 "a confidence level in (0, 1), e.g. 0.95")


@dataclass
class CalibrationConfig(CheckedOptions):
    """``task=calibrate`` / ``task=reproduce``: how the guideline's laws are fitted
    (stabilityscope.analysis.calibration)."""

    section: ClassVar[str] = "calibration"
    tolerance: float = 0.15  # the growth law's validity range: rates where every run's A is within this of the law
    n_boot: int = 1000  # bootstrap samples over seeds for λ* at each rate
    # every run's A over J² in this range
    j2_window: Optional[list[float]] = field(default_factory=lambda: [0.30, 0.60])
    commit: Optional[str] = None  # the code commit that trained the runs, written into runs.json (when traces lack it)
    power: float = 0.8  # task=reproduce: the power an inconclusive verdict's seed count plans for

    def check(self) -> None:
        _require(0 < self.tolerance < 1, "calibration.tolerance", self.tolerance,
                 "a relative agreement in (0, 1), e.g. 0.15")
        _require(self.n_boot >= 0, "calibration.n_boot", self.n_boot, "a number of bootstrap samples >= 0")
        w = self.j2_window
        _require(w is None or (len(w) == 2 and 0 <= float(w[0]) < float(w[1])), "calibration.j2_window",
                 None if w is None else list(w), "a range [low, high] of J² with 0 <= low < high, e.g. [0.3, 0.6], "
                 "or null for each run's whole ordered part")
        _require(0 < self.power < 1, "calibration.power", self.power, "a probability in (0, 1), e.g. 0.8")

    @property
    def window(self) -> Optional[tuple[float, float]]:
        """``j2_window`` as the (low, high) tuple the calibration takes (None: each run's whole ordered part)."""
        return None if self.j2_window is None else (float(self.j2_window[0]), float(self.j2_window[1]))


@dataclass
class GuidelineConfig(CheckedOptions):
    """``experiment=calibrate_guideline``: the run trains ``recommend(budget)``'s settings with its decay scaled by
    ``decay_factor`` (the ${ss_recommend:...} resolver of the CLI reads these)."""

    section: ClassVar[str] = "guideline"
    budget: int = 100  # the epoch budget given to recommend()
    decay_factor: float = 1.0  # × the recommended weight decay (the validation sweeps 0.5, 1, 2, 4)
    extrapolate: bool = False  # recommend(..., extrapolate=True): train a budget too short for the calibrated range
    # this run is one of the guideline's validation runs (the calibrate_guideline presets set it)
    validate: bool = False


@dataclass
class LoggingConfig(CheckedOptions):
    """Dashboard mirrors of every recorded scalar (stabilityscope.recording.mirrors)."""

    section: ClassVar[str] = "logging"
    tensorboard: bool = False  # TensorBoard event files in <run dir>/tensorboard (extra: stabilityscope[tensorboard])
    tensorboard_dir: Optional[str] = None  # ... or in this folder
    mlflow: bool = False  # MLflow metrics and params, at the active tracking URI (extra: stabilityscope[mlflow])
    mlflow_uri: Optional[str] = None  # ... or at this one, e.g. sqlite:///mlflow.db


@dataclass
class RecordingConfig(CheckedOptions):
    """What a :class:`~stabilityscope.recording.recorder.Recorder` reads of the options: the app's sections it uses.

    ``Recorder(..., options=...)`` takes these, the measurement options alone (an :class:`AnalysisConfig`,
    the common case) or the app's whole :class:`Config` (its four sections below are used).
    """

    analysis: AnalysisConfig = field(default_factory=AnalysisConfig)  # what is measured at every checkpoint
    storage: StorageConfig = field(default_factory=StorageConfig)  # full weight matrices in the trace, or not
    logging: LoggingConfig = field(default_factory=LoggingConfig)  # TensorBoard / MLflow mirrors of every scalar
    model: ModelConfig = field(default_factory=ModelConfig)  # its conv1x1 makes 1×1 convolutions FC maps too


@dataclass
class Config(CheckedOptions):
    """The app's whole configuration: the task and every section (``conf/config.yaml`` fills it)."""

    task: Task = Task.train
    resume: Optional[str] = None  # a run directory to continue (train task)
    figures: bool = True  # draw the run's figures when training ends
    report: bool = True  # write report.md (key numbers + the figures) when training ends
    phase_background: BackgroundConfig = field(default_factory=BackgroundConfig)  # the heatmap behind paths
    model: ModelConfig = field(default_factory=ModelConfig)
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    trace: Optional[str] = None  # task=report: a trace, run directory or glob
    batching: BatchingConfig = field(default_factory=BatchingConfig)
    sweep: Optional[str] = None  # task=scaling: a sweep directory (checkpoints/multirun/<stamp>) or a glob of runs
    scaling: ScalingConfig = field(default_factory=ScalingConfig)
    # task=calibrate / reproduce / atlas: run or sweep directories or globs (a string or a list of them)
    runs: Any = None
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)
    guideline: GuidelineConfig = field(default_factory=GuidelineConfig)
    analysis: AnalysisConfig = field(default_factory=AnalysisConfig)
    phase_diagram: PhaseDiagramConfig = field(default_factory=PhaseDiagramConfig)
    checkpoint_root: str = "checkpoints"  # run directories go below this folder
    logging: LoggingConfig = field(default_factory=LoggingConfig)  # dashboard mirrors
    checkpoints: Optional[str] = None  # task=analyze: saved weights, a glob (quoted), a folder or a file
    evaluate: bool = False  # task=analyze: also compute the four metrics on the dataset at every checkpoint
    control: ControlConfig = field(default_factory=ControlConfig)  # train.control=edge: the weight-decay controller
    pick: str = "auto"  # reports: the label-free checkpoint pick's rule (ss.pick_checkpoint), e.g. chi, gain, J:hidden


def value_of(option: Any) -> str:
    """The plain string of a config option: enum members (Activation.tanh) become their value ("tanh")."""
    return str(getattr(option, "value", option))


def _require(ok: bool, key: str, value: Any, allowed: str) -> None:
    if not ok:
        raise ConfigError(f"Invalid value {key}={value!r}: {allowed}.")


def _check_types(options: Any) -> None:
    """Each field of ``options`` against its annotation (enums also from their values, nested options also
    from mappings, a path where a string is asked); converted values are stored back."""
    cls = type(options)
    hints = _HINTS.get(cls)
    if hints is None:
        hints = _HINTS[cls] = typing.get_type_hints(cls)
    prefix = f"{cls.section}." if getattr(cls, "section", "") else f"{cls.__name__}."
    for f in dataclasses.fields(options):
        value, key = getattr(options, f.name), prefix + f.name
        converted = _require_type(_convert(value, hints[f.name], key), hints[f.name], key)
        if converted is not value and not (type(converted) is type(value) and converted == value):
            setattr(options, f.name, converted)


_HINTS: dict[type, dict[str, Any]] = {}


def _require_type(value: Any, hint: Any, key: str) -> Any:
    """``value`` if it has the scalar type ``hint`` asks for (a path becomes its string), else ConfigError."""
    if typing.get_origin(hint) in (Union, types.UnionType):  # Optional[X]
        if value is None:
            return value
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        hint = args[0] if len(args) == 1 else Any
    if hint is str and isinstance(value, os.PathLike):
        return os.fspath(value)
    expected = {float: (numbers.Real, "a number"), int: (numbers.Integral, "an integer"),
                bool: (bool, "true or false"), str: (str, "a string")}.get(hint)
    if expected is not None:
        kind, allowed = expected
        _require(isinstance(value, kind) and (hint is bool or not isinstance(value, bool)), key, value, allowed)
    return value


BINARY_RULE_NAMES = ("greater_than_4", "vehicles_vs_animals")  # stabilityscope.training.data.BINARY_RULES


def _check_binarize(rule: Any) -> None:
    """The form of ``dataset.binarize``: null, a rule name, or a non-empty list of distinct class indices >= 0.

    Whether the rule fits the dataset (its classes, a rule meant for another dataset) is the data
    layer's check (``stabilityscope.training.data.positive_classes``), made before files are read.
    """
    allowed = (f"allowed: null (the dataset's own labels), {' or '.join(BINARY_RULE_NAMES)}, or a non-empty list "
               f"of distinct positive class indices such as [0,1,8,9]")
    if rule is None or isinstance(rule, str):
        _require(rule is None or rule in BINARY_RULE_NAMES, "dataset.binarize", rule, allowed)
        return
    shown = _plain(rule)
    ok = (isinstance(rule, Sequence) and len(rule) > 0
          and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in rule)
          and len(set(rule)) == len(rule))
    _require(ok, "dataset.binarize", shown, allowed)


SWEEP_ALLOWED = ("a sweep directory (checkpoints/multirun/<timestamp>, searched for trace.h5), a run directory, a "
                 "trace.h5, or a glob such as 'checkpoints/multirun/*/*'")
RUNS_ALLOWED = ("run or sweep directories, trace.h5 files, globs, runs tables (a runs.json, or a task=calibrate folder "
                "holding one) or a packaged calibration by name (fmnist_fc-fashion_mnist), as runs=<dir> or "
                "runs=[<dir>,<glob>] (quote globs: runs='checkpoints/multirun/*')")


def validate(cfg: Config) -> None:
    """The checks that span sections; raise ConfigError naming the key.

    Each section checks its own values when it is built, and :func:`as_options` checks them again (an
    options object may have been changed since); what is left here is what one part of the config asks
    of another: the inputs a task needs (``task=report`` a ``trace``, ``task=scaling`` a ``sweep``,
    ``task=calibrate`` and ``task=reproduce`` their ``runs``).
    """
    cfg = as_options(cfg, Config)
    task = value_of(cfg.task)
    if task == "report" and not cfg.trace:
        raise ConfigError("task=report needs the traces to report on: trace=<trace.h5, run directory, sweep "
                          "directory or glob>, e.g. trace='checkpoints/multirun/*/*'.")
    if task == "scaling" and not cfg.sweep:
        raise ConfigError(f"task=scaling needs the runs to analyse: sweep={cfg.sweep!r} is not set. Pass "
                          f"sweep=<{SWEEP_ALLOWED}>, e.g. sweep=checkpoints/multirun/2026-11-22_12-00-00.")
    runs = cfg.runs
    no_runs = runs is None or runs == "" or (isinstance(runs, (list, tuple)) and not runs)
    if task in ("calibrate", "reproduce", "atlas") and no_runs:
        raise ConfigError(f"task={task} needs the runs to analyse: runs={runs!r} is not set. Allowed: {RUNS_ALLOWED}.")


Options = TypeVar("Options")


def _plain(value: Any) -> Any:
    """Plain Python of a config value: mappings → dict, sequences → list, enum members → their value."""
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        return [_plain(v) for v in value]
    return value


def _convert(value: Any, hint: Any, key: str) -> Any:
    """``value`` as the type ``hint`` of a dataclass field (nested options, enums, lists, dicts)."""
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):  # Optional[X]
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return None if value is None else _convert(value, args[0], key)
    if dataclasses.is_dataclass(hint):
        return as_options(value, hint, key)
    if isinstance(hint, type) and issubclass(hint, Enum):
        try:
            return hint(getattr(value, "value", value))
        except ValueError:
            raise ConfigError(f"Invalid value {key}={value!r}: allowed: {', '.join(m.value for m in hint)}.") from None
    if origin in (list, dict):
        return _plain(value)
    return value


def as_options(options: Any, cls: type[Options], key: str = "") -> Options:
    """The options dataclass ``cls`` from ``options``.

    Args:
        options: an instance of ``cls`` (checked again, as it may have changed since it was built, and
            returned as it is), a Hydra ``DictConfig`` of its schema, any
            mapping or namespace of its fields (missing ones take the dataclass defaults), or None.
        cls: the dataclass, e.g. :class:`AnalysisConfig`.
        key: the config path of ``options`` (``analysis``), named in errors.

    Raises:
        ConfigError: a key that ``cls`` does not have, or a value of the wrong kind.
    """
    if isinstance(options, cls):
        if isinstance(options, CheckedOptions):  # it may have changed since it was built
            _check_types(options)
            options.check()
        return options
    if options is None:
        return cls()
    if dataclasses.is_dataclass(options) and not isinstance(options, type):
        options = {f.name: getattr(options, f.name) for f in dataclasses.fields(options)}
    elif not isinstance(options, Mapping) and hasattr(options, "__dict__"):  # a namespace of the fields
        options = {k: v for k, v in vars(options).items() if not k.startswith("_")}
    if not isinstance(options, Mapping):
        raise ConfigError(f"{key or cls.__name__}: expected {cls.__name__} options (the dataclass, a mapping of "
                          f"its fields or an object with them as attributes), got {type(options).__name__}.")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(str(k) for k in options if k not in names)
    if unknown:
        if not key:  # the whole config: what the command line calls top-level keys
            raise ConfigError(f"Unknown top-level key(s) {', '.join(unknown)}; the valid top-level keys are: "
                              f"{', '.join(names)}.")
        raise ConfigError(f"Unknown key(s) {', '.join(f'{key}.{k}' for k in unknown)}; the valid keys of "
                          f"{key} are: {', '.join(names)}.")
    kwargs = {name: _convert(options[name], hints[name], f"{key}.{name}" if key else name)
              for name in names if name in options}
    return cls(**kwargs)


def recording_options(options: Any) -> RecordingConfig:
    """The :class:`RecordingConfig` of ``options``: itself; the four sections of a :class:`Config` (or of a
    DictConfig or mapping of one); or the measurement options alone (an :class:`AnalysisConfig`, a mapping of
    its fields, or None for the defaults) with the other sections at their defaults."""
    if isinstance(options, RecordingConfig):
        return as_options(options, RecordingConfig)
    if isinstance(options, Config):
        options = as_options(options, Config)
        return RecordingConfig(analysis=options.analysis, storage=options.storage, logging=options.logging,
                               model=options.model)
    if isinstance(options, Mapping) and "analysis" in options:  # a (Dict)Config of the app or of RecordingConfig
        keys = [f.name for f in dataclasses.fields(RecordingConfig)]
        if set(options) <= set(keys):
            return as_options(options, RecordingConfig)
        full = as_options(options, Config)
        return RecordingConfig(analysis=full.analysis, storage=full.storage, logging=full.logging, model=full.model)
    return RecordingConfig(analysis=as_options(options, AnalysisConfig, "analysis"))


def to_container(cfg: Any) -> dict:
    """The options (a dataclass or a mapping such as a DictConfig) as plain Python, enums as their values."""
    if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):
        cfg = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)}
        return {k: to_container(v) if dataclasses.is_dataclass(v) else _plain(v) for k, v in cfg.items()}
    return _plain(cfg)
