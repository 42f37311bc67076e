"""Recording: what is measured at a checkpoint, and the HDF5 trace it is stored in.

- :mod:`.tracking`: :class:`LayerTracker`, the per-checkpoint statistics of the recorded FC maps
  (phase coordinates, mean-field χ and edge distance, iterated-map measures, spectra, weight
  structure), batched over layers of equal shape;
- :mod:`.trace`: the trace schema, :class:`TraceWriter` (SWMR, crash-safe) and :func:`open_trace`.

Layer: above :mod:`stabilityscope.models`. May use the base, theory, dynamics and models; knows
nothing of training, analysis or the command line.
"""
from stabilityscope.recording.trace import METRICS, Trace, TraceWriter, open_trace
from stabilityscope.recording.tracking import LayerTracker

__all__ = ["LayerTracker", "METRICS", "Trace", "TraceWriter", "open_trace"]
