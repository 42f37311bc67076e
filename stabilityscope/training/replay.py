"""Traces from saved checkpoints: the weights of a finished (or running) run, recorded after the fact.

``python -m stabilityscope task=analyze checkpoints='<glob>' model=... dataset=...`` builds the model of
the config, loads every file the glob matches into it in order, and records each through the
:class:`~stabilityscope.recording.recorder.Recorder` (so the trace is the one a training run writes).

Formats, each loaded without running code from the file (``torch.load(..., weights_only=True)``;
``.safetensors`` by its own loader):

- a plain ``state_dict`` (``torch.save(model.state_dict(), path)``; ``.pt``, ``.pth``, ``.bin``);
- PyTorch Lightning ``.ckpt``: its ``state_dict``, whose keys carry the LightningModule's attribute
  prefix (``model.``), stripped to fit the model;
- timm ``train.py`` checkpoints: a dict with ``state_dict`` and ``epoch``;
- ``.safetensors``.

Order and epochs: Lightning and timm store the 0-based index of the epoch just finished, so their
checkpoint is recorded as epoch ``stored + 1`` (the trace's epoch e is "after e epochs"); other files
take the number in their file name (``epoch_12.pt`` → 12; the last number in the name), and the step
stored with them when there is one. Two files with one epoch are an error.
"""
from __future__ import annotations

import glob as globmod
import logging
import pickle
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional

import torch
from torch import nn

from stabilityscope.config import Config, as_options, to_container
from stabilityscope.errors import ConfigError
from stabilityscope.models.registry import build_model
from stabilityscope.recording.lock import RunLock
from stabilityscope.recording.recorder import Recorder
from stabilityscope.recording.trace import METRICS, REGRESSION_METRICS
from stabilityscope.training.data import load_dataset
from stabilityscope.training.trainer import checkpoint_metrics, resolve_device

log = logging.getLogger(__name__)

SUFFIXES = (".pt", ".pth", ".ckpt", ".bin", ".safetensors")
KEY_PREFIXES = ("model.", "module.", "net.", "_orig_mod.", "model.module.")


@dataclass
class SavedWeights:
    """One checkpoint file: its tensors and where it sits in the run."""

    path: Path
    state_dict: dict[str, torch.Tensor]
    epoch: int
    step: Optional[int]
    kind: str  # "state_dict", "lightning", "timm", "safetensors"


def load_weights(path: str | Path) -> SavedWeights:
    """The tensors of one checkpoint file and its epoch (see the module docstring for the rules).

    Raises:
        ConfigError: a file that needs code execution to load, an unknown layout, no epoch to be had.
    """
    path = Path(path)
    step: Optional[int] = None
    stored_epoch: Optional[int] = None
    if path.suffix == ".safetensors":
        from safetensors import safe_open
        from safetensors.torch import load_file

        state = load_file(str(path))
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
        kind = "safetensors"
        if "step" in meta:
            step = int(meta["step"])
    else:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            raise ConfigError(f"{path} needs code execution to load: it pickles Python objects besides tensors "
                              f"({str(exc).splitlines()[-1][:200]}). stabilityscope loads weights with "
                              f"weights_only=True only; re-save them as a plain state_dict "
                              f"(torch.save(model.state_dict(), path)) or as .safetensors.") from None
        except Exception as exc:
            raise ConfigError(f"{path} is not a readable checkpoint: {type(exc).__name__}: {exc}") from None
        state, kind, stored_epoch, step = _unpack(path, obj)
    epoch = stored_epoch + 1 if stored_epoch is not None else _number_in_name(path)
    return SavedWeights(path, state, epoch, step, kind)


def _unpack(path: Path, obj: Any) -> tuple[dict[str, torch.Tensor], str, Optional[int], Optional[int]]:
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        kind = "lightning" if ("pytorch-lightning_version" in obj or "global_step" in obj) else "timm"
        epoch = obj.get("epoch")
        step = obj.get("global_step", obj.get("step"))
        return (dict(obj["state_dict"]), kind, int(epoch) if epoch is not None else None,
                int(step) if step is not None else None)
    if isinstance(obj, Mapping) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return dict(obj), "state_dict", None, None
    keys = ", ".join(list(obj)[:8]) if isinstance(obj, Mapping) else type(obj).__name__
    raise ConfigError(f"{path}: no weights found: expected a state_dict (name → tensor) or a dict with a "
                      f"'state_dict' (Lightning, timm); found {keys}.")


def _number_in_name(path: Path) -> int:
    numbers = re.findall(r"\d+", path.stem)
    if not numbers:
        raise ConfigError(f"{path}: no epoch stored in the file and no number in its name; name the files by "
                          f"their epoch (epoch_3.pt) or store {{'state_dict': ..., 'epoch': 3}}.")
    return int(numbers[-1])


