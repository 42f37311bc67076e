"""The reproduction report's rules (stabilityscope.analysis.reproduction): for every rule, synthetic traces where
the claim holds, where it fails and where the data cannot decide, each giving its verdict. The report's text:
tests/reports/test_reproduction_report.py."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from stabilityscope.analysis.calibration import REFERENCE_RATE, REFERENCE_WEIGHT_DECAY
from stabilityscope.analysis.guideline import recommend
from stabilityscope.analysis.reproduction import RULES, at_boundary, reproduce
from stabilityscope.analysis.verdicts import INCONCLUSIVE, NOT_REPRODUCED, NOT_RUN, REPRODUCED
from tests.trace_factory import synthetic_trace

N_TRAIN = 1000  # the synthetic traces' dataset.train_subset
MAP_MODEL = {"model": {"name": "toy_map", "family": "builtin"}}  # not the canonical network: no calibration


def _lr(x: float, momentum: float = 0.5, batch: int = 32) -> float:
    """The learning rate that puts a run at x times the reference rate η/((1−α)B)."""
    return x * REFERENCE_RATE * (1 - momentum) * batch


def _growth(root: Path, name: str, j2: Callable, *, x: float = 1.0, momentum: float = 0.5, batch: int = 32,
            seed: int = 0, epochs: int = 20, test_loss: Callable = None, best_epoch: int = 12) -> None:
    synthetic_trace(root / name / "trace.h5", epochs=epochs, lr=_lr(x, momentum, batch), momentum=momentum,
                    batch_size=batch, train_subset=N_TRAIN, seed=seed, analysis="economy", j2=j2, test_loss=test_loss,
                    best_epoch=best_epoch)


def _curved(a: float, kappa: float) -> Callable:
    """J² = 0.25 + a·t·(1 + κ·t): linear at κ = 0, its slope growing (κ > 0) or shrinking (κ < 0) along the run."""
    return lambda e: 0.25 + a * np.asarray(e, float) * (1 + kappa * np.asarray(e, float))


# ------------------------------------------------------------------------------------------ scenarios
# Each builder writes the traces of one case into ``root``. The claims are the source's; each case is named by
# what its data show: "holds" (the interval inside the margin), "fails" (outside) and "undecided" (straddling).


def linear_growth(root: Path, case: str) -> None:
    kappas = {"holds": (0.0, 5e-4, -5e-4), "fails": (0.05, 0.05, 0.05),  # slope ratio ≈ 1.0 / ≈ 1.67 every run
              "undecided": (-2.4e-3, 1.4e-2)}[case]  # ratios ≈ 0.95 and 1.25 from two runs
    for seed, kappa in enumerate(kappas):
        _growth(root, f"g{seed}", _curved(0.01, kappa), seed=seed)


def slope_law(root: Path, case: str) -> None:
    p = 1.3 if case == "fails" else 1.0
    for seed in (0, 1):
        for name, x, momentum, batch in (("ref", 1, 0.5, 32), ("lr_lo", 0.5, 0.5, 32), ("lr_hi", 2, 0.5, 32),
                                         ("mom_lo", 0.5, 0.0, 32), ("mom_hi", 2, 0.75, 32), ("b_lo", 0.5, 0.5, 64),
                                         ("b_hi", 2, 0.5, 16)):
            # undecided: ±10% scatter in A, alternating with the rate and the seed (an exponent near 1, a wide interval)
            scatter = (1.1 if (seed + (x > 1) + (x < 1)) % 2 else 0.9) if case == "undecided" else 1 + 0.002 * seed
            synthetic_trace(root / f"{name}_{seed}" / "trace.h5", epochs=20, lr=_lr(x, momentum, batch),
                            momentum=momentum, batch_size=batch,
                            train_subset=N_TRAIN, seed=seed, analysis="economy",
                            j2=_curved(0.02 * x ** p * scatter, 0.0))


def collapse(root: Path, case: str) -> None:
    """Two settings of one rate (lr 0.02, B 32 and lr 0.04, B 64): the second grows faster past the edge by 100%,
    and before it by ``faster`` (per seed)."""
    faster = {"holds": (0.0, 0.0, 0.0), "fails": (0.5, 0.5, 0.5), "undecided": (0.0, 0.15)}[case]
    for seed, f in enumerate(faster):
        for batch, ordered_gain, chaotic_gain in ((32, 0.0, 0.0), (64, f, 1.0)):
            a = 0.05 * (1 + ordered_gain) * (1 + 0.001 * seed)
            t_edge = 0.75 / a
            _growth(root, f"b{batch}_{seed}", lambda e, a=a, t=t_edge, g=chaotic_gain: np.where(
                np.asarray(e) <= t, 0.25 + a * np.asarray(e), 1 + a * (1 + g) * (np.asarray(e) - t)),
                batch=batch, seed=seed, epochs=30)


def optimum_at_the_edge(root: Path, case: str) -> None:
    """J² = 0.25 + 0.05·t (J² = 1 at epoch 15), the test loss lowest at ``best`` (J² = 0.25 + 0.05·best)."""
    best = {"holds": (14, 15, 16), "fails": (5, 6, 7), "undecided": (12, 18)}[case]
    for seed, b in enumerate(best):
        _growth(root, f"g{seed}", _curved(0.05, 0.0), seed=seed, epochs=30, best_epoch=b)


def chaos_hurts(root: Path, case: str) -> None:
    """Runs that cross the edge at epoch 15; their final test loss over the best one."""
    rises = {"holds": (0.5, 0.6, 0.4), "fails": (0.0, 0.0, 0.0), "undecided": (0.002, 0.05)}[case]
    for seed, rise in enumerate(rises):
        loss = (lambda e, r=rise: 0.4 * (1 + r * np.clip(np.asarray(e, float) - 15, 0, None) / 15)) if rise else \
            (lambda e: 0.4 + 0.1 * np.exp(-np.asarray(e, float)))  # still falling at the end: no rise
        _growth(root, f"g{seed}", _curved(0.05, 0.0), seed=seed, epochs=30, test_loss=loss)


def _decay_runs(root: Path, plateaus: dict[float, tuple[float, ...]], losses: dict[float, tuple[float, ...]] = None,
                x: float = 4.0) -> None:
    """Decay runs at x× the reference rate, one per (decay factor × wd_ref, seed): J² relaxes (τ = 3 epochs,
    20 epochs run: saturated) to the given plateau; the final test loss is the given one."""
    for w, values in plateaus.items():
        for seed, p in enumerate(values):
            loss = (losses or {}).get(w, tuple(0.35 + 0.001 * i for i in range(len(values))))[seed]
            synthetic_trace(root / f"w{w:g}_{seed}" / "trace.h5", epochs=20, lr=_lr(x),
                            weight_decay=w * REFERENCE_WEIGHT_DECAY, train_subset=N_TRAIN, seed=seed,
                            analysis="economy",
                            j2=lambda e, p=p: p + (0.25 - p) * np.exp(-np.asarray(e, float) / 3.0),
                            test_loss=lambda e, v=loss: v + 0 * np.asarray(e, float))


def _law(K: float, q: float, scatter: tuple[float, ...]) -> dict[float, tuple[float, ...]]:
    return {w: tuple(K * w ** -q * s for s in scatter) for w in (0.5, 1, 2, 4)}


def plateaus(root: Path, case: str) -> None:
    laws = {"holds": (1.3, 0.8, (0.995, 1.0, 1.005)), "fails": (1.3, -0.5, (0.995, 1.0, 1.005)),
            "undecided": (1.0, 0.02, (0.9, 1.1))}
    K, q, scatter = laws[case]
    table = _law(K, q, scatter)
    if case == "undecided":  # the scatter alternates with the decay: no trend shows through it
        table = {w: v if i % 2 else v[::-1] for i, (w, v) in enumerate(table.items())}
    _decay_runs(root, table)


def lambda_star(root: Path, case: str) -> None:
    if case == "holds":
        _decay_runs(root, _law(1.3, 0.8, (0.995, 1.0, 1.005)))
    elif case == "fails":  # the plateau rises with the decay, above the edge everywhere: no decay reaches it
        _decay_runs(root, _law(1.5, -0.3, (0.995, 1.0, 1.005)))
    else:  # the means bracket the edge, but the plateau above it is 1.02 ± 0.07 over two seeds
        _decay_runs(root, {0.5: (1.6, 1.62), 1: (0.95, 1.09), 2: (0.7, 0.71), 4: (0.4, 0.41)})


def best_decay_at_the_edge(root: Path, case: str) -> None:
    """Plateaus 1.1·w^−0.8: λ* at 1.13 wd_ref, the grid decay nearest it is 1 × wd_ref."""
    table = _law(1.1, 0.8, (0.995, 1.0, 1.005))
    other = (0.35, 0.351, 0.349)
    losses = {"holds": {0.5: other, 1: (0.30, 0.301, 0.299), 2: other, 4: (0.36, 0.361, 0.359)},
              "fails": {0.5: other, 1: (0.40, 0.401, 0.399), 2: other, 4: (0.30, 0.301, 0.299)},
              "undecided": {0.5: other, 1: (0.30, 0.33, 0.27), 2: other, 4: (0.30, 0.302, 0.298)}}[case]
    _decay_runs(root, table, losses)


def guideline(root: Path, case: str) -> None:
    """experiment=calibrate_guideline runs at recommend(100)'s settings (the packaged laws), decay × 1 and × 4."""
    budget = 100
    r = recommend(budget)
    A = r.predicted_A
    plateau_1 = 1.4 if case == "fails" else 1.0
    loss_1 = {"holds": (0.30, 0.301, 0.299), "fails": (0.30, 0.301, 0.299), "undecided": (0.30, 0.36)}[case]
    loss_4 = {"holds": (0.35, 0.351, 0.349), "fails": (0.35, 0.351, 0.349), "undecided": (0.33, 0.331)}[case]
    for factor, plateau, losses in ((1.0, plateau_1, loss_1), (4.0, 0.4, loss_4)):
        for seed, loss in enumerate(losses):
            p = plateau * (1 + 0.001 * seed)
            synthetic_trace(root / f"x{factor:g}_{seed}" / "trace.h5", epochs=budget, lr=r.lr, momentum=r.momentum,
                            batch_size=r.batch_size, weight_decay=r.weight_decay * factor, seed=seed,
                            analysis="economy", train_subset=None,
                            j2=lambda e, p=p: p + (0.25 - p) * np.exp(-A / p * np.asarray(e, float)),
                            test_loss=lambda e, v=loss: v + 0 * np.asarray(e, float),
                            config_extra={"guideline": {"budget": budget, "decay_factor": factor, "validate": True}})


