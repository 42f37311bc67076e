"""The toolkit's training guideline: reach the edge of chaos within an epoch budget, and stay there.

EOC-training finds the best test loss near the edge of chaos (J = 1 for the tanh hidden layer) and
that weight decay holds J² at a plateau that falls as the decay grows. It left the guideline (pick
η, B, α for speed and the decay whose plateau is J² = 1) without a formula. This module's formula is
the toolkit's own, built on two laws **measured** on the canonical network
(:mod:`stabilityscope.analysis.calibration`, packaged with their provenance):

- the growth law A(r): the slope of J² per epoch in the ordered part at the rate r = η/((1−α)B);
- the plateau law J²∞(wd, r), whence λ*(r), the decay whose plateau is the edge at that rate.

Between them J² is taken to relax linearly to its plateau (dJ²/dt = A·(1 − J²/J²∞), the form of the
toolkit's model dJ²/d(epoch) = ρ(c − 2·wd·J²)). With the plateau at the edge, 1 − J²(t) =
(1 − J_init²)·exp(−A·t), so

1. **the speed**: J² is within ``tolerance`` of 1 at t = ``reach_fraction`` × budget when
   A = ln((1 − J_init²)/tolerance)/(reach_fraction·E); the growth law gives the rate r for that A;
2. **the decay**: λ*(r) from the plateau law;
3. **the settings**: η = r(1−α)B at the chosen momentum and batch; when η would exceed ``max_lr``
   the batch is halved (powers of two, down to 1), which keeps r, and so the J² curve, unchanged.

**Validity.** The rate stays inside both laws' calibrated ranges. A budget long enough for a slower
rate than the laws cover gets the slowest covered rate: the edge comes earlier than
``reach_fraction × E`` and the rest of the budget is spent at the plateau (our choice: extrapolating the
plateau law to slower rates would guess the decay, and reaching the edge early costs nothing the
laws know of). A budget too short for the fastest covered rate is refused (ValueError naming the
shortest budget inside), unless ``extrapolate=True``, which warns and marks the recommendation. Every
number a recommendation carries is a prediction; the README lists which ones were checked by runs.

Passing ``c`` (a measured growth constant per training example) restores the toolkit's original
model instead of the growth law, A = ρc with ρ = η·n/((1−α)B), and, unless ``weight_decay_star`` is
also given, its plateau c/(2·wd), so wd* = c/2. That model was found to misplace the plateau on the
canonical network (see the README's calibration section); it stays for your own measured c and λ*.

Example::

    import stabilityscope as ss

    r = ss.recommend(60)                  # the packaged calibrated laws, 60,000 examples (44 epochs or more)
    r.lr, r.batch_size, r.weight_decay
    print(r.explain())
    r.overrides()                         # ["optim.lr=...", ...] for python -m stabilityscope
    r = ss.recommend(100, laws="checkpoints/calibrate/<stamp>")   # your own task=calibrate laws
"""
from __future__ import annotations

import json
import math
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Optional, Union

import numpy as np

from stabilityscope.analysis.calibration import REFERENCE_RATE, CalibratedLaws, load_laws, within_range
from stabilityscope.analysis.canonical import (
    CANONICAL_A,
    CANONICAL_BATCH,
    CANONICAL_C,
    CANONICAL_C_EPOCH,
    CANONICAL_MOMENTUM,
    CANONICAL_N_TRAIN,
)

if TYPE_CHECKING:
    from stabilityscope.analysis.scaling import SweepAnalysis

__all__ = ["CANONICAL_A", "CANONICAL_C", "CANONICAL_C_EPOCH", "Recommendation", "recommend"]

