"""Calibration of the guideline's laws (stabilityscope.analysis.calibration) and the guideline built on them: each
fit recovers laws written into synthetic traces, and the guideline's settings, fed into the laws' own dynamics
(integrated independently), reach the edge when promised. The reproduction report's rules:
tests/analysis/test_reproduction.py."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy.integrate import solve_ivp

import stabilityscope as ss
from stabilityscope.analysis.calibration import (
    DEFAULT_LAWS,
    DEFAULT_TABLE,
    REFERENCE_RATE,
    REFERENCE_WEIGHT_DECAY,
    CalibratedLaws,
    GrowthLaw,
    PlateauLaw,
    calibrate,
    fit_growth_law,
    fit_plateau_law,
    fit_relaxation,
    load_laws,
)
from stabilityscope.analysis.guideline import recommend
from stabilityscope.analysis.reproduction import RULES
from stabilityscope.analysis.runs_table import read_runs_table, write_runs_table
from stabilityscope.plots.calibration import plot_plateau_law
from stabilityscope.reports.calibration import write_calibration_report
from tests.conftest import compose_with_hydra, run_cli
from tests.trace_factory import linear_j2, synthetic_trace

N_TRAIN = 1000  # the synthetic traces' dataset.train_subset
C_GROWTH = 0.01  # J² growth per training example of the synthetic growth runs: A = C_GROWTH·rate·N_TRAIN
K, Q, S = 1.3, 0.8, 0.3  # the synthetic plateau law J²∞ = K·(wd/wd_ref)^−Q·(r/r_ref)^S
TAU = 3.0  # relaxation time (epochs) of the synthetic decay runs


def growth_table(rates, A, **extra) -> pd.DataFrame:
    return pd.DataFrame({"rate": rates, "A": A, "n_train": N_TRAIN, **extra})


# --------------------------------------------------------------------------------------------- growth


def test_linear_data_give_a_unit_exponent_and_the_whole_range():
    rates = REFERENCE_RATE * np.array([0.1, 0.3, 1, 3, 10, 0.1, 0.3, 1, 3, 10])
    noise = 1 + 0.01 * np.array([1, -1, 1, -1, 1, -1, 1, -1, 1, -1])
    g = fit_growth_law(growth_table(rates, 0.0126 * rates / REFERENCE_RATE * noise))
    assert g.law is not None and g.law.validity == pytest.approx((rates.min(), rates.max()))
    assert g.fits["power"].exponent == pytest.approx(1.0, abs=0.01)
    assert g.law.slope(REFERENCE_RATE) == pytest.approx(0.0126, rel=0.02)
    assert g.law.rate_for(float(g.law.slope(4 * REFERENCE_RATE))) == pytest.approx(4 * REFERENCE_RATE)
    assert g.runs["ratio_to_law"].between(0.97, 1.03).all()


def test_a_runaway_above_a_rate_ends_the_validity_range_there():
    x = np.array([0.1, 0.3, 1, 3, 5, 10, 20])
    A = 0.0126 * x ** 0.9 * np.where(x > 5, 3.0, 1.0)  # past 5× the slope triples
    g = fit_growth_law(growth_table(REFERENCE_RATE * x, A))
    lo, hi = np.array(g.law.validity) / REFERENCE_RATE
    assert (lo, hi) == pytest.approx((0.1, 5))
    assert g.law.form == "power" and g.law.exponent == pytest.approx(0.9, abs=1e-6)  # refitted inside the range
    assert g.law.within(4 * REFERENCE_RATE) and not g.law.within(10 * REFERENCE_RATE)
    assert g.runs.loc[g.runs["rate"] > 5 * REFERENCE_RATE, "ratio_to_law"].to_numpy() == pytest.approx([3, 3])


def test_an_affine_law_is_chosen_when_a_drift_adds_to_the_diffusion():
    x = np.geomspace(0.1, 10, 9)
    g = fit_growth_law(growth_table(REFERENCE_RATE * x, 0.004 + 0.01 * x))
    assert g.law.form == "affine"
    assert (g.law.intercept, g.law.k) == pytest.approx((0.004, 0.01), rel=1e-6)
    assert g.law.rate_for(0.014) == pytest.approx(REFERENCE_RATE)
    assert math.isnan(g.law.rate_for(0.003))  # below the drift: no rate gives it


def test_too_few_runs_give_no_law_and_say_why():
    g = fit_growth_law(growth_table([1e-3, 1e-3], [0.01, 0.011]))
    assert g.law is None and "needs >= 3 runs at >= 2 rates" in g.notes[0]


# -------------------------------------------------------------------------------------------- plateau


def test_relaxation_fit_recovers_plateau_and_time():
    t = np.linspace(0, 20, 21)
    P, tau, rms = fit_relaxation(t, 0.9 + (0.25 - 0.9) * np.exp(-t / 3.5))
    assert (P, tau) == pytest.approx((0.9, 3.5), rel=1e-5) and rms < 1e-8
    P, tau, _ = fit_relaxation(t, 0.25 + 0.02 * t)  # still rising straight: not saturated within the run
    assert tau > t[-1] / 3


def plateau_rows(seeds=(0, 1, 2)) -> pd.DataFrame:
    rows = []
    for r in (2, 4, 8):
        for wd in (0.5, 1, 2, 4):
            for s in seeds:
                p = K * wd ** -Q * r ** S * (1 + 0.002 * (s - 1))
                rows.append({"rate": r * REFERENCE_RATE, "weight_decay": wd * REFERENCE_WEIGHT_DECAY, "j2_plateau": p})
    return pd.DataFrame(rows)


def test_plateau_law_recovers_exponents_and_lambda_star():
    law, r2 = fit_plateau_law(plateau_rows())
    assert (law.K, law.q, law.s) == pytest.approx((K, Q, S), rel=1e-2) and r2 > 0.999
    assert law.q_ci[0] < Q < law.q_ci[1] and law.s_ci[0] < S < law.s_ci[1]
    for r in (2, 5):
        star = law.decay_for(r * REFERENCE_RATE)
        assert float(law.plateau(star, r * REFERENCE_RATE)) == pytest.approx(1.0)
        assert star == pytest.approx(REFERENCE_WEIGHT_DECAY * (K * r ** S) ** (1 / Q), rel=2e-2)
    assert law.within(4 * REFERENCE_RATE) and not law.within(16 * REFERENCE_RATE)


@pytest.mark.parametrize("rate_x", [1.0, 4.0])  # extrapolated to the reference rate, and inside the fitted rates
def test_lambda_star_interval_covers_the_true_value(rate_x):
    """The law's λ* interval (delta method on the fit's covariance) covers the true λ* about 95% of the time over
    repeated noisy sweeps: 3 seeds × 4 decays × 3 rates with 3% log-normal scatter per run."""
    rng = np.random.default_rng(0)
    clean = plateau_rows(seeds=(1, 1, 1))  # the factor (1 + 0.002·(s − 1)) is 1: the true law exactly
    true_star = REFERENCE_WEIGHT_DECAY * (K * rate_x ** S) ** (1 / Q)
    covered, trials = 0, 300
    for _ in range(trials):
        noisy = clean.assign(j2_plateau=clean["j2_plateau"] * np.exp(0.03 * rng.standard_normal(len(clean))))
        law, _ = fit_plateau_law(noisy)
        lo, hi = law.decay_interval(rate_x * REFERENCE_RATE)
        assert lo < law.decay_for(rate_x * REFERENCE_RATE) < hi
        covered += lo <= true_star <= hi
    assert 0.91 <= covered / trials <= 0.99  # binomial sd at 0.95 over 300 trials: 0.013


def test_lambda_star_interval_widens_away_from_the_fitted_rates():
    law, _ = fit_plateau_law(plateau_rows().assign(j2_plateau=lambda d: d["j2_plateau"] * np.exp(
        0.03 * np.random.default_rng(1).standard_normal(len(d)))))
    width = {x: math.log(np.divide(*law.decay_interval(x * REFERENCE_RATE)[::-1])) for x in (0.25, 1, 4)}
    assert width[0.25] > width[1] > width[4] > 0  # the fitted rates are 2×, 4×, 8×
    no_cov = PlateauLaw(K, Q, S, REFERENCE_WEIGHT_DECAY, REFERENCE_RATE, (1, 2), (1, 2))  # laws stored without one
    assert all(math.isnan(v) for v in no_cov.decay_interval(REFERENCE_RATE))


def test_laws_round_trip_through_json(tmp_path):
    laws = CalibratedLaws(GrowthLaw("power", 0.012, 0.9, 0.0, REFERENCE_RATE, 60000, (1e-4, 6e-3), 0.15),
                          fit_plateau_law(plateau_rows())[0], {"dataset": ["fashion_mnist"], "runs": 3})
    back = load_laws(laws.save(tmp_path / "laws.json"))
    assert back == laws and load_laws(tmp_path) == laws  # the folder works as well as the file
    with pytest.raises(ValueError, match="No calibrated laws"):
        load_laws(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text(json.dumps({"growth": {}}))
    with pytest.raises(ValueError, match="is not a calibrated-laws file"):
        load_laws(tmp_path / "bad.json")


# ------------------------------------------------------------------------------------ synthetic sweeps


def _lr(rate: float, momentum: float = 0.5, batch: int = 32) -> float:
    return rate * (1 - momentum) * batch


@pytest.fixture(scope="module")
def calibration_runs(tmp_path_factory):
    """Growth runs (linear law up to 4×, triple the slope at 8×) and decay runs (the K, Q, S plateau law), tracked
    as the calibration presets track them (analysis=economy: no maps)."""
    root = tmp_path_factory.mktemp("calibration")
    i = 0
    for x, momentum, batch in ((0.25, 0.5, 32), (0.5, 0.5, 32), (1, 0.5, 32), (2, 0.5, 32), (4, 0.5, 32),
                               (2, 0.75, 32), (4, 0.875, 32), (2, 0.5, 16), (0.5, 0.5, 128), (8, 0.5, 32)):
        rate = x * REFERENCE_RATE
        A = C_GROWTH * rate * N_TRAIN * (3 if x == 8 else 1)
        for seed in (0, 1):
            synthetic_trace(root / "growth" / str(i) / "trace.h5", epochs=20, lr=_lr(rate, momentum, batch),
                            momentum=momentum, batch_size=batch, train_subset=N_TRAIN, seed=seed, analysis="economy",
                            j2=linear_j2(A * (1 + 0.005 * seed)))
            i += 1
    i = 0
    for x in (2, 4):
        rate = x * REFERENCE_RATE
        star = REFERENCE_WEIGHT_DECAY * (K * x ** S) ** (1 / Q)
        for wd in (0.5, 1, 2, 4):
            plateau = K * wd ** -Q * x ** S
            decay = wd * REFERENCE_WEIGHT_DECAY
            for seed in (0, 1, 2):
                p = plateau * (1 + 0.01 * (seed - 1))
                synthetic_trace(root / "decay" / str(i) / "trace.h5", epochs=20, lr=_lr(rate), weight_decay=decay,
                                train_subset=N_TRAIN, seed=seed, analysis="economy",
                                j2=lambda e, p=p: p + (0.25 - p) * np.exp(-np.asarray(e) / TAU),
                                # the loss is lowest at the decay nearest λ*
                                test_loss=lambda e, d=decay, s=star: 0.4 + 0.05 * abs(math.log(d / s)) + 0 * e)
                i += 1
    # one decay run too short to saturate (τ = 30 epochs, 20 epochs run)
    synthetic_trace(root / "decay" / "slow" / "trace.h5", epochs=20, lr=_lr(2 * REFERENCE_RATE),
                    weight_decay=REFERENCE_WEIGHT_DECAY, train_subset=N_TRAIN, seed=9, analysis="economy",
                    j2=lambda e: 1.2 + (0.25 - 1.2) * np.exp(-np.asarray(e) / 30.0))
    return root


@pytest.fixture(scope="module")
def calibration(calibration_runs):
    # each run's whole ordered part: the 8× runs' coarse checkpoints put only one in the default J² window
    return calibrate(calibration_runs, n_boot=200, j2_window=None)


def test_calibrate_recovers_the_growth_law_and_its_range(calibration):
    g = calibration.growth
    assert g.law is not None
    lo, hi = np.array(g.law.validity) / REFERENCE_RATE
    assert (lo, hi) == pytest.approx((0.25, 4))  # the 8× runs grow three times faster than the law
    assert g.law.slope(REFERENCE_RATE, N_TRAIN) == pytest.approx(C_GROWTH * REFERENCE_RATE * N_TRAIN, rel=0.02)
    for var in ("lr", "momentum", "batch_size"):  # each series alone: exponent 1
        p, lo_p, hi_p, n = g.series_exponents[var]
        assert p == pytest.approx(1.0, abs=0.02) and n >= 3
    eight = g.runs[np.isclose(g.runs["rate"], 8 * REFERENCE_RATE)]
    assert eight["ratio_to_law"].to_numpy() == pytest.approx([3, 3], rel=0.02)
    assert eight["A_chaotic"].notna().all()  # the 8× runs crossed the edge: their slope beyond it is measured


def test_calibrate_recovers_the_plateau_law_from_saturated_runs_only(calibration):
    p = calibration.plateau
    assert p.law is not None
    assert (p.law.q, p.law.s) == pytest.approx((Q, S), abs=0.03)
    slow = p.runs[p.runs["run"].str.endswith("slow")]
    assert len(slow) == 1 and not slow["saturated"].iloc[0]
    assert slow["tau_measured"].iloc[0] == pytest.approx(30, rel=0.05)
    assert p.runs.loc[~p.runs["run"].str.endswith("slow"), "tau_measured"].to_numpy() == pytest.approx(TAU, rel=0.02)
    for row in p.lambda_star.itertuples():
        x = row.rate / REFERENCE_RATE
        true = REFERENCE_WEIGHT_DECAY * (K * x ** S) ** (1 / Q)
        assert row.lambda_star == pytest.approx(true, rel=0.05)  # interpolated between grid decays
        assert row.law_lambda_star == pytest.approx(true, rel=0.05)
        assert row.seed_ci_low <= row.lambda_star <= row.seed_ci_high


def test_the_eoc_claim_table_finds_the_best_decay_at_lambda_star(calibration):
    claim = calibration.eoc_claim
    assert len(claim) == 2 and (claim["best_decay"] == claim["edge_decay"]).all()


def test_the_eoc_claim_compares_final_losses_of_runs_trained_as_long(calibration_runs, tmp_path):
    """A longer run at 2× with a far lower final loss is not the best decay of the 20-epoch runs: it gets its own
    row."""
    synthetic_trace(tmp_path / "long" / "trace.h5", epochs=40, lr=_lr(2 * REFERENCE_RATE),
                    weight_decay=4 * REFERENCE_WEIGHT_DECAY,
                    train_subset=N_TRAIN, seed=0, analysis="economy", test_loss=lambda e: 0.1 + 0 * np.asarray(e),
                    j2=lambda e: 0.3 + (0.25 - 0.3) * np.exp(-np.asarray(e) / TAU))
    claim = calibrate([calibration_runs, tmp_path], n_boot=20).eoc_claim
    assert sorted(zip(claim["rate_x"].round(6), claim["epochs"])) == [(2, 20), (2, 40), (4, 20)]
    short = claim[claim["epochs"] == 20]
    assert (short["best_decay"] == short["edge_decay"]).all()
    (long_row,) = claim[claim["epochs"] == 40].itertuples()
    assert long_row.best_decay == pytest.approx(4 * REFERENCE_WEIGHT_DECAY) and long_row.best_loss == pytest.approx(0.1)


def test_laws_feed_the_guideline_and_the_report(calibration, tmp_path):
    laws = calibration.laws()
    assert laws.provenance["growth_runs"] == 20 and laws.provenance["decay_runs"] == 25
    path = write_calibration_report(calibration, tmp_path)
    text = path.read_text()
    assert "power" in text and "λ*" in text and (tmp_path / "figures" / "growth_law.png").exists()
    assert load_laws(tmp_path) == CalibratedLaws.from_dict(json.loads((tmp_path / "laws.json").read_text()))
    json.loads((tmp_path / "calibration.json").read_text())  # strict JSON (NaN as null)


def test_the_plateau_figure_names_a_rate_whose_runs_have_not_saturated(calibration_runs):
    """Runs still relaxing are drawn as crosses and named in the legend (no empty legend, no warning)."""
    c = calibrate(calibration_runs / "decay" / "slow", n_boot=20)
    assert not c.plateau.runs["saturated"].any()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fig = plot_plateau_law(c)
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert labels == ["2× the reference rate, not saturated (J² at the end)"]


# ---------------------------------------------------------------------------------------- guideline


def simulate_laws(r, laws: CalibratedLaws, epochs: float) -> float:
    """J² after ``epochs`` of dJ²/dt = A(rate)·(1 − J²/J²∞(wd, rate)), the rate recomputed from the settings."""
    rate = r.lr / ((1 - r.momentum) * r.batch_size)
    A = float(laws.growth.slope(rate, r.n_train))
    P = float(laws.plateau.plateau(r.weight_decay, rate))
    sol = solve_ivp(lambda t, y: A * (1 - y / P), (0, epochs), [r.j_init ** 2], rtol=1e-10, atol=1e-12)
    return float(sol.y[0, -1])


@pytest.fixture(scope="module")
def synthetic_laws() -> CalibratedLaws:
    growth = GrowthLaw("power", 0.0126, 0.9, 0.0, REFERENCE_RATE, 60000, (0.1 * REFERENCE_RATE, 10 * REFERENCE_RATE),
                       0.15)
    plateau = PlateauLaw(K, Q, S, REFERENCE_WEIGHT_DECAY, REFERENCE_RATE, (2 * REFERENCE_RATE, 8 * REFERENCE_RATE),
                         (4e-5, 7e-4))
    return CalibratedLaws(growth, plateau, {"network": "synthetic", "dataset": ["none"], "date": "2026-11-29"})


@pytest.mark.parametrize("budget, reach, tol", [(100, 0.5, 0.05), (70, 0.5, 0.05), (200, 0.3, 0.1)])
def test_recommended_settings_reach_the_edge_under_the_laws(synthetic_laws, budget, reach, tol):
    r = recommend(budget, laws=synthetic_laws, reach_fraction=reach, tolerance=tol)
    assert r.growth_source == "calibrated" and r.weight_decay_source == "calibrated" and not r.extrapolated
    assert 1 - simulate_laws(r, synthetic_laws, reach * budget) == pytest.approx(tol, rel=1e-6)
    assert abs(1 - simulate_laws(r, synthetic_laws, 50 * budget)) < 1e-6  # the plateau is the edge
    assert r.reach_epoch == pytest.approx(reach * budget)
    np.testing.assert_allclose(r.j2([0, r.reach_epoch]), [0.25, 1 - tol])


def test_a_budget_too_short_for_the_calibrated_range_is_refused_or_flagged(synthetic_laws):
    with pytest.raises(ValueError, match=r"outside the calibrated range.*budgets of (\d+) epochs or more") as info:
        recommend(20, laws=synthetic_laws)  # needs a rate above the plateau law's 8×
    shortest = int(re.search(r"budgets of (\d+) epochs or more", str(info.value)).group(1))
    assert recommend(shortest, laws=synthetic_laws).rate <= 8 * REFERENCE_RATE
    with pytest.raises(ValueError, match="outside the calibrated range"):
        recommend(shortest - 1, laws=synthetic_laws)
    with pytest.warns(UserWarning, match="outside the calibrated range"):
        r = recommend(20, laws=synthetic_laws, extrapolate=True)
    assert r.extrapolated and "WARNING" in r.explain() and r.rate > 8 * REFERENCE_RATE


def test_a_long_budget_gets_the_slowest_calibrated_rate(synthetic_laws):
    """A budget that would need a rate below the plateau law's 2× gets 2×: the edge comes earlier, inside the laws."""
    lo = 2 * REFERENCE_RATE
    r = recommend(1000, laws=synthetic_laws)
    assert r.rate == pytest.approx(lo, rel=1e-12) and r.slowest_calibrated_rate and not r.extrapolated
    assert r.reach_epoch < 0.5 * 1000 and "slowest measured" in r.explain()
    assert 1 - simulate_laws(r, synthetic_laws, r.reach_epoch) == pytest.approx(0.05, rel=1e-6)  # at the edge, earlier
    assert r.weight_decay == pytest.approx(synthetic_laws.plateau.decay_for(lo), rel=1e-12)
    assert recommend(1000, laws=synthetic_laws, extrapolate=True) == r  # never extrapolated downwards
    # the longest budget the range's slowest rate serves exactly is not moved
    boundary = math.log(0.75 / 0.05) / (0.5 * float(synthetic_laws.growth.slope(lo, 60000)))
    at = recommend(boundary, laws=synthetic_laws)
    assert not at.slowest_calibrated_rate and at.reach_epoch == pytest.approx(0.5 * boundary)


