"""Traces for the analysis-layer tests: synthetic ones (exact, instant) and small real ones (cached).

``synthetic_trace`` writes a schema-v1 trace with :class:`~stabilityscope.recording.trace.TraceWriter`, the
writer training uses, with known values: J² grows linearly through the edge (J = 1 at epoch 15 by
default), the test loss is smallest at ``best_epoch``, the Poincaré points go from a fixed point via
a period-2 cycle to a cloud, and the eigenvalues fill a disc of radius J. For the scaling analysis
(tests/test_scaling.py) it also takes the optimiser settings (momentum, batch size, training subset,
seed) and any J² curve, e.g. :func:`linear_j2` or :func:`relaxing_j2`; ``chi`` and the phase follow
J through the mean-field theory. ``real_traces`` trains the canonical network briefly on real data
subsets (once per test session, shared by the test files).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import yaml

from stabilityscope.dynamics.lyapunov import ATTRACTORS
from stabilityscope.recording.trace import METRICS, LayerSpec, StatSpec, TraceWriter
from stabilityscope.theory.meanfield import PHASES, edge_distance, order_parameters, phase_code

N = 32  # width of the synthetic square layer
T_HALF = 20  # Poincaré points per start state
STARTS = 8


def synthetic_config(activation: str = "tanh", lr: float = 0.02, weight_decay: float = 0.0, epochs: int = 20,
                     analysis: str = "standard", *, momentum: float = 0.5, batch_size: int = 32,
                     train_subset: Optional[int] = 1000, seed: int = 0) -> dict[str, Any]:
    return {"task": "train", "resume": None, "figures": True, "trace": None,
            "model": {"name": "fmnist_fc", "width": N, "activation": activation, "init_J": 0.5},
            "dataset": {"name": "fashion_mnist", "root": "/nowhere", "train_subset": train_subset, "test_subset": 200},
            "optim": {"name": "sgd", "lr": lr, "momentum": momentum, "weight_decay": weight_decay,
                      "betas": [0.9, 0.999]},
            "train": {"epochs": epochs, "batch_size": batch_size, "seed": seed},
            "analysis": {"name": analysis, "maps": analysis != "economy", "eigen": analysis != "economy"},
            "checkpoint_root": "/nowhere"}


J2Curve = Callable[[np.ndarray], np.ndarray]  # epochs (float array) -> J² of the hidden layer


def linear_j2(slope: float, start: float = 0.25) -> J2Curve:
    """J² = start + slope·epoch: EOC-training's linear growth (no weight decay)."""
    return lambda e: start + slope * np.asarray(e, dtype=float)


def relaxing_j2(rho: float, c: float, weight_decay: float, start: float = 0.25) -> J2Curve:
    """The solution of dJ²/d(epoch) = ρ(c − 2·wd·J²) (stabilityscope.analysis.guideline's model): linear growth
    A = ρc without decay, else exponential relaxation to the plateau c/(2·wd) at rate 2·wd·ρ."""
    if weight_decay == 0:
        return linear_j2(rho * c, start)
    plateau, rate = c / (2 * weight_decay), 2 * weight_decay * rho
    return lambda e: plateau + (start - plateau) * np.exp(-rate * np.asarray(e, dtype=float))


