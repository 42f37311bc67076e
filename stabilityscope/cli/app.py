"""The Hydra application behind ``python -m stabilityscope``: the only module that composes configs.

Tasks: ``task=train`` (default; the canonical EOC-training run unless overridden; with
``analysis=describe`` it prints the model's dissection table and tracking cost instead) and
``task=phase_diagram`` (the numerical phase diagram of docs/science/mean-field.md), and ``task=report
trace=<path or glob>`` (figures and a one-page summary of existing traces). Errors that are the user's
to fix (:class:`~stabilityscope.errors.StabilityscopeError`) print one paragraph and exit non-zero.

The composed ``DictConfig`` is turned into the typed :class:`~stabilityscope.config.Config` once, here;
the library below never sees Hydra.
"""
from __future__ import annotations

import logging
import sys
import warnings
from pathlib import Path
from typing import Any, Optional

import hydra
import yaml
from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from stabilityscope.cli.signals import interrupted_exit, stop_on_signals
from stabilityscope.config import Config, as_options, validate, value_of
from stabilityscope.errors import ConfigError, StabilityscopeError, TraceError
from stabilityscope.recording.lock import RunLock

log = logging.getLogger("stabilityscope")

# Overrides that may accompany resume=<run dir>; everything else comes from the stored config.
RESUME_OVERRIDABLE = ("train.epochs", "train.device", "figures", "report")


def conf_dir() -> str:
    """The shipped configs: ``stabilityscope/conf`` in an installed wheel, ``conf/`` in a checkout."""
    here = Path(__file__).resolve().parent.parent  # the stabilityscope package
    for candidate in (here / "conf", here.parent / "conf"):
        if (candidate / "config.yaml").exists():
            return str(candidate)
    raise RuntimeError(f"stabilityscope's conf/ folder is missing (looked in {here} and {here.parent}).")


def run_dir_resolver(root: str, task: Any, model: str, dataset: str, resume: Optional[str], stamp: str) -> str:
    """``checkpoints/<model>-<dataset>/<timestamp>`` for training, ``checkpoints/<task>/<timestamp>`` else."""
    if resume:
        return str(resume)
    task = value_of(task)
    return f"{root}/{model}-{dataset}/{stamp}" if task == "train" else f"{root}/{task}/{stamp}"


def output_subdir_resolver(resume: Optional[str], stamp: str) -> str:
    """Hydra's own files; a resume keeps the original ``.hydra`` and adds one of its own."""
    return f".hydra/resume-{stamp}" if resume else ".hydra"


def register_configs() -> None:
    """Register the schema; ``conf/config.yaml`` lists ``config_schema`` first in its defaults."""
    ConfigStore.instance().store(name="config_schema", node=Config)


RECOMMENDED = ("lr", "momentum", "batch_size", "weight_decay")


def recommend_resolver(name: str, budget: Any, factor: Any = 1.0, extrapolate: Any = False) -> Any:
    """``${ss_recommend:<lr|momentum|batch_size|weight_decay>,<budget>[,<decay factor>[,<extrapolate>]]}``: one
    setting of ``stabilityscope.recommend(budget)`` (the weight decay times the factor), for presets that train
    the guideline's own settings (experiment=calibrate_guideline)."""
    from stabilityscope.analysis.guideline import recommend

    if name not in RECOMMENDED:
        raise ConfigError(f"ss_recommend: unknown setting {name!r}; allowed: {', '.join(RECOMMENDED)}.")
    try:
        with warnings.catch_warnings():  # extrapolation was asked for by the preset; the report marks it
            warnings.simplefilter("ignore", UserWarning)
            r = recommend(int(budget), extrapolate=str(extrapolate).lower() == "true")
    except ValueError as exc:
        raise ConfigError(f"guideline.budget={budget!r}: {exc}") from None
    return float(r.weight_decay) * float(factor) if name == "weight_decay" else getattr(r, name)


def register_resolvers() -> None:
    """Register the app's OmegaConf resolvers (run directory, output subdir, ``ss_recommend``) once."""
    for name, fn in (("ss_run_dir", run_dir_resolver), ("ss_output_subdir", output_subdir_resolver),
                     ("ss_recommend", recommend_resolver)):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)


def resumed_config(run_dir: Path, overrides: list[str]) -> Config:
    """The stored config of ``run_dir`` with the few overrides a resume may change."""
    trace = run_dir / "trace.h5"
    if not trace.exists():
        raise TraceError(f"resume={str(run_dir)!r}: no trace.h5 there. Pass the run directory of an earlier "
                         f"run (checkpoints/<model>-<dataset>/<timestamp>).")
    from stabilityscope.recording.trace import open_trace

    with open_trace(trace) as tr:
        stored = tr.config
    cfg = OmegaConf.merge(OmegaConf.structured(Config), stored)
    for item in overrides:
        key, _, value = item.partition("=")
        key = key.lstrip("+~")
        if key == "resume":
            continue
        if key not in RESUME_OVERRIDABLE:
            raise ConfigError(f"{key} cannot be changed when resuming (the run continues with its stored "
                              f"config); allowed with resume: {', '.join(RESUME_OVERRIDABLE)}.")
        OmegaConf.update(cfg, key, yaml.safe_load(value), merge=True)
    cfg.resume = str(run_dir)
    return as_options(cfg, Config)


