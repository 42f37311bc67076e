"""The canonical run's measured growth constant, shared by the scaling analysis and the guideline.

A value measured once on the canonical network (EOC-training's reference run) that
:mod:`~stabilityscope.analysis.scaling` compares a sweep's own measurement with and :mod:`.guideline` turns
into settings. It lives in its own module so
that the guideline can build on the scaling analysis without the analysis importing the guideline.
"""
from __future__ import annotations

from pathlib import Path

__all__ = ["CANONICAL_A", "CANONICAL_BATCH", "CANONICAL_C", "CANONICAL_C_EPOCH", "CANONICAL_LR",
           "CANONICAL_MOMENTUM", "CANONICAL_N_TRAIN", "CANONICAL_RUN"]

# The canonical measurement (EOC-training's reference run; docs/science/mean-field.md): the 784-784(tanh)-10
# network on all 60,000 Fashion-MNIST training examples, SGD lr 0.02, momentum 0.5, batch 32, no decay, seed 0.
# J² of the hidden layer against epoch, fitted over the ordered checkpoints of the first 50 epochs, gives the
# slope A = 0.01387 per epoch, so C = A·(1−α)B/η = 11.10 per epoch and, per training example (A per epoch
# scales with the n/B steps of an epoch), c = C/n = 1.850e-4. The run's series are packaged in
# laws/fmnist_fc-fashion_mnist/canonical.runs.json (CANONICAL_RUN), from which
# analyze_sweep(CANONICAL_RUN).runs.A rebuilds A; the command that trained it is in the table. (An earlier run,
# not kept, gave 0.01258; today's training code gives 0.01387 at the same settings and seed.)
CANONICAL_A = 0.01387
CANONICAL_LR, CANONICAL_MOMENTUM, CANONICAL_BATCH, CANONICAL_N_TRAIN = 0.02, 0.5, 32, 60000
CANONICAL_C_EPOCH = CANONICAL_A * (1 - CANONICAL_MOMENTUM) * CANONICAL_BATCH / CANONICAL_LR  # C ≈ 11.10 per epoch
CANONICAL_C = CANONICAL_C_EPOCH / CANONICAL_N_TRAIN  # c ≈ 1.850e-4 per training example
CANONICAL_RUN = Path(__file__).with_name("laws") / "fmnist_fc-fashion_mnist" / "canonical.runs.json"
