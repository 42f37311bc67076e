"""Per-checkpoint statistics of a model's recorded fully connected layers.

For every recorded layer, at every checkpoint (the ``analysis`` config group switches the costly parts):

- always: phase coordinates J, J0 (EOC-training, docs/science/mean-field.md) and ||W(t) − W(0)||_F. For a
  non-square layer they locate its mean-field *surrogate* (a random N×N matrix with the same entry
  statistics); the layer's trace group says so (``surrogate = True``);
- ``meanfield``: χ of the (surrogate) coordinates, the signed edge distance ½·ln χ, the phase label;
- ``maps`` (square layers only): the trained map x → φ(Wx + b) iterated from the layer's real inputs
  on the first ``n_inputs`` test examples for ``steps`` steps (EOC-optimality): s (M1), M2, M3, M4,
  Benettin λ_max, the attractor class and period (majority over start states), Poincaré points (M5);
- ``spectrum_k`` > 0 (square layers): the top-k Lyapunov exponents by QR re-orthonormalisation,
  averaged over the first ``spectrum_inputs`` start states;
- ``weight_structure``: the oscillation–diffusion diagnostics, *interpretations* of EOC-optimality v1
  (:mod:`stabilityscope.dynamics.weight_structure`), incl. step displacement and increment cosine;
- ``eigen`` (square layers): spectral radius / norm, complex fraction and the eigenvalues, all from the full
  decomposition (the layer attribute ``spectral_radius_method`` = ``exact`` says so).
- ``geometry`` (FC layers with flat inputs; FC-geometry, docs/science/secondary.md, *our instantiation*): on a
  fixed sample of the first ``geometry_samples`` training inputs, the mean and median transition-band
  half-width c_φ(δ)/‖w_k‖, the mean in-band fraction (ReLU-like units: the active fraction), the share
  of the per-sample squared gradient norm carried by in-band (sample, unit) pairs, the number of
  occupied activation patterns and the mean |signed distance| (:mod:`stabilityscope.dynamics.geometry`).
  ∂ℓ_i/∂z_i comes from one backward pass of the summed cross-entropy in eval mode (samples do not
  interact), so the closed-form row norms (∂ℓ_i/∂z_ik)²(‖x_i‖² + 1) are the exact per-sample ones.

Records of kind ``chain`` (MLP blocks d → h → d, when ``chains``) and ``model_map`` (the whole model
input → ``analysis.map_layer``, EOC-optimality's map) have no single weight matrix: they get only
the map statistics, of :class:`~stabilityscope.dynamics.maps.ModuleMap` s of the block or the model prefix.

Layers of equal shape (and, for maps, equal activation) are measured as one stack, so every selected
layer of a large model costs a few batched tensor operations rather than a loop.

Start states are real test inputs: for a layer inside a transformer or a convolutional network (whose
input is (B, tokens, d) or (B, C, H, W)) each test input contributes the layer's input at one
position, the first token (the class token of a ViT) or the centre pixel. M1 of a module map with
N > 1024 uses an unbiased random-probe estimate of ||∂F||_F (see
:class:`~stabilityscope.dynamics.module_maps.ProbedModuleMap`).
"""
from __future__ import annotations

import dataclasses
from collections import defaultdict
from typing import Any, Mapping, Optional

import numpy as np
import torch
import torch.nn.functional as F_
from torch import nn

from stabilityscope.config import AnalysisConfig, as_options
from stabilityscope.dynamics.depthwise import (
    block_readings,
    depth_lyapunov,
    span_module,
    trunk_states,
    unfused_attention,
)
from stabilityscope.dynamics.geometry import GEOMETRY_STATS, layer_geometry
from stabilityscope.dynamics.lyapunov import (
    ATTRACTORS,
    STOP_REASONS,
    MapMeasures,
    lyapunov_spectrum,
    map_measures,
    near_identity,
    relative_step,
)
from stabilityscope.dynamics.maps import IteratedMap, LayerMap
from stabilityscope.dynamics.module_maps import ProbedModuleMap
from stabilityscope.dynamics.submodel import ModelPrefix
from stabilityscope.dynamics.weight_structure import eigen_summary, online_step_stats, weight_structure_summary
from stabilityscope.errors import ConfigError
from stabilityscope.models.dissect import LayerRecord
from stabilityscope.models.wrappers import unwrap_model
from stabilityscope.recording.trace import LayerSpec, StatSpec
from stabilityscope.theory.meanfield import PHASES, edge_distance, order_parameters, phase_code, phase_coordinates

