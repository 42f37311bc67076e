"""Theory: what a random network with given entry statistics does, before any model is trained.

- :mod:`.meanfield`: phase coordinates (J0, J), the mean-field order parameters (u, q, χ), the
  phase labels and the edge of chaos (EOC-training, docs/science/mean-field.md);
- :mod:`.numerical_phase_diagram`: the asymptotic distance of random networks over a grid of
  (J0/J, 1/J), batched over cells (docs/science/mean-field.md);
- :mod:`.logistic`: the logistic map, the reference picture of order, the edge and chaos
  (docs/science/iterated-maps.md);
- :mod:`.information`: mutual information of discrete predictions and SGD-complexity's performance
  correlation μ_Y(F; L) (docs/science/secondary.md).

Layer: the lowest. May use only the base (:mod:`stabilityscope.errors`, :mod:`stabilityscope.config`),
torch, numpy and scipy.
"""
from stabilityscope.theory import logistic, meanfield
from stabilityscope.theory.meanfield import edge_curve, edge_distance, order_parameters, phase_coordinates, phase_label
from stabilityscope.theory.numerical_phase_diagram import PhaseDiagram, phase_diagram

__all__ = ["PhaseDiagram", "edge_curve", "edge_distance", "logistic", "meanfield", "order_parameters",
           "phase_coordinates", "phase_diagram", "phase_label"]