@dataclass(frozen=True)
class Recommendation:
    """Settings that bring J² of the hidden layer to the edge within a budget (see the module docstring).

    Every quantity here is a prediction of the laws it came from.
    """

    epochs_budget: float
    n_train: int
    lr: float  # η
    batch_size: int  # B
    momentum: float  # α
    weight_decay: float  # PyTorch convention (optim.weight_decay)
    keras_l2: float  # Keras λ = weight_decay / 2
    rho: float  # ρ = η·n/((1−α)B), effective learning rate × steps per epoch
    predicted_A: float  # J² growth per epoch without decay at this rate (EOC-training's A)
    reach_epoch: float  # epoch at which |J² − 1| <= tolerance
    plateau: float  # the J² plateau the decay was chosen for (the edge, 1)
    model_plateau: float  # the original model's c/(2·wd) at this decay, c = A/ρ
    c: float  # A/ρ: growth per training example at this rate
    j_init: float
    tolerance: float
    reach_fraction: float
    weight_decay_source: str  # "calibrated" (plateau law), "measured" (a given λ*) or "model" (c/2)
    batch_lowered_from: Optional[int]  # the requested batch, when η > max_lr made it smaller
    growth_source: str = "given c"  # "calibrated" (growth law) or "given c" (A = ρc)
    extrapolated: bool = False  # the rate lies outside a calibrated law's range (extrapolate=True)
    laws: str = ""  # the calibrated laws used, with their provenance
    slowest_calibrated_rate: bool = False  # the budget allowed a slower rate than the laws cover: the slowest covered

    @property
    def rate(self) -> float:
        """η/((1−α)B): runs with the same value share one J² curve (τ-scaling)."""
        return self.lr / ((1 - self.momentum) * self.batch_size)

    def j2(self, epochs: Any) -> np.ndarray:
        """J² against epoch under these settings (a prediction): relaxation from J_init² to the plateau
        (= 1) at the rate A/plateau per epoch."""
        e = np.asarray(epochs, dtype=float)
        return self.plateau + (self.j_init ** 2 - self.plateau) * np.exp(-self.predicted_A / self.plateau * e)

    def overrides(self) -> list[str]:
        """The settings as command-line overrides for ``python -m stabilityscope``."""
        return [f"optim.lr={self.lr:.4g}", f"optim.momentum={self.momentum:g}", f"train.batch_size={self.batch_size}",
                f"optim.weight_decay={self.weight_decay:.4g}", f"train.epochs={math.ceil(self.epochs_budget)}"]

    def explain(self) -> str:
        """What to run, and why, in a few sentences."""
        j0 = self.j_init ** 2
        source = {"measured": "the given measured λ*, where a sweep's J² plateau crosses the edge",
                  "calibrated": "λ* of the calibrated plateau law at this rate",
                  "model": f"the original model's wd* = c/2 with c = {self.c:.4g} per training "
                           "example"}[self.weight_decay_source]
        growth = ("the calibrated growth law" if self.growth_source == "calibrated"
                  else f"A = ρc with c = {self.c:.4g} per training example")
        lines = [
            f"Train {math.ceil(self.epochs_budget)} epochs on {self.n_train} examples with SGD lr {self.lr:.4g}, "
            f"momentum {self.momentum:g}, batch {self.batch_size} and weight decay {self.weight_decay:.4g} (PyTorch "
            f"optim.weight_decay; Keras L2 λ = {self.keras_l2:.4g}).",
            f"The decay is {source}: it should hold the hidden layer's J² at the plateau J² = {self.plateau:g}, the "
            "edge of chaos, where EOC-training finds the best test loss, instead of letting training carry it into "
            "chaos.",
            f"Predicted ({growth}): J² grows by A = {self.predicted_A:.4g} per epoch at η/((1−α)B) = {self.rate:.4g}, "
            f"so it relaxes from {j0:.3g} to the plateau and is within {self.tolerance:g} of the edge by epoch "
            f"{self.reach_epoch:.1f} ({self.reach_epoch / self.epochs_budget:.0%} of the budget).",
            f"Any η, α, B with the same η/((1−α)B) = {self.rate:.4g} (at the same n) gives the same J² curve.",
        ]
        if self.laws:
            lines.append(f"Laws: {self.laws}.")
        if self.slowest_calibrated_rate:
            lines.append("The budget allows a slower rate than the laws were measured at, so this is the slowest "
                         f"measured one: the edge comes earlier than {self.reach_fraction:.0%} of the budget, and the "
                         "rest is spent at the plateau.")
        if self.extrapolated:
            lines.append("WARNING: this rate lies outside the range the laws were measured on (extrapolate=True); "
                         "the prediction is unchecked there.")
        if self.batch_lowered_from is not None:
            lines.append(f"The batch was lowered from {self.batch_lowered_from} to {self.batch_size} to keep the "
                         f"learning rate at most max_lr (η/((1−α)B) unchanged).")
        if self.weight_decay_source == "measured" and abs(self.model_plateau - 1) > 0.1:
            lines.append(f"Note: with c = {self.c:.4g} the original model would put this decay's plateau at "
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


def recommend(epochs_budget: float, n_train: int = CANONICAL_N_TRAIN, *,
              laws: Union[CalibratedLaws, str, Path, None] = None, c: Optional[float] = None,
              weight_decay_star: Optional[float] = None, j_init: float = 0.5, reach_fraction: float = 0.5,
              tolerance: float = 0.05, momentum: float = CANONICAL_MOMENTUM, batch_size: int = CANONICAL_BATCH,
              max_lr: float = 0.1, extrapolate: bool = False) -> Recommendation:
    """SGD settings and weight decay that bring J² to the edge (|J² − 1| <= tolerance) by
    ``reach_fraction × epochs_budget`` and hold it there (the toolkit's guideline; module docstring).

    Args:
        epochs_budget: the epochs you can afford, E.
        n_train: training examples per epoch (steps per epoch = n/B; the growth law's A per epoch is
            scaled by n over its calibration n).
        laws: calibrated laws (:class:`~stabilityscope.analysis.calibration.CalibratedLaws`, a laws.json
            or the ``task=calibrate`` folder holding one); default the packaged canonical ones.
        c: a measured growth constant per training example: use the original model A = ρc (and, without
            ``weight_decay_star`` or ``laws``, its decay c/2) instead of the calibrated laws.
        weight_decay_star: a measured decay (PyTorch convention) whose plateau is J² = 1, used instead of
            the plateau law.
        j_init: the hidden layer's initial J (the canonical init: 0.5).
        reach_fraction: the share of the budget after which J² should be at the edge (the rest is
            spent there, near the best test loss).
        tolerance: how close to the edge counts as arrived, |J² − 1| <= tolerance.
        momentum: α, kept as given.
        batch_size: B, lowered (powers of two, down to 1) only when η would exceed ``max_lr``.
        max_lr: the largest learning rate to recommend.
        extrapolate: give settings even when the budget is too short for the calibrated range (with a
            warning) instead of refusing. Budgets longer than the range needs always get its slowest rate.

    Returns:
        A :class:`Recommendation`; ``.explain()`` says what to run and why.

    Raises:
        ValueError: an argument out of range; a budget too short for the calibrated range (the message
            gives the shortest budget inside it); or a budget too short to reach the edge at ``max_lr``
            with batch 1 (the message gives the shortest budget that can).
    """
    _check_arguments(epochs_budget, n_train, c, weight_decay_star, j_init, reach_fraction, tolerance, momentum,
                     batch_size, max_lr)
    use_laws = c is None or laws is not None  # a given c alone means the original model throughout
    calibrated = (laws if isinstance(laws, CalibratedLaws) else load_laws(laws)) if use_laws else None
    growth = _Growth(c, n_train, calibrated)
    log_gap = math.log((1 - j_init ** 2) / tolerance)  # 1 − J² must shrink by this many e-folds
    decay_law = _decay_law_in_use(calibrated, c, weight_decay_star, extrapolate)
    # the calibrated ranges of the laws in use: growth (unless c is given) and plateau (unless λ* or the model is)
    ranges: list[tuple[str, tuple[float, float]]] = []
    if c is None:
        ranges.append(("growth", calibrated.growth.validity))
    if decay_law:
        ranges.append(("plateau", calibrated.plateau.rate_range))
    A = log_gap / (reach_fraction * epochs_budget)
    rate, A, extrapolated, slowest = _rate_within(ranges, growth, A, log_gap, epochs_budget, reach_fraction,
                                                  extrapolate)
    if weight_decay_star is not None:
        wd, source = float(weight_decay_star), "measured"
    elif decay_law:
        wd, source = calibrated.plateau.decay_for(rate), "calibrated"
    else:  # the original model's plateau c/(2·wd) = 1, with c the growth per example at this rate
        wd, source = (c if c is not None else growth.slope(rate) / (rate * n_train)) / 2, "model"
        extrapolated = extrapolated or c is None
    lr, batch, lowered = _batch_within(rate, momentum, batch_size, max_lr, growth, log_gap, epochs_budget,
                                       reach_fraction, tolerance)
    rho = rate * n_train
    c_eff = float(c) if c is not None else A / rho  # growth per training example at this rate
    return Recommendation(
        epochs_budget=float(epochs_budget), n_train=int(n_train), lr=lr, batch_size=batch, momentum=float(momentum),
        weight_decay=wd, keras_l2=wd / 2, rho=rho, predicted_A=A, reach_epoch=log_gap / A, plateau=1.0,
        model_plateau=c_eff / (2 * wd), c=c_eff, j_init=float(j_init), tolerance=float(tolerance),
        reach_fraction=float(reach_fraction), weight_decay_source=source, batch_lowered_from=lowered,
        growth_source="given c" if c is not None else "calibrated", extrapolated=extrapolated,
        laws=_laws_text(calibrated) if calibrated is not None and (c is None or decay_law) else "",
        slowest_calibrated_rate=slowest)


def _check_arguments(epochs_budget: float, n_train: int, c: Optional[float], weight_decay_star: Optional[float],
                     j_init: float, reach_fraction: float, tolerance: float, momentum: float, batch_size: int,
                     max_lr: float) -> None:
    """ValueError naming the first argument of :func:`recommend` out of its range."""
    _positive("epochs_budget", epochs_budget, "the epoch budget must be a positive number of epochs")
    if isinstance(n_train, bool) or not isinstance(n_train, (int, np.integer)) or n_train < 1:
        raise ValueError(f"n_train={n_train!r}: the number of training examples must be a positive integer "
                         f"(60000 for Fashion-MNIST, or dataset.train_subset).")
    if c is not None:
        _positive("c", c, f"the growth constant per training example must be a positive number (the canonical one is "
                          f"{CANONICAL_C:.4g}; a sweep's is analyze_sweep(...).combined.c), or None for the calibrated "
                          "laws")
    if weight_decay_star is not None:
        _positive("weight_decay_star", weight_decay_star, "a measured λ* must be a positive weight decay (PyTorch "
                                                          "convention, 2 × Keras λ), or None for the plateau law")
    _positive("tolerance", tolerance, "how close to J² = 1 counts as arrived; a number in (0, 1), e.g. 0.05")
    if tolerance >= 1:
        raise ValueError(f"tolerance={tolerance!r}: must be below 1, otherwise J² = 0 already counts as at the edge.")
    if isinstance(j_init, bool) or not isinstance(j_init, (int, float)) or not math.isfinite(j_init) or j_init < 0:
        raise ValueError(f"j_init={j_init!r}: the initial coupling J must be a number >= 0 (the canonical init is "
                         "0.5).")
    if j_init ** 2 >= 1 - tolerance:
        raise ValueError(f"j_init={j_init!r}: the layer starts with J² = {j_init ** 2:.3g}, already within tolerance "
                         f"{tolerance:g} of the edge or beyond it; the guideline brings an ordered layer (J² < "
                         f"{1 - tolerance:g}) to the edge. Initialise with a smaller J (model.init_J).")
    _positive("reach_fraction", reach_fraction, "the share of the budget spent reaching the edge, in (0, 1]")
    if reach_fraction > 1:
        raise ValueError(f"reach_fraction={reach_fraction!r}: "
                         "the edge must be reached within the budget, so at most 1.")
    if isinstance(momentum, bool) or not isinstance(momentum, (int, float)) or not 0 <= momentum < 1:
        raise ValueError(f"momentum={momentum!r}: SGD momentum α must lie in [0, 1).")
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r}: the batch size must be a positive integer.")
    _positive("max_lr", max_lr, "the largest learning rate to recommend must be a positive number")