def test_the_packaged_laws_pin_the_guideline():
    """recommend() with no laws uses the packaged file: its settings follow from the stored numbers alone."""
    stored = json.loads(DEFAULT_LAWS.read_text(encoding="utf-8"))
    g, p = stored["growth"], stored["plateau"]
    prov = stored["provenance"]
    assert prov["dataset"] == ["fashion_mnist"] and prov["n_train"] == 60000 and prov["growth_runs"] >= 20
    lo, hi = max(g["validity"][0], p["rate_range"][0]), min(g["validity"][1], p["rate_range"][1])
    # a budget whose rate lies inside both laws: the middle of the common range
    rate = math.sqrt(lo * hi)
    A = g["intercept"] + g["k"] * (rate / g["rate_ref"]) ** g["exponent"]
    budget = math.log(0.75 / 0.05) / (0.5 * A)
    r = ss.recommend(budget)
    assert r.rate == pytest.approx(rate, rel=1e-9)
    star = p["wd_ref"] * (p["K"] * (rate / p["rate_ref"]) ** p["s"]) ** (1 / p["q"])
    assert r.weight_decay == pytest.approx(star, rel=1e-9) and r.weight_decay_source == "calibrated"
    assert "fashion_mnist" in r.explain()


def test_the_packaged_laws_are_rebuilt_from_their_runs_table():
    """task=calibrate on the packaged runs table gives the packaged laws. Every discrete outcome is exact: the runs
    fitted, the form, the validity range (measured rates), which decay runs saturated, the degrees of freedom. The
    fitted numbers agree to 1e-9 relative, a bound that follows from the method, not from this machine: they are
    least squares of at most 3 parameters on design matrices with condition number below 1e3 (checked), where a
    different summation order (another BLAS, another thread count) moves the solution by about cond·n·ε ≈ 1e-11;
    and no run sits near a threshold that rounding could flip (the 3τ saturation test, the 15% validity band and
    the AIC choice of form each hold with a margin far above that; checked)."""
    stored = json.loads(DEFAULT_LAWS.read_text(encoding="utf-8"))
    prov = stored["provenance"]
    assert prov["table"] == DEFAULT_TABLE.name and DEFAULT_TABLE.is_file() and "task=calibrate" in prov["command"]
    c = calibrate(DEFAULT_TABLE, n_boot=0, j2_window=tuple(stored["growth"]["j2_window"]))
    rebuilt = c.laws().to_dict()
    for key in ("growth_runs", "decay_runs", "seeds", "dataset", "n_train", "network"):
        assert rebuilt["provenance"][key] == prov[key], key
    g, p = rebuilt["growth"], rebuilt["plateau"]
    exact_growth = ("form", "validity", "rate_ref", "n_train", "tolerance", "j2_window", "intercept")
    exact_plateau = ("rate_range", "weight_decay_range", "dof", "wd_ref", "rate_ref")
    assert {k: g[k] for k in exact_growth} == {k: stored["growth"][k] for k in exact_growth}
    assert {k: p[k] for k in exact_plateau} == {k: stored["plateau"][k] for k in exact_plateau}
    assert (g["k"], g["exponent"]) == pytest.approx((stored["growth"]["k"], stored["growth"]["exponent"]), rel=1e-9)
    for key in ("K", "q", "s", "K_ci", "q_ci", "s_ci"):
        want = np.array(stored["plateau"][key], dtype=float)
        assert np.array(p[key], dtype=float) == pytest.approx(want, rel=1e-9), key
    assert np.array(p["cov"]) == pytest.approx(np.array(stored["plateau"]["cov"]), rel=1e-8, abs=1e-15)
    # the margins behind "exact": no decision within rounding of its threshold
    runs = c.plateau.runs[np.isfinite(c.plateau.runs["tau_measured"].astype(float))]
    gap = (runs["last_epoch"].astype(float) - 3 * runs["tau_measured"].astype(float)).abs() / (3 * runs["tau_measured"])
    assert (gap > 1e-4).all()
    ratio = c.growth.runs["ratio_to_law"].astype(float)
    assert ((ratio - 1).abs() - c.growth.law.tolerance).abs().min() > 1e-6
    aics = sorted(f.aic for f in c.growth.fits.values())
    assert aics[1] - aics[0] > 1e-6
    fitted = runs[runs["saturated"] & runs["in_growth_range"]]
    X = np.column_stack([np.ones(len(fitted)), np.log(fitted["weight_decay"].astype(float) / p["wd_ref"]),
                         np.log(fitted["rate"].astype(float) / p["rate_ref"])])  # the plateau law's design
    assert len(fitted) == p["dof"] + 3 and np.linalg.cond(X) < 1e3


