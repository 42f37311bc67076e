"""Wrapped and distributed models: the bare model inside DDP, ``torch.compile`` and FSDP, and the process's rank.

Training code often hands over a wrapper rather than the model: ``DistributedDataParallel`` and
``DataParallel`` keep it as ``.module``, ``torch.compile`` as ``._orig_mod``. The wrapper shares the
model's parameters, so measuring the bare model measures the trained weights, under the bare model's
layer names (``blocks.0.mlp.fc1``, not ``module.blocks.0.mlp.fc1``), and without the wrapper's own
behaviour: a DDP forward may broadcast buffers to every rank (a collective that one rank alone would
wait on forever), a compiled forward may recompile for the probe batch. :func:`unwrap_model` peels any
nest of them.

FSDP shards the weights themselves across the ranks. With FSDP2 (``torch.distributed.fsdp.fully_shard``)
:func:`gathered` all-gathers the sharded parameters of every FSDP module on every rank (a collective:
every rank must enter it) and reshards them afterwards, so that rank 0 measures full matrices. FSDP1
(``FullyShardedDataParallel``) flattens the weights into shards that only it can reassemble:
:func:`refuse_fsdp1` says what to do instead.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from torch import nn

from stabilityscope.errors import ConfigError

__all__ = ["fsdp_modules", "gathered", "process_rank", "refuse_fsdp1", "unwrap_model"]

# Wrappers that keep the model as `.module` (torch's and the common trainers' engines)
_MODULE_WRAPPERS = ("DistributedDataParallel", "DataParallel", "DeepSpeedEngine", "ShardedDataParallel")


def unwrap_model(model: nn.Module) -> nn.Module:
    """The bare model inside any nest of DDP, DataParallel and ``torch.compile`` wrappers (the model itself if none)."""
    seen: set[int] = set()
    while id(model) not in seen:
        seen.add(id(model))
        inner = getattr(model, "_orig_mod", None)  # torch.compile's OptimizedModule
        if isinstance(inner, nn.Module):
            model = inner
            continue
        inner = getattr(model, "module", None)
        if isinstance(inner, nn.Module) and (isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel))
                                             or type(model).__name__ in _MODULE_WRAPPERS):
            model = inner
    return model


def process_rank() -> int:
    """This process's rank in the default process group (0 when torch.distributed is not initialised)."""
    import torch.distributed as dist

    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def refuse_fsdp1(model: nn.Module, where: str) -> None:
    """ConfigError when FSDP1 (``FullyShardedDataParallel``) shards ``model``: its flat shards cannot be measured."""
    for m in model.modules():
        if type(m).__name__ == "FullyShardedDataParallel":
            raise ConfigError(
                f"{where}: the model is wrapped in FullyShardedDataParallel (FSDP1), which flattens its weights "
                f"into shards spread over the ranks; stabilityscope measures whole weight matrices and cannot "
                f"reassemble FSDP1's shards. Shard with FSDP2 instead (torch.distributed.fsdp.fully_shard), whose "
                f"weights the Recorder gathers itself (call rec.checkpoint(...) on every rank), or measure an "
                f"unsharded copy: load FSDP1's full state dict (StateDictType.FULL_STATE_DICT) into the bare model "
                f"on rank 0 and record that.")


def fsdp_modules(model: nn.Module) -> list[nn.Module]:
    """The modules of ``model`` sharded by FSDP2 (``fully_shard``), outermost first; [] when there are none."""
    try:
        from torch.distributed.fsdp import FSDPModule
    except ImportError:  # a torch built without distributed support
        return []
    return [m for m in model.modules() if isinstance(m, FSDPModule)]


# nn.Module's forward-hook tables, where FSDP2 keeps the hooks that all-gather before a forward pass,
# reshard after it and plan the backward's prefetches
_FORWARD_HOOKS = ("_forward_pre_hooks", "_forward_hooks")


def _is_fsdp_hook(hook: object) -> bool:
    """A hook FSDP registered (a method of its per-module state), not one of the user's."""
    owner = getattr(hook, "__self__", None)
    return owner is not None and type(owner).__module__.startswith("torch.distributed.fsdp")


@contextmanager
def gathered(model: nn.Module, plain_forward: bool = False) -> Iterator[nn.Module]:
    """Inside the block, ``model``'s FSDP2-sharded parameters are whole; resharded on leaving. Nothing without FSDP2.

    Entering is a collective (the all-gather of every FSDP module's shards): every rank must enter the
    block, once per measurement. The parameters are the unsharded ones FSDP itself uses in a forward
    pass, so no copy is kept. With ``plain_forward`` (the measuring rank) FSDP's forward hooks are off
    inside the block (the user's stay), so that a forward pass there is a plain one: it runs no collective, which
    the other ranks would not join, and leaves FSDP's own bookkeeping (the prefetch order of the next
    backward) as training left it.
    """
    sharded = fsdp_modules(model)
    for m in sharded:
        m.unshard()
    saved = [(m, {t: dict(getattr(m, t)) for t in _FORWARD_HOOKS}) for m in sharded] if plain_forward else []
    try:
        for m, _ in saved:
            for table in (getattr(m, t) for t in _FORWARD_HOOKS):
                for key in [k for k, hook in table.items() if _is_fsdp_hook(hook)]:
                    del table[key]
        yield model
    finally:
        for m, hooks in saved:
            for table, entries in hooks.items():
                getattr(m, table).clear()
                getattr(m, table).update(entries)
        for m in reversed(sharded):
            m.reshard()
