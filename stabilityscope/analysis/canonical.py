"""The canonical run's measured growth constant, shared by the scaling analysis and the guideline.

A value measured once on the canonical network (docs/science/mean-field.md) that :mod:`~stabilityscope.analysis.scaling` compares a
sweep's own measurement with and :mod:`.guideline` turns into settings. It lives in its own module so
that the guideline can build on the scaling analysis without the analysis importing the guideline.
"""
from __future__ import annotations

__all__ = ["CANONICAL_A", "CANONICAL_BATCH", "CANONICAL_C", "CANONICAL_C_EPOCH", "CANONICAL_LR",
           "CANONICAL_MOMENTUM", "CANONICAL_N_TRAIN"]

# The canonical measurement (docs/science/mean-field.md): the 784-784(tanh)-10 network on all 60,000 Fashion-MNIST
# training examples, SGD lr 0.02, momentum 0.5, batch 32, no decay. Fitting J² of the hidden layer against
# epoch over the ordered part of the first 50 epochs gave the slope A = 0.01258 per epoch, so
# C = A·(1−α)B/η = 10.06 per epoch and, per training example (A per epoch scales with the n/B steps of an
# epoch), c = C/n = 1.677e-4.
CANONICAL_A = 0.01258
CANONICAL_LR, CANONICAL_MOMENTUM, CANONICAL_BATCH, CANONICAL_N_TRAIN = 0.02, 0.5, 32, 60000
CANONICAL_C_EPOCH = CANONICAL_A * (1 - CANONICAL_MOMENTUM) * CANONICAL_BATCH / CANONICAL_LR  # C ≈ 10.06 per epoch
CANONICAL_C = CANONICAL_C_EPOCH / CANONICAL_N_TRAIN  # c ≈ 1.677e-4 per training example
