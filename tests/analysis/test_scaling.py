"""Sweep analysis (stabilityscope.analysis.scaling): the fits recover a known C and unit exponents, λ* is found
where known plateaus cross the edge, the collapse is tight only below the edge, and ``task=scaling``
writes its report from the command line.

The sweeps are synthetic traces (tests/trace_factory.py) whose J² follows known curves, so every
expected number is computed here from the same formulas, with tolerances set in one place.
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import yaml

import stabilityscope as ss
from stabilityscope.analysis.guideline import CANONICAL_C
from stabilityscope.analysis.scaling import analyze_sweep, crossing_decay
from stabilityscope.cli.tasks import run_scaling_task
from stabilityscope.errors import ConfigError, TraceError
from stabilityscope.plots.scaling import scaling_figures
from stabilityscope.recording.trace import mark_failed
from stabilityscope.reports.scaling import write_scaling_report
from tests.conftest import run_cli
from tests.trace_factory import relaxing_j2, synthetic_config, synthetic_trace

N_TRAIN = 1000  # dataset.train_subset of every synthetic run
C_TRUE = 0.02  # c per training example of the scaling sweep: A = c·n·η/((1−α)B)
NOISE = 0.01  # relative noise on each checkpoint's J² increment
EXPONENT_TOL = 0.03  # |p − 1| of every fitted exponent
C_RTOL = 0.01  # relative error of the fitted C and c

# decay sweep: ρ = η·n/((1−α)B) = 1.25 per epoch; c per seed around C_DECAY; the model's λ* = c/2
DECAY_LR, DECAY_MOMENTUM, DECAY_BATCH = 0.02, 0.5, 32
C_DECAY = 0.32
SEED_FACTORS = (0.96, 0.99, 1.02, 1.05)  # seed s has c = C_DECAY·factor
DECAYS = (0.0, 0.08, 0.12, 0.24, 0.48)


def _rho(lr: float, momentum: float, batch: int) -> float:
    return lr * N_TRAIN / ((1 - momentum) * batch)


@pytest.fixture(scope="module")
def scaling_sweep(tmp_path_factory) -> Path:
    """lr × momentum × batch (12 runs) with A = C·η/((1−α)B): J² rises linearly (noisy increments) up to
    the edge, and past it with a slope that depends on the run (so curves fan out only when chaotic);
    plus a diverged run with a wrong slope and a failed job that no fit may use."""
    root = tmp_path_factory.mktemp("multirun") / "2026-11-22_12-00-00"
    rng = np.random.default_rng(0)
    job = 0
    for lr in (0.01, 0.02, 0.04):
        for momentum in (0.0, 0.5):
            for batch in (16, 32):
                A = C_TRUE * _rho(lr, momentum, batch)
                factor = 1.0 + 4.0 * (batch == 16) + 8.0 * (momentum == 0.5)  # chaotic growth differs per run
                noise = rng.normal(0.0, NOISE, 64)

                def j2(e, A=A, factor=factor, noise=noise):
                    steps = A * np.concatenate([[0.0], np.diff(e) * (1 + noise[1:len(e)])]).cumsum()
                    lin = 0.25 + steps
                    cross = 0.75 / A  # the epoch at which the noiseless line reaches J² = 1
                    return np.where(e <= cross, lin, lin + (factor - 1) * A * (e - cross))

                synthetic_trace(root / str(job) / "trace.h5", epochs=30, analysis="economy", lr=lr, momentum=momentum,
                                batch_size=batch, train_subset=N_TRAIN, j2=j2)
                job += 1
    synthetic_trace(root / str(job) / "trace.h5", epochs=10, analysis="economy", lr=0.02, batch_size=32,
                    train_subset=N_TRAIN, j2=lambda e: 0.25 + 0.3 * e, status="diverged")
    # a job that failed before training: a trace with its config and the error, no checkpoints
    # (stabilityscope.cli.sweep)
    mark_failed(root / str(job + 1) / "trace.h5", "DataError: no Fashion-MNIST under /nowhere",
                {"config": yaml.safe_dump(synthetic_config(train_subset=N_TRAIN)), "seed": 0})
    return root


@pytest.fixture(scope="module")
def decay_sweep(tmp_path_factory) -> Path:
    """weight decay × 4 seeds, J² from the model dJ²/d(epoch) = ρ(c_s − 2·wd·J²): plateaus c_s/(2·wd)."""
    root = tmp_path_factory.mktemp("multirun") / "decay"
    rho = _rho(DECAY_LR, DECAY_MOMENTUM, DECAY_BATCH)
    job = 0
    for wd in DECAYS:
        for seed, f in enumerate(SEED_FACTORS):
            # the test loss is lowest near the model's λ*: what EOC-training reports for the final loss
            loss = (lambda e, wd=wd: 0.35 + 0.05 * np.log((wd + 0.01) / (C_DECAY / 2 + 0.01)) ** 2 + 0 * e)
            synthetic_trace(root / str(job) / "trace.h5", epochs=40, analysis="economy", lr=DECAY_LR,
                            momentum=DECAY_MOMENTUM, batch_size=DECAY_BATCH, train_subset=N_TRAIN, weight_decay=wd,
                            seed=seed, j2=relaxing_j2(rho, C_DECAY * f, wd), test_loss=loss)
            job += 1
    return root


@pytest.fixture(scope="module")
def scaling(scaling_sweep):
    return analyze_sweep(scaling_sweep, window=30)


@pytest.fixture(scope="module")
def decay(decay_sweep):
    return analyze_sweep(decay_sweep)


# ------------------------------------------------------------------------------------------ the fits


def test_fit_recovers_C_and_unit_exponents(scaling):
    cf = scaling.combined
    assert cf.n_runs == 12 and cf.n_train == N_TRAIN
    assert cf.C == pytest.approx(C_TRUE * N_TRAIN, rel=C_RTOL)
    assert cf.c == pytest.approx(C_TRUE, rel=C_RTOL)
    assert cf.C_ci[0] < C_TRUE * N_TRAIN < cf.C_ci[1] and cf.c_ci[0] < C_TRUE < cf.c_ci[1]
    assert cf.r2 > 0.999
    assert set(scaling.joint.variables) == {"lr", "momentum", "batch_size"}  # n is common to all runs
    for var, p in scaling.joint.exponents.items():
        assert abs(p - 1) < EXPONENT_TOL, (var, p)
        lo, hi = scaling.joint.exponent_ci[var]
        assert lo < p < hi and hi - lo < 0.1
    # every group that holds the other two variables fixed: lr groups have 3 runs, the others 2
    counts = {v: sum(f.variable == v for f in scaling.power_laws) for v in ("lr", "momentum", "batch_size")}
    assert counts == {"lr": 4, "momentum": 6, "batch_size": 6}
    for f in scaling.power_laws:
        assert abs(f.exponent - 1) < EXPONENT_TOL, (f.variable, f.fixed, f.exponent)
        assert f.n_runs == (3 if f.variable == "lr" else 2)
        assert math.isfinite(f.exponent_ci[0]) == (f.n_runs > 2)  # no interval from a line through two points
    assert scaling.exponent("lr") == scaling.joint.exponents["lr"]
    assert math.isnan(scaling.exponent("n_train"))


def test_run_table_has_the_slope_and_its_rescalings(scaling, scaling_sweep):
    runs = scaling.runs
    assert len(runs) == 14 and runs["run"].tolist() == [str(i) for i in range(14)]  # natural order, not 0, 1, 10, ...
    ok = runs[runs["status"] == "finished"]
    for col in ("lr", "momentum", "batch_size", "weight_decay", "keras_l2", "seed", "n_train", "A", "A_se", "c",
                "optimal_epoch", "J_at_optimal", "J2_at_optimal", "test_loss_min", "final_test_loss", "final_test_acc",
                "best_test_acc", "j2_plateau", "j2_plateau_std"):
        assert col in runs.columns, col
    rate = ok["lr"] / ((1 - ok["momentum"]) * ok["batch_size"])
    np.testing.assert_allclose(ok["A"], C_TRUE * N_TRAIN * rate, rtol=0.02)
    np.testing.assert_allclose(ok["c"], ok["A"] * (1 - ok["momentum"]) * ok["batch_size"] / (ok["lr"] * N_TRAIN))
    assert (ok["n_train"] == N_TRAIN).all() and (ok["keras_l2"] == ok["weight_decay"] / 2).all()
    assert (ok["A_se"] > 0).all() and (ok["A_se"] < 0.02 * ok["A"]).all()
    # the fit uses the ordered checkpoints only (χ < 1): the fastest run crosses the edge inside the window
    fastest = ok.loc[ok["A"].idxmax()]
    with ss.open_trace(fastest["path"]) as tr:
        assert fastest["n_fit"] == int(np.sum(tr.stat("hidden", "chi") < 1)) < len(tr)
        best = int(np.argmin(tr.metric("test_loss")))
        assert fastest["J2_at_optimal"] == pytest.approx(tr.stat("hidden", "J")[best] ** 2)


def test_failed_runs_are_listed_and_left_out_of_the_fits(scaling):
    bad = scaling.runs[scaling.runs["status"].isin(["diverged", "failed"])].set_index("run")
    assert bad["status"].to_dict() == {"12": "diverged", "13": "failed"} and not bad["used_in_fits"].any()
    assert bad.loc["13", "lr"] == 0.02 and "no Fashion-MNIST" in bad.loc["13", "note"]  # its config and error
    assert int(scaling.runs["used_in_fits"].sum()) == 12
    assert any("12 (diverged)" in n and "13 (failed: DataError" in n for n in scaling.notes)


def test_collapse_holds_in_the_ordered_phase_only(scaling):
    col = scaling.collapse
    assert col.sweep is not None and len(col.sweep.runs) == 12  # the diverged run is not drawn on
    assert col.spread_ordered < 0.03, col.spread_ordered
    assert col.spread_chaotic > 0.15, col.spread_chaotic
    assert col.spread_chaotic > 5 * col.spread_ordered
    # runs with equal η/((1−α)B) (e.g. lr 0.01, batch 16 and lr 0.02, batch 32) form groups
    rates = sorted(g.rate for g in col.groups)
    assert rates == pytest.approx([6.25e-4, 1.25e-3, 2.5e-3])
    for g in col.groups:
        assert g.spread_ordered < 0.03
    assert col.sweep.j2.shape == (12, len(col.sweep.tau))


def test_no_decay_sweep_leaves_lambda_star_undetermined(scaling):
    assert math.isnan(scaling.decay.weight_decay_star)
    assert "no weight-decay sweep" in scaling.decay.explanation


# --------------------------------------------------------------------------------------- weight decay


def test_crossing_is_interpolated_log_log_and_linear_from_zero():
    # log J²∞ linear in log decay: exact for a power law (here J²∞ = 2e-4/wd, crossing at 2e-4)
    star, how = crossing_decay([1e-4, 1e-3], [2.0, 0.2])
    assert star == pytest.approx(2e-4) and "log" in how
    # a bracket starting at zero decay: linear in decay
    star, how = crossing_decay([0.0, 1e-3, 2e-3], [3.0, 0.5, 0.3])
    assert star == pytest.approx((1 - 3) / (0.5 - 3) * 1e-3) and "zero decay" in how
    # the first crossing, in any order of the inputs
    assert crossing_decay([4e-4, 1e-4, 2e-4], [0.5, 1.6, 1.2])[0] == pytest.approx(
        math.exp(math.log(2e-4) + math.log(1.2) / (math.log(1.2) - math.log(0.5)) * math.log(2)))
    above = crossing_decay([1e-4, 1e-3], [3.0, 1.5])
    below = crossing_decay([1e-4, 1e-3], [0.9, 0.5])
    assert math.isnan(above[0]) and "larger weight decay" in above[1]
    assert math.isnan(below[0]) and "smaller weight decay" in below[1]
    short = crossing_decay([0.0, 1e-4, 1e-3], [0.6, 0.5, 0.3])  # even no decay ends below: the runs are too short
    assert math.isnan(short[0]) and "train longer" in short[1] and "smaller weight decay" not in short[1]
    assert math.isnan(crossing_decay([1e-4], [2.0])[0])


def test_lambda_star_matches_the_known_crossing_and_its_seed_spread(decay):
    d = decay.decay
    c_seed = C_DECAY * np.array(SEED_FACTORS)
    # plateaus c_s/(2·wd): the mean curve crosses J² = 1 at mean(c_s)/2, each seed at c_s/2
    assert d.weight_decay_star == pytest.approx(c_seed.mean() / 2, rel=1e-3)
    assert d.keras_l2_star == pytest.approx(d.weight_decay_star / 2)
    assert "between weight decay 0.12" in d.explanation and "0.24" in d.explanation
    np.testing.assert_allclose([d.per_seed[str(s)] for s in range(4)], c_seed / 2, rtol=1e-3)
    assert d.seed_mean == pytest.approx(c_seed.mean() / 2, rel=1e-3)
    assert d.seed_std == pytest.approx(c_seed.std(ddof=1) / 2, rel=1e-2)
    assert d.seed_ci[0] < d.weight_decay_star < d.seed_ci[1]
    lo, hi = d.bootstrap_ci
    assert c_seed.min() / 2 * 0.999 <= lo < d.weight_decay_star < hi <= c_seed.max() / 2 * 1.001
    assert d.bootstrap_found == 1.0
    # the model's λ* = c/2 from the zero-decay runs' own c (fitted over their two ordered checkpoints)
    assert "zero-decay" in d.model_c_source
    assert d.model_weight_decay_star == pytest.approx(math.exp(np.log(c_seed).mean()) / 2, rel=1e-2)
    assert d.model_keras_l2_star == pytest.approx(d.model_weight_decay_star / 2)


def test_decay_table_has_plateaus_and_test_metrics_per_decay(decay):
    t = decay.decay.table
    assert t["weight_decay"].tolist() == list(DECAYS) and (t["n_runs"] == 4).all() and (t["n_seeds"] == 4).all()
    nonzero = t[t["weight_decay"] > 0]
    expected = C_DECAY * np.mean(SEED_FACTORS) / (2 * nonzero["weight_decay"])
    np.testing.assert_allclose(nonzero["j2_plateau_mean"], expected, rtol=1e-3)
    assert (nonzero["saturated"]).all()
    for col in ("final_test_loss_mean", "test_loss_min_mean", "final_test_acc_mean", "best_test_acc_mean",
                "keras_l2", "model_plateau", "relaxation_epochs"):
        assert col in t.columns
    assert decay.decay.best_final_test_loss == 0.12  # the decay nearest the model's λ* = 0.16 by the synthetic loss


def test_sweep_without_a_bracket_gives_nan_and_says_why(decay_sweep, decay):
    strong = decay.runs[decay.runs["weight_decay"] >= 0.24]["path"].tolist()  # plateaus all below 1
    a = analyze_sweep(strong, n_boot=0)
    assert math.isnan(a.decay.weight_decay_star)
    assert "every plateau lies below J² = 1" in a.decay.explanation and "smaller weight decay" in a.decay.explanation
    assert any("does not cross" in n for n in a.notes)
    # no zero-decay run: the model falls back to the canonical c
    assert a.decay.model_c == CANONICAL_C and "canonical" in a.decay.model_c_source
    assert "no run without weight decay" in " ".join(a.notes)


def test_to_dict_is_strict_json(scaling, decay):
    for a in (scaling, decay):
        d = json.loads(json.dumps(a.to_dict(), allow_nan=False))
        assert {"runs", "power_laws", "joint", "combined", "collapse", "decay", "settings", "notes"} <= set(d)
    d = decay.to_dict()
    assert d["decay"]["weight_decay_star"] == pytest.approx(decay.decay.weight_decay_star)
    assert d["combined"]["c"] == pytest.approx(decay.combined.c)


def test_bad_settings_and_sources_are_refused(scaling_sweep, tmp_path):
    with pytest.raises(ValueError, match="plateau_fraction=0"):
        analyze_sweep(scaling_sweep, plateau_fraction=0)
    with pytest.raises(ValueError, match="confidence=1.5"):
        analyze_sweep(scaling_sweep, confidence=1.5)
    with pytest.raises(TraceError, match="No trace found"):
        analyze_sweep(tmp_path / "nothing")


def test_unknown_layer_is_noted_not_fatal(scaling_sweep):
    a = analyze_sweep(scaling_sweep, layer="encoder", n_boot=0)
    assert a.combined is None and not a.curves
    assert "no coupling J recorded for layer 'encoder'" in a.runs["note"].iloc[0]


# ------------------------------------------------------------------------------------ figures and task


def test_figures_drawn_for_what_the_sweep_has(scaling, decay, tmp_path):
    written, skipped = scaling_figures(scaling, tmp_path / "s", formats=("png",))
    assert set(written) == {"scaling_fits", "collapse", "j2_curves"}
    assert set(skipped) == {"decay_plateau", "decay_metrics"} and "weight-decay" in skipped["decay_plateau"]
    written, skipped = scaling_figures(decay, tmp_path / "d")
    assert {"collapse", "j2_curves", "decay_plateau", "decay_metrics"} <= set(written)
    assert "scaling_fits" in skipped  # one η/((1−α)B) only
    for png in written.values():
        assert png.stat().st_size > 20_000 and png.with_suffix(".pdf").stat().st_size > 5_000


def test_report_links_existing_files(decay, tmp_path):
    md = write_scaling_report(decay, tmp_path / "out", formats=("png",))
    text = md.read_text()
    assert "λ*" in text and f"{decay.decay.weight_decay_star:.4g}" in text
    for link in re.findall(r"\]\(([^)]+)\)", text):
        assert (md.parent / link).exists(), link
    assert (md.parent / "runs.csv").read_text().count("\n") == len(decay.runs) + 1


def test_scaling_task_needs_a_sweep(compose_cfg, tmp_path):
    with pytest.raises(ConfigError, match=r"task=scaling needs .*sweep=None"):
        run_scaling_task(compose_cfg("task=scaling"), tmp_path)
    with pytest.raises(ConfigError, match=r"sweep='.*nothing/\*'.*matches no trace"):
        run_scaling_task(compose_cfg("task=scaling", f"sweep={tmp_path}/nothing/*"), tmp_path)
    with pytest.raises(ConfigError, match=r"scaling.plateau_fraction=1.5"):
        run_scaling_task(compose_cfg("task=scaling", f"sweep={tmp_path}", "scaling.plateau_fraction=1.5"), tmp_path)


def test_task_scaling_from_the_command_line(decay_sweep, decay, tmp_path):
    proc = run_cli("task=scaling", f"sweep={decay_sweep}", f"checkpoint_root={tmp_path}", cwd=tmp_path,
                   env={"OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    (out,) = [p.parent for p in tmp_path.glob("scaling/*/scaling.md")]
    result = json.loads((out / "scaling.json").read_text())
    assert result["decay"]["weight_decay_star"] == pytest.approx(decay.decay.weight_decay_star)
    assert result["combined"]["c"] == pytest.approx(decay.combined.c)
    assert (out / "runs.csv").exists()
    assert {p.name for p in (out / "figures").iterdir()} >= {"decay_plateau.png", "decay_plateau.pdf", "collapse.png"}
    logged = proc.stdout + proc.stderr
    assert "λ* (plateau J² = 1)" in logged and str(out.name) in logged
    # the written analysis feeds the guideline
    r = ss.Recommendation.from_analysis(200, out, n_train=N_TRAIN)
    assert r.weight_decay == pytest.approx(decay.decay.weight_decay_star) and r.weight_decay_source == "measured"
    assert r.c == pytest.approx(decay.combined.c)


def test_task_scaling_without_a_sweep_fails_with_the_error(tmp_path):
    proc = run_cli("task=scaling", f"checkpoint_root={tmp_path}", cwd=tmp_path)
    assert proc.returncode != 0
    assert "task=scaling needs the runs to analyse: sweep=None" in proc.stderr
    assert "Traceback" not in proc.stderr
