"""The command line: ``python -m stabilityscope``, a Hydra app.

- :mod:`.app`: the app, its config store and the dispatch to tasks;
- :mod:`.tasks`: every task but training (``task=report``, ``scaling``, ``calibrate``, ``reproduce``,
  ``analyze``, ``phase_diagram``) and ``analysis=describe`` / ``inspect``;
- :mod:`.sweep`: multirun callbacks (batched groups of canonical runs, failed jobs, sweep summary).

Layer: the top, and the only package that imports Hydra or OmegaConf. Configs composed here are turned
into the typed dataclasses of :mod:`stabilityscope.config` before they reach the library.
"""
