"""The docs' commands and snippets, found and run: every ``python -m stabilityscope`` line, every Python snippet.

Commands come from the fenced code blocks and the inline code of ``README.md`` and ``docs/**/*.md``. Each runs
in a *smoke mode*: the harness appends overrides that shrink epochs, data, start states and map steps
(:data:`SMOKE`), so a command that trains for hours on the real data checks in seconds that it composes,
trains, records and reports. Two kinds of lines run something else instead:

- **long**: a preset with a ``_quick`` twin (``experiment=calibrate_growth`` → ``calibrate_growth_quick``), or a
  fenced line whose comment says ``long``: its ``_quick`` twin runs, in smoke mode too;
- **elsewhere**: a line that needs what CI does not have (a SLURM cluster, a running Ray cluster, downloaded
  weights): its config is composed (``--cfg job``), which checks every key and option it names.

Placeholders (``<run dir>``, ``<growth sweep>``, the example timestamp ``2026-11-22_12-00-00``, ``$d`` in shell
loops) are replaced by the runs of a small *world* the harness trains first (:func:`build_world`).

Python snippets: every ````python`` block of a page runs, in order, in one namespace per page, in a copy of
the world; ````pycon`` blocks are doctests whose printed values are checked. ``examples/*.py`` run as scripts.

Everything runs in children forked from a server that has already imported torch, timm, Hydra and
stabilityscope (multiprocessing's ``forkserver``), two at a time, one thread each: a command costs its own
work, not the 3-4 s of imports a fresh ``python -m stabilityscope`` pays.
"""
from __future__ import annotations

import doctest
import io
import multiprocessing
import os
import re
import shlex
import shutil
import sys
import textwrap
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

ROOT = Path(__file__).resolve().parent.parent
# STABILITYSCOPE_DOCS_ONLY=<regex>: only the pages and examples whose path matches (to iterate on one page)
ONLY = re.compile(os.environ.get("STABILITYSCOPE_DOCS_ONLY", ""))
PAGES = [p for p in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
         if ONLY.search(str(p.relative_to(ROOT)))]
EXAMPLES = [p for p in sorted((ROOT / "examples").glob("*.py")) if ONLY.search(str(p.relative_to(ROOT)))]
CONF = ROOT / "conf"

STAMP = "2026-11-22_12-00-00"  # the docs' example timestamp: the world's run and sweep carry it
RUN = f"checkpoints/fmnist_fc-fashion_mnist/{STAMP}"
SWEEP = f"checkpoints/multirun/{STAMP}"

# Appended to every command that trains: small data, one epoch, few and short orbits, no figures.
SMOKE = ("train.epochs=1", "dataset.train_subset=128", "dataset.test_subset=64", "analysis.n_inputs=2",
         "analysis.steps=20", "analysis.geometry_samples=64", "analysis.explainability_boot=10",
         "analysis.baseline_max_iter=20", "figures=false", "report=false", "phase_background.enabled=false",
         "train.threads=1", "train.checkpoints.num=3", "calibration.n_boot=20")
SMOKE_VALIDATION = 32  # the largest validation split of a smoke run (a quarter of its training examples)
# task=phase_diagram: a small grid, small N, short orbits
SMOKE_PHASE = ("phase_diagram.n=64", "phase_diagram.steps=20", "phase_diagram.j0_over_j.num=5",
               "phase_diagram.inv_j.num=4", "figures=true")
# tasks that read runs: their figures and reports are part of what is checked, so they stay on
SMOKE_READ = ("phase_background.enabled=false", "calibration.n_boot=20", "train.threads=1")
# a resume may change only these; it extends the world's 2-epoch run by one epoch
SMOKE_RESUME = ("train.epochs=3", "figures=false", "report=false")
ELSEWHERE = (("hydra/launcher=slurm", "a SLURM cluster"), ("ray.init.address=auto", "a running Ray cluster"),
             ("model.pretrained=true", "downloaded weights"))
PY_LANGS = {"python", "py"}
SHELL_LANGS = {"", "bash", "sh", "shell", "console", "text"}


