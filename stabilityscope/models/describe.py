"""``analysis=describe``: the dissection table of a model, with the tracking cost, without training.

The model is built on the meta device (no weights in memory, any size), for the dataset's input
shape and classes (read from the registry, not from disk), and dissected exactly as a run would
record it (:func:`~stabilityscope.models.dissect.tracked_records`). Each row is one recorded map:

    name   kind   shape (fan_out × fan_in)   role   square   activation   cost per checkpoint

The cost is an estimate of the floating-point operations one checkpoint's tracking spends on that
map under the composed ``analysis`` settings (``analysis=describe`` uses ``standard``'s: 32 start
states, T = 500): weights and eigenvalues (~30·N³ for a square matrix), iterated maps (~7·B·N² per
step for a square layer; ~9 forward-pass equivalents per start state and step for a chain or model
map, plus M1). A time estimate divides the total by this machine's measured matmul rate; real
runs are slower where work is not matmul-bound (many small layers, module maps with autodiff).
"""
from __future__ import annotations

import time
from collections import Counter

import torch
from torch import nn

from stabilityscope.config import AnalysisConfig, ModelConfig, as_options
from stabilityscope.dynamics.module_maps import EXACT_NORM_MAX, NORM_PROBES
from stabilityscope.dynamics.submodel import ModelPrefix
from stabilityscope.models.dissect import LayerRecord, tracked_records
from stabilityscope.models.registry import build_model, model_family


def _forward_flops(model: nn.Module, r: LayerRecord) -> float:
    """FLOPs of one forward pass of a chain or model map on one state (meta-safe)."""
    if r.kind == "chain":
        module = model.get_submodule(r.module)
        return 2.0 * sum(p.numel() for m in module.modules() for p in m.parameters(recurse=False) if p.dim() >= 2)
    from torch.utils.flop_counter import FlopCounterMode

    p = next(model.parameters())
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        ModelPrefix(model, r.module)(torch.zeros(1, *r.input_shape, device=p.device, dtype=p.dtype))
    return float(counter.get_total_flops())


def tracking_flops(model: nn.Module, r: LayerRecord, analysis: AnalysisConfig) -> float:
    """Estimated FLOPs of one checkpoint's tracking of record ``r`` (see the module docstring)."""
    a = analysis
    B, T = a.n_inputs, a.steps
    k = min(a.spectrum_k, r.fan_in) if a.spectrum_k else 0
    Bs = min(a.spectrum_inputs, B)
    maps = a.maps and (r.square or r.is_map) and not (r.kind == "chain" and not a.chains)
    if not r.is_map:
        M, N = r.shape
        flops = 4.0 * M * N + (12.0 * M * N if a.weight_structure else 0.0)
        if r.square and a.eigen:
            flops += 30.0 * N ** 3
        if maps:
            flops += T * 7.0 * B * N * N + (T * Bs * (k + 1) * 2.0 * N * N + T * Bs * 2.0 * N * k * k if k else 0.0)
        return flops
    if not maps:
        return 0.0
    fwd, N = _forward_flops(model, r), r.fan_in
    m1 = B * (N if N <= EXACT_NORM_MAX else NORM_PROBES) * 2.0 * fwd  # jacrev rows or probe jvps
    return T * B * 9.0 * fwd + m1 + (T * Bs * (k + 2) * 2.0 * fwd if k else 0.0)


def matmul_rate(seconds: float = 0.2) -> float:
    """This machine's float32 matmul throughput (FLOP/s) on the CPU, measured for ~``seconds``."""
    a = torch.randn(512, 512)
    a @ a
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ a
        n += 1
    return n * 2.0 * 512 ** 3 / (time.perf_counter() - start)


def _fmt_flops(f: float) -> str:
    if f == 0:
        return "-"
    for scale, unit in ((1e12, "T"), (1e9, "G"), (1e6, "M")):
        if f >= scale or unit == "M":
            return f"{f / scale:.3g} {unit}"
    return ""


def describe_table(model: nn.Module, records: list[LayerRecord], analysis: AnalysisConfig) -> tuple[str, float]:
    """The table (one line per record) and the total estimated FLOPs per checkpoint."""
    rows, total = [], 0.0
    for r in records:
        flops = tracking_flops(model, r, analysis)
        total += flops
        square = "yes" if r.square else "no (surrogate)"
        rows.append((r.name, r.kind, f"{r.fan_out}×{r.fan_in}", r.role, square, r.activation or "-", _fmt_flops(flops)))
    head = ("name", "kind", "shape", "role", "square", "activation", "cost/checkpoint (FLOP)")
    widths = [max(len(str(x[i])) for x in [head, *rows]) for i in range(len(head))]
    line = lambda row: "  ".join(str(v).ljust(w) for v, w in zip(row, widths)).rstrip()  # noqa: E731
    return "\n".join([line(head), line(tuple("-" * w for w in widths)), *map(line, rows)]), total


def describe_model(model_options: ModelConfig, analysis: AnalysisConfig, input_shape: tuple[int, ...],
                   num_classes: int, dataset: str = "") -> str:
    """The dissection report of the model ``model_options`` for inputs of ``input_shape`` under ``analysis``.

    The model is built on the meta device (shapes only; set ``model_options.pretrained=False`` to avoid a
    download). ``dataset`` only names the data in the header.
    """
    model_options = as_options(model_options, ModelConfig)
    a = analysis = as_options(analysis, AnalysisConfig)
    model = build_model(model_options, input_shape, num_classes, meta=True)
    records = tracked_records(model, model_options, analysis, input_shape)
    table, total = describe_table(model, records, analysis)
    n_params = sum(p.numel() for p in model.parameters())
    roles = Counter(r.role for r in records)
    seconds = total / matmul_rate() if total else 0.0
    header = [
        f"model {model_options.name} ({model_family(model_options)}, {type(model).__name__}, {n_params / 1e6:.3g} M "
        f"parameters) for {dataset or 'inputs'}: input {tuple(input_shape)}, {num_classes} classes",
        f"recorded maps: {len(records)} (analysis.layers={a.layers!r}): "
        + ", ".join(f"{k} {v}" for k, v in sorted(roles.items())),
        f"tracking per checkpoint: maps={a.maps}, eigen={a.eigen}, n_inputs={a.n_inputs}, steps={a.steps}, "
        f"spectrum_k={a.spectrum_k}",
        "",
    ]
    footer = ["", f"total ≈ {_fmt_flops(total)}FLOP per checkpoint ≈ {seconds:.3g} s at this CPU's matmul rate "
              "(a lower bound; see stabilityscope.models.describe)",
              "square = no: a single non-square layer has only mean-field surrogate coordinates "
               "(docs/science/mean-field.md)."]
    return "\n".join(header + [table] + footer)
