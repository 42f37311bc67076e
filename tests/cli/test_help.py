"""`python -m stabilityscope --help` is written for people: tasks, groups, options, examples, the docs."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from stabilityscope.cli.app import conf_dir
from stabilityscope.config import Task

INTERNAL = {"eoc_case", "spline_optim"}  # the sweep presets' tuples, not chosen by users


def test_help_lists_every_task_group_option_and_five_examples(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "stabilityscope", "--help"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    text = proc.stdout
    assert text.startswith("stabilityscope: where a neural network sits between order and chaos")
    for group in INTERNAL:
        assert group not in text  # Hydra's default page opened with 60 eoc_case options
    for task in Task:
        assert re.search(rf"^  {task.value}\s", text, re.M), task
    conf = Path(conf_dir())
    for group in ("model", "dataset", "optim", "analysis", "experiment", "hydra/launcher"):
        options = {p.stem for p in (conf / group).glob("*.yaml")}
        if group == "experiment":
            options = {o for o in options if not o.endswith("_quick")}  # named once, as "_quick twins"
        missing = sorted(o for o in options if not re.search(rf"\b{re.escape(o)}\b", text))
        assert not missing, f"{group}: {missing}"
    examples = re.findall(r"^  python -m stabilityscope.*$", text, re.M)
    assert len(examples) >= 5
    assert "make docs" in text and "--hydra-help" in text