@dataclass
class _Growth:
    """The growth of J² per epoch against the rate η/((1−α)B): the original model A = ρc with a given c, else
    the calibrated growth law."""

    c: Optional[float]
    n_train: int
    calibrated: Optional[CalibratedLaws]

    def slope(self, rate: float) -> float:
        """A per epoch at this rate."""
        if self.c is not None:
            return self.c * rate * self.n_train
        return float(self.calibrated.growth.slope(rate, self.n_train))

    def rate_for(self, A: float) -> float:
        """The rate whose A per epoch is ``A``."""
        return A / (self.c * self.n_train) if self.c is not None else self.calibrated.growth.rate_for(A, self.n_train)

    def network(self) -> str:
        """The network the laws were measured on, for messages."""
        return self.calibrated.provenance.get("network", "the canonical network")


def _decay_law_in_use(calibrated: Optional[CalibratedLaws], c: Optional[float], weight_decay_star: Optional[float],
                      extrapolate: bool) -> bool:
    """Whether the weight decay comes from the calibrated plateau law; refuses (or, with ``extrapolate``, warns)
    when the laws in use have none and nothing else gives a decay."""
    if weight_decay_star is None and calibrated is not None and calibrated.plateau is None and c is None:
        message = ("recommend: these calibrated laws have no plateau law (the decay runs did not give one; see the "
                   "README's calibration section), so no weight decay is calibrated. Pass weight_decay_star=<a "
                   "measured λ*>, or extrapolate=True for the original model's wd* = c/2 at this rate (measured to "
                   "misplace the plateau).")
        if not extrapolate:
            raise ValueError(message)
        warnings.warn(message, UserWarning, stacklevel=3)
    return weight_decay_star is None and calibrated is not None and calibrated.plateau is not None


