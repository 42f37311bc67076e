"""Sweeps (``python -m stabilityscope -m ...``): batched groups, failed jobs, the sweep's summary.

With Hydra's default (in-process) launcher, every job of a sweep that trains the canonical network
(:func:`stabilityscope.training.batched.batching_obstacle`) is only composed, validated and given its run
directory when Hydra launches it; :class:`BatchedSweep`, a Hydra callback registered in
``conf/config.yaml``, then trains these jobs when the sweep's jobs have all been launched, in groups
of equal :func:`~stabilityscope.training.batched.group_key` of at most ``batching.max_group`` runs, each
group one :class:`~stabilityscope.training.batched.BatchedRuns`. ``batching.enabled=false`` trains every job
on its own, in launch order. Parallel launchers (``hydra/launcher=parallel|slurm|ray``) run each job
in its own process, unbatched.

A job that fails marks its own trace ``failed`` with the error (:func:`~stabilityscope.recording.trace.mark_failed`)
and the sweep goes on; at the end the callback prints and writes ``sweep_summary.txt``: every run of
the sweep with its status.
"""
from __future__ import annotations

import logging
from collections import defaultdict
from pathlib import Path
from typing import Any, Optional, Sequence

import torch
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from stabilityscope.cli.signals import interrupted_exit
from stabilityscope.config import Config, to_container

log = logging.getLogger(__name__)

BASIC_LAUNCHER = "hydra._internal.core_plugins.basic_launcher.BasicLauncher"
CALLBACK = "stabilityscope.cli.sweep.BatchedSweep"
ONE_THREAD_LAUNCHERS = ("joblib", "ray")  # several jobs share one machine's cores

# Jobs composed by the in-process launcher and left for BatchedSweep: (config, run directory).
_pending: list[tuple[Config, Path]] = []
resumed_runs: list[Path] = []  # the run directories this process's sweep resumes (-m resume=<dir>,...)


def set_threads(cfg: Config, hydra_cfg: Any, multirun: bool) -> None:
    """Torch's CPU threads for this job.

    ``train.threads`` when set; else one thread per job under launchers that share one machine's
    cores between jobs (joblib, Ray), and the job's ``cpus_per_task`` under SLURM (torch would
    otherwise start a thread per core of the whole node).
    """
    threads = cfg.train.threads
    if threads is None and multirun:
        target = str(OmegaConf.select(hydra_cfg, "launcher._target_", default=""))
        if any(name in target for name in ONE_THREAD_LAUNCHERS):
            threads = 1
        elif "submitit" in target:
            threads = OmegaConf.select(hydra_cfg, "launcher.cpus_per_task", default=None)
    if threads is not None:
        torch.set_num_threads(int(threads))


def _batching_here(hydra_cfg: Any) -> bool:
    launcher = str(OmegaConf.select(hydra_cfg, "launcher._target_", default=""))
    callbacks = OmegaConf.select(hydra_cfg, "callbacks", default=None) or {}
    ours = any(str(c.get("_target_", "")) == CALLBACK for c in callbacks.values() if c is not None)
    return launcher == BASIC_LAUNCHER and ours


def defer(cfg: Config, run_dir: Path, hydra_cfg: Any) -> bool:
    """Leave this sweep job for a batched group (True), or let it run now (False).

    Called by the app for every multirun job (a resumed job with its stored config, ``run_dir`` the resumed
    run); the config is validated first, so a bad value still fails its own job at once.
    """
    from stabilityscope.config import validate
    from stabilityscope.training.batched import batching_obstacle

    if not cfg.batching.enabled or not _batching_here(hydra_cfg) or batching_obstacle(cfg) is not None:
        return False
    validate(cfg)
    _pending.append((cfg, run_dir))
    log.info("%s: queued for a batched group (trained when all jobs are launched)", run_dir)
    return True


def mark_job_failed(cfg: Config | DictConfig, run_dir: Path, error: str) -> None:
    """A failed ``task=train`` job's trace says so (created, with the config, if the run never began)."""
    from stabilityscope.config import value_of
    from stabilityscope.recording.trace import mark_failed

    if value_of(cfg.task) != "train":
        return
    import yaml

    attrs = {"config": yaml.safe_dump(to_container(cfg), sort_keys=False), "seed": int(cfg.train.seed),
             "model": str(cfg.model.name), "dataset": str(cfg.dataset.name)}
    try:
        mark_failed(run_dir / "trace.h5", error, attrs)
    except Exception:  # never let the bookkeeping of one failure end the sweep
        log.exception("Could not mark %s as failed", run_dir)


