"""The control law on synthetic plants whose response to the decay is known: it converges, respects its bounds,
and holds the statistic inside a stated band.

Two plants. The *log-linear* plant: ln S relaxes (a fraction ``lag`` per update) towards c − g·ln λ, so the
decay that holds S at S* is known, λ* = exp((c − ln S*)/g). The *weight-decay* plant is the physics the law
was designed for (stabilityscope.control.law): J² grows at A per epoch from gradient noise and decays at
c·λ·J², dJ²/dt = A − c·λ·J², integrated exactly between updates; λ* = A/c. A spans 0.0135 per epoch (the
canonical network at lr 0.02, batch 32, momentum 0.5: edge at epoch ≈ 56) to 0.5 (the edge within 1.5 epochs).
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from stabilityscope.config import ControlConfig
from stabilityscope.control.law import BoundedPI, LawSettings

DEFAULTS = ControlConfig()
SETTINGS = LawSettings(DEFAULTS.proportional_gain, DEFAULTS.integral_gain, DEFAULTS.max_step, DEFAULTS.decay_min,
                       DEFAULTS.decay_max, DEFAULTS.smoothing)
DT = 0.05  # epochs between updates (100 steps of the canonical network's 1875 at batch 32 ≈ 0.053)


def log_linear(law: BoundedPI, c: float, g: float, target: float, updates: int, lag: float = 1.0,
               y0: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Errors e = ln(S/S*) and decays λ over ``updates`` of the log-linear plant (one loop)."""
    y = c - g * law.log_decay[0] if y0 is None else y0
    errors, decays = [], []
    for _ in range(updates):
        e = y - math.log(target)
        law.step(np.array([e]), DT)
        errors.append(e)
        decays.append(law.decay[0])
        y += lag * (c - g * law.log_decay[0] - y)
    return np.array(errors), np.array(decays)