def _rate_within(ranges: list[tuple[str, tuple[float, float]]], growth: _Growth, A: float, log_gap: float,
                 epochs_budget: float, reach_fraction: float,
                 extrapolate: bool) -> tuple[float, float, bool, bool]:
    """(rate, A, extrapolated, slowest): the rate whose growth A reaches the edge in time, kept inside the laws'
    calibrated ``ranges`` (a long budget gets the slowest calibrated rate; a short one is refused, or with
    ``extrapolate`` warned about)."""
    rate = growth.rate_for(A)
    extrapolated, slowest = False, False
    if not ranges:
        return rate, A, extrapolated, slowest
    lo, hi = max(r[1][0] for r in ranges), min(r[1][1] for r in ranges)
    if lo <= hi and math.isfinite(rate) and rate < lo * (1 - 1e-9):
        # a budget longer than the calibrated rates need: the slowest calibrated rate reaches the edge
        # earlier (reach_epoch < reach_fraction·E) and spends the rest at the plateau, inside the laws
        rate, A, slowest = lo, growth.slope(lo), True
    if not (math.isfinite(rate) and within_range(rate, (lo, hi))):
        shown = f"{rate:.4g} ({rate / REFERENCE_RATE:.3g}× the reference 1.25e-3)" if math.isfinite(rate) else "none"
        inside = (f"budgets of {math.ceil(log_gap / (reach_fraction * growth.slope(hi)))} epochs or more stay inside"
                  if lo <= hi else "the laws' ranges do not overlap")
        message = (f"epochs_budget={epochs_budget!r}: reaching the edge by {reach_fraction:.0%} of it needs J² to grow "
                   f"by A = {A:.4g} per epoch, i.e. η/((1−α)B) = {shown}, outside the calibrated range "
                   f"{lo:.4g}–{hi:.4g} ({' and '.join(n for n, _ in ranges)} law; measured on "
                   f"{growth.network()}); {inside}. Pass "
                   f"extrapolate=True to get the settings anyway, or calibrate laws for your setting "
                   f"(task=calibrate) and pass laws=.")
        if not extrapolate or not math.isfinite(rate):
            raise ValueError(message)
        warnings.warn("recommend: " + message, UserWarning, stacklevel=3)
        extrapolated = True
    return rate, A, extrapolated, slowest


