"""Which epochs get a checkpoint. Checkpoint 0 (the initialisation) and the last epoch always do."""
from __future__ import annotations

import numpy as np

from stabilityscope.config import value_of


def checkpoint_epochs(epochs: int, kind: str = "every", every: int = 1, num: int = 30,
                      explicit: list[int] | tuple[int, ...] = ()) -> list[int]:
    """Sorted checkpoint epochs in [0, epochs].

    Args:
        epochs: total epochs of the run.
        kind: ``every`` (each ``every`` epochs), ``log`` (about ``num`` log-spaced epochs, dense early
            where J² changes fastest relative to its value), or ``list`` (``explicit``; values above
            ``epochs`` are dropped).
    """
    kind = value_of(kind)
    if kind == "every":
        chosen = set(range(0, epochs + 1, every))
    elif kind == "log":
        chosen = set(np.unique(np.round(np.geomspace(1, epochs, num)).astype(int)).tolist())
    elif kind == "list":
        chosen = {int(e) for e in explicit if 0 <= e <= epochs}
    else:
        raise ValueError(f"unknown checkpoint schedule kind {kind!r}; allowed: every, log, list")
    return sorted(chosen | {0, epochs})
