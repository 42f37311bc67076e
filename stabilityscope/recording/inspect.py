"""Where a model sits now: one call, one table, one row per fully connected map.

::

    import stabilityscope as ss

    table = ss.inspect(model)                    # phase coordinates, χ, edge distance, phase, spectral radius
    table = ss.inspect(model, inputs=x[:16])     # ... and the iterated maps: s, λ_max, attractor

The measurements are the tracker's (:class:`~stabilityscope.recording.tracking.LayerTracker`), taken
once: J, J0 (docs/science/mean-field.md; for a non-square layer they locate its mean-field *surrogate*, a random
square matrix with the same entry statistics, and ``square`` says so), the mean-field χ and edge
distance ½ ln χ with the phase label (docs/science/mean-field.md), the spectral radius of square layers
(``radius_method``: ``filtered``, the checked estimate of
:func:`~stabilityscope.dynamics.weight_structure.estimate_spectral_radius`, relative residual ≤ 1e-3, or
``exact``, the full decomposition where that check failed or N < 256), and with ``inputs`` the iterated-map
measures of square layers, MLP chains and model maps (docs/science/iterated-maps.md: s = M1, Benettin
λ_max, the attractor class). Layers of equal shape are measured as one stack.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Optional

import torch
from torch import nn

from stabilityscope.config import AnalysisConfig, ModelConfig, as_options
from stabilityscope.dynamics.lyapunov import ATTRACTORS
from stabilityscope.dynamics.weight_structure import RADIUS_METHODS, estimate_spectral_radius
from stabilityscope.models.dissect import tracked_records
from stabilityscope.models.wrappers import gathered, refuse_fsdp1, unwrap_model
from stabilityscope.recording.tracking import LayerTracker
from stabilityscope.theory.meanfield import PHASES

COLUMNS = ("name", "kind", "shape", "role", "square", "activation", "J", "J0", "chi", "edge_distance", "phase",
           "spectral_radius", "radius_method", "s", "lambda_max", "attractor")


def inspect(model: nn.Module, inputs: Optional[torch.Tensor] = None,
            options: AnalysisConfig | Mapping[str, Any] | None = None,
            model_options: Optional[ModelConfig] = None) -> "pandas.DataFrame":  # noqa: F821
    """One row per recorded FC map of ``model`` with its order/chaos state now (see the module docstring).

    Args:
        model: any ``nn.Module`` (timm, torchvision, your own); a DDP or ``torch.compile`` wrapper is read as
            the bare model inside it; under FSDP2 call it on every rank (they gather the sharded weights).
        inputs: a batch (B, ...) the model takes: start states of the iterated maps (the first
            ``options.n_inputs``); None: only the columns that need no inputs.
        options: :class:`~stabilityscope.config.AnalysisConfig` (``layers``, ``n_inputs``, ``steps``,
            ``eigen``, ``chains``); the weight-structure diagnostics are not part of the table.
        model_options: the model's :class:`~stabilityscope.config.ModelConfig` (``conv1x1``).

    Returns:
        A pandas DataFrame with the columns of ``COLUMNS`` (NaN/"" where a measure does not apply).
    """
    refuse_fsdp1(model, "inspect")
    model = unwrap_model(model)  # DDP, torch.compile, ...: the bare model, under its own layer names
    with gathered(model, plain_forward=True):  # FSDP2: whole weights (call inspect on every rank)
        return _table(model, inputs, options, model_options)


def _table(model: nn.Module, inputs: Optional[torch.Tensor], options: Any,
           model_options: Any) -> "pandas.DataFrame":  # noqa: F821
    import pandas as pd

    opts = as_options(options, AnalysisConfig, "analysis")
    # the tracker's eigen-statistics (full spectra, and the spectral norm) would cost a ViT-B ~25 s on 2
    # cores; the table needs only the radius, taken below by the checked filtered estimate (~5x cheaper
    # than the full float32 decomposition on a ViT-B's 48 square maps, which remains the fall-back;
    # radius_method says which)
    radius_wanted = opts.eigen
    opts = dataclasses.replace(opts, maps=opts.maps and inputs is not None, weight_structure=False, spectrum_k=0,
                               eigen=False)
    shape = tuple(inputs.shape[1:]) if inputs is not None else None
    records = tracked_records(model, as_options(model_options, ModelConfig, "model"), opts, shape)
    probes = None
    if inputs is not None:
        p = next(model.parameters(), None)
        probes = inputs[: opts.n_inputs].to(p.device if p is not None else inputs.device)
    was_training = model.training
    try:
        stats = LayerTracker(model, records, opts, probe_inputs=probes, weight_distance=False).measure(model)
    finally:
        model.train(was_training)
    if radius_wanted:
        groups: dict[tuple[int, ...], list[str]] = {}
        for r in records:
            if r.square and not r.is_map:
                groups.setdefault(r.shape, []).append(r.name)
        weights = {r.name: r.weight(model).detach() for r in records if r.square and not r.is_map}
        for names in groups.values():  # one batched estimate per shape
            est = estimate_spectral_radius(torch.stack([weights[n] for n in names]))
            for n, v, m in zip(names, est.radius.cpu().tolist(), est.method.cpu().tolist()):
                stats[n].update(spectral_radius=v, radius_method=RADIUS_METHODS[m])
    rows = []
    for r in records:
        s = stats[r.name]
        phase, attractor = s.get("phase", -1), s.get("attractor", -1)
        rows.append({
            "name": r.name, "kind": r.kind, "shape": f"{r.fan_out}×{r.fan_in}", "role": r.role, "square": r.square,
            "activation": r.activation or "", "J": s.get("J", float("nan")), "J0": s.get("J0", float("nan")),
            "chi": s.get("chi", float("nan")), "edge_distance": s.get("edge_distance", float("nan")),
            "phase": PHASES[phase] if phase >= 0 else "", "spectral_radius": s.get("spectral_radius", float("nan")),
            "radius_method": s.get("radius_method", ""),
            "s": s.get("s_mean", float("nan")), "lambda_max": s.get("lambda_max", float("nan")),
            "attractor": ATTRACTORS[attractor] if attractor >= 0 else ""})
    return pd.DataFrame(rows, columns=list(COLUMNS))