def synthetic_trace(path: Path, *, epochs: int = 20, best_epoch: int = 12, activation: str = "tanh",
                    analysis: str = "standard", lr: float = 0.02, weight_decay: float = 0.0,
                    j2_slope: float = 0.05, status: str = "finished", seed: int = 0,
                    n_checkpoints: Optional[int] = None, chain: bool = False, momentum: float = 0.5,
                    batch_size: int = 32, train_subset: Optional[int] = 1000, j2: Optional[J2Curve] = None,
                    test_loss: Optional[Callable[[np.ndarray], np.ndarray]] = None,
                    test_acc: Optional[Callable[[np.ndarray], np.ndarray]] = None,
                    val_loss: Optional[Callable[[np.ndarray], np.ndarray]] = None,
                    config_extra: Optional[dict[str, Any]] = None,
                    map_stats: Optional[Callable[[int, float], tuple[float, float, str]]] = None) -> Path:
    """Write a trace at ``path`` (a trace.h5; parents created) and return it.

    ``chain`` adds a record ``block`` of kind ``chain`` (an MLP block iterated as one module): map
    statistics only, no weight matrix, so no J, J0 or eigenvalues.

    ``j2`` gives the hidden layer's J² against epoch (default: linear, 0.25 + ``j2_slope``·epoch);
    ``test_loss`` / ``test_acc`` replace the default curves (a parabola with its minimum at
    ``best_epoch``); ``val_loss`` adds a validation loss (``dataset.validation``'s metric). ``momentum``,
    ``batch_size``, ``train_subset`` and ``seed`` go into the stored config (``seed`` is ``train.seed``, the
    per-seed key of a decay sweep). ``map_stats(epoch, J)`` gives the iterated map's (s, λ_max, attractor) at
    a checkpoint instead of (J, ln J, the class by J).
    """
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    maps = analysis != "economy"
    hidden_stats = [StatSpec("J"), StatSpec("J0"), StatSpec("weight_distance"), StatSpec("chi"),
                    StatSpec("edge_distance"), StatSpec("phase", PHASES)]
    if maps:
        hidden_stats += [StatSpec(s) for s in ("s_mean", "s_std", "jacobian_product_exponent",
                                               "two_trajectory_exponent", "asymptotic_distance", "lambda_max", "period",
                                               "map_steps")]
        hidden_stats += [StatSpec("attractor", ATTRACTORS), StatSpec("poincare", shape=(STARTS, T_HALF, 2), dtype="f4"),
                         StatSpec("spectral_radius"), StatSpec("eigenvalues", shape=(N, 2), dtype="f4")]
    head_stats = hidden_stats[:6]
    layers = {
        "hidden": LayerSpec({"fan_in": N, "fan_out": N, "square": True, "role": "hidden", "activation": activation,
                             "surrogate": False, "meanfield_activation": activation, "map_activation": activation},
                            hidden_stats),
        "head": LayerSpec({"fan_in": N, "fan_out": 10, "square": False, "role": "head", "activation": "",
                           "surrogate": True, "meanfield_activation": "tanh", "map_activation": ""}, head_stats),
    }
    if chain and maps:
        map_specs = [st for st in hidden_stats if st.name in ("s_mean", "s_std", "jacobian_product_exponent",
                                                              "two_trajectory_exponent", "asymptotic_distance",
                                                              "lambda_max", "period", "map_steps", "attractor",
                                                              "poincare")]
        layers["block"] = LayerSpec({"fan_in": N, "fan_out": N, "square": True, "role": "mlp", "activation": "",
                                     "surrogate": False, "kind": "chain", "meanfield_activation": "",
                                     "map_activation": activation}, map_specs)
    cfg = synthetic_config(activation, lr, weight_decay, epochs, analysis, momentum=momentum, batch_size=batch_size,
                           train_subset=train_subset, seed=seed)
    cfg.update(config_extra or {})  # further top-level sections (e.g. guideline)
    attrs = {"config": yaml.safe_dump(cfg), "seed": seed, "model": "fmnist_fc", "dataset": "fashion_mnist",
             "device": "cpu", "task": "train"}
    w = TraceWriter.create(path, attrs=attrs, layers=layers,
                           metrics=(*METRICS, "val_loss") if val_loss is not None else METRICS)
    e_all = np.arange(epochs + 1 if n_checkpoints is None else n_checkpoints, dtype=float)
    # J² linear in epochs by default: J = 1 at e = 0.75 / slope
    j_all = np.sqrt(np.asarray(j2(e_all) if j2 is not None else 0.25 + j2_slope * e_all, dtype=float))
    loss_all = (np.asarray(test_loss(e_all), dtype=float) if test_loss is not None
                else 0.4 + 0.002 * (e_all - best_epoch) ** 2 + np.where(e_all == 0, 2.0, 0.0))
    val_all = np.asarray(val_loss(e_all), dtype=float) if val_loss is not None else None
    acc_all = (np.asarray(test_acc(e_all), dtype=float) if test_acc is not None
               else 0.78 + 0.004 * e_all - 0.0002 * (e_all - best_epoch) ** 2)
    # the mean-field statistics of every checkpoint at once (one fixed-point solve per layer, not per checkpoint)
    meanfield: dict[str, tuple[np.ndarray, ...]] = {}
    for name, jj, jj0, act in (("hidden", j_all, -0.02 + 0.001 * e_all, activation),
                               ("head", 1.4 + 0.02 * e_all, np.full_like(e_all, -0.6), "tanh")):
        _, _, chi = order_parameters(jj0, jj, act)
        meanfield[name] = (jj, jj0, np.atleast_1d(chi), np.atleast_1d(edge_distance(jj0, jj, act)),
                           np.atleast_1d(phase_code(jj0 / jj, 1 / jj, act)))
    for i, e in enumerate(e_all.astype(int)):
        j = float(j_all[i])
        loss = float(loss_all[i])
        stats: dict[str, dict[str, Any]] = {}
        for name, (jj, jj0, chi, dist, phase) in meanfield.items():
            stats[name] = {"J": float(jj[i]), "J0": float(jj0[i]), "weight_distance": 0.1 * e, "chi": float(chi[i]),
                           "edge_distance": float(dist[i]), "phase": int(phase[i])}
        if maps:
            lam, s_map = float(np.log(max(j, 1e-3))), j
            given = map_stats(int(e), j) if map_stats is not None else None
            if given is not None:
                s_map, lam = float(given[0]), float(given[1])
                x = rng.normal(size=(STARTS, T_HALF + 1))
                p, attractor, period = np.stack([x[:, :-1], x[:, 1:]], -1), given[2], 0
            elif j < 0.9:  # fixed point at 0: every start state on one dot
                p, attractor, period = np.zeros((STARTS, T_HALF, 2)), "fixed_point", 1
            elif j < 1.1:  # a period-2 cycle
                a = rng.normal(size=(STARTS, 1))
                x = np.where(np.arange(T_HALF + 1) % 2 == 0, a, -a)
                p, attractor, period = np.stack([x[:, :-1], x[:, 1:]], -1), "periodic", 2
            else:  # a cloud
                x = rng.normal(size=(STARTS, T_HALF + 1))
                p, attractor, period = np.stack([x[:, :-1], x[:, 1:]], -1), "chaotic", 0
            ev = j * np.sqrt(rng.uniform(size=N)) * np.exp(2j * np.pi * rng.uniform(size=N))
            stats["hidden"].update(
                s_mean=s_map, s_std=0.01, jacobian_product_exponent=lam, two_trajectory_exponent=lam,
                asymptotic_distance=0.0 if j < 1 else 5.0 * (j - 1), lambda_max=lam, period=period,
                map_steps=40.0, attractor=ATTRACTORS.index(attractor), poincare=p.astype(np.float32),
                spectral_radius=float(np.abs(ev).max()),
                eigenvalues=np.stack([ev.real, ev.imag], -1).astype(np.float32))
            if chain:
                stats["block"] = {k: v for k, v in stats["hidden"].items()
                                  if k in {st.name for st in layers["block"].stats}}
        w.append(epoch=int(e), step=30 * int(e), wall_time=float(e), layer_stats=stats,
                 metrics={"train_loss": loss - 0.05, "train_acc": 0.8 + 0.005 * e, "test_loss": loss,
                          "test_acc": float(acc_all[i]), **({"val_loss": float(val_all[i])} if val_all is not None
                                                           else {})})
    w.close(status)
    return path


# -------------------------------------------------------------------------------------- real traces

_REAL: dict[str, Path] = {}


def real_trace(root: Path, data_root: Path, name: str, *overrides: str) -> Path:
    """A small real run (canonical network, data subsets, 2 epochs), trained once per test session.

    Iterated maps are on (short: 8 start states, T = 40); the eigendecomposition is off to keep the
    run to seconds (the eigenvalue figure is tested on synthetic traces).
    """
    if name in _REAL and _REAL[name].exists():
        return _REAL[name]
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from stabilityscope.cli.app import conf_dir, register_configs, register_resolvers
    from stabilityscope.training.trainer import Run

    register_configs()
    register_resolvers()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=conf_dir(), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[
            "experiment=debug", f"dataset.root={data_root}", "dataset.train_subset=500", "dataset.test_subset=100",
            "train.epochs=2", "analysis.n_inputs=8", "analysis.steps=40", "analysis.eigen=false", *overrides])
    GlobalHydra.instance().clear()
    run_dir = root / name
    Run(cfg, run_dir).execute()
    _REAL[name] = run_dir / "trace.h5"
    return _REAL[name]