def _map_run(root: Path, name: str, stats: Callable, best: int, seed: int = 0, epochs: int = 20) -> None:
    synthetic_trace(root / name / "trace.h5", epochs=epochs, best_epoch=best, seed=seed, config_extra=MAP_MODEL,
                    map_stats=lambda e, j: stats(e))


def optimum_near_s_1(root: Path, case: str) -> None:
    at_best = {"holds": (0.98, 1.0, 1.02), "fails": (0.5, 0.55, 0.6), "undecided": (0.8, 1.2)}[case]
    for seed, s in enumerate(at_best):  # s rises through the run and equals ``s`` at the best epoch, 10
        _map_run(root, f"m{seed}", lambda e, s=s: (s + 0.05 * (e - 10), 0.1, "chaotic" if e > 10 else "periodic"),
                 best=10, seed=seed)


def lambda_max_ln_s(root: Path, case: str) -> None:
    """Chaotic from epoch 10 with s from 1.1 up; before that periodic. Divergent checkpoints (λ_max > 0 too) at
    the end are not the classifier's chaos and must be left out."""
    def stats(e: int, k: float, noise: float) -> tuple[float, float, str]:
        if e < 10:
            return 0.8, -0.2, "periodic"
        s = 1.1 + 0.1 * (e - 10)
        if e >= 18:
            return s, 5.0 * math.log(s), "divergent"  # far off the line: would fail the claim if counted
        return s, k * math.log(s) * (1 + noise * (-1) ** e), "chaotic"
    if case == "undecided":  # three chaotic checkpoints, scattered: k near 1 with a wide interval
        table = {10: (1.2, 0.7 * math.log(1.2)), 11: (1.5, 1.6 * math.log(1.5)), 12: (2.0, 1.05 * math.log(2.0))}
        _map_run(root, "m0", lambda e: (*table[e], "chaotic") if e in table else (0.8, -0.2, "periodic"), best=5)
        return
    k = 2.0 if case == "fails" else 1.0
    _map_run(root, "m0", lambda e: stats(e, k, 0.01), best=9)


