"""Tracking cost per checkpoint through ss.Recorder against the tracker and the trace writer called directly.

Both sides measure the canonical network (784-784(tanh)-10 at J = 0.5) under ``analysis=standard``
(16 start states, T = 500, eigenvalues, weight structure) and append one row to a fresh trace, in
alternation, ``--repeats`` times each; the ratio of the medians is the Recorder's overhead (1.0 = none).

    python benchmarks/bench_recorder.py --repeats 7
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

import stabilityscope as ss
from stabilityscope.config import AnalysisConfig, ModelConfig
from stabilityscope.recording.trace import METRICS, TraceWriter


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    torch.manual_seed(0)
    model = ss.build_model(ModelConfig(), (1, 28, 28), 10)
    probes = torch.rand(16, 1, 28, 28)
    options = AnalysisConfig(n_inputs=16, steps=500)  # analysis=standard
    metrics = {k: 0.5 for k in METRICS}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        records = ss.tracked_records(model, ModelConfig(), options, (1, 28, 28))
        tracker = ss.LayerTracker(model, records, options, probe_inputs=probes)
        writer = TraceWriter.create(tmp / "direct.h5", attrs={"config": ""}, layers=tracker.layer_specs())
        rec = ss.Recorder(model, tmp / "recorder", probe_inputs=probes, options=options)
        direct, through = [], []
        for epoch in range(args.repeats):
            start = time.perf_counter()
            stats = tracker.measure(model)
            writer.append(epoch=epoch, step=epoch, wall_time=0.0, metrics=metrics, layer_stats=stats)
            direct.append(time.perf_counter() - start)
            start = time.perf_counter()
            rec.checkpoint(epoch, step=epoch, metrics=metrics)
            through.append(time.perf_counter() - start)
        writer.close("finished")
        rec.close()
    d, r = statistics.median(direct), statistics.median(through)
    print(f"per checkpoint, median of {args.repeats}: tracker + writer {d * 1e3:.0f} ms, Recorder {r * 1e3:.0f} ms; "
          f"ratio Recorder / direct = {r / d:.3f}")


if __name__ == "__main__":
    main()