# ----------------------------------------------------------------------------------------- finding them
@dataclass
class Command:
    """One documented ``python -m stabilityscope ...`` line and what the harness runs for it."""

    text: str  # as written (continuations joined, comment removed)
    where: str  # page:line
    comment: str = ""
    module: str = "stabilityscope"

    @property
    def args(self) -> list[str]:
        return shlex.split(self.text.split(f"-m {self.module}", 1)[1])

    @property
    def twin(self) -> Optional[str]:
        """The ``_quick`` preset that runs instead of a long one (None: the line runs itself)."""
        for a in self.args:
            m = re.fullmatch(r"experiment=(\w+)", a)
            if m and not m.group(1).endswith("_quick") and (CONF / "experiment" / f"{m.group(1)}_quick.yaml").exists():
                return f"{m.group(1)}_quick"
        return None

    @property
    def elsewhere(self) -> Optional[str]:
        for needle, what in ELSEWHERE:
            if needle in self.text:
                return what
        return None


FENCE = re.compile(r"^(\s*)(```+|~~~+)\s*\{?([\w-]*)\}?(.*)$")


def blocks(page: Path) -> list[tuple[str, int, str]]:
    """The fenced code blocks of a Markdown page: (language, first line number, text)."""
    out, lines, i = [], page.read_text().splitlines(), 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if m:
            fence, lang, start = m.group(2), m.group(3).lower(), i + 1
            body = []
            i += 1
            while i < len(lines) and not lines[i].strip().startswith(fence):
                body.append(lines[i])
                i += 1
            out.append((lang, start + 1, textwrap.dedent("\n".join(body))))  # a block inside a list is indented
        i += 1
    return out


def _split_comment(line: str) -> tuple[str, str]:
    """A shell line and its trailing comment (a ``#`` outside quotes)."""
    quote = None
    for i, ch in enumerate(line):
        if ch in "'\"" and quote in (None, ch):
            quote = None if quote == ch else ch
        elif ch == "#" and quote is None and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip(), line[i + 1:].strip()
    return line.rstrip(), ""


def _cut(command: str) -> str:
    """The command alone: up to a ``;`` outside quotes (a shell loop's ``; done``), without the closing quote of a
    wrapper (``sbatch --wrap "python -m ..."``)."""
    quote = None
    for i, ch in enumerate(command):
        if ch in "'\"" and quote in (None, ch):
            quote = None if quote == ch else ch
        elif ch == ";" and quote is None:
            command = command[:i]
            break
    if command.count('"') % 2:
        command = command[:command.rindex('"')]
    return command


def _commands_in(text: str, where: str) -> list[Command]:
    out = []
    for module in ("stabilityscope.models.coverage", "stabilityscope"):
        for m in re.finditer(rf"python -m {re.escape(module)}(?=\s|$)[^`]*", text):
            line, comment = _split_comment(_cut(m.group(0)))
            out.append(Command(line.strip(), where, comment, module))
        if out:
            return out
    return out


def find_commands(pages: list[Path] = PAGES) -> list[Command]:
    """Every documented command, in page order: fenced lines (continuations joined) and inline code of the prose
    (a code span may run over a line break)."""
    found = []
    for page in pages:
        rel = page.relative_to(ROOT)
        lines = page.read_text().splitlines()
        in_fence, joined, start, prose = False, "", 0, []
        for n, line in enumerate(lines, 1):
            if FENCE.match(line):
                in_fence = not in_fence
                continue
            if not in_fence:
                prose.append((n, line))
                continue
            part = line.strip()
            joined, start = (joined + " " + part, start) if joined else (part, n)
            if part.endswith("\\"):
                joined = joined[:-1].rstrip()
                continue
            found += _commands_in(joined, f"{rel}:{start}")
            joined = ""
        # prose: paragraphs joined into one line, so that a code span broken over two lines is found whole
        paragraph: list[tuple[int, str]] = []
        for n, line in prose + [(0, "")]:
            if line.strip():
                paragraph.append((n, line.strip()))
                continue
            if paragraph:
                text = " ".join(t for _, t in paragraph)
                for code in re.findall(r"`([^`]*python -m stabilityscope[^`]*)`", text):
                    found += _commands_in(code, f"{rel}:{paragraph[0][0]}")
            paragraph = []
    return found


def find_snippets(pages: list[Path] = PAGES) -> dict[str, list[tuple[str, int, str]]]:
    """Each page's Python blocks in order: (``python`` or ``pycon``, line, code)."""
    out = {}
    for page in pages:
        chosen = [(lang if lang == "pycon" else "python", n, text) for lang, n, text in blocks(page)
                  if lang in PY_LANGS or lang == "pycon"]
        if chosen:
            out[str(page.relative_to(ROOT))] = chosen
    return out