def weight_decay_plant(law: BoundedPI, A: float, c: float, epochs: float, j2: float = 0.25,
                       noise: float = 0.0, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(t, ln J², λ) per update of dJ²/dt = A − c·λ·J² with λ held between updates (solved exactly)."""
    rng = np.random.default_rng(seed)
    ts, xs, lams = [], [], []
    t = 0.0
    while t < epochs:
        k = c * law.decay[0]
        plateau = A / k
        j2 = plateau + (j2 - plateau) * math.exp(-k * DT)
        t += DT
        reading = j2 * math.exp(noise * rng.standard_normal()) if noise else j2
        law.step(np.array([math.log(reading)]), DT)
        ts.append(t)
        xs.append(math.log(j2))
        lams.append(law.decay[0])
    return np.array(ts), np.array(xs), np.array(lams)


# ------------------------------------------------------------------------------------------ the log-linear plant
# gains for a plant that answers within one update: stable when both roots of
# z² − (1 − g(k_p + k_i·Δt))·z − g·k_p lie inside the unit circle (the law's velocity form on ln S = c − g ln λ)
PROMPT = LawSettings(0.2, 10.0, 0.5, 1e-6, 1.0)


def roots(g: float, s: LawSettings) -> np.ndarray:
    return np.roots([1.0, -(1 - g * (s.proportional_gain + s.integral_gain * DT)), -g * s.proportional_gain])


# (log-gain g, fraction of the way the plant moves per update, the stated overshoot band as a fraction of the
# initial error): a lagging plant overshoots more (the loop sees the decay's effect late)
@pytest.mark.parametrize("g, lag, band", [(1.0, 1.0, 0.02), (2.0, 1.0, 0.02), (0.5, 0.5, 0.02), (1.0, 0.2, 0.15)])
def test_it_converges_to_the_decay_that_holds_the_target(g, lag, band):
    lam_star, target = 1e-3, 1.0
    c = math.log(target) + g * math.log(lam_star)  # ln S = c − g ln λ is the target at λ*
    law = BoundedPI(1, PROMPT, decay_init=1e-5)
    errors, decays = log_linear(law, c, g, target, updates=600, lag=lag)
    assert abs(errors[-1]) < 1e-6
    assert decays[-1] == pytest.approx(lam_star, rel=1e-5)
    assert np.abs(roots(g, PROMPT)).max() < 1  # inside the stability region the analysis states
    # past the first crossing of the target, |e| stays within the band: no oscillation beyond it
    crossed = np.flatnonzero(np.sign(errors) != np.sign(errors[0]))
    assert not crossed.size or np.abs(errors[crossed[0]:]).max() <= band * abs(errors[0])


def test_gains_outside_the_stability_region_oscillate_but_only_as_far_as_max_step_allows():
    g = 1.0  # the defaults are tuned for the slow growth–decay plant: on a prompt one k_p·g = 10 > 1
    assert np.abs(roots(g, SETTINGS)).max() > 1 and np.abs(roots(g, PROMPT)).max() < 1
    law = BoundedPI(1, SETTINGS, decay_init=1e-5)
    errors, decays = log_linear(law, g * math.log(1e-3), g, 1.0, updates=300)
    tail = np.log(decays[100:])
    assert np.abs(np.diff(tail)).max() <= SETTINGS.max_step + 1e-12  # a bounded limit cycle, not a blow-up
    assert (decays >= SETTINGS.decay_min).all() and (decays <= SETTINGS.decay_max).all()
    assert np.abs(errors[100:]).max() > 0.1  # it does not settle: the prompt plant needs gains like PROMPT's


@pytest.mark.parametrize("lam_star, bound", [(10.0, "decay_max"), (1e-9, "decay_min")])
def test_an_unreachable_target_pins_the_decay_at_its_bound_and_never_past_it(lam_star, bound):
    settings = LawSettings(10.0, 100.0, 0.5, 1e-6, 1.0)
    g, target = 1.0, 1.0
    c = math.log(target) + g * math.log(lam_star)
    law = BoundedPI(1, settings, decay_init=1e-3)
    errors, decays = log_linear(law, c, g, target, updates=400)
    assert (decays >= settings.decay_min * (1 - 1e-12)).all() and (decays <= settings.decay_max * (1 + 1e-12)).all()
    assert decays[-1] == pytest.approx(getattr(settings, bound), rel=1e-12)
    # the integral lives in ln λ: at the bound it does not wind up, so the first sign change moves λ at once
    law.step(np.array([-errors[-1]]), DT)
    assert law.decay[0] != pytest.approx(getattr(settings, bound), rel=1e-6)


def test_one_update_moves_ln_decay_by_at_most_max_step():
    law = BoundedPI(1, LawSettings(10.0, 100.0, 0.25, 1e-6, 1.0), decay_init=1e-3)
    before = law.log_decay.copy()
    for e in (5.0, -7.0, 0.3, np.inf, -np.inf, 0.0):
        law.step(np.array([e]), DT)
        assert abs(law.log_decay[0] - before[0]) <= 0.25 + 1e-12
        before = law.log_decay.copy()


def test_non_finite_readings_step_up_down_or_hold():
    law = BoundedPI(3, SETTINGS, decay_init=1e-3)
    start = law.log_decay.copy()
    law.step(np.array([np.inf, -np.inf, np.nan]), DT)
    np.testing.assert_allclose(law.log_decay - start, [SETTINGS.max_step, -SETTINGS.max_step, 0.0])
    assert np.isnan(law.previous).all()  # the proportional term restarts after a non-finite reading


def test_the_loops_are_independent():
    law = BoundedPI(3, SETTINGS, decay_init=1e-4)
    single = [BoundedPI(1, SETTINGS, decay_init=1e-4) for _ in range(3)]
    rng = np.random.default_rng(0)
    for _ in range(50):
        e = rng.normal(0, 0.2, 3)
        law.step(e, DT)
        for i in range(3):
            single[i].step(e[i:i + 1], DT)
    np.testing.assert_array_equal(law.log_decay, [s.log_decay[0] for s in single])


def test_the_state_round_trips_and_continues_identically():
    a = BoundedPI(2, LawSettings(10.0, 100.0, 0.5, 1e-6, 1.0, smoothing=0.5), decay_init=1e-4)
    rng = np.random.default_rng(1)
    errors = rng.normal(0, 0.3, (40, 2))
    for e in errors[:20]:
        a.step(e, DT)
    b = BoundedPI(2, LawSettings(10.0, 100.0, 0.5, 1e-6, 1.0, smoothing=0.5))
    b.load_state_dict(a.state_dict())
    for e in errors[20:]:
        a.step(e, DT)
        b.step(e, DT)
    np.testing.assert_array_equal(a.log_decay, b.log_decay)


def test_the_first_update_has_no_proportional_term():
    law = BoundedPI(1, LawSettings(10.0, 2.0, 5.0, 1e-6, 1.0), decay_init=1e-3)
    law.step(np.array([0.1]), 0.5)
    assert law.log_decay[0] - math.log(1e-3) == pytest.approx(2.0 * 0.5 * 0.1)
    law.step(np.array([0.3]), 0.5)  # then k_p·Δe + k_i·Δt·e
    assert law.log_decay[0] - math.log(1e-3) == pytest.approx(0.1 + 10.0 * 0.2 + 2.0 * 0.5 * 0.3)


# --------------------------------------------------------------------------------------- the weight-decay plant
C_PER_DECAY = 600.0  # 2·(steps per epoch)·η/(1 − α) for batch 32 on 60,000 examples, η 0.08, α 0.5

# (A per epoch, the largest ln(J²/1) after the first crossing with the default gains): the band the docs state
BANDS = [(0.0135, 0.04), (0.06, 0.08), (0.108, 0.10), (0.5, 0.30)]


@pytest.mark.parametrize("A, overshoot", BANDS)
def test_the_defaults_hold_j2_at_the_edge_of_the_growth_decay_plant(A, overshoot):
    law = BoundedPI(1, SETTINGS)
    reach = 0.75 / A  # the edge without decay: J² from 0.25 at A per epoch
    t, x, lam = weight_decay_plant(law, A, C_PER_DECAY, epochs=reach + 60)
    first = int(np.flatnonzero(x > 0)[0])
    assert t[first] < reach + 3  # the decay (1e-6 before the edge) delays the crossing by under 3 epochs
    assert x[first:].max() < overshoot
    assert x[first:].min() > -0.05  # it does not undershoot past 5% below the edge either
    late = t > t[first] + 20
    assert np.abs(x[late]).max() < 0.01  # settled: within 1% of J² = 1
    assert lam[-1] == pytest.approx(A / C_PER_DECAY, rel=0.05)  # at the decay that holds it: λ* = A/c
    assert (lam >= SETTINGS.decay_min).all() and (lam <= SETTINGS.decay_max).all()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_noisy_statistic_stays_inside_a_wider_band_with_the_noisy_settings(seed):
    # 5% noise per reading (a statistic estimated from few probes): the docs' settings for noisy statistics,
    # k_i = 20 per epoch and smoothing 0.5, keep ln J² within ±0.1 once past the edge by 10 epochs
    noisy = LawSettings(10.0, 20.0, 0.5, 1e-6, 1.0, smoothing=0.5)
    t, x, _ = weight_decay_plant(BoundedPI(1, noisy), 0.06, C_PER_DECAY, epochs=60, noise=0.05, seed=seed)
    first = int(np.flatnonzero(x > 0)[0])
    assert np.abs(x[t > t[first] + 10]).max() < 0.10