def run_task(cfg: Config, run_dir: Path, overrides: list[str]) -> None:
    """Run the task of ``cfg`` (typed options) in ``run_dir``; ``overrides`` are the command line's."""
    cfg = as_options(cfg, Config)
    task = value_of(cfg.task)
    if task == "train" and cfg.analysis.inspect and cfg.resume is None:
        from stabilityscope.cli.tasks import run_inspect_task  # analysis=inspect: the table, no training

        print(run_inspect_task(cfg, run_dir))
    elif task == "train" and cfg.analysis.describe and cfg.resume is None:
        from stabilityscope.cli.tasks import run_describe_task  # analysis=describe: the table, no training

        text = run_describe_task(cfg)
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "describe.txt").write_text(text + "\n")
        print(text)
    elif task == "train":
        from stabilityscope.training.trainer import Run

        with RunLock(run_dir):  # one writer per run directory, from before its stored config is read
            resume = cfg.resume is not None
            if resume:
                cfg = resumed_config(Path(cfg.resume), overrides)
            validate(cfg)
            run = Run(cfg, run_dir)
            log.info("Run directory: %s", run_dir.resolve())
            run.execute(resume=resume)
            log.info("Trace: %s", (run_dir / "trace.h5").resolve())
            if cfg.figures or cfg.report:
                from stabilityscope.reports.run import finish_run

                finish_run(cfg, run_dir)
    elif task == "report":
        from stabilityscope.cli.tasks import run_report_task

        run_report_task(cfg, run_dir)
    elif task == "scaling":
        from stabilityscope.cli.tasks import run_scaling_task

        run_scaling_task(cfg, run_dir)
    elif task in ("calibrate", "reproduce"):
        from stabilityscope.cli.tasks import run_calibrate_task, run_reproduce_task

        (run_calibrate_task if task == "calibrate" else run_reproduce_task)(cfg, run_dir)
    elif task == "atlas":
        from stabilityscope.cli.tasks import run_atlas_task

        run_atlas_task(cfg, run_dir)
    elif task == "analyze":
        from stabilityscope.cli.tasks import run_analyze_task

        with RunLock(run_dir):
            run_analyze_task(cfg, run_dir)
    elif task == "phase_diagram":
        from stabilityscope.cli.tasks import run_phase_diagram_task

        run_phase_diagram_task(cfg.phase_diagram, run_dir)
    else:  # the Task enum makes this unreachable from the command line
        raise ConfigError(f"Unknown task {task!r}.")


def precheck_resume(argv: list[str]) -> None:
    """Refuse a bad ``resume=<dir>`` before Hydra creates anything in that directory.

    Hydra makes the run directory (the resumed one) and writes its ``.hydra/`` and log there before the
    app runs; a resume of a directory without a trace, or of one another process is writing, must
    leave no such debris.
    """
    multirun = any(a in ("-m", "--multirun") for a in argv)
    for arg in argv:
        key, _, value = arg.partition("=")
        if key.lstrip("+~") != "resume" or not value or value == "null":
            continue
        for one in value.split(",") if multirun else [value]:  # a sweep over run directories: each of them
            precheck_one_resume(one)


def precheck_one_resume(value: str) -> None:
    """Exit with a one-paragraph error when ``value`` is not a run directory a resume may continue."""
    run_dir = Path(value)
    try:
        if not (run_dir / "trace.h5").is_file():
            raise TraceError(f"resume={value!r}: no trace.h5 there. Pass the run directory of an earlier "
                             f"run (checkpoints/<model>-<dataset>/<timestamp>).")
        RunLock(run_dir).acquire().release()  # a live writer is refused here, before Hydra starts
    except StabilityscopeError as exc:
        print(f"stabilityscope: error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)


def cli() -> None:
    """``python -m stabilityscope``: ``--version``, the checks that must precede Hydra, then the Hydra app."""
    if sys.argv[1:2] in (["--version"], ["-V"]):
        from stabilityscope.version import __version__

        print(f"stabilityscope {__version__}")
        return
    precheck_resume(sys.argv[1:])
    main()


register_configs()
register_resolvers()


@hydra.main(version_base="1.3", config_path=conf_dir(), config_name="config")
def main(cfg: DictConfig) -> Optional[str]:
    """The Hydra entry point: one job's typed options, its task, and a one-paragraph error for the user's mistakes."""
    from stabilityscope.cli import sweep

    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir)
    multirun = hc.mode == RunMode.MULTIRUN
    stop_on_signals()
    try:
        options = as_options(cfg, Config)  # the typed options the library takes; unknown keys fail here
        sweep.set_threads(options, hc, multirun)
        if not multirun and sweep.sweep_params(hc):
            raise ConfigError(f"This config defines a sweep (hydra.sweeper.params: {sweep.sweep_params(hc)}), "
                              f"which runs only in multirun mode: add -m (python -m stabilityscope -m ...).")
        queued = options
        if multirun and options.resume is not None:  # -m resume=<dir>,<dir>: each job continues its own run
            run_dir = Path(options.resume)
            sweep.resumed_runs.append(run_dir)
            queued = resumed_config(run_dir, list(hc.overrides.task))  # its stored config decides its group
        if multirun and sweep.defer(queued, run_dir, hc):
            return "queued"  # trained in a batched group when Hydra has launched every job
        run_task(options, run_dir, list(hc.overrides.task))
        return "done"
    except KeyboardInterrupt as exc:  # Ctrl-C or SIGTERM: stop now (the whole sweep too), say how to resume
        interrupted_exit(exc, [run_dir])
    except StabilityscopeError as exc:
        print(f"stabilityscope: error: {exc}", file=sys.stderr)
        if not multirun:
            sys.exit(exc.exit_code)
        error = str(exc)
    except Exception as exc:
        if not multirun:
            raise
        log.exception("Job %s failed", run_dir)
        error = f"{type(exc).__name__}: {exc}"
    # a failed sweep job: its trace says so, and the sweep goes on (a resumed run's trace is left as it was)
    if cfg.get("resume") is None:
        sweep.mark_job_failed(cfg, run_dir, error)
    return "failed"