def batch_groups(pending: list[tuple[Config, Any]]) -> list[list[tuple[Config, Any]]]:
    """The batched groups the sweep trains: jobs of equal group_key, at most ``batching.max_group`` each.

    ``pending`` pairs each job's config with its run directory (or anything else to carry along).
    """
    from stabilityscope.training.batched import group_key

    by_key: dict[tuple, list[tuple[Config, Any]]] = defaultdict(list)
    for cfg, run_dir in pending:
        by_key[(group_key(cfg), int(cfg.batching.max_group))].append((cfg, run_dir))
    groups = []
    for (_, size), jobs in by_key.items():
        groups += [jobs[i:i + size] for i in range(0, len(jobs), size)]
    return groups


def train_pending() -> dict[Path, str]:
    """Train the queued jobs in batched groups; returns each run directory's status."""
    from stabilityscope.reports.run import finish_run
    from stabilityscope.training.batched import BatchedRuns

    pending, statuses = list(_pending), {}
    _pending.clear()
    groups = batch_groups(pending)
    for g, group in enumerate(groups):
        cfgs, dirs = [c for c, _ in group], [d for _, d in group]
        log.info("Training %d runs as one batched group (batch size %d)", len(group), cfgs[0].train.batch_size)
        try:
            statuses.update(BatchedRuns(cfgs, dirs).execute())
        except KeyboardInterrupt as exc:  # Ctrl-C or SIGTERM: the group's traces say interrupted; stop the sweep
            interrupted_exit(exc, dirs, not_started=sum(len(rest) for rest in groups[g + 1:]))
        except Exception as exc:  # the group could not start (e.g. its data are missing): each run failed
            log.error("A batched group of %d runs failed: %s", len(group), exc)
            for cfg, d in group:
                mark_job_failed(cfg, d, f"{type(exc).__name__}: {exc}")
                statuses[d] = "failed"
        for cfg, d in group:
            if statuses.get(d) in ("finished", "diverged") and (cfg.figures or cfg.report):
                try:
                    finish_run(cfg, d)
                except Exception:
                    log.exception("Figures/report of %s failed (the trace is complete)", d)
    return statuses


def summary(sweep_dir: Path, resumed: Sequence[Path] = ()) -> str:
    """One line per run of the sweep (its status, and the error of a failed run), then the counts.

    ``resumed``: the run directories a ``-m resume=<dir>,...`` sweep continued (they live outside the
    sweep's directory, so their lines give the whole path).
    """
    from stabilityscope.recording.trace import open_trace

    lines, counts = [], defaultdict(int)
    own = sorted(sweep_dir.glob("*/trace.h5"), key=lambda p: (len(p.parent.name), p.parent.name))
    for trace, name in [(t, t.parent.name) for t in own] + [(Path(d) / "trace.h5", str(d)) for d in resumed]:
        try:
            with open_trace(trace) as tr:
                status, error = tr.status, tr.error
        except Exception as exc:
            status, error = "unreadable", str(exc)
        counts[status] += 1
        lines.append(f"  {name}: {status}" + (f" ({error.splitlines()[0][:200]})" if error else ""))
    head = (f"Sweep {sweep_dir}: {sum(counts.values())} runs, "
            + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
    return "\n".join([head, *lines])


class BatchedSweep(Callback):
    """Hydra callback: train the queued jobs in batched groups, then summarise the sweep."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if _pending:
            train_pending()
        sweep_dir = Path(str(config.hydra.sweep.dir))
        resumed = list(dict.fromkeys(resumed_runs))
        resumed_runs.clear()
        if sweep_dir.is_dir():
            text = summary(sweep_dir, resumed)
            (sweep_dir / "sweep_summary.txt").write_text(text + "\n")
            print(text)


def sweep_params(hydra_cfg: Any) -> Optional[dict]:
    """The sweep an experiment preset defines (``hydra.sweeper.params``), if any."""
    params = OmegaConf.select(hydra_cfg, "sweeper.params", default=None)
    return dict(params) if params else None
