"""Per-checkpoint statistics of a model's recorded fully connected layers.

For every recorded layer, at every checkpoint (the ``analysis`` config group switches the costly parts):

- always: phase coordinates J, J0 (EOC-training, SCIENCE.md §1.1) and ||W(t) − W(0)||_F. For a
  non-square layer they locate its mean-field *surrogate* (a random N×N matrix with the same entry
  statistics); the layer's trace group says so (``surrogate = True``);
- ``meanfield``: χ of the (surrogate) coordinates, the signed edge distance ½·ln χ, the phase label;
- ``maps`` (square layers only): the trained map x → φ(Wx + b) iterated from the layer's real inputs
  on the first ``n_inputs`` test examples for ``steps`` steps (EOC-optimality): s (M1), M2, M3, M4,
  Benettin λ_max, the attractor class and period (majority over start states), Poincaré points (M5);
- ``spectrum_k`` > 0 (square layers): the top-k Lyapunov exponents by QR re-orthonormalisation,
  averaged over the first ``spectrum_inputs`` start states;
- ``weight_structure``: the oscillation–diffusion diagnostics, *interpretations* of EOC-optimality v1
  (:mod:`stabilityscope.weight_structure`), incl. step displacement and increment cosine;
- ``eigen`` (square layers): spectral radius / norm, complex fraction and the eigenvalues.

Layers of equal shape (and, for maps, equal activation) are measured as one stack.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Any, Mapping, Optional

import numpy as np
import torch
from torch import nn

from stabilityscope.dissect import LayerRecord
from stabilityscope.lyapunov import ATTRACTORS, lyapunov_spectrum, map_measures
from stabilityscope.maps import LayerMap
from stabilityscope.meanfield import PHASES, edge_distance, order_parameters, phase_code, phase_coordinates
from stabilityscope.trace import LayerSpec, StatSpec
from stabilityscope.weight_structure import eigen_summary, online_step_stats, weight_structure_summary

MAP_STATS = ("s_mean", "s_std", "jacobian_product_exponent", "two_trajectory_exponent", "asymptotic_distance",
             "lambda_max", "period", "map_steps")
STRUCTURE_STATS = ("mean_part_norm", "random_part_norm", "mean_to_random_ratio", "mean_map_multiplier",
                   "mean_map_oscillates", "sym_norm", "antisym_norm", "antisym_ratio", "step_displacement",
                   "increment_cosine")
EIGEN_STATS = ("spectral_radius", "spectral_norm", "complex_fraction")
POINCARE_STARTS = 8  # start states whose Poincaré points (M5) are stored


def meanfield_activation(record: LayerRecord) -> str:
    """φ of the mean-field surrogate: the layer's own, or tanh when none is known (e.g. a head)."""
    return record.activation if record.activation in ("tanh", "relu") else "tanh"


def map_activation(record: LayerRecord) -> str:
    """φ of the iterated map of a square layer: its own activation, identity when none follows."""
    return record.activation if record.activation in ("tanh", "relu", "sigmoid") else "identity"


def _majority(codes: torch.Tensor) -> torch.Tensor:
    """Most frequent value along the last axis, (..., B) → (...)."""
    return torch.mode(codes, dim=-1).values


