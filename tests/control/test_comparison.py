"""compare_arms: the controlled runs against fixed decays, the best of a sweep and early stopping, with verdicts.

Synthetic traces give every arm known test losses, so each arm's number, the sweep's choice, the early stop and
each verdict are known in advance; the Welch interval is checked against scipy's; a real controlled run checks
that the decay reported is the controller's last one.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

import stabilityscope as ss
from stabilityscope.analysis.control_comparison import LOSS_MARGIN, compare_arms, run_outcome
from stabilityscope.errors import ConfigError
from stabilityscope.training.trainer import Run
from tests.control.test_controller import controlled_config
from tests.trace_factory import synthetic_trace

EPOCHS = 10


def arm(root: Path, name: str, finals: list[float], decay: float = 0.0, best_epoch: int = 6,
        val_best: int | None = None) -> list[Path]:
    """One run per final test loss: the loss falls to a minimum 0.05 below the final value at ``best_epoch`` and
    rises back to it at the last epoch; with ``val_best`` a validation loss lowest at that epoch."""
    runs = []
    for seed, final in enumerate(finals):
        def loss(e, final=final):
            rise = ((e - best_epoch) / (EPOCHS - best_epoch)) ** 2
            return final - 0.05 + 0.05 * rise + np.where(e == 0, 2.0, 0.0)
        val = None if val_best is None else (lambda e: 1.0 + (e - val_best) ** 2 / 100)
        path = root / name / f"{decay:g}" / str(seed) / "trace.h5"
        synthetic_trace(path, epochs=EPOCHS, seed=seed, weight_decay=decay, test_loss=loss, val_loss=val,
                        analysis="economy", j2_slope=0.05)
        runs.append(path.parent)
    return runs


def test_each_arm_reads_its_loss_the_sweep_picks_its_best_decay_and_the_verdicts_follow(tmp_path):
    controlled = arm(tmp_path, "ctl", [0.400, 0.404, 0.402], decay=1e-4)
    same = arm(tmp_path, "rec", [0.401, 0.403, 0.401], decay=1.6e-4)  # within 0.1%: holds
    sweep = (arm(tmp_path, "sweep", [0.360, 0.362, 0.361], decay=3e-4)  # 10% better than the controller: fails
             + arm(tmp_path, "sweep", [0.450, 0.452, 0.451], decay=1e-3))
    stopped = arm(tmp_path, "es", [0.50, 0.52, 0.51], val_best=4)
    c = compare_arms({"controlled": controlled, "recommend": same}, sweeps={"sweep": sweep},
                     early_stopped={"no decay, early stopping": stopped})
    names = [a.name for a in c.others]
    assert names == ["recommend", "sweep (decay 0.0003)", "no decay, early stopping"]
    assert c.controlled.losses == pytest.approx([0.400, 0.404, 0.402])
    sweep_arm = c.others[1]
    assert sorted(sweep_arm.chosen_from) == [3e-4, 1e-3] and sweep_arm.losses == pytest.approx([0.360, 0.362, 0.361])
    # early stopping: the test loss at epoch 4, where the validation loss is lowest (final − 0.05 + 0.05·(2/4)²)
    assert c.others[2].losses == pytest.approx([f - 0.05 + 0.05 * 0.25 for f in (0.50, 0.52, 0.51)])
    assert [r.stopped_epoch for r in c.others[2].runs] == [4.0, 4.0, 4.0]
    assert c.controlled.best[0] == pytest.approx(0.402 - 0.05)
    assert c.verdict_word("recommend") == "holds"
    assert c.verdict_word("sweep (decay 0.0003)") == "fails"
    assert c.verdict_word("no decay, early stopping") == "holds"  # the controller is far better: inside the margin
    # the interval is Welch's on the logs, computed here independently
    a, b = np.log([0.400, 0.404, 0.402]), np.log([0.401, 0.403, 0.401])
    va, vb = a.var(ddof=1) / 3, b.var(ddof=1) / 3
    df = (va + vb) ** 2 / (va ** 2 / 2 + vb ** 2 / 2)
    half = stats.t.ppf(0.975, df) * math.sqrt(va + vb)
    v = c.verdicts["recommend"]
    assert v.estimate == pytest.approx(a.mean() - b.mean())
    assert v.interval == pytest.approx((a.mean() - b.mean() - half, a.mean() - b.mean() + half))
    assert v.interval[1] < LOSS_MARGIN
    table = c.to_markdown()
    assert "| controlled | 3 (0, 1, 2) | 0.0001 |" in table and "**fails**" in table and "**holds**" in table
    assert "at the lowest validation loss" in table and "0.0003: 0.361, 0.001: 0.451" in table
    # J² at the end: 0.25 + 0.05·10 on every synthetic run
    assert c.controlled.j2_end[0] == pytest.approx(0.75)


def test_two_close_arms_with_noisy_seeds_are_inconclusive_and_say_what_would_settle_it(tmp_path):
    controlled = arm(tmp_path, "ctl", [0.40, 0.44, 0.38])
    other = arm(tmp_path, "other", [0.41, 0.37, 0.43])
    c = compare_arms({"controlled": controlled, "other": other})
    v = c.verdicts["other"]
    assert v.verdict == "inconclusive" and v.interval[0] < LOSS_MARGIN < v.interval[1]
    assert "seeds per arm" in v.describe()


def test_bad_arms_are_refused_with_what_to_do(tmp_path):
    runs = arm(tmp_path, "a", [0.4, 0.41])
    with pytest.raises(ConfigError, match="No arm named 'controlled'"):
        compare_arms({"ctl": runs})
    with pytest.raises(ConfigError, match="has no runs"):
        compare_arms({"controlled": runs, "empty": []})
    with pytest.raises(ConfigError, match=r"dataset.validation=N"):
        compare_arms({"controlled": runs}, early_stopped={"es": runs})
    killed = synthetic_trace(tmp_path / "killed" / "trace.h5", epochs=EPOCHS, status="running").parent
    with pytest.raises(ConfigError, match=r"is running, not finished.*resume="):
        compare_arms({"controlled": runs, "other": [killed]})


def test_a_real_controlled_run_reports_the_controllers_last_decay_and_its_layers_j2(tmp_path, data_root):
    cfg = controlled_config(data_root, epochs=2)
    Run(cfg, tmp_path / "ctl").execute()
    out = run_outcome(tmp_path / "ctl")
    with ss.open_trace(tmp_path / "ctl") as tr:
        assert out.weight_decay == pytest.approx(float(tr.control.weight_decay[-1].mean()))
        assert out.weight_decay != cfg.optim.weight_decay  # the controller moved it
        assert out.j2_end == pytest.approx(float(tr.stat("hidden", "J")[-1] ** 2))
        assert out.final_loss == float(tr.metric("test_loss")[-1]) and math.isnan(out.stopped_loss)