def _batch_within(rate: float, momentum: float, batch_size: int, max_lr: float, growth: _Growth, log_gap: float,
                  epochs_budget: float, reach_fraction: float, tolerance: float) -> tuple[float, int, Optional[int]]:
    """(lr, batch, the batch it was lowered from or None): η = rate·(1−α)·B, with B halved to powers of two
    until η <= ``max_lr`` (same η/((1−α)B), same J² curve); refused when even batch 1 needs more."""
    batch, lowered = int(batch_size), None
    lr = rate * (1 - momentum) * batch
    if lr > max_lr:  # a smaller batch at the same η/((1−α)B): same J² curve, smaller η
        largest = max_lr / (rate * (1 - momentum))  # the batch at which η = max_lr
        if largest < 1:
            # the fastest rate max_lr allows at batch 1, and the budget it needs
            shortest = log_gap / (reach_fraction * growth.slope(max_lr / (1 - momentum)))
            raise ValueError(
                f"epochs_budget={epochs_budget!r}: too short to bring J² within {tolerance:g} of the edge by "
                f"{reach_fraction:.0%} of it: that needs η/((1−α)B) = {rate:.4g}, more than lr {max_lr:g} gives even "
                f"at batch 1. Allow at least {math.ceil(shortest)} epochs, a larger reach_fraction or tolerance, or "
                "raise max_lr.")
        batch, lowered = 2 ** int(math.floor(math.log2(largest))), int(batch_size)
        lr = rate * (1 - momentum) * batch
    return lr, batch, lowered


def _laws_text(calibrated: CalibratedLaws) -> str:
    """The laws in use and where they were measured, for :meth:`Recommendation.explain`."""
    prov = calibrated.provenance
    plateau_text = calibrated.plateau.describe() if calibrated.plateau else "none (not calibrated)"
    return (f"growth {calibrated.growth.describe()}; plateau {plateau_text}; measured "
            f"{prov.get('date', '?')} on {prov.get('network', '?')}, {', '.join(prov.get('dataset', []) or ['?'])}")
