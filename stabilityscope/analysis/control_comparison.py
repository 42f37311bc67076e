"""Does holding the edge help? Controlled runs against the ways a user would otherwise set the weight decay.

The weight-decay controller (:class:`stabilityscope.control.EdgeController`, ``docs/guide/control.md``) is
judged on the test loss it ends with, against *arms* trained with the same optimiser settings:

- a fixed decay, e.g. ``recommend(budget)``'s (one decay, several seeds);
- a sweep of fixed decays: the arm is the decay whose mean final test loss is the lowest (read off the test
  set, so this arm is optimistic: a user would pick it with a validation split);
- no decay with early stopping: each run's test loss at the checkpoint of its lowest validation loss
  (``dataset.validation=N``).

Per arm it reports the final and the best test loss over seeds (t intervals), where J² of the FC maps below
the head ended, and the decay at the end (each run's :class:`RunOutcome` also holds its χ there); per other
arm one verdict with the fixed rules of
:mod:`stabilityscope.analysis.verdicts`: the controlled arm's mean log test loss minus the other's, Welch
interval, against the margin "at most 2% worse" (``LOSS_MARGIN``, the margin of the reproduction report's
"best decay at the edge"). *holds*: the interval lies inside (the controller is within 2% of the arm or
better); *fails*: outside (it is worse by more than 2%); otherwise *inconclusive*, with the seeds per arm
that would settle it.

    import stabilityscope as ss

    c = ss.compare_arms({"controlled": ctl_runs, "recommend(50)": rec_runs},
                        sweeps={"best of the 4-decay sweep": sweep_runs},
                        early_stopped={"no decay, early stopping": es_runs})
    print(c.to_markdown())
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Union

import numpy as np

from stabilityscope.analysis.reproduction import LOSS_MARGIN
from stabilityscope.analysis.verdicts import Margin, Verdict, judge_difference, mean_interval
from stabilityscope.errors import ConfigError
from stabilityscope.recording.trace import Trace, config_section, open_trace

__all__ = ["ArmSummary", "ControlComparison", "RunOutcome", "compare_arms", "run_outcome"]

RunPath = Union[str, Path]
# "the controlled arm is at most 2% worse": a difference of mean log test losses below ln 1.02
WITHIN = Margin(-math.inf, LOSS_MARGIN, "at most 2% above the other arm's test loss, the margin of 'best decay "
                                        "at the edge' in the reproduction report")
WORDS = {"reproduced": "holds", "not reproduced": "fails"}


@dataclass(frozen=True)
class RunOutcome:
    """One run's numbers for the comparison."""

    path: str
    seed: int
    weight_decay: float  # the configured decay (a controlled run: the controller's last value, mean over groups)
    final_loss: float  # test loss at the last checkpoint
    best_loss: float  # lowest test loss over checkpoints
    best_epoch: float
    stopped_loss: float  # test loss at the lowest validation loss (NaN without dataset.validation)
    stopped_epoch: float
    j2_end: float  # J² at the last checkpoint, median over the FC maps below the head (NaN without any)
    chi_end: float  # χ at the last checkpoint, same maps
    epochs: float  # the last checkpoint's epoch

    def loss(self, early_stopped: bool) -> float:
        return self.stopped_loss if early_stopped else self.final_loss


def _body_maps(tr: Trace) -> list[str]:
    """The FC maps below the head: layers with a mean-field J that are not the head."""
    return [name for name in tr.layers if "J" in tr.stats(name) and tr.layer_info(name).get("role") != "head"]


def run_outcome(run: RunPath) -> RunOutcome:
    """The comparison's numbers of one run (a run directory or its trace)."""
    with open_trace(run) as tr:
        if tr.status != "finished":  # a killed run's last checkpoint is not the end of its budget
            raise ConfigError(f"The run {run} is {tr.status}, not finished; the comparison reads each run's end. "
                              f"Continue it with `python -m stabilityscope resume={run}` (or leave it out).")
        loss = tr.metric("test_loss")
        epochs = tr.position("epoch")
        best = int(np.nanargmin(loss))
        stopped_loss = stopped_epoch = math.nan
        if "val_loss" in tr.metrics:
            val = tr.metric("val_loss")
            if np.isfinite(val).any():
                k = int(np.nanargmin(val))
                stopped_loss, stopped_epoch = float(loss[k]), float(epochs[k])
        maps = _body_maps(tr)
        j2 = float(np.median([tr.stat(m, "J")[-1] ** 2 for m in maps])) if maps else math.nan
        chi = (float(np.median([tr.stat(m, "chi")[-1] for m in maps]))
               if maps and all("chi" in tr.stats(m) for m in maps) else math.nan)
        log = tr.control
        decay = (float(np.mean(log.weight_decay[-1])) if log is not None and len(log)
                 else float(config_section(tr.config, "optim").get("weight_decay", 0.0)))
        seed = int(config_section(tr.config, "train").get("seed", 0))
        return RunOutcome(str(tr.path.parent), seed, decay, float(loss[-1]), float(loss[best]), float(epochs[best]),
                          stopped_loss, stopped_epoch, j2, chi, float(epochs[-1]))


def _interval(values: Sequence[float]) -> tuple[float, float, float]:
    m, lo, hi, _ = mean_interval(values)
    return m, lo, hi


@dataclass
class ArmSummary:
    """One arm: its runs and their means over seeds."""

    name: str
    runs: list[RunOutcome]
    early_stopped: bool = False  # its loss is the test loss at the lowest validation loss
    chosen_from: dict[float, float] = field(default_factory=dict)  # a sweep: decay → mean final test loss

    @property
    def losses(self) -> list[float]:
        return [r.loss(self.early_stopped) for r in self.runs]

    @property
    def loss(self) -> tuple[float, float, float]:
        """(mean, low, high) of the arm's test loss: final, or at the early stop."""
        return _interval(self.losses)

    @property
    def best(self) -> tuple[float, float, float]:
        return _interval([r.best_loss for r in self.runs])

    @property
    def j2_end(self) -> tuple[float, float, float]:
        return _interval([r.j2_end for r in self.runs])