def attractor_sequence(root: Path, case: str) -> None:
    """Fixed points up to epoch 7, period 2 at 8–9, chaos from 10; the best test loss at 9 (the boundary) or at 2."""
    best, runs = {"holds": (9, 6), "fails": (2, 6), "undecided": (9, 2)}[case]
    for seed in range(runs):
        _map_run(root, f"m{seed}", lambda e: (0.5 + 0.06 * e, math.log(0.5 + 0.06 * e),
                                              "fixed_point" if e < 8 else ("periodic" if e < 10 else "chaotic")),
                 best=best, seed=seed)


SCENARIOS = {"linear growth": linear_growth, "slope law": slope_law, "collapse": collapse,
             "optimum at the edge": optimum_at_the_edge, "chaos hurts": chaos_hurts, "plateaus": plateaus,
             "lambda star": lambda_star, "best decay at the edge": best_decay_at_the_edge, "guideline": guideline,
             "optimum near s = 1": optimum_near_s_1, "lambda_max = ln s": lambda_max_ln_s,
             "attractor sequence": attractor_sequence}
EXPECTED = {"holds": REPRODUCED, "fails": NOT_REPRODUCED, "undecided": INCONCLUSIVE}


def test_every_rule_has_its_three_scenarios():
    assert set(SCENARIOS) == set(RULES)