MAP_STATS = ("s_mean", "s_std", "jacobian_product_exponent", "two_trajectory_exponent", "asymptotic_distance",
             "lambda_max", "period", "map_steps")
STRUCTURE_STATS = ("mean_part_norm", "random_part_norm", "mean_to_random_ratio", "mean_map_multiplier",
                   "mean_map_oscillates", "sym_norm", "antisym_norm", "antisym_ratio", "step_displacement",
                   "increment_cosine")
EIGEN_STATS = ("spectral_radius", "spectral_norm", "complex_fraction")
# Depth-wise readings of a trunk block (stabilityscope.dynamics.depthwise), means over the probe inputs;
# gain_rms_std is their spread over inputs, gain_rms_stderr the random-probe error of the mean.
BLOCK_STATS = ("gain_rms", "gain_rms_std", "gain_rms_stderr", "gain_top", "raw_rms", "branch_ratio", "stream_ratio")
DEPTH_STATS = ("depth_lambda_max", "depth_lambda_max_std")  # the trunk's top depth exponent: mean, spread
# The model map's scale-free gain at its start states and at the orbit's end (analysis.depthwise): where the
# depth-wise reading and EOC-optimality's s are compared.
MODEL_MAP_GAINS = ("gain_rms_input", "gain_rms_attractor")
POINCARE_STARTS = 8  # start states whose Poincaré points (M5) are stored


# ReLU-like activations whose mean-field surrogate is ReLU's (the theory covers tanh and ReLU only).
RELU_LIKE = ("relu", "relu6", "leaky_relu", "prelu", "gelu", "gelu_tanh", "quick_gelu", "silu", "elu", "selu",
             "celu", "softplus", "mish", "hardswish", "star_relu")
# Elementwise φ for LayerMap beyond its built-in names (derivatives by forward-mode autodiff).
MAP_FUNCTIONS = {
    "gelu": F_.gelu, "gelu_tanh": lambda x: F_.gelu(x, approximate="tanh"),
    "quick_gelu": lambda x: x * torch.sigmoid(1.702 * x),
    "silu": F_.silu, "relu6": F_.relu6, "leaky_relu": F_.leaky_relu, "elu": F_.elu, "selu": F_.selu, "celu": F_.celu,
    "softplus": F_.softplus, "mish": F_.mish, "hardswish": F_.hardswish, "hardsigmoid": F_.hardsigmoid,
}


def meanfield_activation(record: LayerRecord) -> str:
    """φ of the mean-field surrogate: tanh or relu as the layer's own (ReLU-like ones → relu), else tanh
    (e.g. a head, whose output no activation follows)."""
    if record.activation == "tanh":
        return "tanh"
    return "relu" if record.activation in RELU_LIKE else "tanh"


def map_activation(record: LayerRecord) -> str:
    """φ of the iterated map: the square layer's own activation (identity when none follows);
    ``module`` for chains and model maps (the module itself is the map)."""
    if record.is_map:
        return "module"
    known = ("tanh", "relu", "sigmoid", *MAP_FUNCTIONS)
    return record.activation if record.activation in known else "identity"


def _map_phi(name: str):  # noqa: ANN202 (a name or a callable, as LayerMap takes)
    return MAP_FUNCTIONS.get(name, name)


def module_map_for(model: nn.Module, record: LayerRecord) -> IteratedMap:
    """The iterated map of a chain (its block), a model map (the model up to ``record.module``) or a trunk
    block (its span)."""
    if record.kind == "model_map":  # shapes were checked when the record was made (model_map_record)
        return ProbedModuleMap(ModelPrefix(model, record.module), record.input_shape)
    if record.kind == "block":
        return ProbedModuleMap(span_module(model, record.span), record.input_shape)
    return ProbedModuleMap(model.get_submodule(record.module), record.input_shape)


