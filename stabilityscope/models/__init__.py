"""Models: building networks and finding their fully connected maps.

- :mod:`.registry`: :func:`build_model` for the built-in networks (the canonical ``fmnist_fc``) and
  any timm or torchvision model;
- :mod:`.vision`: timm/torchvision building adapted to a dataset's input shape and classes;
- :mod:`.eoc_models`: EOC-optimality's MLP and CNN;
- :mod:`.dissect`: every FC map of a model as a :class:`LayerRecord` (roles, q/k/v views, 1×1
  convolutions, d → h → d chains) and the selection a run records (:func:`tracked_records`);
- :mod:`.describe`: the dissection table with the tracking cost of each map;
- :mod:`.spline`: degree-1 MARS (:func:`~.spline.fit_mars`) and its exact one-hidden-layer ReLU network
  (:func:`~.spline.to_network`, :func:`~.spline.widen`), the spline initialisation of Spline-FC;
- :mod:`.coverage`: dissection over every timm and torchvision model name
  (``python -m stabilityscope.models.coverage``).

Layer: above :mod:`stabilityscope.dynamics` (model-prefix maps). May use the base, theory and
dynamics; knows nothing of recording, training, analysis or the command line.
"""
from stabilityscope.models.dissect import LayerRecord, dissect, select_layers, tracked_records
from stabilityscope.models.registry import MODELS, FashionFC, build_model, model_family

__all__ = ["MODELS", "FashionFC", "LayerRecord", "build_model", "dissect", "model_family", "select_layers",
           "tracked_records"]