def test_a_given_c_restores_the_original_model():
    c = 1.677e-4
    r = recommend(100, c=c)
    assert r.growth_source == "given c" and r.weight_decay_source == "model" and r.weight_decay == pytest.approx(c / 2)
    assert r.predicted_A == pytest.approx(r.rho * c)


# ---------------------------------------------------------------------------------- the common J² window


def test_the_common_j2_window_removes_an_initial_transient(tmp_path):
    """J² first jumps by 0.05 within 1/x epochs (a transient of fixed rescaled time), then grows as 0.02·x per epoch.
    Over the common window (J² 0.3–0.6, after the jump) every run's A is the line's exactly and the law's exponent is
    1; over each run's whole ordered part the jump at the start inflates A, most where the run covers least of the
    path (the slow runs), and bends the exponent."""
    rates = (0.5, 1, 2, 4)
    for x in rates:
        A = 0.02 * x
        synthetic_trace(tmp_path / f"x{x:g}" / "trace.h5", epochs=20, lr=_lr(x * REFERENCE_RATE), train_subset=N_TRAIN,
                        analysis="economy", j2=lambda e, A=A, t0=1 / x: 0.25 + A * np.asarray(e, float)
                        + 0.05 * np.minimum(np.asarray(e, float) / t0, 1.0))
    window = calibrate(tmp_path, n_boot=0)
    assert window.growth.law.j2_window == (0.30, 0.60)
    runs = window.growth.runs.sort_values("rate")
    np.testing.assert_allclose(runs["A"], 0.02 * np.array(rates), rtol=1e-9)
    assert (runs["A_j2_from"] >= 0.3).all() and (runs["A_j2_to"] <= 0.6).all()
    assert window.growth.fits_all["power"].exponent == pytest.approx(1.0, abs=1e-9)
    whole = calibrate(tmp_path, n_boot=0, j2_window=None)
    ratio = (whole.growth.runs.sort_values("rate")["A"].to_numpy() / runs["A"].to_numpy())
    assert (ratio > 1.01).all() and ratio[0] > ratio[-1]  # biased up, most at the slowest rate
    assert whole.growth.fits_all["power"].exponent < 0.99
    assert whole.growth.law.j2_window is None and "ordered part" in whole.growth.law.describe()