# ------------------------------------------------------------------------------------------ what runs
PLACEHOLDERS = (  # keyword in a <placeholder> → the world's path that stands for it
    ("growth", "growth"), ("guideline", "guideline"), ("decay", "decay"), ("e-4 runs", "decay"), ("× runs", "decay"),
    ("1× runs", "decay"), ("eoc_mlp", "run"), ("eoc_cnn", "run"), ("sweep", "sweep"), ("stamp", "stamp"),
    ("seed", "cifar"), ("control", "control"),
    ("reference", "run"), ("run", "run"), ("dir", "run"),
)


def resolve(text: str, world: dict[str, str]) -> str:
    """The command with its placeholders replaced by the world's runs; unknown ones raise KeyError."""
    def one(m: re.Match) -> str:
        name = m.group(1)
        for key, target in PLACEHOLDERS:
            if key in name:
                return world[target]
        raise KeyError(f"unknown placeholder <{name}>: name it after what it stands for, or add it to "
                       f"tests/docs_harness.py PLACEHOLDERS")
    # a path with a placeholder for its timestamp is the world's sweep or run of that kind
    text = re.sub(r"checkpoints/multirun/<[^<>]*stamp>", world["sweep"], text)
    text = re.sub(r"checkpoints/[\w.-]+-[\w.-]+/<[^<>]*stamp>", world["run"], text)
    text = text.replace("checkpoints/multirun/<", "<").replace("$d", world["run"])
    text = re.sub(r"<([^<>]+)>", one, text)
    return text.replace(SWEEP, world["sweep"]).replace(RUN, world["run"])


def _first_value(arg: str) -> str:
    """``key=a,b,c`` (a sweep over values) → ``key=a``; anything else unchanged (lists in brackets, quotes)."""
    key, eq, value = arg.partition("=")
    if not eq or any(c in value for c in "[]()'\"{}"):
        return arg
    return f"{key}={value.split(',')[0]}"


def plan(cmd: Command, world: dict[str, str]) -> list[str]:
    """The argument list the harness runs for a documented command."""
    if cmd.module != "stabilityscope":  # python -m stabilityscope.models.coverage: its CI sample
        return ["--sample", "--library", "torchvision", "--quiet"]
    args = shlex.split(resolve(cmd.text, world).split("-m stabilityscope", 1)[1])
    if cmd.elsewhere:  # composed only: a sweep's first job (Hydra's --cfg composes one config, not a sweep)
        return [_first_value(a) for a in args if a != "-m"] + ["--cfg", "job"]
    if "--cfg" in args or "--help" in args:
        return args
    twin = cmd.twin or (None if "long" not in cmd.comment else "")
    if twin:
        args = [f"experiment={twin}" if a.startswith("experiment=") else a for a in args]
    if any(a.startswith("resume=") for a in args):
        return args + list(SMOKE_RESUME)
    task = next((a.split("=", 1)[1] for a in args if a.startswith("task=")), "train")
    if task == "phase_diagram":
        return args + list(SMOKE_PHASE)
    if task in ("report", "scaling", "calibrate", "reproduce"):
        return args + list(SMOKE_READ)
    return [_smoke_validation(a) for a in args] + list(SMOKE)


def _smoke_validation(arg: str) -> str:
    """A validation split that fits the smoke run's 128 training examples: ``dataset.validation=N`` → at most 32."""
    key, _, value = arg.partition("=")
    return f"{key}={min(int(value), SMOKE_VALIDATION)}" if key == "dataset.validation" and value.isdigit() else arg


# ------------------------------------------------------------------------------------ running in children
@dataclass
class Result:
    rc: int
    seconds: float  # wall time
    output: str = ""
    cpu: float = 0.0  # CPU seconds of the child and of the processes it waited for (what CI's cores pay)


def _cpu() -> float:
    import resource

    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _redirect(log: Path):
    f = open(log, "w")
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(f.fileno(), 1)
    os.dup2(f.fileno(), 2)
    return f


def _exit_code(main: Callable[[], object]) -> int:
    """Run a program's entry point in this child as its process would: its exit status (a traceback: 1)."""
    rc = 0
    try:
        main()
    except SystemExit as exc:
        rc = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:
        traceback.print_exc()
        rc = 1
    sys.stdout.flush()
    sys.stderr.flush()
    return rc


def _run_module(module: str) -> None:
    if module == "stabilityscope":
        from stabilityscope.cli.app import cli
        cli()
    else:
        import runpy
        runpy.run_module(module, run_name="__main__")