@pytest.mark.parametrize("case", ["holds", "fails", "undecided"])
@pytest.mark.parametrize("rule", list(SCENARIOS))
def test_each_rule_gives_its_verdict(rule, case, tmp_path):
    SCENARIOS[rule](tmp_path, case)
    rep = reproduce(tmp_path, n_boot=0)
    (claim,) = [c for c in rep.claims if c.rule == rule]
    assert claim.verdict == EXPECTED[case], (claim.ours, [p.describe() for p in claim.parts], claim.note)
    assert claim.parts and all(math.isfinite(p.confidence) for p in claim.parts)
    if case == "undecided":  # the report says what would settle it
        assert claim.settle and claim.settle != "no number of " + RULES[rule].unit


def test_undecided_verdicts_plan_their_seeds(tmp_path):
    """An inconclusive mean of two seeds carries the seeds that 80% power needs, finite and above two."""
    optimum_near_s_1(tmp_path, "undecided")
    (claim,) = [c for c in reproduce(tmp_path, n_boot=0).claims if c.rule == "optimum near s = 1"]
    assert claim.verdict == INCONCLUSIVE and 2 < claim.needed < math.inf
    assert claim.settle == f"about {int(claim.needed)} seeds"


def test_chaos_means_the_classifiers_label(tmp_path):
    """λ_max ≈ ln s uses the checkpoints labelled chaotic only, and says how many others with λ_max > 0 it left."""
    lambda_max_ln_s(tmp_path, "holds")
    (claim,) = [c for c in reproduce(tmp_path, n_boot=0).claims if c.rule == "lambda_max = ln s"]
    assert "over 8 chaotic checkpoints" in claim.ours
    assert "3 more checkpoints with λ_max > 0 are not chaotic" in claim.ours
    assert claim.parts[0].estimate == pytest.approx(1.0, abs=0.01)
    assert "λ_max = " in claim.ours and "correlation" in claim.ours  # the regression line, with its intervals


