"""When checkpoints are taken: a set of epochs, or of optimiser steps.

A schedule counts either epochs (``train.checkpoints.unit=epoch``, a checkpoint at the end of an
epoch) or optimiser steps (``unit=step``: checkpoints inside an epoch, where SGD-complexity's first
phase happens). Either way the trainers work with the global step of each checkpoint: epoch e of a
run with ``steps_per_epoch`` steps is step ``e · steps_per_epoch``. Checkpoint 0 (the initialisation)
and the end of training always belong to the schedule.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from stabilityscope.config import value_of


def checkpoint_positions(last: int, kind: str = "every", every: int = 1, num: int = 30,
                         explicit: Sequence[int] = ()) -> list[int]:
    """Sorted checkpoint positions (epochs or steps) in [0, last].

    Args:
        last: the end of training in the schedule's unit.
        kind: ``every`` (each ``every`` units), ``log`` (about ``num`` log-spaced positions in [1, last],
            dense early, where training changes fastest), or ``list`` (``explicit``; values above
            ``last`` are dropped).
    """
    kind = value_of(kind)
    if kind == "every":
        chosen = set(range(0, last + 1, every))
    elif kind == "log":
        chosen = set(np.unique(np.round(np.geomspace(1, max(last, 1), num)).astype(int)).tolist())
    elif kind == "list":
        chosen = {int(e) for e in explicit if 0 <= e <= last}
    else:
        raise ValueError(f"unknown checkpoint schedule kind {kind!r}; allowed: every, log, list")
    return sorted(chosen | {0, last})


def checkpoint_epochs(epochs: int, kind: str = "every", every: int = 1, num: int = 30,
                      explicit: list[int] | tuple[int, ...] = ()) -> list[int]:
    """Sorted checkpoint epochs in [0, epochs] (:func:`checkpoint_positions` counted in epochs)."""
    return checkpoint_positions(epochs, kind, every, num, explicit)


def steps_per_epoch(n_train: int, batch_size: int) -> int:
    """Optimiser steps in one epoch (the last, shorter batch included)."""
    return math.ceil(n_train / batch_size)


def checkpoint_steps(schedule: Any, epochs: int, n_train: int, batch_size: int) -> list[int]:
    """The global optimiser step of every checkpoint of a run.

    Args:
        schedule: a :class:`~stabilityscope.config.CheckpointSchedule` (unit, kind, every, num, epochs, steps).
        epochs: the run's ``train.epochs``; training ends at step ``epochs · steps_per_epoch``.
        n_train, batch_size: define the steps per epoch.
    """
    per_epoch = steps_per_epoch(n_train, batch_size)
    if value_of(schedule.unit) == "step":
        return checkpoint_positions(epochs * per_epoch, schedule.kind, schedule.every, schedule.num,
                                    list(schedule.steps))
    chosen = checkpoint_positions(epochs, schedule.kind, schedule.every, schedule.num, list(schedule.epochs))
    return [e * per_epoch for e in chosen]
