"""The package's architecture: layers that only look down, no import cycles, Hydra only in the CLI.

Every ``import`` in every module of ``stabilityscope/`` (function-level ones included) is an edge of
the module graph. The sub-packages are ranked as the README's architecture section lists them; an
edge from a lower layer to a higher one, any cycle, or Hydra/OmegaConf outside ``cli/`` fails.
"""
from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Sequence

import pytest
import torch

import stabilityscope as ss
from stabilityscope.config import AnalysisConfig, Config, ModelConfig, as_options

PACKAGE = Path(ss.__file__).resolve().parent

# Lowest first. The base modules are used by every layer; the facade (__init__, __main__) sits on top.
LAYERS = ("base", "theory", "dynamics", "models", "recording", "control", "training", "integrations", "analysis",
          "plots", "reports", "cli", "facade")
BASE = {"errors", "config", "interrupts", "runtime", "version"}
HYDRA = ("hydra", "omegaconf")
# Old module paths kept as deprecated aliases of their new homes (they import upward, by design, and warn).
DEPRECATED_ALIASES = {"stabilityscope.analysis.figures": "stabilityscope.plots",
                      "stabilityscope.analysis.report": "stabilityscope.reports.run",
                      "stabilityscope.analysis.scaling_figures": "stabilityscope.plots.scaling",
                      "stabilityscope.analysis.scaling_report": "stabilityscope.reports.scaling"}


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer_of(module: str, package: str) -> str:
    parts = module.split(".")
    if len(parts) == 1 or parts[1] == "__main__":
        return "facade"
    return "base" if parts[1] in BASE else parts[1]


def import_edges(root: Path) -> dict[str, set[str]]:
    """Module → the modules of the same package it imports (all of them, wherever the import statement is)."""
    package = root.name
    modules = {module_name(p, root): p for p in root.rglob("*.py")}
    edges: dict[str, set[str]] = {m: set() for m in modules}
    for mod, path in modules.items():
        is_init = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:  # relative: resolve against this module's package
                    base = mod.split(".")[: len(mod.split(".")) - node.level + (1 if is_init else 0)]
                    stem = ".".join(base + ([node.module] if node.module else []))
                else:
                    stem = node.module or ""
                # `from pkg import sub` imports the submodule pkg.sub when there is one
                targets = [f"{stem}.{a.name}" if f"{stem}.{a.name}" in modules else stem for a in node.names]
            for t in targets:
                if t == package or t.startswith(package + "."):
                    edges[mod].add(t)
    return edges


def external_imports(root: Path) -> dict[str, set[str]]:
    """Module → the top-level names of the packages outside ``root`` that it imports."""
    out: dict[str, set[str]] = {}
    for path in root.rglob("*.py"):
        names = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                names.add(node.module.split(".")[0])
        out[module_name(path, root)] = names
    return out


def upward_edges(edges: dict[str, set[str]], package: str, exempt: Sequence[str] = ()) -> list[str]:
    rank = {name: i for i, name in enumerate(LAYERS)}
    bad = []
    for src, targets in edges.items():
        if src in exempt:
            continue
        for dst in targets:
            if rank[layer_of(src, package)] < rank[layer_of(dst, package)]:
                bad.append(f"{src} ({layer_of(src, package)}) imports {dst} ({layer_of(dst, package)})")
    return sorted(bad)


def find_cycle(edges: dict[str, set[str]]) -> list[str]:
    """One import cycle as [a, b, ..., a], or [] when the graph is acyclic (depth-first search)."""
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return []

    for node in sorted(edges):
        if node not in state and (cycle := visit(node)):
            return cycle
    return []


# ------------------------------------------------------------------------------- the real package


def test_every_module_belongs_to_a_layer():
    for mod in import_edges(PACKAGE):
        assert layer_of(mod, PACKAGE.name) in LAYERS, mod


def test_lower_layers_never_import_higher_ones():
    assert upward_edges(import_edges(PACKAGE), PACKAGE.name, exempt=tuple(DEPRECATED_ALIASES)) == []


