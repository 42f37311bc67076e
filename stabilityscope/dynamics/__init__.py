"""Dynamics: a trained layer, block or model prefix read as an iterated map (EOC-optimality;
docs/science/iterated-maps.md).

- :mod:`.maps`: :class:`LayerMap` x → φ(Wx + b) with its closed-form Jacobian, :class:`ModuleMap` for any
  module (Jacobians by ``torch.func``);
- :mod:`.module_maps`: module maps with random-probe Jacobian norms for wide states;
- :mod:`.submodel`: the model prefix input → layer as a module (EOC-optimality's map);
- :mod:`.lyapunov`: the measures M1–M5, Benettin λ_max, the QR Lyapunov spectrum, attractor classes;
- :mod:`.weight_structure`: the three "oscillation–diffusion" readings of the weights
  (docs/science/weight-structure.md);
- :mod:`.geometry`: decision-region geometry of an FC layer: hyperplanes, activation patterns, transition
  bands and the gradient share of in-band samples (FC-geometry, docs/science/secondary.md; our instantiation).

Layer: above :mod:`stabilityscope.theory`. May use the base and the theory; knows nothing of models,
training, recording, analysis or the command line.
"""
from stabilityscope.dynamics import geometry, weight_structure
from stabilityscope.dynamics.lyapunov import (
                                              ATTRACTORS,
                                              MapMeasures,
                                              classify_attractor,
                                              largest_lyapunov,
                                              lyapunov_spectrum,
                                              map_measures,
)
from stabilityscope.dynamics.maps import IteratedMap, LayerMap, ModuleMap

__all__ = ["ATTRACTORS", "IteratedMap", "LayerMap", "MapMeasures", "ModuleMap", "classify_attractor",
           "geometry", "largest_lyapunov", "lyapunov_spectrum", "map_measures", "weight_structure"]
