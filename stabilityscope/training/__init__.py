"""Training: data on the device, the trainers and their checkpoint schedules.

- :mod:`.data`: the datasets as device tensors (Fashion-MNIST, MNIST, CIFAR-10), no network at run time;
- :mod:`.schedule`: which epochs are checkpoints;
- :mod:`.trainer`: :class:`Run`, one training run recorded checkpoint by checkpoint, resumable;
- :mod:`.batched`: :class:`BatchedRuns`, K canonical runs trained as one stacked network.

Layer: above :mod:`stabilityscope.recording`. May use the base, theory, dynamics, models and
recording; knows nothing of analysis or the command line.
"""
from stabilityscope.training.batched import BatchedRuns
from stabilityscope.training.data import InMemoryData, load_dataset
from stabilityscope.training.schedule import checkpoint_epochs
from stabilityscope.training.trainer import Run

__all__ = ["BatchedRuns", "InMemoryData", "Run", "checkpoint_epochs", "load_dataset"]