@pytest.mark.parametrize("old, new", sorted(DEPRECATED_ALIASES.items()))
def test_deprecated_aliases_warn_and_reexport_their_new_home(old, new):
    """The old module paths still import (the README documents them), warn, and hold the same objects."""
    code = textwrap.dedent(f"""
        import importlib, warnings
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            old = importlib.import_module({old!r})
        new = importlib.import_module({new!r})
        assert any(issubclass(w.category, DeprecationWarning) and {new!r} in str(w.message) for w in caught)
        assert old.__all__ and all(getattr(old, n) is getattr(new, n) for n in old.__all__)
        print("ok")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "ok", out.stderr


def test_no_private_name_is_imported_from_another_module():
    """Shared helpers have one public home; ``from x import _name`` across modules is a hidden dependency."""
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(PACKAGE.name):
                offenders += [f"{module_name(path, PACKAGE)}: {a.name} from {node.module}" for a in node.names
                              if a.name.startswith("_") and not (a.name.startswith("__") and a.name.endswith("__"))]
    assert offenders == []


def test_no_import_cycles():
    assert find_cycle(import_edges(PACKAGE)) == []


def test_only_the_cli_imports_hydra():
    offenders = {m: sorted(n & set(HYDRA)) for m, n in external_imports(PACKAGE).items()
                 if n & set(HYDRA) and layer_of(m, PACKAGE.name) != "cli"}
    assert offenders == {}


def test_the_library_loads_without_hydra():
    """A notebook user's imports bring in neither Hydra nor OmegaConf."""
    code = textwrap.dedent("""
        import sys
        import stabilityscope as ss
        import stabilityscope.training, stabilityscope.reports, stabilityscope.plots
        from stabilityscope import figures, report
        loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('hydra', 'omegaconf'))
        print(loaded)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_every_subpackage_states_its_layer():
    for layer in LAYERS[1:-1]:
        doc = ast.get_docstring(ast.parse((PACKAGE / layer / "__init__.py").read_text(encoding="utf-8")))
        assert doc and ("Layer:" in doc or "Layer" in doc), layer


# ------------------------------------------------------------------------------- the checker itself


def _write(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


@pytest.fixture
def fake(tmp_path):
    """A package laid out like ours, to show that the checks catch what they are meant to catch."""
    return _write(tmp_path / "pkg", {
        "__init__.py": "from pkg.analysis import report\n", "errors.py": "", "config.py": "",
        "theory/__init__.py": "", "theory/meanfield.py": "from pkg.errors import X\n",
        "dynamics/__init__.py": "", "dynamics/maps.py": "from pkg.theory import meanfield\n",
        "models/__init__.py": "", "recording/__init__.py": "", "training/__init__.py": "",
        "analysis/__init__.py": "", "analysis/report.py": "from . import figures\n", "analysis/figures.py": "",
        "cli/__init__.py": "", "cli/app.py": "import hydra\nfrom pkg.analysis.report import write\n",
    })


def test_checker_accepts_a_clean_tree(fake):
    edges = import_edges(fake)
    assert edges["pkg.analysis.report"] == {"pkg.analysis.figures"}  # relative import resolved
    assert upward_edges(edges, "pkg") == [] and find_cycle(edges) == []


def test_checker_catches_a_lower_layer_importing_a_higher_one(fake):
    (fake / "theory" / "meanfield.py").write_text("def f():\n    from pkg.dynamics.maps import LayerMap\n")
    assert upward_edges(import_edges(fake), "pkg") == [
        "pkg.theory.meanfield (theory) imports pkg.dynamics.maps (dynamics)"]


def test_checker_catches_a_cycle(fake):
    (fake / "analysis" / "figures.py").write_text("import pkg.analysis.report\n")
    cycle = find_cycle(import_edges(fake))
    assert cycle[0] == cycle[-1] and sorted(cycle[:-1]) == ["pkg.analysis.figures", "pkg.analysis.report"]


def test_checker_catches_hydra_outside_the_cli(fake):
    (fake / "models" / "registry.py").write_text("from omegaconf import DictConfig\n")
    found = {m for m, n in external_imports(fake).items() if n & set(HYDRA) and layer_of(m, "pkg") != "cli"}
    assert found == {"pkg.models.registry"}


# ------------------------------------------------------------------------------- typed options


def test_options_from_a_dataclass_a_mapping_and_a_dictconfig_agree():
    from omegaconf import OmegaConf  # the test may use Hydra's config library; the package core does not

    typed = AnalysisConfig(maps=True, n_inputs=16)
    assert as_options(typed, AnalysisConfig) is typed
    assert as_options({"maps": True, "n_inputs": 16}, AnalysisConfig) == typed
    assert as_options(OmegaConf.structured(typed), AnalysisConfig) == typed
    full = as_options(OmegaConf.structured(Config), Config)  # nested options become their dataclasses
    assert isinstance(full.model, ModelConfig) and full.model == ModelConfig() and full.analysis == AnalysisConfig()
    assert full.model.activation is type(ModelConfig().activation).tanh  # an enum member, not a string
    with pytest.raises(ss.ConfigError, match="analysis.n_input; the valid keys of analysis are: name, layers"):
        as_options({"n_input": 3}, AnalysisConfig, "analysis")
    with pytest.raises(ss.ConfigError, match="model.activation='sigmoidish'"):
        as_options({"activation": "sigmoidish"}, ModelConfig, "model")


def test_a_tracker_built_from_typed_options_without_hydra(data_root):
    """The issue's notebook line: LayerTracker(model, records, AnalysisConfig(...)) and nothing else."""
    from omegaconf import OmegaConf

    from stabilityscope.training.data import load_dataset

    data = load_dataset("fashion_mnist", str(data_root), train_subset=10, test_subset=8)
    torch.manual_seed(0)
    model = ss.build_model(ModelConfig(), data.input_shape, data.num_classes)
    options = AnalysisConfig(maps=True, n_inputs=4, steps=40, eigen=False)
    records = ss.tracked_records(model, ModelConfig(), options, data.input_shape)
    probes = data.x_test[:4]
    typed = ss.LayerTracker(model, records, options, probe_inputs=probes).measure(model)
    dictcfg = ss.LayerTracker(model, records, OmegaConf.structured(options), probe_inputs=probes).measure(model)
    assert [r.name for r in records] == ["hidden", "head"]
    assert typed["hidden"]["J"] == pytest.approx(0.5, abs=0.05)  # the canonical init, J = 0.5
    assert typed["hidden"]["J"] == dictcfg["hidden"]["J"]
    assert typed["hidden"]["s_mean"] == pytest.approx(dictcfg["hidden"]["s_mean"], rel=1e-6)