def find_checkpoints(pattern: str) -> list[Path]:
    """The weight files ``pattern`` (a glob, a folder or a file) names."""
    p = Path(pattern)
    if p.is_dir():
        found = sorted(q for q in p.iterdir() if q.suffix in SUFFIXES)
    else:
        found = sorted(Path(m) for m in globmod.glob(pattern, recursive=True) if Path(m).is_file())
    if not found:
        raise ConfigError(f"checkpoints={pattern!r} matches no file; pass a glob such as "
                          f"'runs/ckpts/*.pt' (quote it), a folder of checkpoints, or one file "
                          f"({', '.join(SUFFIXES)}).")
    return found


def fit_keys(state: Mapping[str, torch.Tensor], model: nn.Module, path: Path) -> dict[str, torch.Tensor]:
    """``state`` with the prefix its keys carry (``model.``, ``module.``, ...) stripped to fit ``model``.

    Raises:
        ConfigError: the keys do not fit, naming the first missing and unexpected ones.
    """
    wanted = set(model.state_dict())
    best, best_hits = dict(state), len(wanted & set(state))
    for prefix in KEY_PREFIXES:
        stripped = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        hits = len(wanted & set(stripped))
        if hits > best_hits:
            best, best_hits = stripped, hits
    missing = sorted(wanted - set(best))
    unexpected = sorted(set(best) - wanted)
    if missing or unexpected:
        def few(keys: list[str]) -> str:
            return ", ".join(keys[:5]) + (f" (and {len(keys) - 5} more)" if len(keys) > 5 else "")

        raise ConfigError(f"{path}: the weights do not fit the model {type(model).__name__}: "
                          + "; ".join(x for x in (f"missing keys {few(missing)}" if missing else "",
                                                  f"unexpected keys {few(unexpected)}" if unexpected else "") if x)
                          + ". Check model=... (and its options) against the run that saved them.")
    return best


def ordered_checkpoints(pattern: str) -> list[SavedWeights]:
    """Every checkpoint of ``pattern``, loaded and sorted by epoch (an error on two with one epoch)."""
    saved = sorted((load_weights(p) for p in find_checkpoints(pattern)), key=lambda s: s.epoch)
    for a, b in zip(saved, saved[1:]):
        if a.epoch == b.epoch:
            raise ConfigError(f"{a.path} and {b.path} both hold epoch {a.epoch}; keep one per epoch.")
    return saved


def trace_from_checkpoints(cfg: Config, run_dir: str | Path) -> Path:
    """``task=analyze``: the trace of the saved weights ``cfg.checkpoints`` of the model ``cfg.model``.

    The dataset gives the model's input shape and classes, the probe inputs of the iterated maps (its
    first test inputs) and, with ``cfg.evaluate``, the four metrics at every checkpoint. Returns the
    trace's path. Every file is checked (loadable, an epoch, keys that fit) before the trace is made,
    so a bad file leaves no half-written trace.
    """
    cfg = as_options(cfg, Config)
    if not cfg.checkpoints:
        raise ConfigError("task=analyze needs the saved weights: checkpoints='<glob>' (quote it), a folder of "
                          "checkpoint files, or one file.")
    run_dir = Path(run_dir)
    saved = ordered_checkpoints(str(cfg.checkpoints))
    device = resolve_device(str(cfg.train.device))
    d = cfg.dataset
    data = load_dataset(d.name, d.root, download=d.download, train_subset=d.train_subset,
                        test_subset=d.test_subset, normalize=d.normalize, binarize=d.binarize).to(device)
    model = build_model(cfg.model, data.input_shape, data.num_classes).to(device)
    fitted = [fit_keys(s.state_dict, model, s.path) for s in saved]  # all checked before anything is written
    model.load_state_dict(fitted[0])
    regression = data.task == "regression"
    metric_names = (REGRESSION_METRICS if regression else METRICS) if cfg.evaluate else ()
    lock = RunLock(run_dir)  # re-entrant: the app may hold it already
    recorder = Recorder.for_app(model, run_dir, probe_inputs=data.x_test, options=cfg, config=to_container(cfg),
                                metrics=metric_names, lock=False, loss="mse" if regression else "cross_entropy",
                                attrs={"model": cfg.model.name, "dataset": d.name, "device": str(device),
                                       "task": "analyze", "checkpoint_files": "\n".join(str(s.path) for s in saved)})
    with lock, recorder:
        for s, state in zip(saved, fitted):
            model.load_state_dict(state)
            metrics = {}
            if cfg.evaluate:
                metrics = checkpoint_metrics(model, data)[0]
            recorder.checkpoint(s.epoch, step=s.step if s.step is not None else -1, metrics=metrics, wall_time=0.0)
            log.info("%s: epoch %d (%s) recorded", s.path.name, s.epoch, s.kind)
    return recorder.trace_path