@pytest.mark.parametrize("attractors, best, expected", [
    (["fixed_point", "periodic", "chaotic"], 1, True),
    (["periodic", "fixed_point", "fixed_point", "chaotic"], 0, False),
    (["quasi_periodic", "chaotic"], 1, True), (["fixed_point", "chaotic"], 1, False),
    (["chaotic", "divergent"], 1, False),
    (["quasi_periodic", "divergent", "chaotic"], 0, True)])
def test_the_boundary_is_between_pseudo_periodic_and_chaotic(attractors, best, expected):
    assert at_boundary(attractors, best) is expected


def test_the_collapse_claim_needs_its_chaotic_half(tmp_path):
    """Equal-rate runs that never leave the ordered phase test only half the claim: inconclusive, not reproduced."""
    for seed in (0, 1):
        for batch in (32, 64):
            _growth(tmp_path, f"b{batch}_{seed}", _curved(0.02 * (1 + 0.001 * seed), 0.0), batch=batch, seed=seed)
    (claim,) = [c for c in reproduce(tmp_path, n_boot=0).claims if c.rule == "collapse"]
    assert claim.verdict == INCONCLUSIVE and "chaotic half is untested" in claim.note


def test_the_linear_law_reports_its_own_validity_range(tmp_path):
    """The slope-law row gives the linear form's own range: with A ∝ rate^1.3 a straight line holds within 15% on a
    narrower window of rates than the power law does."""
    slope_law(tmp_path, "fails")
    rep = reproduce(tmp_path, n_boot=0)
    g = rep.calibration.growth
    assert g.law.form == "power" and g.form_validity["power"] == pytest.approx(g.law.validity)
    lo, hi = g.form_validity["linear"]
    assert hi / lo < g.law.validity[1] / g.law.validity[0]
    (claim,) = [c for c in rep.claims if c.rule == "slope law"]
    assert "the linear law A = k·r/r_ref on its own holds within 15%" in claim.ours


def test_a_paper_without_runs_is_not_run(tmp_path):
    decay = tmp_path / "decay"
    plateaus(decay, "holds")
    by_rule = {c.rule: c for c in reproduce(decay, n_boot=0).claims}
    assert by_rule["optimum near s = 1"].verdict == NOT_RUN and "eoc_mlp" in by_rule["optimum near s = 1"].note
    assert by_rule["collapse"].verdict == NOT_RUN and by_rule["guideline"].verdict == NOT_RUN


def test_eoc_optimality_is_judged_per_model(tmp_path):
    """Two models' maps are two populations: each gets its own rows, not one pooled s."""
    for name, s in (("mlp_at_edge", (1.0, 1.01, 0.99)), ("cnn_early", (0.6, 0.62, 0.58))):
        for seed, value in enumerate(s):
            synthetic_trace(tmp_path / f"{name}{seed}" / "trace.h5", epochs=20, best_epoch=10, seed=seed,
                            config_extra={"model": {"name": name, "family": "builtin"}},
                            map_stats=lambda e, j, v=value: (v, 0.1, "chaotic"))
    optimum = {c.runs: c for c in reproduce(tmp_path, n_boot=0).claims if c.rule == "optimum near s = 1"}
    assert set(optimum) == {"3 run(s) of mlp_at_edge", "3 run(s) of cnn_early"}
    assert optimum["3 run(s) of mlp_at_edge"].verdict == REPRODUCED
    assert optimum["3 run(s) of cnn_early"].verdict == NOT_REPRODUCED
    assert optimum["3 run(s) of cnn_early"].ours.startswith("s = 0.6 (0.55")