def select_positions(x: torch.Tensor, n_inputs: int, fan_in: int) -> Optional[torch.Tensor]:
    """One state (n_inputs, fan_in) per test input from a layer's input ``x`` (None if it does not fit).

    Feature vectors are taken as they are; sequences (B, ..., tokens, d) give their first token;
    feature maps (B, C, H, W) with C = fan_in give their centre pixel.
    """
    x = x.detach()
    if x.dim() >= 3 and x.shape[1] == fan_in and x.shape[-1] != fan_in:  # (B, C, H, W) or (B, C, L)
        centre = tuple(s // 2 for s in x.shape[2:])
        x = x[(slice(None), slice(None), *centre)]
    if x.dim() == 2 and x.shape[-1] == fan_in:
        return x[:n_inputs] if x.shape[0] >= n_inputs else None
    if x.shape[-1] == fan_in and x.numel() % (n_inputs * fan_in) == 0 and x.shape[0] % n_inputs == 0:
        return x.reshape(n_inputs, -1, fan_in)[:, 0]  # image-major batches (incl. windows, B·nW)
    if x[0].numel() == fan_in and x.shape[0] == n_inputs:
        return x.reshape(n_inputs, fan_in)
    return None


def _majority(codes: torch.Tensor) -> torch.Tensor:
    """Most frequent value along the last axis, (..., B) → (...)."""
    return torch.mode(codes, dim=-1).values


class LayerTracker:
    """Measures the recorded layers of a model; keeps W(0) and the previous checkpoint for resuming."""

    def __init__(self, model: nn.Module, records: list[LayerRecord], analysis: AnalysisConfig,
                 probe_inputs: Optional[torch.Tensor] = None, geometry_inputs: Optional[torch.Tensor] = None,
                 geometry_labels: Optional[torch.Tensor] = None, weight_distance: bool = True) -> None:
        """``weight_distance=False``: no copy of W(0) is kept and ``weight_distance`` is not measured (a
        one-shot reading such as ``inspect``, where it would be 0 by construction)."""
        model = unwrap_model(model)  # DDP, torch.compile, ...: the bare model's layers
        self.records = {r.name: r for r in records}
        self.analysis = as_options(analysis, AnalysisConfig, "analysis")
        self.probe_inputs = probe_inputs  # (B, ...) real test inputs, start states of the maps
        self.geometry_inputs = geometry_inputs  # (n, ...) the fixed training sample of the geometry stats
        self.geometry_labels = geometry_labels  # (n,)
        if self.analysis.geometry:
            for r in self.matrices.values():
                if r.kind != "linear" or not isinstance(model.get_submodule(r.owner), nn.Linear):
                    raise ConfigError(
                        f"analysis.geometry=true: layer {r.name!r} (kind {r.kind}) is not a fully connected layer on "
                        f"flat feature vectors (a convolution or a fused view has no single set of hyperplanes); "
                        f"select flat nn.Linear layers with analysis.layers=<regex>, or set analysis.geometry=false.")
        self.initial = ({n: r.weight(model).detach().clone() for n, r in self.records.items() if not r.is_map}
                        if weight_distance else None)
        self.previous: dict[str, torch.Tensor] = {}
        self.previous_increment: dict[str, torch.Tensor] = {}

    @property
    def matrices(self) -> dict[str, LayerRecord]:
        """The records with a weight matrix (all but chains and model maps)."""
        return {n: r for n, r in self.records.items() if not r.is_map}

    def weights(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """Each matrix record's current (fan_out, fan_in) weight, detached."""
        return {n: r.weight(model).detach() for n, r in self.matrices.items()}

    def _maps_on(self, r: LayerRecord) -> bool:
        if not self.analysis.maps or self.probe_inputs is None:
            return False
        if r.kind == "chain":
            return self.analysis.chains
        if r.kind in ("block", "depth"):  # a block is iterated only on request; the trunk never is
            return r.kind == "block" and self.analysis.block_maps and r.fan_in == r.fan_out
        return r.square or r.is_map

    def stat_specs(self, r: LayerRecord) -> list[StatSpec]:
        a = self.analysis
        specs = []
        if not r.is_map:
            specs += [StatSpec("J"), StatSpec("J0")]
            if self.initial is not None:
                specs.append(StatSpec("weight_distance"))
            if a.meanfield:
                specs += [StatSpec("chi"), StatSpec("edge_distance"), StatSpec("phase", PHASES)]
        if r.kind == "block":
            specs += [StatSpec(s) for s in BLOCK_STATS]
        if r.kind == "depth":
            specs += [StatSpec(s) for s in DEPTH_STATS]
            specs += [StatSpec("depth_exponents", shape=(self._depth_k(),))]
        if self._maps_on(r):
            steps = self._steps(r)
            n_t = steps - steps // 2
            starts = a.block_map_inputs if r.kind == "block" else a.n_inputs
            specs += [StatSpec(s) for s in MAP_STATS] + [StatSpec("attractor", ATTRACTORS)]
            specs += [StatSpec("map_stop", STOP_REASONS)]  # why the orbit ended: a diverging map says so
            specs += [StatSpec("poincare", shape=(min(POINCARE_STARTS, starts), n_t, 2), dtype="f4")]
            if r.kind == "block":
                specs += [StatSpec("map_relative_step")]  # median ‖x_{t+1} − x_t‖/‖x_t‖ on the orbits' tails
            if a.spectrum_k and r.kind != "block":
                specs += [StatSpec("lyapunov_spectrum", shape=(min(a.spectrum_k, r.fan_in),))]
            if r.kind == "model_map" and a.depthwise:
                specs += [StatSpec(s) for s in MODEL_MAP_GAINS]
        if r.is_map:
            return specs
        if a.weight_structure:
            specs += [StatSpec(s) for s in STRUCTURE_STATS]
        if a.eigen and r.square:
            specs += [StatSpec(s) for s in EIGEN_STATS]
            specs += [StatSpec("eigenvalues", shape=(r.fan_in, 2), dtype="f4")]
        if a.geometry:
            specs += [StatSpec(s) for s in GEOMETRY_STATS]
        return specs

    def layer_specs(self, store_weights: bool = False) -> dict[str, LayerSpec]:
        out = {}
        for name, r in self.records.items():
            attrs = {"fan_in": r.fan_in, "fan_out": r.fan_out, "square": r.square, "role": r.role,
                     "activation": r.activation or "", "surrogate": r.surrogate, "kind": r.kind,
                     "module": r.owner, "meanfield_activation": "" if r.is_map else meanfield_activation(r),
                     "map_activation": map_activation(r) if (r.square or r.is_map) else "",
                     # which computation gave the spectral_radius stat (RADIUS_METHODS): the tracker takes every
                     # eigenvalue. Traces written before this attribute hold geev radii too; "" = no radius
                     "spectral_radius_method": "exact" if self.analysis.eigen and r.square and not r.is_map else ""}
            if r.is_map:
                attrs["input_shape"] = list(r.input_shape)
            if r.span:
                attrs["span"] = list(r.span)
            out[name] = LayerSpec(attrs, self.stat_specs(r), r.shape if store_weights and not r.is_map else None)
        return out

    # -- measurement ---------------------------------------------------------------------------
    @torch.no_grad()
    def _layer_inputs(self, model: nn.Module, owners: list[str]) -> dict[str, torch.Tensor]:
        """Each module's (first) input on the probe examples, via forward hooks (model in eval mode)."""
        modules = dict(model.named_modules())
        seen: dict[str, torch.Tensor] = {}

        def grab(name: str, args: tuple, kwargs: dict) -> None:
            first = next((t for t in (*args, *kwargs.values()) if isinstance(t, torch.Tensor)), None)
            if first is not None:
                seen.setdefault(name, first.detach())

        hooks = [modules[n].register_forward_pre_hook(lambda mod, args, kwargs, n=n: grab(n, args, kwargs),
                                                      with_kwargs=True) for n in dict.fromkeys(owners)]
        try:
            model(self.probe_inputs)
        finally:
            for h in hooks:
                h.remove()
        return seen

    @torch.no_grad()
    def measure(self, model: nn.Module) -> dict[str, dict[str, Any]]:
        model = unwrap_model(model)  # its forward passes run no wrapper's collective
        was_training = model.training
        grads = [(p, p.requires_grad) for p in model.parameters()]
        model.eval()  # batch norm on running statistics, no dropout: start states do not interact
        for p, _ in grads:
            p.requires_grad_(False)  # module maps differentiate w.r.t. states only
        try:
            return self._measure(model)
        finally:
            model.train(was_training)
            for p, flag in grads:
                p.requires_grad_(flag)

    def _measure(self, model: nn.Module) -> dict[str, dict[str, Any]]:
        weights = self.weights(model)
        out: dict[str, dict[str, Any]] = {n: {} for n in self.records}
        for n, w in weights.items():  # layer by layer: a stacked float64 copy costs a ViT-B 3x as much
            j0, j = phase_coordinates(w)
            out[n].update(J=float(j), J0=float(j0))
            if self.initial is not None:  # ||W(t) − W(0)||
                out[n]["weight_distance"] = float(torch.linalg.matrix_norm(w - self.initial[n]))
        for names in self._groups(lambda r: r.shape, only=list(self.matrices)):
            square = self.records[names[0]].square
            if not (self.analysis.weight_structure or (self.analysis.eigen and square)):
                continue
            W = torch.stack([weights[n] for n in names])  # (L, M, N)
            if self.analysis.weight_structure:
                self._structure(names, W, out)
            if self.analysis.eigen and square:
                # float32 LAPACK halves the cost; complex_fraction uses a sqrt(eps32)·radius tolerance
                es = eigen_summary(W, return_eigenvalues=True, dtype=torch.float32)
                ev = torch.stack([es.eigenvalues.real, es.eigenvalues.imag], -1).float().cpu().numpy()  # (L, N, 2)
                for i, n in enumerate(names):
                    out[n].update(spectral_radius=float(es.spectral_radius[i]),
                                  spectral_norm=float(es.spectral_norm[i]),
                                  complex_fraction=float(es.complex_fraction[i]), eigenvalues=ev[i])
        if self.analysis.meanfield:
            self._meanfield(out)
        if self.analysis.geometry:
            self._geometry(model, weights, out)
        states = self._depthwise(model, out)
        map_layers = [n for n, r in self.records.items() if self._maps_on(r)]
        if not map_layers:
            return out
        owners = [self.records[n].owner for n in map_layers if self.records[n].kind not in ("model_map", "block")]
        inputs = self._layer_inputs(model, owners) if owners else {}
        n_in = self.probe_inputs.shape[0]
        x0: dict[str, Optional[torch.Tensor]] = {}
        for n in map_layers:
            r = self.records[n]
            if r.kind == "model_map":
                x0[n] = self.probe_inputs.flatten(1)
            elif r.kind == "block":  # the block's real inputs along the forward pass
                x0[n] = states[n][: self.analysis.block_map_inputs].flatten(1) if n in states else None
            else:
                x = inputs.get(r.owner)
                x0[n] = None if x is None else select_positions(x, n_in, r.fan_in)
        for n in map_layers:
            if x0[n] is None:  # the layer never ran on the probe inputs, or its input has an unknown layout
                self._fill_nan(n, out)
        square = [n for n in map_layers if not self.records[n].is_map and x0[n] is not None]
        for names in self._groups(lambda r: (r.shape, map_activation(r)), only=square):
            self._layer_maps(names, weights, model, x0, out)
        for n in map_layers:
            r = self.records[n]
            if r.is_map and x0[n] is not None:
                F = module_map_for(model, r)
                with unfused_attention(model):  # forward-mode derivatives through timm attention
                    mm = map_measures(F, x0[n], steps=self._steps(r), seed=0, hold_tol=self.analysis.hold_tol)
                if r.kind == "block":  # a residual map: its identity regime is named, never an edge
                    mm = dataclasses.replace(mm, attractor=near_identity(mm.orbit_tail, mm.attractor))
                    out[n]["map_relative_step"] = float(relative_step(mm.orbit_tail)[0].nanmedian())
                out[n].update(self._map_stats(mm, x0[n].shape[0], None, self._steps(r)))
                if r.kind != "block":
                    self._spectrum(F, x0[n], [n], out)
                if r.kind == "model_map" and self.analysis.depthwise:
                    self._model_map_gains(F, x0[n], mm, out[n])
        return out

    def _steps(self, r: LayerRecord) -> int:
        """T of a record's iterated map: analysis.block_map_steps for trunk blocks, else analysis.steps."""
        return self.analysis.block_map_steps if r.kind == "block" else self.analysis.steps

    def _depthwise(self, model: nn.Module, out: dict[str, dict[str, Any]]) -> dict[str, torch.Tensor]:
        """The trunk's depth-wise readings (analysis.depthwise); returns each block's captured inputs."""
        blocks = [r for r in self.records.values() if r.kind == "block"]
        if not blocks or self.probe_inputs is None:
            return {}
        a = self.analysis
        x = self.probe_inputs[: a.depth_inputs]
        states = trunk_states(model, [r.span for r in blocks], self.probe_inputs)  # (B_probe, *S_l) each
        modules = [span_module(model, r.span) for r in blocks]
        with unfused_attention(model):
            for r, m, st in zip(blocks, modules, states):
                rd = block_readings(m, st[: len(x)], probes=a.depth_probes, lanczos_steps=a.depth_lanczos, seed=0)
                n = rd.gain_rms.shape[0]
                out[r.name].update(
                    gain_rms=float(rd.gain_rms.mean()),
                    gain_rms_std=float(rd.gain_rms.std()) if n > 1 else float("nan"),
                    gain_rms_stderr=float(rd.gain_rms_stderr.square().sum().sqrt() / n),
                    gain_top=float(rd.gain_top.mean()),
                    raw_rms=float(rd.raw_rms.mean()), branch_ratio=float(rd.branch_ratio.mean()),
                    stream_ratio=float(rd.stream_ratio.mean()))
            for name, r in self.records.items():
                if r.kind == "depth":
                    spec = depth_lyapunov(modules, [st[: len(x)] for st in states], k=self._depth_k(), seed=0)
                    lam = spec.exponents[:, 0]
                    out[name].update(depth_lambda_max=float(lam.mean()),
                                     depth_lambda_max_std=float(lam.std()) if len(lam) > 1 else float("nan"),
                                     depth_exponents=spec.exponents.mean(0).cpu().numpy())
        return {r.name: st for r, st in zip(blocks, states)}

    def _depth_k(self) -> int:
        """Directions of the depth Lyapunov exponents: analysis.depth_vectors, capped by the trunk's widths."""
        widths = [min(r.fan_in, r.fan_out) - 1 for r in self.records.values() if r.kind == "block"]
        return max(1, min([self.analysis.depth_vectors, *widths]))

    def _model_map_gains(self, F: IteratedMap, x0: torch.Tensor, mm: MapMeasures, row: dict[str, Any]) -> None:
        """The model map's scale-free gain (the depth-wise reading of the map as one block) at its start
        states and at the last state of each orbit, beside its s (the docs compare them)."""
        a = self.analysis
        shape = self.records[next(n for n, r in self.records.items() if r.kind == "model_map")].input_shape
        n = min(a.depth_inputs, x0.shape[0])
        with unfused_attention(F.module):
            at_input = block_readings(F.module, x0[:n].reshape(n, *shape), probes=a.depth_probes, seed=0)
            end = mm.orbit_tail[:n, -1]  # (n, N): each orbit's last state
            ok = torch.isfinite(end).all(-1) & (end.norm(dim=-1) > 0)
            row["gain_rms_input"] = float(at_input.gain_rms.mean())
            row["gain_rms_attractor"] = float("nan")
            if bool(ok.any()):
                at_end = block_readings(F.module, end[ok].reshape(-1, *shape), probes=a.depth_probes, seed=0)
                row["gain_rms_attractor"] = float(at_end.gain_rms.mean())

    def _geometry(self, model: nn.Module, weights: Mapping[str, torch.Tensor], out: dict[str, dict[str, Any]]) -> None:
        """FC-geometry statistics of every matrix record on the fixed training sample (see the module doc)."""
        recs = self.matrices
        if self.geometry_inputs is None or self.geometry_labels is None:
            for n in recs:
                out[n].update({k: float("nan") for k in GEOMETRY_STATS})
            return
        modules = dict(model.named_modules())
        seen: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

        def hook(name: str, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
            if name in seen:
                return output
            z = output if output.requires_grad else output.detach().requires_grad_(True)
            seen[name] = (inputs[0].detach(), z)
            return z

        owners = list(dict.fromkeys(r.owner for r in recs.values()))
        handles = [modules[o].register_forward_hook(lambda m, i, o_, n=o: hook(n, i, o_)) for o in owners]
        try:
            with torch.enable_grad():
                logits = model(self.geometry_inputs)
                loss = F_.cross_entropy(logits, self.geometry_labels, reduction="sum")  # ∂/∂z_i = ∂ℓ_i/∂z_i
                zs = [seen[o][1] for o in owners if o in seen]
                grads = torch.autograd.grad(loss, zs, allow_unused=True) if zs else []
        finally:
            for h in handles:
                h.remove()
        grad_of = {o: g for o, g in zip([o for o in owners if o in seen], grads)}
        for n, r in recs.items():
            if r.owner not in seen:
                out[n].update({k: float("nan") for k in GEOMETRY_STATS})
                continue
            x = seen[r.owner][0]
            if x.dim() != 2 or x.shape[-1] != r.fan_in:
                raise ConfigError(
                    f"analysis.geometry=true: layer {r.name!r} receives inputs of shape {tuple(x.shape)}, not a flat "
                    f"feature vector (n, {r.fan_in}) per sample, so it has no single set of hyperplanes; select flat "
                    f"layers with analysis.layers=<regex>, or set analysis.geometry=false.")
            b = r.bias(model)
            geo = layer_geometry(weights[n], None if b is None else b.detach(), x, r.activation or "",
                                 self.analysis.geometry_delta, grad_z=grad_of.get(r.owner), layer=n)
            out[n].update(geo.summary())

    def _fill_nan(self, name: str, out: dict[str, dict[str, Any]]) -> None:
        map_names = set(MAP_STATS) | {"attractor", "map_stop", "poincare", "lyapunov_spectrum", "map_relative_step",
                                      *MODEL_MAP_GAINS}
        for spec in self.stat_specs(self.records[name]):
            if spec.name in map_names:
                out[name][spec.name] = (-1 if spec.labels else
                                        np.full(spec.shape, np.nan) if spec.shape else float("nan"))

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
            if prev[i] is not None:  # (||W(t) − W(0)|| is the weight_distance stat: no W(0) here)
                online = online_step_stats(W64[i], prev[i], None, self.previous_increment.get(n))
                step["step_displacement"][i] = float(online["step_displacement"])
                step["increment_cosine"][i] = float(online["increment_cosine"])
                self.previous_increment[n] = W64[i] - prev[i]
            self.previous[n] = W64[i].clone()
        for i, n in enumerate(names):
            out[n].update({k: float(summary[k][i]) for k in STRUCTURE_STATS if k in summary})
            out[n].update({k: v[i] for k, v in step.items()})

    def _meanfield(self, out: dict[str, dict[str, Any]]) -> None:
        matrices = self.matrices
        for act in {meanfield_activation(r) for r in matrices.values()}:
            names = [n for n, r in matrices.items() if meanfield_activation(r) == act]
            j0 = np.array([out[n]["J0"] for n in names])
            j = np.array([out[n]["J"] for n in names])
            _, _, chi = order_parameters(j0, j, act)
            with np.errstate(divide="ignore", invalid="ignore"):
                dist = edge_distance(j0, j, act)
                codes = phase_code(j0 / j, 1.0 / j, act)
            for i, n in enumerate(names):
                out[n].update(chi=float(chi[i]), edge_distance=float(dist[i]), phase=int(codes[i]))

    def _map_stats(self, mm: MapMeasures, n_states: int, i: Optional[int],
                   steps: Optional[int] = None) -> dict[str, Any]:
        """The trace's map statistics of map ``i`` of a stack (None: a single map) run for ``steps`` (default
        analysis.steps)."""
        steps = steps or self.analysis.steps
        pick = (lambda t: t[i]) if i is not None else (lambda t: t)  # noqa: E731
        codes = pick(mm.attractor)  # (B,)
        attractor = _majority(codes)  # the class most start states reach
        n_p = min(POINCARE_STARTS, n_states)
        n_t = steps - steps // 2
        pts = pick(mm.poincare)[:n_p, :n_t].float().cpu().numpy()  # (n_p, ≤ n_t, 2)
        p = np.full((n_p, n_t, 2), np.nan, np.float32)
        p[:, : pts.shape[1]] = pts
        # the period of the orbits that reached the majority class (non-empty by construction)
        period = _majority(pick(mm.period)[codes == attractor])
        return dict(
            s_mean=float(pick(mm.s_mean)), s_std=float(pick(mm.s_std)),
            jacobian_product_exponent=float(pick(mm.jacobian_product_exponent).nanmean()),
            two_trajectory_exponent=float(pick(mm.two_trajectory_exponent).nanmean()),
            asymptotic_distance=float(pick(mm.asymptotic_distance).nanmean()),
            lambda_max=float(pick(mm.lyapunov_max).nanmean()), attractor=int(attractor), period=int(period),
            map_steps=float(pick(mm.steps_run)), map_stop=int(pick(mm.stop_reason)), poincare=p)

    def _layer_maps(self, names: list[str], weights: Mapping[str, torch.Tensor], model: nn.Module,
                    x0: Mapping[str, Optional[torch.Tensor]], out: dict[str, dict[str, Any]]) -> None:
        recs = [self.records[n] for n in names]
        biases = [r.bias(model) for r in recs]
        F = LayerMap([weights[n] for n in names],
                     None if all(b is None for b in biases) else
                     [b.detach() if b is not None else torch.zeros(r.fan_out, device=weights[r.name].device)
                      for b, r in zip(biases, recs)], _map_phi(map_activation(recs[0])))
        x = torch.stack([x0[n] for n in names])  # (L, B, N)
        mm = map_measures(F, x, steps=self.analysis.steps, seed=0, hold_tol=self.analysis.hold_tol)
        for i, n in enumerate(names):
            out[n].update(self._map_stats(mm, x.shape[1], i))
        self._spectrum(F, x, names, out)

    def _spectrum(self, F: IteratedMap, x0: torch.Tensor, names: list[str], out: dict[str, dict[str, Any]]) -> None:
        a = self.analysis
        if not a.spectrum_k:
            return
        k = min(a.spectrum_k, F.dim)
        spec = lyapunov_spectrum(F, x0[..., : a.spectrum_inputs, :], k=k, steps=a.steps)
        exps = spec.exponents.nanmean(-2).cpu().numpy()  # (L, k) or (k,): mean over start states
        for i, n in enumerate(names):
            out[n]["lyapunov_spectrum"] = exps[i] if exps.ndim == 2 else exps

    # -- resume ----------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"initial": dict(self.initial or {}), "previous": dict(self.previous),
                "previous_increment": dict(self.previous_increment)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if self.initial is not None:
            self.initial = {k: v.clone() for k, v in state["initial"].items()}
        self.previous = {k: v.clone() for k, v in state.get("previous", {}).items()}
        self.previous_increment = {k: v.clone() for k, v in state.get("previous_increment", {}).items()}