def _child_cli(module: str, args: list[str], cwd: str, log: str) -> Result:
    start = time.perf_counter()
    os.chdir(cwd)
    _redirect(Path(log))
    sys.argv = [module, *args]
    rc = _exit_code(lambda: _run_module(module))
    return Result(rc, time.perf_counter() - start, Path(log).read_text()[-4000:], _cpu())


def resolve_python(code: str, world: dict[str, str]) -> str:
    """A snippet with the placeholders inside its strings (``"<seed 1 run>/baseline.pt"``) replaced by the world's."""
    return re.sub(r"""(["'])(<[^<>"'=]+>)""", lambda m: m.group(1) + resolve(m.group(2), world), code)


def _child_snippets(page: str, snippets: list[tuple[str, int, str]], cwd: str, log: str) -> Result:
    start = time.perf_counter()
    os.chdir(cwd)
    _redirect(Path(log))
    import matplotlib

    matplotlib.use("Agg")
    namespace: dict = {"__name__": "__main__"}
    failures = []
    for kind, line, code in snippets:
        name = f"{page}:{line}"
        try:
            if kind == "pycon":
                test = doctest.DocTestParser().get_doctest(code, namespace, name, page, line)
                out = io.StringIO()
                runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
                runner.run(test, out=out.write, clear_globs=False)
                namespace.update(test.globs)  # a DocTest runs on a copy: the page's later blocks see its names
                if runner.failures:
                    failures.append(f"{name} (doctest):\n{out.getvalue()}")
            else:
                exec(compile(code, name, "exec"), namespace)
        except BaseException:
            failures.append(f"{name}:\n{traceback.format_exc()}")
    print("\n".join(failures))
    sys.stdout.flush()
    return Result(1 if failures else 0, time.perf_counter() - start, "\n".join(failures)[-6000:], _cpu())


def _child_script(script: str, cwd: str, log: str) -> Result:
    start = time.perf_counter()
    os.chdir(cwd)
    _redirect(Path(log))
    sys.argv = [script, "--smoke"]
    import runpy

    rc = _exit_code(lambda: runpy.run_path(script, run_name="__main__"))
    return Result(rc, time.perf_counter() - start, Path(log).read_text()[-4000:], _cpu())


def _call(job: tuple) -> Result:
    import torch

    torch.set_num_threads(1)  # two children share CI's two cores: one thread each, as the commands' train.threads=1
    os.environ["OMP_NUM_THREADS"] = "1"  # and the processes they start (launchers, the examples' commands)
    kind, *rest = job
    return {"cli": _child_cli, "snippets": _child_snippets, "script": _child_script}[kind](*rest)


