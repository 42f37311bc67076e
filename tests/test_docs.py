"""Every command of the README and the docs runs as shown (smoke mode), every Python snippet and example runs,
and the docs build with warnings as errors. How: tests/docs_harness.py."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests import docs_harness as h

COMMANDS = h.find_commands()
SNIPPETS = h.find_snippets()


@pytest.fixture(scope="session")
def docs_runs(tmp_path_factory, data_root):
    """Runs the world, then every documented command's plan once, every page's snippets and every example, two
    at a time in forked children; returns (results by plan, results by page, results by example, world)."""
    os.environ["STABILITYSCOPE_DATA"] = str(data_root)
    root = tmp_path_factory.mktemp("docs_world")
    logs = root / "logs"
    start = time.perf_counter()
    with h.pool() as workers:
        world = h.build_world(root, workers)
        plans: dict[tuple, list] = {}
        for cmd in COMMANDS:
            plans.setdefault(tuple(h.plan(cmd, world)), []).append(cmd)
        independent = [p for p in plans if not any(a.startswith("resume=") for a in p)]
        jobs = {}
        for i, args in enumerate(independent):
            out = f"out/{i}"  # the command's checkpoint_root, relative to the world's root
            extra = [] if ("--cfg" in args or "--help" in args or plans[args][0].module != "stabilityscope") \
                else [f"checkpoint_root={out}"]
            module = plans[args][0].module
            jobs[("cmd", args)] = workers.apply_async(h._call, (("cli", module, [*args, *extra], str(root),
                                                                 str(logs / f"cmd_{i}.log")),),
                                                      callback=h.tidy(root / out))
        for page, snippets in SNIPPETS.items():
            cwd = h.page_copy(root, root / "pages" / page.replace("/", "_"))
            snippets = [(kind, n, h.resolve_python(code, world)) for kind, n, code in snippets]
            jobs[("page", page)] = workers.apply_async(h._call, (("snippets", page, snippets, str(cwd),
                                                                  str(logs / f"page_{page.replace('/', '_')}.log")),),
                                                       callback=h.tidy(cwd))
        for script in h.EXAMPLES:
            cwd = root / "examples" / script.stem
            cwd.mkdir(parents=True, exist_ok=True)
            jobs[("example", script.name)] = workers.apply_async(h._call, (("script", str(script), str(cwd),
                                                                           str(logs / f"example_{script.stem}.log")),),
                                                                 callback=h.tidy(cwd))
        results = {key: job.get() for key, job in jobs.items()}
        for i, args in enumerate(p for p in plans if p not in independent):  # resumes: one at a time, after the rest
            results[("cmd", args)] = workers.apply_async(h._call, (("cli", "stabilityscope", list(args), str(root),
                                                                    str(logs / f"resume_{i}.log")),)).get()
    seconds = time.perf_counter() - start
    cpu = sum(r.cpu for r in results.values()) + float(world["cpu"])
    slowest = sorted(((r.cpu, k[1] if k[0] != "cmd" else " ".join(k[1])) for k, r in results.items()), reverse=True)
    print(f"\ndocs harness: {len(plans)} command plans, {len(SNIPPETS)} pages, {len(h.EXAMPLES)} examples: "
          f"{seconds:.0f} s of wall time, {cpu:.0f} CPU seconds (world {world['cpu']}); most CPU: "
          + "; ".join(f"{s:.0f} s {name[:90]}" for s, name in slowest[:8]))
    (logs / "summary.tsv").write_text("".join(f"{r.cpu:.1f}\t{r.seconds:.1f}\t{r.rc}\t{k[0]}\t"
                                              f"{k[1] if k[0] != 'cmd' else ' '.join(k[1])}\n"
                                              for k, r in results.items()))
    return {"plans": {args: results[("cmd", args)] for args in plans}, "plan_of": plans, "world": world,
            "results": results}


@pytest.mark.slow
@pytest.mark.parametrize("cmd", COMMANDS, ids=[f"{c.where}" for c in COMMANDS])
def test_every_documented_command_runs(docs_runs, cmd):
    args = tuple(h.plan(cmd, docs_runs["world"]))
    result = docs_runs["plans"][args]
    assert result.rc == 0, (f"{cmd.where}: `{cmd.text}` ran as `{' '.join(args)}` and exited {result.rc}:\n"
                            f"{result.output}")
    assert "Traceback" not in result.output, result.output


@pytest.mark.slow
@pytest.mark.parametrize("page", sorted(SNIPPETS))
def test_every_python_snippet_runs(docs_runs, page):
    result = docs_runs["results"][("page", page)]
    assert result.rc == 0, result.output


@pytest.mark.slow
@pytest.mark.parametrize("script", [p.name for p in h.EXAMPLES])
def test_every_example_runs(docs_runs, script):
    result = docs_runs["results"][("example", script)]
    assert result.rc == 0, result.output


def test_a_page_copy_links_the_weights_copies_the_rest_and_a_passed_job_tidies_up(tmp_path):
    """Seventeen full copies of the world's weights filled CI's disk: weights are hard links now (one file on
    disk), traces and configs real copies (a page's writes stay apart), and a passed job's scratch goes."""
    state = tmp_path / "world" / "checkpoints" / "run" / "state"
    state.mkdir(parents=True)
    (state / "step_000000001.pt").write_bytes(b"weights")
    (state.parent / "trace.h5").write_bytes(b"trace")
    page = h.page_copy(tmp_path / "world", tmp_path / "pages" / "a")
    weights, trace = page / "checkpoints/run/state/step_000000001.pt", page / "checkpoints/run/trace.h5"
    assert weights.stat().st_ino == (state / "step_000000001.pt").stat().st_ino
    assert trace.read_bytes() == b"trace" and trace.stat().st_ino != (state.parent / "trace.h5").stat().st_ino
    h.tidy(page)(h.Result(rc=1, seconds=0.0))
    assert weights.exists()  # a failed job's scratch stays, to be looked at
    h.tidy(page)(h.Result(rc=0, seconds=0.0))
    assert not page.exists() and (state / "step_000000001.pt").read_bytes() == b"weights"


def test_the_harness_finds_commands_marks_and_placeholders():
    """The finder itself: fenced and inline lines, continuations, loops, wrappers, comments, twins."""
    page = Path(__file__).parent / "_harness_sample.md"
    page.write_text("Run `python -m stabilityscope train.epochs=2\nanalysis=economy` once.\n\n"
                    "```bash\npython -m stabilityscope -m experiment=calibrate_growth   # long: 84 min\n"
                    "python -m stabilityscope -m optim.weight_decay=0,6e-4 \\\n    train.epochs=60\n"
                    "for d in <the 4× runs>; do python -m stabilityscope resume=$d train.epochs=84; done\n"
                    'sbatch -c 8 --wrap "python -m stabilityscope -m experiment=eoc_weight_decay"\n'
                    "python -m stabilityscope -m hydra/launcher=slurm optim.lr=1e-3\n```\n")
    try:
        found = h.find_commands([page])
    finally:
        page.unlink()
    texts = [c.text for c in found]
    assert texts == ["python -m stabilityscope -m experiment=calibrate_growth",
                     "python -m stabilityscope -m optim.weight_decay=0,6e-4 train.epochs=60",
                     "python -m stabilityscope resume=$d train.epochs=84",
                     "python -m stabilityscope -m experiment=eoc_weight_decay",
                     "python -m stabilityscope -m hydra/launcher=slurm optim.lr=1e-3",
                     "python -m stabilityscope train.epochs=2 analysis=economy"]
    world = {"run": "R", "sweep": "S", "stamp": "T", "growth": "G", "decay": "D", "guideline": "GL"}
    assert found[0].twin == "calibrate_growth_quick" and found[0].comment.startswith("long")
    assert h.plan(found[0], world)[:2] == ["-m", "experiment=calibrate_growth_quick"]
    assert h.plan(found[1], world)[-len(h.SMOKE):] == list(h.SMOKE)  # smoke overrides come last: they win
    assert h.plan(found[2], world) == ["resume=R", "train.epochs=84", *h.SMOKE_RESUME]
    assert found[3].twin == "eoc_weight_decay_quick"
    assert found[4].elsewhere == "a SLURM cluster" and h.plan(found[4], world)[-2:] == ["--cfg", "job"]
    assert h.resolve("sweep=checkpoints/multirun/<timestamp> trace=checkpoints/resnet18-cifar10/<stamp>", world) == \
        "sweep=S trace=R"
    code = 'L = load("<seed 1 run>/baseline.pt") if a < b and c > d else None'
    assert h.resolve_python(code, world | {"cifar": "C"}) == 'L = load("C/baseline.pt") if a < b and c > d else None'
    with pytest.raises(KeyError, match="unknown placeholder <my thing>"):
        h.resolve("python -m stabilityscope resume=<my thing>", world)


def test_docs_build_with_warnings_as_errors(tmp_path):
    """Sphinx, nitpicky, warnings as errors: a broken cross-reference, a missing page or a bad docstring fails."""
    root = Path(__file__).resolve().parent.parent
    proc = subprocess.run([sys.executable, "-m", "sphinx", "-b", "html", "-W", "--keep-going", "-n", "-q",
                           "-d", str(tmp_path / "doctrees"), str(root / "docs"), str(tmp_path / "html")],
                          capture_output=True, text=True, timeout=900, env={**os.environ, "MPLBACKEND": "Agg"})
    assert proc.returncode == 0, proc.stderr[-6000:]
    assert (tmp_path / "html" / "api.html").exists()


def test_the_api_reference_names_everything_in_all():
    import stabilityscope as ss

    api = (Path(__file__).resolve().parent.parent / "docs" / "api.md").read_text()
    missing = [name for name in ss.__all__ if not re.search(rf"\b{re.escape(name)}\b", api)]
    assert not missing, f"docs/api.md does not document: {missing}"


def test_the_readme_stays_short_and_links_into_the_docs():
    root = Path(__file__).resolve().parent.parent
    readme = (root / "README.md").read_text()
    assert len(readme.splitlines()) <= 200
    for target in re.findall(r"\]\(((?:docs/|examples/|LICENSE|CITATION|CHANGELOG)[^)#]*)", readme):
        assert (root / target).exists(), target