class LayerTracker:
    """Measures the recorded layers of a model; keeps W(0) and the previous checkpoint for resuming."""

    def __init__(self, model: nn.Module, records: list[LayerRecord], analysis: Any,
                 probe_inputs: Optional[torch.Tensor] = None) -> None:
        self.records = {r.name: r for r in records}
        self.analysis = analysis
        self.probe_inputs = probe_inputs  # (B, ...) real test inputs, start states of the maps
        modules = dict(model.named_modules())
        self.initial = {n: modules[n].weight.detach().clone() for n in self.records}
        self.previous: dict[str, torch.Tensor] = {}
        self.previous_increment: dict[str, torch.Tensor] = {}

    def _maps_on(self, r: LayerRecord) -> bool:
        return bool(self.analysis.maps) and r.square and self.probe_inputs is not None

    def stat_specs(self, r: LayerRecord) -> list[StatSpec]:
        a = self.analysis
        specs = [StatSpec("J"), StatSpec("J0"), StatSpec("weight_distance")]
        if a.meanfield:
            specs += [StatSpec("chi"), StatSpec("edge_distance"), StatSpec("phase", PHASES)]
        if self._maps_on(r):
            n_t = a.steps - a.steps // 2
            specs += [StatSpec(s) for s in MAP_STATS] + [StatSpec("attractor", ATTRACTORS)]
            specs += [StatSpec("poincare", shape=(min(POINCARE_STARTS, a.n_inputs), n_t, 2), dtype="f4")]
            if a.spectrum_k:
                specs += [StatSpec("lyapunov_spectrum", shape=(min(a.spectrum_k, r.fan_in),))]
        if a.weight_structure:
            specs += [StatSpec(s) for s in STRUCTURE_STATS]
        if a.eigen and r.square:
            specs += [StatSpec(s) for s in EIGEN_STATS]
            specs += [StatSpec("eigenvalues", shape=(r.fan_in, 2), dtype="f4")]
        return specs

    def layer_specs(self, store_weights: bool = False) -> dict[str, LayerSpec]:
        out = {}
        for name, r in self.records.items():
            attrs = {"fan_in": r.fan_in, "fan_out": r.fan_out, "square": r.square, "role": r.role,
                     "activation": r.activation or "", "surrogate": not r.square,
                     "meanfield_activation": meanfield_activation(r),
                     "map_activation": map_activation(r) if r.square else ""}
            out[name] = LayerSpec(attrs, self.stat_specs(r), r.shape if store_weights else None)
        return out

    # -- measurement ---------------------------------------------------------------------------
    @torch.no_grad()
    def _layer_inputs(self, model: nn.Module, names: list[str]) -> dict[str, torch.Tensor]:
        """Each layer's input on the probe examples, flattened to (B, fan_in), via forward hooks."""
        modules = dict(model.named_modules())
        seen: dict[str, torch.Tensor] = {}
        hooks = [modules[n].register_forward_hook(
            lambda mod, args, out, n=n: seen.setdefault(n, args[0].detach().flatten(1))) for n in names]
        was_training = model.training
        model.eval()
        try:
            model(self.probe_inputs)
        finally:
            for h in hooks:
                h.remove()
            model.train(was_training)
        return seen

    @torch.no_grad()
    def measure(self, model: nn.Module) -> dict[str, dict[str, Any]]:
        modules = dict(model.named_modules())
        weights = {n: modules[n].weight.detach() for n in self.records}
        out: dict[str, dict[str, Any]] = {n: {} for n in self.records}
        for names in self._groups(lambda r: r.shape):
            W = torch.stack([weights[n] for n in names])  # (L, M, N)
            j0, j = phase_coordinates(W)
            dist = torch.linalg.matrix_norm(W - torch.stack([self.initial[n] for n in names]))
            for i, n in enumerate(names):
                out[n].update(J=float(j[i]), J0=float(j0[i]), weight_distance=float(dist[i]))
            if self.analysis.weight_structure:
                self._structure(names, W, out)
            if self.analysis.eigen and W.shape[-1] == W.shape[-2]:
                es = eigen_summary(W, return_eigenvalues=True)
                ev = torch.stack([es.eigenvalues.real, es.eigenvalues.imag], -1).float().cpu().numpy()  # (L, N, 2)
                for i, n in enumerate(names):
                    out[n].update(spectral_radius=float(es.spectral_radius[i]), spectral_norm=float(es.spectral_norm[i]),
                                  complex_fraction=float(es.complex_fraction[i]), eigenvalues=ev[i])
        if self.analysis.meanfield:
            self._meanfield(out)
        map_layers = [n for n, r in self.records.items() if self._maps_on(r)]
        if map_layers:
            inputs = self._layer_inputs(model, map_layers)
            for names in self._groups(lambda r: (r.shape, map_activation(r)), only=map_layers):
                self._maps(names, modules, inputs, out)
        return out

    def _groups(self, key: Any, only: Optional[list[str]] = None) -> list[list[str]]:
        groups: dict[Any, list[str]] = defaultdict(list)
        for n, r in self.records.items():
            if only is None or n in only:
                groups[key(r)].append(n)
        return list(groups.values())

    def _structure(self, names: list[str], W: torch.Tensor, out: dict[str, dict[str, Any]]) -> None:
        summary = weight_structure_summary(W, with_spectrum=False)  # the spectrum comes from `eigen`
        W64 = W.double()  # increments are small differences of float32 weights: accumulate in float64
        prev = [self.previous.get(n) for n in names]
        step = {"step_displacement": [float("nan")] * len(names), "increment_cosine": [float("nan")] * len(names)}
        for i, n in enumerate(names):
            if prev[i] is not None:
                online = online_step_stats(W64[i], prev[i], self.initial[n].double(), self.previous_increment.get(n))
                step["step_displacement"][i] = float(online["step_displacement"])
                step["increment_cosine"][i] = float(online["increment_cosine"])
                self.previous_increment[n] = W64[i] - prev[i]
            self.previous[n] = W64[i].clone()
        for i, n in enumerate(names):
            out[n].update({k: float(summary[k][i]) for k in STRUCTURE_STATS if k in summary})
            out[n].update({k: v[i] for k, v in step.items()})

    def _meanfield(self, out: dict[str, dict[str, Any]]) -> None:
        for act in {meanfield_activation(r) for r in self.records.values()}:
            names = [n for n, r in self.records.items() if meanfield_activation(r) == act]
            j0 = np.array([out[n]["J0"] for n in names])
            j = np.array([out[n]["J"] for n in names])
            _, _, chi = order_parameters(j0, j, act)
            with np.errstate(divide="ignore", invalid="ignore"):
                dist = edge_distance(j0, j, act)
                codes = phase_code(j0 / j, 1.0 / j, act)
            for i, n in enumerate(names):
                out[n].update(chi=float(chi[i]), edge_distance=float(dist[i]), phase=int(codes[i]))

    def _maps(self, names: list[str], modules: Mapping[str, nn.Module], inputs: Mapping[str, torch.Tensor],
              out: dict[str, dict[str, Any]]) -> None:
        a = self.analysis
        lins = [modules[n] for n in names]
        F = LayerMap([m.weight.detach() for m in lins],
                     None if all(m.bias is None for m in lins) else
                     [m.bias.detach() if m.bias is not None else torch.zeros(m.out_features, device=m.weight.device)
                      for m in lins], map_activation(self.records[names[0]]))
        x0 = torch.stack([inputs[n] for n in names])  # (L, B, N)
        mm = map_measures(F, x0, steps=a.steps, seed=0)
        attractor = _majority(mm.attractor)  # (L,) the class most start states reach
        n_p = min(POINCARE_STARTS, x0.shape[1])
        n_t = a.steps - a.steps // 2
        poincare = mm.poincare[:, :n_p, :n_t].float().cpu().numpy()  # (L, n_p, ≤ n_t, 2)
        for i, n in enumerate(names):
            p = np.full((n_p, n_t, 2), np.nan, np.float32)
            p[:, : poincare.shape[2]] = poincare[i]
            # the period of the orbits that reached the majority class (non-empty by construction)
            period = _majority(mm.period[i][mm.attractor[i] == attractor[i]])
            out[n].update(
                s_mean=float(mm.s_mean[i]), s_std=float(mm.s_std[i]),
                jacobian_product_exponent=float(mm.jacobian_product_exponent[i].nanmean()),
                two_trajectory_exponent=float(mm.two_trajectory_exponent[i].nanmean()),
                asymptotic_distance=float(mm.asymptotic_distance[i].nanmean()),
                lambda_max=float(mm.lyapunov_max[i].nanmean()), attractor=int(attractor[i]), period=int(period),
                map_steps=float(mm.steps_run[i]), poincare=p)
        if a.spectrum_k:
            k = min(a.spectrum_k, F.dim)
            spec = lyapunov_spectrum(F, x0[:, : a.spectrum_inputs], k=k, steps=a.steps)
            exps = spec.exponents.nanmean(1).cpu().numpy()  # (L, k): mean over start states
            for i, n in enumerate(names):
                out[n]["lyapunov_spectrum"] = exps[i]

    # -- resume ----------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"initial": dict(self.initial), "previous": dict(self.previous),
                "previous_increment": dict(self.previous_increment)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.initial = {k: v.clone() for k, v in state["initial"].items()}
        self.previous = {k: v.clone() for k, v in state.get("previous", {}).items()}
        self.previous_increment = {k: v.clone() for k, v in state.get("previous_increment", {}).items()}