# ---------------------------------------------------------------------------------------- runs tables


def test_a_runs_table_rebuilds_the_calibration_bit_for_bit(calibration_runs, tmp_path):
    """The table holds every number the fits read: the laws, the run table and the λ* table from it equal those from
    the traces exactly (same code, the same float64 values), and each record names its trace by SHA-256."""
    from_traces = calibrate(calibration_runs, n_boot=50, j2_window=None)
    table = write_runs_table(from_traces.sweep.records, tmp_path / "runs.json", description="test")
    from_table = calibrate(table, n_boot=50, j2_window=None)
    fixed = {"date": "-", "source": "-", "command": "-"}
    assert from_table.laws(fixed).to_dict() == from_traces.laws(fixed).to_dict()
    pd.testing.assert_frame_equal(from_table.sweep.runs.drop(columns="path"),
                                  from_traces.sweep.runs.drop(columns="path"))
    pd.testing.assert_frame_equal(from_table.plateau.lambda_star, from_traces.plateau.lambda_star)
    records = read_runs_table(table)
    assert sorted(r.run for r in records) == sorted(from_traces.sweep.runs["run"])
    for r in records:
        trace = calibration_runs / r.run / "trace.h5"
        assert r.trace_sha256 == hashlib.sha256(trace.read_bytes()).hexdigest()
        with ss.open_trace(trace) as tr:
            assert np.array_equal(r.J, tr.stat("hidden", "J")) and np.array_equal(r.test_loss, tr.metric("test_loss"))
    with pytest.raises(ValueError, match="is not a runs table"):
        read_runs_table(tmp_path / "nothing.json")


