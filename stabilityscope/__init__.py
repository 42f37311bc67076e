"""stabilityscope: where a neural network sits between order and chaos, and how training moves it.

A fully connected layer with weights W (N = fan-in) is read as the coupling matrix of a random
recurrent network x_{t+1} = φ(W x_t) (EOC-training). Its phase coordinates are J = std(W)·√N and
J0 = mean(W)·N; the edge of chaos is the mean-field stability χ = 1 (J = 1 for tanh at J0 = 0).
Training moves a network along a path in (J0/J, 1/J); the best test loss lies near the edge.

Typical use in a notebook::

    import stabilityscope as ss

    tr = ss.open_trace("checkpoints/fmnist_fc-fashion_mnist/2026-11-22_12-00-00")
    epochs, J = tr.checkpoints, tr.stat("hidden", "J")        # numpy arrays over checkpoints
    best = tr.checkpoints[tr.metric("test_loss").argmin()]    # EOC-training's optimal epoch
    runs = ss.open_traces("checkpoints/multirun/*/*")         # one pandas row per run, config columns
                                                              # (optim.lr, ...) and the key numbers

    from stabilityscope import figures                        # Figure objects, shown inline in Jupyter
    figures.plot_phase_path(tr)                               # path on the phase diagram; also plot_coupling,
                                                              # plot_metrics, plot_layer_stability, plot_poincare,
                                                              # plot_eigenvalues, plot_comparison

    J0, J = ss.phase_coordinates(weight)                      # any matrix or stack of matrices
    u, q, chi = ss.meanfield.order_parameters(0.0, 1.5)       # q = 0.3526, χ = 1.1393

Run ``python -m stabilityscope --help`` for the command-line app.
"""
from stabilityscope import meanfield
from stabilityscope.dissect import LayerRecord, dissect
from stabilityscope.errors import (ConfigError, DataError, DivergedError, StabilityscopeError,
                                   TraceError)
from stabilityscope.meanfield import edge_curve, order_parameters, phase_coordinates, phase_label
from stabilityscope.trace import Trace, open_trace
from stabilityscope.collection import open_traces, varying_config  # after trace (it builds on it)

__version__ = "0.1.0"

__all__ = [
    "ConfigError", "DataError", "DivergedError", "LayerRecord", "StabilityscopeError", "Trace", "TraceError",
    "dissect", "edge_curve", "meanfield", "open_trace", "open_traces", "order_parameters", "phase_coordinates",
    "phase_label", "varying_config",
]
