"""Integrations: stabilityscope inside other people's training frameworks.

- :mod:`.lightning`: :class:`~stabilityscope.integrations.lightning.StabilityCallback`, a PyTorch
  Lightning callback that records through the :class:`~stabilityscope.recording.recorder.Recorder`
  (optional extra ``stabilityscope[lightning]``).

Layer: beside :mod:`stabilityscope.training` (it uses the recording layer below it); nothing in the
library imports it, and it imports its framework only when used.
"""