def test_task_calibrate_writes_the_table_it_can_be_rebuilt_from(calibration_runs, compose_cfg, tmp_path):
    from stabilityscope.cli.tasks import run_calibrate_task

    run_calibrate_task(compose_cfg("task=calibrate", f"runs={calibration_runs}", "figures=false",
                                   "calibration.n_boot=20", "calibration.commit=0123abc"), tmp_path / "first")
    first = json.loads((tmp_path / "first" / "laws.json").read_text())
    assert first["provenance"]["table"] == "runs.json"
    assert {r.commit for r in read_runs_table(tmp_path / "first" / "runs.json")} == {"0123abc"}
    run_calibrate_task(compose_cfg("task=calibrate", f"runs={tmp_path / 'first' / 'runs.json'}", "figures=false",
                                   "calibration.n_boot=20"), tmp_path / "again")
    again = json.loads((tmp_path / "again" / "laws.json").read_text())
    assert (again["growth"], again["plateau"]) == (first["growth"], first["plateau"])
    assert json.loads((tmp_path / "again" / "runs.json").read_text())["runs"] == \
        json.loads((tmp_path / "first" / "runs.json").read_text())["runs"]


# ------------------------------------------------------------------------------------------- the CLI


def test_calibration_tasks_need_runs(compose_cfg, tmp_path):
    from stabilityscope.cli.tasks import run_calibrate_task, run_reproduce_task
    from stabilityscope.errors import ConfigError

    with pytest.raises(ConfigError, match=r"task=calibrate needs the runs to analyse: runs=None"):
        run_calibrate_task(compose_cfg("task=calibrate"), tmp_path)
    with pytest.raises(ConfigError, match=r"runs='.*nothing'.*matches no trace"):
        run_reproduce_task(compose_cfg("task=reproduce", f"runs={tmp_path}/nothing"), tmp_path)
    with pytest.raises(ConfigError, match=r"calibration.tolerance=1.5"):
        run_calibrate_task(compose_cfg("task=calibrate", f"runs={tmp_path}", "calibration.tolerance=1.5"), tmp_path)


