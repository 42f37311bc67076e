"""The HDF5 trace: round trip, live reading (SWMR), crash safety and reopening."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import yaml

from stabilityscope.errors import TraceError
from stabilityscope.recording.trace import LayerSpec, StatSpec, TraceWriter, open_trace

LAYERS = {
    "hidden": LayerSpec({"fan_in": 4, "fan_out": 4, "square": True}, [StatSpec("J"), StatSpec("J0"),
                                                                       StatSpec("phase", ("P", "F", "SG", "P2"))],
                        weight_shape=(4, 4)),
    "head": LayerSpec({"fan_in": 4, "fan_out": 2, "square": False}, [StatSpec("J"), StatSpec("J0")]),
}
ATTRS = {"config": yaml.safe_dump({"train": {"epochs": 3}, "model": {"name": "toy"}}), "seed": 7}


def _append(w: TraceWriter, e: int, weights: bool = True) -> None:
    w.append(epoch=e, step=10 * e, wall_time=0.5 * e,
             metrics={"train_loss": 1.0 / (e + 1), "train_acc": 0.1 * e, "test_loss": 2.0 / (e + 1),
                      "test_acc": 0.05 * e},
             layer_stats={"hidden": {"J": 0.5 + e, "J0": -e, "phase": e % 4}, "head": {"J": 1.0, "J0": 0.0}},
             weights={"hidden": np.full((4, 4), e, np.float32)} if weights else None)


def test_round_trip(tmp_path):
    w = TraceWriter.create(tmp_path / "trace.h5", attrs=ATTRS, layers=LAYERS)
    for e in range(3):
        _append(w, e, weights=e != 1)
    w.close("finished")
    with open_trace(tmp_path) as tr:  # the run directory works as well as the file
        assert tr.checkpoints.tolist() == [0, 1, 2] and tr.steps.tolist() == [0, 10, 20]
        assert tr.metric("test_loss") == pytest.approx([2.0, 1.0, 2 / 3])
        assert tr.layers == ["head", "hidden"] or tr.layers == ["hidden", "head"]
        assert tr.stat("hidden", "J").tolist() == [0.5, 1.5, 2.5]
        assert tr.stat("hidden", "phase").tolist() == ["P", "F", "SG"]
        assert tr.config == {"train": {"epochs": 3}, "model": {"name": "toy"}}
        assert tr.status == "finished" and tr.attrs["seed"] == 7 and tr.attrs["schema_version"] == 2
        assert "torch" in tr.attrs["package_versions"] and tr.attrs["end_time"]
        epochs, weights = tr.weights("hidden")
        assert epochs.tolist() == [0, 2] and weights.shape == (2, 4, 4) and float(weights[1, 0, 0]) == 2.0
        assert tr.layer_info("head")["square"] is False or tr.layer_info("head")["square"] == 0


def test_clear_errors_for_missing_things(tmp_path):
    with pytest.raises(TraceError, match="No trace"):
        open_trace(tmp_path / "nothing.h5")
    w = TraceWriter.create(tmp_path / "trace.h5", attrs=ATTRS, layers=LAYERS)
    _append(w, 0)
    w.close("finished")
    with open_trace(tmp_path / "trace.h5") as tr:
        with pytest.raises(TraceError, match="train_loss"):
            tr.metric("val_loss")
        with pytest.raises(TraceError, match="hidden"):
            tr.stat("nope", "J")
        with pytest.raises(TraceError, match="J0"):
            tr.stat("hidden", "lyapunov")
        with pytest.raises(TraceError, match="storage.weights=true"):
            tr.weights("head")


def test_reader_follows_a_live_run(tmp_path):
    w = TraceWriter.create(tmp_path / "trace.h5", attrs=ATTRS, layers=LAYERS)
    _append(w, 0)
    tr = open_trace(tmp_path / "trace.h5")  # opened while the writer holds the file
    assert tr.checkpoints.tolist() == [0] and tr.status == "running"
    _append(w, 1)
    _append(w, 2)
    assert tr.checkpoints.tolist() == [0, 1, 2]
    assert tr.stat("hidden", "J0").tolist() == [0, -1, -2]
    tr.close()
    w.close("finished")


WRITER = textwrap.dedent("""
    import sys, numpy as np, yaml
    sys.path.insert(0, {repo!r})
    from tests.recording.test_trace import LAYERS, ATTRS, _append
    from stabilityscope.recording.trace import TraceWriter
    w = TraceWriter.create({path!r}, attrs=ATTRS, layers=LAYERS)
    e = 0
    while True:
        _append(w, e)
        print(e, flush=True)
        e += 1
""")


@pytest.mark.parametrize("kill_after", [0.3, 0.9])
def test_sigkill_keeps_every_completed_checkpoint(tmp_path, kill_after):
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    path = str(tmp_path / "trace.h5")
    proc = subprocess.Popen([sys.executable, "-c", WRITER.format(repo=repo, path=path)], stdout=subprocess.PIPE,
                            text=True)
    first = proc.stdout.readline()  # at least one checkpoint is complete
    assert first.strip() == "0"
    time.sleep(kill_after)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    with open_trace(path) as tr:
        n = len(tr)
        assert n >= 1 and tr.status == "running"
        assert tr.checkpoints.tolist() == list(range(n))
        assert tr.stat("hidden", "J").tolist() == [0.5 + e for e in range(n)]
        assert len(tr.metric("train_acc")) == n and len(tr.weights("hidden")[0]) == n
    # Reopening for writing keeps the first k rows and continues after them.
    w = TraceWriter.reopen(path, keep=1)
    _append(w, 1)
    w.close("finished")
    with open_trace(path) as tr:
        assert tr.checkpoints.tolist() == [0, 1] and tr.stat("hidden", "phase").tolist() == ["P", "F"]
        assert tr.weights("hidden")[0].tolist() == [0, 1] and tr.status == "finished"