def pool(processes: int = 2):
    """Children forked from a server that has imported the heavy modules once."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["torch", "timm", "hydra", "matplotlib.pyplot", "pandas", "stabilityscope",
                                "stabilityscope.cli.app", "stabilityscope.analysis.figures", "tests.docs_harness"])
    return ctx.Pool(processes, maxtasksperchild=1)


# ------------------------------------------------------------------------------------------------ the world
# the controller experiment's arms (docs/guide/control.md), trained small in the world
CONTROL_ARMS = {
    "controlled": ["guideline.decay_factor=0", "guideline.validate=false", "train.control=edge"],
    "early_stopping": ["guideline.decay_factor=0", "guideline.validate=false",
                       f"dataset.validation={SMOKE_VALIDATION}"],
    "sweep": ["guideline.decay_factor=1,4"],
}


def build_world(root: Path, workers) -> dict[str, str]:
    """The runs the documented commands and snippets refer to, trained small, under ``root``.

    ``run``: a canonical run of 2 epochs at the docs' example path; ``sweep``: a sweep of two canonical runs
    at the example sweep path; ``growth``, ``decay``, ``guideline``: the calibration presets' quick twins;
    ``cifar``: a binarised CIFAR-10 run with the linear baseline (SGD-complexity's preset); ``control``: the
    controller experiment's three arms at budget 50, three seeds each (``b50_controlled``, ``b50_early_stopping``,
    ``b50_sweep`` with decay factors 1 and 4), as docs/guide/control.md trains them;
    ``runs/ckpts``: saved weights of the canonical network (``.pt``) and of ResNet-18 (Lightning ``.ckpt``).
    """
    root.mkdir(parents=True, exist_ok=True)
    world = {"run": RUN, "sweep": SWEEP, "stamp": STAMP, "cifar": "world/cifar"}
    world_cpu: dict[str, float] = {}
    smoke = [a for a in SMOKE if not a.startswith("train.epochs")]
    jobs = {
        "run": ["train.epochs=2", f"hydra.run.dir={RUN}", "analysis.explainability=true", "analysis.geometry=true",
                *smoke],
        "cifar": ["experiment=sgd_complexity_cifar10_quick", "hydra.run.dir=world/cifar", *SMOKE],
        "sweep": ["-m", "optim.lr=0.01,0.02", f"hydra.sweep.dir={SWEEP}", *SMOKE],
        "growth": ["-m", "experiment=calibrate_growth_quick", "checkpoint_root=world/growth", *SMOKE[1:]],
        "decay": ["-m", "experiment=calibrate_decay_quick", "checkpoint_root=world/decay", *SMOKE[1:]],
        "guideline": ["-m", "experiment=calibrate_guideline_quick", "checkpoint_root=world/guideline", *SMOKE[1:]],
        **{f"control_{arm}": ["-m", "experiment=calibrate_guideline", "guideline.budget=50", *extra, "train.seed=0,1,2",
                              f"hydra.sweep.dir=world/control/b50_{arm}", *SMOKE]
           for arm, extra in CONTROL_ARMS.items()},
    }
    logs = root / "logs"
    logs.mkdir(exist_ok=True)
    pending = {name: workers.apply_async(_call, (("cli", "stabilityscope", args, str(root),
                                                  str(logs / f"world_{name}.log")),))
               for name, args in jobs.items()}
    for name, res in pending.items():
        r = res.get()
        assert r.rc == 0, f"the harness's world ({name}) failed:\n{r.output}"
        world_cpu[name] = r.cpu
    for name in ("growth", "decay", "guideline"):
        (sweep,) = (root / "world" / name).glob("multirun/*")
        world[name] = str(sweep.relative_to(root))
    world["control"] = "world/control"
    _saved_weights(root)
    world["cpu"] = str(round(sum(world_cpu.values()), 1))
    return world


def _saved_weights(root: Path) -> None:
    """``runs/ckpts``: the world run's canonical weights as ``epoch_<e>.pt`` files and ResNet-18 (CIFAR-10) as
    Lightning ``.ckpt`` files, as the docs' ``task=analyze`` and ``model.checkpoint=`` lines expect."""
    import torch

    from stabilityscope.config import ModelConfig
    from stabilityscope.models.registry import build_model

    ckpts = root / "runs" / "ckpts"
    ckpts.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    canonical = build_model(ModelConfig(), (1, 28, 28), 10)
    for epoch in (1, 2, 20):
        torch.save(canonical.state_dict(), ckpts / f"epoch_{epoch}.pt")
    resnet = build_model(ModelConfig(name="resnet18", family="torchvision", small_input=True), (3, 32, 32), 10)
    for epoch in (0, 1):
        torch.save({"state_dict": {f"model.{k}": v for k, v in resnet.state_dict().items()}, "epoch": epoch},
                   ckpts / f"epoch={epoch}.ckpt")


WEIGHTS = (".pt", ".ckpt", ".safetensors")


def _link_weights(src: str, dst: str) -> None:
    """Weight files are hard-linked, everything else copied: the project replaces a state file by a new one
    (write, then rename) and no page writes the world's weights in place, so a link is as good as a copy, and
    seventeen copies of the world's weights (0.8 GB each) filled CI's disk."""
    if src.endswith(WEIGHTS):
        os.link(src, dst)
    else:
        shutil.copy2(src, dst)


def page_copy(world_root: Path, target: Path) -> Path:
    """A scratch directory for one page's snippets: the world's runs with their weights linked, its traces and
    configs copied, so that the page's writes stay apart."""
    target.mkdir(parents=True, exist_ok=True)
    for name in ("checkpoints", "runs", "world"):
        if (world_root / name).exists() and not (target / name).exists():
            shutil.copytree(world_root / name, target / name, symlinks=True, copy_function=_link_weights)
    return target


def tidy(path: Path) -> Callable[[Result], None]:
    """A job's callback: once it passed, its scratch directory goes (a failed job's stays, to be looked at)."""
    def done(result: Result) -> None:
        if result.rc == 0:
            shutil.rmtree(path, ignore_errors=True)
    return done
