"""Training on part of the data: a random fraction, or the samples nearest a model's decision boundaries.

FC-geometry (van den Berg, arXiv:1605.00329; docs/science/secondary.md) suggests subsampling the training data
by distance to the decision boundaries, since only samples near them carry gradient. The concrete
rule here is **our instantiation**:

- ``dataset.subsample=boundary``: score every training sample by the *margin between the top two
  logits* of a reference model (its output layer's decision boundary between the two most likely
  classes; not the first layer's |d|) and keep the ``subsample_fraction`` with the smallest margins.
  The reference is a run directory (its newest saved state), its ``trace.h5``, or a state ``.pt``
  file (a run's ``state/epoch_*.pt`` or a plain ``state_dict``); it must be the same model as the
  run's (checked by loading its weights strictly into the run's model, before training).
- ``dataset.subsample=random``: a uniformly random ``subsample_fraction`` of the samples, drawn from
  a generator seeded with ``train.seed`` (each seed trains on its own subset).

Kept samples stay in their original order; the training loss and accuracy of the trace are then
over the kept samples, the test set is untouched.
"""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Optional

import torch
import yaml
from torch import nn

from stabilityscope.config import DatasetConfig, ModelConfig, as_options, value_of
from stabilityscope.errors import ConfigError
from stabilityscope.models.registry import build_model
from stabilityscope.training.data import InMemoryData

MARGIN_CHUNK = 8192


def reference_state_path(reference: str | Path) -> Path:
    """The state file of a reference: a ``.pt`` file itself, or a run's newest ``state/epoch_*.pt``."""
    path = Path(reference).expanduser()
    if path.is_file() and path.suffix == ".h5":
        path = path.parent
    if path.is_dir():
        states = sorted((path / "state").glob("epoch_*.pt"))
        if not states:
            raise ConfigError(f"dataset.subsample_reference={str(reference)!r}: no saved state in {path / 'state'}; "
                              f"pass a run directory that has state/epoch_*.pt, its trace.h5, or a state .pt file.")
        return states[-1]
    if path.is_file():
        return path
    raise ConfigError(f"dataset.subsample_reference={str(reference)!r} does not exist; pass a run directory, its "
                      f"trace.h5, or a state .pt file of the same model.")


def _stored_model_config(state_path: Path) -> Optional[dict]:
    trace = state_path.parent.parent / "trace.h5"
    if state_path.parent.name != "state" or not trace.exists():
        return None
    import h5py

    with h5py.File(trace, "r", swmr=True) as f:
        cfg = yaml.safe_load(f.attrs.get("config", "")) or {}
    return cfg.get("model")


def load_reference(reference: str | Path, model_cfg: ModelConfig, input_shape: tuple[int, ...], num_classes: int,
                   device: torch.device | str = "cpu") -> nn.Module:
    """The reference model: the run's own architecture with the reference's weights (eval mode).

    Raises:
        ConfigError: the reference is missing, or its weights do not fit the run's model.
    """
    model_cfg = as_options(model_cfg, ModelConfig, "model")
    path = reference_state_path(reference)
    stored = _stored_model_config(path)
    if stored is not None:
        for key in ("name", "width", "activation"):
            if key in stored and str(stored[key]) != value_of(getattr(model_cfg, key)):
                raise ConfigError(f"dataset.subsample_reference={str(reference)!r} is a run of model.{key}="
                                  f"{stored[key]!r}, but this run has "
                                  f"model.{key}={value_of(getattr(model_cfg, key))!r}: "
                                  f"the reference must be the same model.")
    payload = torch.load(path, map_location=device, weights_only=True)
    state = payload.get("model", payload) if isinstance(payload, dict) else None
    if not isinstance(state, dict):
        raise ConfigError(f"dataset.subsample_reference={str(reference)!r}: {path} holds no model state_dict.")
    model = build_model(model_cfg, input_shape, num_classes).to(device)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        raise ConfigError(f"dataset.subsample_reference={str(reference)!r} does not match the model "
                          f"{model_cfg.name!r} of this run: {' '.join(first[:3])}") from None
    return model.eval()


@torch.no_grad()
def logit_margins(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Top-1 minus top-2 logit of every sample, (n,): small = near the reference's decision boundary."""
    out = []
    for i in range(0, len(x), MARGIN_CHUNK):
        top = model(x[i:i + MARGIN_CHUNK]).topk(2, dim=-1).values  # (b, 2)
        out.append(top[:, 0] - top[:, 1])
    return torch.cat(out)


def subsample_indices(kind: str, fraction: float, n: int, seed: int = 0,
                      margins: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Sorted indices of the kept samples: ``ceil(fraction · n)`` of them (int64, on the CPU).

    Args:
        kind: ``random`` or ``boundary`` (needs ``margins``: the smallest are kept, ties by index).
        fraction: in (0, 1].
        n: number of samples.
        seed: the random subset's generator seed.
        margins: (n,) scores for ``boundary``.
    """
    if not 0 < fraction <= 1:
        raise ConfigError(f"Invalid value dataset.subsample_fraction={fraction!r}: the fraction of training "
                          f"samples kept must lie in (0, 1].")
    k = max(1, math.ceil(fraction * n))
    if kind == "random":
        keep = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed)))[:k]
    elif kind == "boundary":
        if margins is None or len(margins) != n:
            raise ConfigError("dataset.subsample=boundary needs one margin per training sample.")
        keep = torch.sort(margins.detach().cpu().double(), stable=True).indices[:k]
    else:
        raise ConfigError(f"Invalid value dataset.subsample={kind!r}: allowed: none, random, boundary.")
    return torch.sort(keep).values


def apply_subsample(data: InMemoryData, dataset: DatasetConfig, model_cfg: ModelConfig, seed: int,
                    device: torch.device | str = "cpu") -> InMemoryData:
    """``data`` with only the kept training samples (``dataset.subsample``); unchanged for ``none``."""
    dataset = as_options(dataset, DatasetConfig, "dataset")
    kind = value_of(dataset.subsample)
    if kind == "none":
        return data
    margins = None
    if kind == "boundary":
        if not dataset.subsample_reference:
            raise ConfigError("dataset.subsample=boundary needs dataset.subsample_reference: a run directory, its "
                              "trace.h5 or a state .pt file of the same model.")
        ref = load_reference(dataset.subsample_reference, model_cfg, data.input_shape, data.num_classes, device)
        margins = logit_margins(ref, data.x_train.to(device))
    keep = subsample_indices(kind, dataset.subsample_fraction, len(data.x_train), seed, margins)
    keep = keep.to(data.x_train.device)
    return dataclasses.replace(data, x_train=data.x_train[keep], y_train=data.y_train[keep])
