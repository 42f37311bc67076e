"""The toolkit's training guideline: reach the edge of chaos within an epoch budget, and stay there.

EOC-training finds the best test loss near the edge of chaos (J = 1 for the tanh hidden layer) and
that weight decay holds J² at a plateau that falls as the decay grows. It left the guideline (pick
η, B, α for speed and the decay whose plateau is J² = 1) without a formula. This module's formula is
the toolkit's own result, derived from the model of :mod:`stabilityscope.analysis.scaling`::

    dJ²/d(epoch) = ρ·(c − 2·wd·J²),      ρ = η·n/((1−α)·B)

(c: growth of J² per training example, measured; wd: PyTorch weight decay; n training examples).
Its solution relaxes from J²(0) = J_init² to the plateau c/(2·wd) at the rate 2·wd·ρ per epoch:

1. **the decay**: the plateau is the edge, J²∞ = 1, at wd* = c/2 (Keras λ* = c/4); a measured λ*
   (``ss.analyze_sweep(...).decay``) replaces the model's;
2. **the speed**: with that decay 1 − J²(t) = (1 − J_init²)·exp(−2·wd*·ρ·t), so J² is within
   ``tolerance`` of the edge after t = ln((1 − J_init²)/tolerance)/(2·wd*·ρ) epochs. Asking for
   t = ``reach_fraction`` × budget gives ρ = ln((1 − J_init²)/tolerance)/(2·wd*·reach_fraction·E);
3. **the settings**: η = ρ(1−α)B/n at the chosen momentum and batch; when η would exceed ``max_lr``
   the batch is halved (powers of two, down to 1), which keeps η/((1−α)B), and so the whole J²
   curve, unchanged (EOC-training's τ-scaling).

Example::

    import stabilityscope as ss

    r = ss.recommend(100)                 # 100 epochs on Fashion-MNIST's 60,000 examples
    r.lr, r.batch_size, r.weight_decay    # ≈ 0.0861, 32, 8.39e-5 (Keras λ 4.19e-5)
    print(r.explain())
    r.overrides()                         # ["optim.lr=0.08611", ...] for python -m stabilityscope

    a = ss.analyze_sweep("checkpoints/multirun/<decay sweep>")
    r = ss.Recommendation.from_analysis(100, a)   # measured c and λ*

Caveats: the model is linear in J² and ignores that the growth c may change near the edge, that very
large η leaves the small-step regime (hence ``max_lr``), and that a measured λ* holds for the
network, data and schedule it was measured on. Checked on the canonical network (full data, lr 0.02,
momentum 0.5, batch 32, 40 epochs), the plateaus at weight decay 6e-4, 1e-3 and 2e-3 were 0.202, 0.132
and 0.074 against the model's 0.140, 0.084 and 0.042: they fall as wd^-0.81, not wd^-1, so the model's
wd* = c/2 is a first guess and a measured λ* should replace it.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Optional, Union

import numpy as np

from stabilityscope.analysis.canonical import (CANONICAL_A, CANONICAL_BATCH, CANONICAL_C, CANONICAL_C_EPOCH,
                                               CANONICAL_MOMENTUM, CANONICAL_N_TRAIN)

if TYPE_CHECKING:
    from stabilityscope.analysis.scaling import SweepAnalysis

__all__ = ["CANONICAL_A", "CANONICAL_C", "CANONICAL_C_EPOCH", "Recommendation", "recommend"]

@dataclass(frozen=True)
class Recommendation:
    """Settings that bring J² of the hidden layer to the edge within a budget (see the module docstring)."""

    epochs_budget: float
    n_train: int
    lr: float  # η
    batch_size: int  # B
    momentum: float  # α
    weight_decay: float  # PyTorch convention (optim.weight_decay)
    keras_l2: float  # Keras λ = weight_decay / 2
    rho: float  # ρ = η·n/((1−α)B), effective learning rate × steps per epoch
    predicted_A: float  # ρ·c: J² growth per epoch without decay (EOC-training's A)
    reach_epoch: float  # epoch at which |J² − 1| <= tolerance
    plateau: float  # the J² plateau the decay was chosen for (the edge, 1)
    model_plateau: float  # the model's c/(2·wd): 1 unless a measured λ* disagrees with c/2
    c: float  # growth constant per training example
    j_init: float
    tolerance: float
    reach_fraction: float
    weight_decay_source: str  # "measured" (a sweep's λ*) or "model" (c/2)
    batch_lowered_from: Optional[int]  # the requested batch, when η > max_lr made it smaller

    @property
    def rate(self) -> float:
        """η/((1−α)B): runs with the same value share one J² curve (τ-scaling)."""
        return self.lr / ((1 - self.momentum) * self.batch_size)

    def j2(self, epochs: Any) -> np.ndarray:
        """J² against epoch under these settings: the model relaxing from J_init² to the plateau (= 1)
        at the rate 2·wd·ρ per epoch."""
        e = np.asarray(epochs, dtype=float)
        return self.plateau + (self.j_init ** 2 - self.plateau) * np.exp(-2 * self.weight_decay * self.rho * e)

    def overrides(self) -> list[str]:
        """The settings as command-line overrides for ``python -m stabilityscope``."""
        return [f"optim.lr={self.lr:.4g}", f"optim.momentum={self.momentum:g}", f"train.batch_size={self.batch_size}",
                f"optim.weight_decay={self.weight_decay:.4g}", f"train.epochs={math.ceil(self.epochs_budget)}"]

    def explain(self) -> str:
        """What to run, and why, in a few sentences."""
        j0 = self.j_init ** 2
        source = ("the measured λ*, where a sweep's J² plateau crosses the edge" if self.weight_decay_source == "measured"
                  else f"the model's wd* = c/2 with c = {self.c:.4g} per training example")
        lines = [
            f"Train {math.ceil(self.epochs_budget)} epochs on {self.n_train} examples with SGD lr {self.lr:.4g}, momentum "
            f"{self.momentum:g}, batch {self.batch_size} and weight decay {self.weight_decay:.4g} (PyTorch "
            f"optim.weight_decay; Keras L2 λ = {self.keras_l2:.4g}).",
            f"The decay is {source}: it holds the hidden layer's J² at the plateau J² = {self.plateau:g}, the edge of "
            f"chaos, where EOC-training finds the best test loss, instead of letting training carry it into chaos.",
            f"Model (stabilityscope.analysis.guideline): dJ²/d(epoch) = ρ(c − 2·wd·J²) with ρ = η·n/((1−α)B) = {self.rho:.4g}, so J² "
            f"relaxes from {j0:.3g} to the plateau at {2 * self.weight_decay * self.rho:.4g} per epoch and is within "
            f"{self.tolerance:g} of the edge by epoch {self.reach_epoch:.1f} ({self.reach_fraction:.0%} of the budget).",
            f"Without decay J² would grow by A = ρc = {self.predicted_A:.4g} per epoch and cross the edge near epoch "
            f"{(1 - j0) / self.predicted_A:.1f}.",
            f"Any η, α, B with the same η/((1−α)B) = {self.rate:.4g} (at the same n) gives the same J² curve.",
        ]
        if self.batch_lowered_from is not None:
            lines.append(f"The batch was lowered from {self.batch_lowered_from} to {self.batch_size} to keep the "
                         f"learning rate at most max_lr (η/((1−α)B) unchanged).")
        if self.weight_decay_source == "measured" and abs(self.model_plateau - 1) > 0.1:
            lines.append(f"Note: with c = {self.c:.4g} the model would put this decay's plateau at "
                         f"{self.model_plateau:.3g}; the measured λ* is used.")
        return " ".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "rate": self.rate}

    @classmethod
    def from_analysis(cls, epochs_budget: float, *analyses: Union["SweepAnalysis", Mapping[str, Any], str, Path],
                      **kwargs: Any) -> "Recommendation":
        """A recommendation from measured sweeps: c from the first analysis with a scaling fit, λ*
        from the first with a crossing (each falls back to the model/canonical value).

        Args:
            epochs_budget: as in :func:`recommend`.
            *analyses: :class:`~stabilityscope.analysis.scaling.SweepAnalysis` objects, their ``to_dict()``,
                or ``scaling.json`` files (or the ``task=scaling`` folders holding them).
            **kwargs: the other arguments of :func:`recommend`; an explicit ``c`` or
                ``weight_decay_star`` wins over the analyses.
        """
        c, star = None, None
        for a in analyses:
            d = _analysis_dict(a)
            found_c = ((d.get("combined") or {}).get("c"))
            found_star = ((d.get("decay") or {}).get("weight_decay_star"))
            if c is None and found_c is not None and math.isfinite(found_c):
                c = float(found_c)
            if star is None and found_star is not None and math.isfinite(found_star):
                star = float(found_star)
        if c is not None:
            kwargs.setdefault("c", c)
        if star is not None:
            kwargs.setdefault("weight_decay_star", star)
        return recommend(epochs_budget, **kwargs)


def _analysis_dict(a: Any) -> dict[str, Any]:
    """A SweepAnalysis, its to_dict(), a scaling.json or its folder, as a dict."""
    if hasattr(a, "to_dict") and not isinstance(a, Mapping):
        return a.to_dict()
    if isinstance(a, Mapping):
        return dict(a)
    path = Path(a)
    if path.is_dir():
        path = path / "scaling.json"
    if not path.is_file():
        raise ValueError(f"{str(a)!r} is neither a SweepAnalysis nor a scaling.json (or a task=scaling folder "
                         f"holding one).")
    return json.loads(path.read_text(encoding="utf-8"))


def _positive(name: str, value: Any, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name}={value!r}: {what}.")


def recommend(epochs_budget: float, n_train: int = CANONICAL_N_TRAIN, *, c: float = CANONICAL_C,
              weight_decay_star: Optional[float] = None, j_init: float = 0.5, reach_fraction: float = 0.5,
              tolerance: float = 0.05, momentum: float = CANONICAL_MOMENTUM, batch_size: int = CANONICAL_BATCH,
              max_lr: float = 0.1) -> Recommendation:
    """SGD settings and weight decay that bring J² to the edge (|J² − 1| <= tolerance) by
    ``reach_fraction × epochs_budget`` and hold it there (the toolkit's guideline; module docstring).

    Args:
        epochs_budget: the epochs you can afford, E.
        n_train: training examples per epoch (steps per epoch = n/B).
        c: growth of J² per training example (default: the canonical Fashion-MNIST measurement
            :data:`CANONICAL_C`; a sweep's ``analyze_sweep(...).combined.c`` for other data or networks).
        weight_decay_star: a measured decay (PyTorch convention) whose plateau is J² = 1; default the
            model's c/2.
        j_init: the hidden layer's initial J (the canonical init: 0.5).
        reach_fraction: the share of the budget after which J² should be at the edge (the rest is
            spent there, near the best test loss).
        tolerance: how close to the edge counts as arrived, |J² − 1| <= tolerance.
        momentum: α, kept as given.
        batch_size: B, lowered (powers of two, down to 1) only when η would exceed ``max_lr``.
        max_lr: the largest learning rate to recommend.

    Returns:
        A :class:`Recommendation`; ``.explain()`` says what to run and why.

    Raises:
        ValueError: an argument out of range, or a budget too short to reach the edge at ``max_lr``
            with batch 1 (the message gives the shortest budget that can).
    """
    _positive("epochs_budget", epochs_budget, "the epoch budget must be a positive number of epochs")
    if isinstance(n_train, bool) or not isinstance(n_train, (int, np.integer)) or n_train < 1:
        raise ValueError(f"n_train={n_train!r}: the number of training examples must be a positive integer "
                         f"(60000 for Fashion-MNIST, or dataset.train_subset).")
    _positive("c", c, f"the growth constant per training example must be a positive number (the canonical one is "
                      f"{CANONICAL_C:.4g}; a sweep's is analyze_sweep(...).combined.c)")
    if weight_decay_star is not None:
        _positive("weight_decay_star", weight_decay_star, "a measured λ* must be a positive weight decay (PyTorch "
                                                          "convention, 2 × Keras λ), or None for the model's c/2")
    _positive("tolerance", tolerance, "how close to J² = 1 counts as arrived; a number in (0, 1), e.g. 0.05")
    if tolerance >= 1:
        raise ValueError(f"tolerance={tolerance!r}: must be below 1, otherwise J² = 0 already counts as at the edge.")
    if isinstance(j_init, bool) or not isinstance(j_init, (int, float)) or not math.isfinite(j_init) or j_init < 0:
        raise ValueError(f"j_init={j_init!r}: the initial coupling J must be a number >= 0 (the canonical init is 0.5).")
    if j_init ** 2 >= 1 - tolerance:
        raise ValueError(f"j_init={j_init!r}: the layer starts with J² = {j_init ** 2:.3g}, already within tolerance "
                         f"{tolerance:g} of the edge or beyond it; the guideline brings an ordered layer (J² < "
                         f"{1 - tolerance:g}) to the edge. Initialise with a smaller J (model.init_J).")
    _positive("reach_fraction", reach_fraction, "the share of the budget spent reaching the edge, in (0, 1]")
    if reach_fraction > 1:
        raise ValueError(f"reach_fraction={reach_fraction!r}: the edge must be reached within the budget, so at most 1.")
    if isinstance(momentum, bool) or not isinstance(momentum, (int, float)) or not 0 <= momentum < 1:
        raise ValueError(f"momentum={momentum!r}: SGD momentum α must lie in [0, 1).")
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r}: the batch size must be a positive integer.")
    _positive("max_lr", max_lr, "the largest learning rate to recommend must be a positive number")

    source = "measured" if weight_decay_star is not None else "model"
    wd = float(weight_decay_star) if weight_decay_star is not None else c / 2  # plateau c/(2·wd) = 1
    log_gap = math.log((1 - j_init ** 2) / tolerance)  # 1 − J² must shrink by this many e-folds
    rho = log_gap / (2 * wd * reach_fraction * epochs_budget)
    batch, lowered = int(batch_size), None
    lr = rho * (1 - momentum) * batch / n_train
    if lr > max_lr:  # a smaller batch at the same η/((1−α)B): same J² curve, smaller η
        largest = max_lr * n_train / (rho * (1 - momentum))  # the batch at which η = max_lr
        if largest < 1:
            rho_max = max_lr * n_train / (1 - momentum)
            shortest = log_gap / (2 * wd * reach_fraction * rho_max)
            raise ValueError(
                f"epochs_budget={epochs_budget!r}: too short to bring J² within {tolerance:g} of the edge by "
                f"{reach_fraction:.0%} of it: that needs ρ = η·n/((1−α)B) = {rho:.4g}, more than lr {max_lr:g} gives even "
                f"at batch 1 on {n_train} examples (ρ = {rho_max:.4g}). Allow at least {math.ceil(shortest)} epochs, a "
                f"larger reach_fraction or tolerance, or raise max_lr.")
        batch, lowered = 2 ** int(math.floor(math.log2(largest))), int(batch_size)
        lr = rho * (1 - momentum) * batch / n_train
    return Recommendation(
        epochs_budget=float(epochs_budget), n_train=int(n_train), lr=lr, batch_size=batch, momentum=float(momentum),
        weight_decay=wd, keras_l2=wd / 2, rho=rho, predicted_A=rho * c,
        reach_epoch=log_gap / (2 * wd * rho), plateau=1.0, model_plateau=c / (2 * wd), c=float(c), j_init=float(j_init),
        tolerance=float(tolerance), reach_fraction=float(reach_fraction), weight_decay_source=source,
        batch_lowered_from=lowered)