@dataclass
class ControlComparison:
    """The arms and, for every arm but the controlled one, the controlled arm's verdict against it."""

    controlled: ArmSummary
    others: list[ArmSummary]
    verdicts: dict[str, Verdict]

    def verdict_word(self, arm: str) -> str:
        v = self.verdicts[arm]
        return WORDS.get(v.verdict, v.verdict)

    def to_markdown(self, digits: int = 4) -> str:
        def num(t: tuple[float, float, float]) -> str:
            m, lo, hi = t
            if not math.isfinite(m):
                return "—"
            return f"{m:.{digits}g}" + (f" ({lo:.{digits}g} – {hi:.{digits}g})" if math.isfinite(lo) else "")

        head = ("| arm | runs (seeds) | decay | test loss used (95% interval) | best test loss | J² at the end "
                "(median over FC maps below the head) | verdict of the controlled arm against it |\n"
                "|---|---|---|---|---|---|---|\n")
        rows = []
        for arm in (self.controlled, *self.others):
            decays = sorted({r.weight_decay for r in arm.runs})
            decay = ", ".join(f"{d:.3g}" for d in decays) if len(decays) <= 3 else f"{decays[0]:.3g}–{decays[-1]:.3g}"
            used = "at the lowest validation loss" if arm.early_stopped else "final"
            if arm is self.controlled:
                verdict = "—"
            else:
                v = self.verdicts[arm.name]  # describe() opens with the verdict's own word: ours replaces it
                verdict = f"**{self.verdict_word(arm.name)}**{v.describe(3)[len(v.verdict):]}"
            seeds = ", ".join(str(r.seed) for r in arm.runs)
            rows.append(f"| {arm.name} | {len(arm.runs)} ({seeds}) | {decay} | {num(arm.loss)} ({used}) | "
                        f"{num(arm.best)} | {num(arm.j2_end)} | {verdict} |\n")
        notes = []
        for arm in self.others:
            if arm.chosen_from:
                grid = ", ".join(f"{d:.3g}: {m:.4g}" for d, m in sorted(arm.chosen_from.items()))
                notes.append(f"- {arm.name}: the decay with the lowest mean final test loss, chosen on the test set "
                             f"(mean final test loss per decay: {grid}).\n")
        rule = (f"\nVerdict: the controlled arm's mean log test loss minus the other arm's (Welch 95% interval; "
                f"0.0198 = ln 1.02 is 2% worse) "
                f"against the margin {WITHIN.describe()} ({WITHIN.reason}); *holds* inside it, *fails* outside, "
                f"otherwise *inconclusive* with the seeds per arm that 80% power needs.\n")
        return head + "".join(rows) + ("\n" + "".join(notes) if notes else "") + rule


def _outcomes(name: str, runs: Sequence[RunPath]) -> list[RunOutcome]:
    if not runs:
        raise ConfigError(f"The arm {name!r} has no runs; give each arm one run directory per seed.")
    return [run_outcome(r) for r in runs]


def _best_of_sweep(name: str, runs: Sequence[RunPath]) -> ArmSummary:
    by_decay: dict[float, list[RunOutcome]] = {}
    for out in _outcomes(name, runs):
        by_decay.setdefault(out.weight_decay, []).append(out)
    means = {d: float(np.mean([r.final_loss for r in outs])) for d, outs in by_decay.items()}
    best = min(means, key=means.__getitem__)
    return ArmSummary(f"{name} (decay {best:.3g})", by_decay[best], chosen_from=means)


def compare_arms(arms: Mapping[str, Sequence[RunPath]], *, controlled: str = "controlled",
                 sweeps: Optional[Mapping[str, Sequence[RunPath]]] = None,
                 early_stopped: Optional[Mapping[str, Sequence[RunPath]]] = None) -> ControlComparison:
    """The controlled arm (``arms[controlled]``) against every other arm.

    ``arms``: name → run directories, one per seed, judged on their final test loss. ``sweeps``: name → the
    runs of a decay sweep (several decays, one run per seed and decay): the arm is the decay with the lowest
    mean final test loss. ``early_stopped``: name → runs trained with ``dataset.validation``, judged on the
    test loss at their lowest validation loss.
    """
    if controlled not in arms:
        raise ConfigError(f"No arm named {controlled!r} among {sorted(arms)}; pass the controlled runs under that "
                          f"name or set controlled=<its name>.")
    ctl = ArmSummary(controlled, _outcomes(controlled, arms[controlled]))
    others = [ArmSummary(name, _outcomes(name, runs)) for name, runs in arms.items() if name != controlled]
    others += [_best_of_sweep(name, runs) for name, runs in (sweeps or {}).items()]
    for name, runs in (early_stopped or {}).items():
        arm = ArmSummary(name, _outcomes(name, runs), early_stopped=True)
        missing = [r.path for r in arm.runs if not math.isfinite(r.stopped_loss)]
        if missing:
            raise ConfigError(f"The early-stopping arm {name!r} needs runs with a validation split "
                              f"(dataset.validation=N); these have none: {', '.join(missing)}.")
        others.append(arm)
    verdicts = {arm.name: judge_difference(np.log(ctl.losses), np.log(arm.losses), WITHIN, unit="seeds per arm",
                                           why="controlled minus this arm, mean log test loss")
                for arm in others}
    return ControlComparison(ctl, others, verdicts)