def test_the_reference_rate_decay_preset_trains_at_the_reference_rate_beside_the_guideline_runs():
    """experiment=calibrate_decay_reference: its runs are at r_ref itself (where the packaged laws only extrapolate),
    and its smallest decay is recommend(100)'s, so those runs pair with the guideline's 4× runs at equal r·t."""
    cfg = compose_with_hydra("experiment=calibrate_decay_reference")
    rate = cfg.optim.lr / ((1 - cfg.optim.momentum) * cfg.train.batch_size)
    assert rate == pytest.approx(REFERENCE_RATE) and not load_laws().plateau.within(rate)
    params = cfg.hydra.sweeper.params
    decays = [float(v) for v in str(params["optim.weight_decay"]).split(",")]
    assert decays == sorted(decays) and len(decays) == 3 and str(params["train.seed"]) == "0,1"
    assert decays[0] == pytest.approx(recommend(100).weight_decay)
    assert cfg.analysis.name == "economy" and cfg.optim.name == "sgd"


@pytest.mark.slow
def test_quick_presets_run_through_the_reproduction_report(data_root, tmp_path):
    """The calibrate_*_quick presets train real runs through the batched launcher; task=reproduce then
    writes the whole report (and the calibration under it) from them."""
    sweeps = []
    for preset in ("calibrate_growth_quick", "calibrate_decay_quick", "calibrate_guideline_quick"):
        proc = run_cli("-m", f"experiment={preset}", "figures=false", "report=false",
                       f"checkpoint_root={tmp_path / preset}", cwd=tmp_path,
                       env={"STABILITYSCOPE_DATA": str(data_root)})
        assert proc.returncode == 0, proc.stderr[-3000:]
        (sweep,) = (tmp_path / preset).glob("multirun/*")
        assert len(list(sweep.glob("*/trace.h5"))) == (4 if preset == "calibrate_guideline_quick" else 8)
        sweeps.append(sweep)
    # the guideline runs trained recommend(100)'s settings (the resolver), with the decay × 1 and × 4
    r = recommend(100)
    for trace in sweeps[2].glob("*/trace.h5"):
        with ss.open_trace(trace) as tr:
            optim = tr.config["optim"]
            assert optim["lr"] == pytest.approx(r.lr) and tr.config["train"]["batch_size"] == r.batch_size
            assert optim["weight_decay"] / r.weight_decay == pytest.approx(tr.config["guideline"]["decay_factor"])
    # 3 epochs on 6,000 examples keep J² below the growth law's window (0.3–0.6): each run's whole ordered part instead
    proc = run_cli("task=reproduce", f"runs=[{sweeps[0]},{sweeps[1]},{sweeps[2]}]", "calibration.n_boot=50",
                   "calibration.j2_window=null", f"checkpoint_root={tmp_path}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (out,) = [p.parent for p in tmp_path.glob("reproduce/*/reproduction.md")]
    report = json.loads((out / "reproduction.json").read_text())
    verdicts = {c["rule"]: c["verdict"] for c in report["claims"]}
    assert set(verdicts) == set(RULES)
    calib = json.loads((out / "calibration" / "calibration.json").read_text())
    assert len(calib["growth"]["runs"]) == 8 and len(calib["plateau"]["runs"]) == 12  # decay × guideline runs
    assert verdicts["linear growth"] != "not run"
    # the plateau verdict is the rule applied to the calibration shipped beside it: no law without 3 saturated runs
    # at 2 decays (not run); else q's interval against 0, the law fitted on the saturated runs only
    decay_runs, law = calib["plateau"]["runs"], calib["plateau"]["law"]
    saturated = [r for r in decay_runs if r["saturated"] and r["in_growth_range"]]
    assert all(r["saturated"] == (r["last_epoch"] >= 3 * r["tau_measured"]) for r in decay_runs
               if r["tau_measured"] is not None)
    if law is None:
        assert verdicts["plateaus"] == "not run"
        assert len(saturated) < 3 or len({r["weight_decay"] for r in saturated}) < 2
    else:
        lo, hi = law["q_ci"]
        assert verdicts["plateaus"] == ("reproduced" if lo > 0 else "not reproduced" if hi < 0 else "inconclusive")
        assert law["dof"] + (3 if law["s_ci"][0] is not None else 2) == len(saturated)
    assert verdicts["guideline"] == "not run"  # 3 of the 100 epochs: nothing validated
    assert (out / "calibration" / "figures" / "growth_law.png").exists()


def test_guideline_validation_checks_band_and_loss(synthetic_laws, tmp_path):
    """Runs of experiment=calibrate_guideline, synthetic: the recommended run (× 1) relaxes to J² = 1, × 4 to a
    lower plateau; the final losses are given."""
    budget = 100
    r = recommend(budget, laws=synthetic_laws)
    A = r.predicted_A
    for i, (factor, plateau, loss) in enumerate([(1.0, 1.0, 0.30), (4.0, 0.4, 0.31), (1.0, 1.0, 0.302),
                                                 (4.0, 0.4, 0.312)]):
        synthetic_trace(tmp_path / str(i) / "trace.h5", epochs=budget, lr=r.lr, weight_decay=r.weight_decay * factor,
                        batch_size=r.batch_size, momentum=r.momentum,
                        seed=i // 2, analysis="economy", train_subset=None,
                        j2=lambda e, p=plateau: p + (0.25 - p) * np.exp(-A / p * np.asarray(e)),
                        test_loss=lambda e, v=loss: v + 0 * np.asarray(e),
                        config_extra={"guideline": {"budget": budget, "decay_factor": factor,
                                                    **({"validate": True} if i < 3 else {})}})
    # the fourth run's config predates guideline.validate: its launch overrides name the preset
    hydra_dir = tmp_path / "3" / ".hydra"
    hydra_dir.mkdir()
    (hydra_dir / "overrides.yaml").write_text("- guideline.budget=100\n- experiment=calibrate_guideline\n")
    # an ordinary run: its config holds the guideline section's defaults too, but it is no validation run
    synthetic_trace(tmp_path / "other" / "trace.h5", epochs=budget, lr=r.lr, weight_decay=r.weight_decay,
                    batch_size=r.batch_size, seed=5, analysis="economy", train_subset=None,
                    j2=lambda e: 3 + 0 * np.asarray(e),
                    config_extra={"guideline": {"budget": budget, "decay_factor": 1.0, "validate": False}})
    table = ss.reproduction.validate_guideline(tmp_path, laws=synthetic_laws)
    (row,) = table.itertuples()
    assert row.runs == 4
    assert row.complete and row.settings_match and row.holds_band and row.loss_within_spread
    assert row.reach_epoch == pytest.approx(r.reach_epoch)
    assert row.max_deviation_after_reach == pytest.approx(0.05, rel=0.05)  # tolerance 0.05 at the reach epoch
    assert row.best_factor == 1.0 and row.seeds == 2
    # laws whose λ* moved since the runs: the rows say the settings differ
    moved = CalibratedLaws(synthetic_laws.growth,
                           dataclasses.replace(synthetic_laws.plateau, K=synthetic_laws.plateau.K * 1.1),
                           synthetic_laws.provenance)
    assert not ss.reproduction.validate_guideline(tmp_path, laws=moved).iloc[0]["settings_match"]
    # a band the run misses at its reach epoch
    assert not ss.reproduction.validate_guideline(tmp_path, laws=synthetic_laws, band=0.01).iloc[0]["holds_band"]


def test_a_budget_is_read_from_longer_runs_with_its_settings(synthetic_laws, tmp_path):
    """Budgets past the slowest calibrated rate share their settings: a 300-epoch budget is validated at epoch 300
    of runs trained for 400 epochs (constant rate and decay), and its losses are those at epoch 300. Runs trained
    for 300 epochs with settings recommend() no longer gives are set aside for them."""
    r300, r400 = recommend(300, laws=synthetic_laws), recommend(400, laws=synthetic_laws)
    assert r300.slowest_calibrated_rate and (r300.lr, r300.batch_size, r300.weight_decay) == (r400.lr, r400.batch_size,
                                                                                              r400.weight_decay)
    A = r400.predicted_A
    cases = [(1.0, 1.0, 0.30), (4.0, 0.4, 0.29), (1.0, 1.0, 0.302), (4.0, 0.4, 0.292)]
    for i, (factor, plateau, loss) in enumerate(cases):
        synthetic_trace(tmp_path / "long" / str(i) / "trace.h5", epochs=400, lr=r400.lr,
                        weight_decay=r400.weight_decay * factor, batch_size=r400.batch_size, momentum=r400.momentum,
                        seed=i // 2, analysis="economy", train_subset=None,
                        j2=lambda e, p=plateau: p + (0.25 - p) * np.exp(-A / p * np.asarray(e)),
                        # × 4 is better until epoch 200, worse after: the two budgets pick different winners
                        test_loss=lambda e, v=loss, f=factor: v + (2e-4 if f == 4.0 else 0.0) * np.asarray(e),
                        config_extra={"guideline": {"budget": 400, "decay_factor": factor, "validate": True}})
    # a run trained for budget 300 with an older lr: recommend(300) moved since, so the longer runs serve 300
    synthetic_trace(tmp_path / "old" / "trace.h5", epochs=300, lr=r300.lr * 1.5, weight_decay=r300.weight_decay,
                    batch_size=r300.batch_size, momentum=r300.momentum, seed=0, analysis="economy", train_subset=None,
                    config_extra={"guideline": {"budget": 300, "decay_factor": 1.0, "validate": True}})
    table = ss.reproduction.validate_guideline(tmp_path, laws=synthetic_laws, budgets=(300,)).set_index("budget")
    assert list(table.index) == [300, 400]
    read, full = table.loc[300], table.loc[400]
    assert read.trained_epochs == 400 and read.runs == 4 and read.settings_match and read.complete and read.holds_band
    assert read.recommended_loss == pytest.approx(0.301) and read.best_factor == 1.0  # × 4: 0.291 + 0.06 at epoch 300
    assert full.recommended_loss == pytest.approx(0.301) and full.best_factor == 1.0
    assert table.loc[300, "losses"].startswith("×1: 0.3010") and "×4: 0.3510" in table.loc[300, "losses"]
    # read at epoch 300, the deviation after the reach epoch is that of the same curve (it only shrinks later)
    assert read.max_deviation_after_reach == pytest.approx(full.max_deviation_after_reach)
    # a run trained for 400 epochs on older settings beside today's: set aside, not pooled with them
    synthetic_trace(tmp_path / "old400" / "trace.h5", epochs=400, lr=r400.lr * 1.5, weight_decay=r400.weight_decay,
                    batch_size=r400.batch_size, momentum=r400.momentum, seed=0, analysis="economy", train_subset=None,
                    config_extra={"guideline": {"budget": 400, "decay_factor": 1.0, "validate": True}})
    again = ss.reproduction.validate_guideline(tmp_path, laws=synthetic_laws, budgets=(300,)).set_index("budget")
    assert again.loc[400, "runs"] == 4 and again.loc[400, "settings_match"] and again.loc[300, "runs"] == 4
    # without the longer runs, budget 300 is judged on its own (mismatched) run
    only_old = ss.reproduction.validate_guideline(tmp_path / "old", laws=synthetic_laws, budgets=(300,))
    assert len(only_old) == 1 and only_old.iloc[0]["trained_epochs"] == 300 and not only_old.iloc[0]["settings_match"]
    assert len(read.paths) == 4 and all("long" in p for p in read.paths)


def test_growth_fit_over_checkpoints_inside_one_epoch_is_not_fitted():
    """A run that crosses the edge inside its first epoch has its ordered checkpoints at one whole epoch; the
    report's fit gives NaN there, and fits fractional epochs (step checkpoints) as they are."""
    from stabilityscope.analysis.readout import linear_growth_fit

    j2 = np.array([0.25, 0.3, 0.35, 2.0])
    assert all(math.isnan(v) for v in linear_growth_fit(np.array([0, 0, 0, 1.0]), j2))
    assert linear_growth_fit(np.array([0, 0.5, 1, 1.5]), j2) == pytest.approx((0.1, 0.25))


def test_laws_without_a_plateau_law_need_a_measured_lambda_star(synthetic_laws, tmp_path):
    growth_only = CalibratedLaws(synthetic_laws.growth, None, {"network": "synthetic"})
    assert load_laws(growth_only.save(tmp_path / "laws.json")) == growth_only
    with pytest.raises(ValueError, match="no plateau law"):
        recommend(100, laws=growth_only)
    r = recommend(100, laws=growth_only, weight_decay_star=1.5e-4)
    assert r.weight_decay == 1.5e-4 and r.weight_decay_source == "measured" and r.growth_source == "calibrated"
    with pytest.warns(UserWarning, match="no plateau law"):
        r = recommend(100, laws=growth_only, extrapolate=True)
    assert r.weight_decay_source == "model" and r.extrapolated
    assert r.weight_decay == pytest.approx(r.predicted_A / r.rho / 2)  # c/2 with c = A/ρ at this rate
