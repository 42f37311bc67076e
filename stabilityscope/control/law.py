"""The control law: a bounded proportional–integral step on the logarithm of the weight decay.

The plant. Weight decay shrinks the weights by a fixed fraction per step, while the gradient noise
grows them: on the canonical network EOC-training's J² grows linearly at a rate A per epoch in the
ordered phase, and a decay λ holds it at a plateau that falls as λ grows (dJ²/dt ≈ A − c·λ·J², with
c = 2·(steps per epoch)·η/(1 − α) for SGD with momentum α). Near the edge, e = ln(S/S*) therefore obeys
de/dt ≈ −A·(e + ln(λ/λ*)): the decay acts on the *rate* of the statistic, and the decay that holds it,
λ*, is unknown and drifts as training slows. Two consequences shape the law:

- the decay must span decades (10⁻⁶ while the network is far from the edge, λ* when it arrives),
  so the law steps ln λ, multiplicatively, and clips it to [λ_min, λ_max];
- only an integral term settles at e = 0 with λ = λ* unknown; a proportional term on the change of e
  damps the approach (with k_p/k_i epochs of lead, the decay starts rising that long before the
  statistic would cross its target).

The law, per update n (G independent loops, one per parameter group; Δt_n epochs since the last)::

    e_n     = ln(S_n / S*)                          (combined over the group's maps; optionally filtered)
    Δ_n     = k_p·(e_n − e_{n−1}) + k_i·Δt_n·e_n     (velocity form; no proportional term at the first update)
    ln λ_n  = clip(ln λ_{n−1} + clip(Δ_n, ±max_step), ln λ_min, ln λ_max)

Bounds give anti-windup for free: the integral lives in ln λ itself, so λ never accumulates past a
bound. A statistic that is +∞ (a diverged map) steps λ up by ``max_step``, one that is 0 steps it down,
and a NaN holds λ and restarts the proportional term.

Linearised around the target (de/dt = −A(e + δ), δ = ln λ − ln λ*) the closed loop is the damped
oscillator ë + A(1 + k_p)ė + A·k_i·e = 0 in epochs: critically damped at k_i = A(1 + k_p)²/4. With the
defaults k_p = 10, k_i = 100 per epoch it is overdamped for A ≳ 3.3 per epoch and underdamped below;
the tests run it on that plant for A from 0.0135 to 0.5 per epoch (the canonical network's range) and
state the band it holds.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

__all__ = ["BoundedPI", "LawSettings"]


@dataclass(frozen=True)
class LawSettings:
    """The law's constants (see the module docstring); built from :class:`~stabilityscope.config.ControlConfig`."""

    proportional_gain: float = 10.0  # k_p
    integral_gain: float = 100.0  # k_i, per epoch
    max_step: float = 0.5  # largest |Δ ln λ| per update
    decay_min: float = 1e-6
    decay_max: float = 1.0
    smoothing: float = 0.0  # e_f ← smoothing·e_f + (1 − smoothing)·e

    def as_dict(self) -> dict[str, float]:
        return {k: float(getattr(self, k)) for k in self.__dataclass_fields__}


class BoundedPI:
    """G independent loops of the law (module docstring), vectorised.

    Args:
        n: the number of loops G.
        settings: the law's constants.
        decay_init: λ of every loop before the first update (default: ``settings.decay_min``).
    """

    def __init__(self, n: int, settings: LawSettings, decay_init: float | None = None) -> None:
        self.settings = settings
        start = settings.decay_min if decay_init is None else decay_init
        self.log_decay = np.full(n, math.log(start))  # (G,)
        self.previous = np.full(n, np.nan)  # (G,) the last finite (filtered) error, NaN before the first
        self.filtered = np.full(n, np.nan)  # (G,) the filter's state (smoothing > 0)

    @property
    def decay(self) -> np.ndarray:
        """λ of every loop, (G,)."""
        return np.exp(self.log_decay)

    def step(self, error: np.ndarray, dt: float) -> np.ndarray:
        """One update from the errors e = ln(S/S*) (G,) after ``dt`` epochs; returns the error used (filtered)."""
        s = self.settings
        e = np.asarray(error, dtype=np.float64).copy()
        finite = np.isfinite(e)
        if s.smoothing > 0:
            fresh = finite & ~np.isfinite(self.filtered)
            self.filtered = np.where(fresh, e, self.filtered)
            keep = finite & ~fresh
            self.filtered[keep] = s.smoothing * self.filtered[keep] + (1 - s.smoothing) * e[keep]
            e[finite] = self.filtered[finite]
        with np.errstate(invalid="ignore"):
            increment = np.where(finite & np.isfinite(self.previous), e - self.previous, 0.0)
            delta = np.where(finite, s.proportional_gain * increment + s.integral_gain * dt * np.where(finite, e, 0.0),
                             0.0)
        delta = np.where(e == np.inf, s.max_step, np.where(e == -np.inf, -s.max_step, delta))
        delta = np.clip(delta, -s.max_step, s.max_step)
        self.log_decay = np.clip(self.log_decay + delta, math.log(s.decay_min), math.log(s.decay_max))
        self.previous = np.where(finite, e, np.nan)
        return e

    # -- resume -------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"log_decay": self.log_decay.tolist(), "previous": self.previous.tolist(),
                "filtered": self.filtered.tolist()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        for key in ("log_decay", "previous", "filtered"):
            value = np.asarray(state[key], dtype=np.float64)
            if value.shape != self.log_decay.shape:
                raise ValueError(f"the saved law has {value.size} loops, this controller {self.log_decay.size}")
            setattr(self, key, value.copy())
