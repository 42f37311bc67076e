"""Sphinx configuration of the stabilityscope docs: MyST Markdown pages, the API from the docstrings.

Built by ``make docs`` (warnings are errors, nitpicky cross-references); CI builds it on every run.
Nothing here reaches the network: no intersphinx, so references to torch, numpy, pandas and the standard
library are left as plain text (``nitpick_ignore_regex``) rather than links.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("MPLBACKEND", "Agg")

import stabilityscope  # noqa: E402

project = "stabilityscope"
author = "The stabilityscope developers"
copyright = "2026, The stabilityscope developers"
release = version = stabilityscope.__version__

extensions = ["myst_parser", "sphinx.ext.autodoc", "sphinx.ext.napoleon", "sphinx.ext.mathjax"]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]
root_doc = "index"

# MyST: $…$ and $$…$$ maths, ::: fences, heading anchors for in-page links such as [x](#the-growth-law)
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 4

# autodoc + napoleon: the docstrings are Google style and use :func:/:class: roles
autodoc_default_options = {"members": True, "show-inheritance": False}
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_format = "short"
autodoc_class_signature = "separated"
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False

nitpicky = True
nitpick_ignore_regex = [
    # outside packages and the standard library: no intersphinx (no network), so no link
    ("py:(class|obj|data|exc|func|meth|mod|attr)",
     r"(torch|numpy|np|pandas|pd|matplotlib|h5py|omegaconf|hydra|scipy|lightning|L|nn|timm|tqdm|safetensors)(\..*)?"),
    ("py:(class|obj|data|exc|func|meth|attr)",
     r"(typing|collections|pathlib|os|enum|dataclasses|concurrent|threading|contextlib|logging|abc)(\..*)?"),
    ("py:(class|obj)", r"(Path|Tensor|Module|Figure|Axes|DataFrame|Series|DictConfig|Enum|ndarray|Generator|dtype|"
                       r"device|Optimizer|Callable|Iterator|Iterable|Sequence|Mapping|Any|Optional|Union|Literal|"
                       r"NoneType|ellipsis|T|TypeVar|Future|RLock|Thread|Event)"),
    ("py:(class|obj)", r"(int|float|str|bool|bytes|dict|list|tuple|set|object|type|complex|callable|None)"),
    ("py:(class|obj|exc)", r"(Exception|ValueError|KeyError|RuntimeError|OSError|TypeError|KeyboardInterrupt|"
                           r"BaseException|Warning|UserWarning|RuntimeWarning|FileNotFoundError|AttributeError)"),
    ("py:(class|obj)", r"(array|tensor|array-like|optional|default|shape|of|or|and|the|an?|float64|float32)"),
    # napoleon reads "name (shape): text" in Args as a type; a phrase or a shape such as (n_test,) is no reference
    ("py:class", r".*[^\w.].*"),
    ("py:class", r"[a-z_]{1,8}|[A-Z]"),
    # type aliases of the package (a Union spelled once), shown by name
    ("py:class", r"(stabilityscope\.config\.)?Options|Source|TraceLike|ArrayLike|Activation|StepFn|ModelBuilder"),
]

html_theme = "furo"
html_title = f"stabilityscope {release}"
html_static_path = ["_static"]


# References to the package's own objects that the API reference does not document (internal helpers named in
# module docstrings for contributors) are shown as plain names, but only when the name resolves to a real
# object of the package: a misspelt or stale name (a function renamed or moved) still fails the build.
def _resolves(target: str, module: str | None, cls: str | None) -> bool:
    import importlib

    target = target.lstrip("~.")
    candidates = [target]
    if module:
        candidates += [f"{module}.{cls}.{target}" if cls else None, f"{module}.{target}"]
        parent = module.rsplit(".", 1)[0]
        candidates += [f"{parent}.{target}"]
    import sys

    # a docstring documented at the facade (ss.open_traces) names its module's neighbours (find_traces), and a
    # module docstring its classes' methods (close): look in the package's modules and their classes
    for mod_name, mod in list(sys.modules.items()):
        if not mod_name.startswith("stabilityscope") or mod is None:
            continue
        if hasattr(mod, target) and getattr(getattr(mod, target), "__module__", mod_name) == mod_name:
            return True
        if module and mod_name == module:
            if any(hasattr(obj, target) for obj in vars(mod).values() if isinstance(obj, type)):
                return True
    for name in filter(None, candidates):
        if not name.startswith("stabilityscope"):
            continue
        parts = name.split(".")
        for i in range(len(parts), 0, -1):
            try:
                obj = importlib.import_module(".".join(parts[:i]))
            except ImportError:
                continue
            try:
                for attr in parts[i:]:
                    obj = getattr(obj, attr)
                return True
            except AttributeError:
                break
    return False


def _internal_reference(app, env, node, contnode):
    if node.get("refdomain") != "py":
        return None
    if _resolves(node["reftarget"], node.get("py:module"), node.get("py:class")):
        return contnode
    return None


def _absolute_values(app, what, name, obj, options, lines):
    """The docstrings write |x| for an absolute value or a norm, never an RST substitution: escape the bars
    (a table's rows stay as they are)."""
    for i, line in enumerate(lines):
        bare = line.strip()
        table = bare.startswith("+") or (bare.startswith("|") and bare.endswith("|") and bare.count("|") > 2)
        if "|" in line and not table:
            lines[i] = line.replace("|", "\\|")


def setup(app):
    app.connect("missing-reference", _internal_reference)
    app.connect("autodoc-process-docstring", _absolute_values)
