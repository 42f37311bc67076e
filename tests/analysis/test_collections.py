"""open_traces: one table over runs (a sweep directory, a glob, a list), keyed by their config values."""
from __future__ import annotations

import numpy as np
import pytest

import stabilityscope as ss
from stabilityscope.analysis.collection import find_traces, flatten_config
from stabilityscope.errors import TraceError
from tests.trace_factory import synthetic_trace

LRS = (0.005, 0.01, 0.02)
BEST = (14, 10, 6)  # the optimal epoch of each run


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """A multirun-like folder: <sweep>/<job>/trace.h5, one job per learning rate."""
    root = tmp_path_factory.mktemp("multirun") / "2026-11-22_12-00-00"
    for job, (lr, best) in enumerate(zip(LRS, BEST)):
        synthetic_trace(root / str(job) / "trace.h5", lr=lr, best_epoch=best, epochs=16)
    return root


def test_one_row_per_run_with_config_columns_and_key_numbers(sweep):
    runs = ss.open_traces(sweep)
    assert len(runs) == 3
    assert runs["optim.lr"].tolist() == list(LRS)  # sorted by path = job number
    assert runs["optimal_epoch"].tolist() == list(BEST)
    for col in ("train.batch_size", "model.activation", "optim.momentum", "status", "run", "path",
                "hidden/J_at_optimal", "hidden/edge_distance_at_optimal", "hidden/phase_final", "head/J_final"):
        assert col in runs.columns, col
    for _, row in runs.iterrows():  # the numbers agree with the trace itself
        with ss.open_trace(row["path"]) as tr:
            best = int(np.argmin(tr.metric("test_loss")))
            assert row["optimal_epoch"] == tr.checkpoints[best]
            assert row["test_loss_min"] == tr.metric("test_loss")[best]
            assert row["hidden/J_at_optimal"] == tr.stat("hidden", "J")[best]
            assert row["hidden/phase_final"] == tr.stat("hidden", "phase")[-1]
            assert row["final_test_acc"] == tr.metric("test_acc")[-1]
    assert runs["optim.betas"].iloc[0] == (0.9, 0.999)  # lists become tuples: every column can be grouped on
    assert runs.groupby("optim.lr")["optimal_epoch"].first().to_dict() == dict(zip(LRS, BEST))


def test_varying_config_names_what_the_sweep_changed(sweep):
    runs = ss.open_traces(sweep)
    assert ss.varying_config(runs) == ["optim.lr"]  # paths and roots differ too, but are bookkeeping
    keyed = runs.set_index(ss.varying_config(runs))
    assert keyed.loc[0.01, "optimal_epoch"] == 10


def test_sources_glob_list_run_dir_and_trace(sweep):
    by_glob = ss.open_traces(str(sweep / "*"))
    by_h5_glob = ss.open_traces(str(sweep.parent / "**" / "trace.h5"))
    by_list = ss.open_traces([sweep / "0", sweep / "1" / "trace.h5", sweep / "2"])
    for table in (by_glob, by_h5_glob, by_list):
        assert table["path"].tolist() == [str(sweep / str(j) / "trace.h5") for j in range(3)]
    with ss.open_trace(sweep / "1") as tr:
        assert ss.open_traces(tr)["optim.lr"].tolist() == [0.01]
    assert find_traces([sweep / "0", str(sweep / "0" / "trace.h5")]) == [sweep / "0" / "trace.h5"]  # no duplicates


def test_per_checkpoint_table(sweep):
    table = ss.open_traces(sweep, per="checkpoint")
    assert len(table) == 3 * 17
    first = table[table["optim.lr"] == 0.02]
    assert first["epoch"].tolist() == list(range(17))
    with ss.open_trace(sweep / "2") as tr:
        np.testing.assert_array_equal(first["hidden/J"].to_numpy(), tr.stat("hidden", "J"))
        assert first["hidden/phase"].tolist() == tr.stat("hidden", "phase").tolist()
    assert "hidden/poincare" not in table.columns  # array stats stay in the trace
    assert ss.varying_config(table) == ["optim.lr"]
    with pytest.raises(ValueError, match="per must be"):
        ss.open_traces(sweep, per="layer")


def test_nothing_found_is_a_clear_error(tmp_path):
    with pytest.raises(TraceError, match="No trace found"):
        ss.open_traces(str(tmp_path / "nope*"))
    with pytest.raises(TraceError, match="No trace found"):
        ss.open_traces(tmp_path)


def test_unreadable_trace_is_skipped_with_a_warning(sweep, tmp_path):
    bad = tmp_path / "broken" / "trace.h5"
    bad.parent.mkdir()
    bad.write_bytes(b"not an hdf5 file")
    with pytest.warns(UserWarning, match="skipped an unreadable trace"):
        runs = ss.open_traces([sweep / "0", bad])
    assert len(runs) == 1
    with pytest.raises(TraceError, match="could be read"), pytest.warns(UserWarning):
        ss.open_traces(bad)


def test_flatten_config():
    assert flatten_config({"a": {"b": 1, "c": {"d": [1, 2]}}, "e": None}) == {"a.b": 1, "a.c.d": (1, 2), "e": None}
