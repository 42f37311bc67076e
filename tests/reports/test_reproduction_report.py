"""The reproduction report (stabilityscope.reports.reproduction): every claim a row with its margin and what would
settle it, every rule printed with its margins and their reasons, strict JSON."""
from __future__ import annotations

import json

from stabilityscope.analysis.reproduction import RULES, reproduce
from stabilityscope.analysis.verdicts import INCONCLUSIVE
from stabilityscope.reports.reproduction import write_reproduction
from tests.analysis.test_reproduction import optimum_near_s_1, plateaus


def test_the_report_prints_rules_margins_and_what_settles_a_verdict(tmp_path):
    optimum_near_s_1(tmp_path / "maps", "undecided")
    plateaus(tmp_path / "decay", "holds")
    rep = reproduce(tmp_path, n_boot=0)
    path = write_reproduction(rep, tmp_path / "out", figures=False)
    text = path.read_text()
    assert text.count("| EOC-") + text.count("| stabilityscope |") == len(rep.claims) and "## Rules" in text
    for key, rule in RULES.items():  # every rule with its margins and their reasons
        assert f"- **{key}**: " in text
        assert all(m.describe() in text and m.reason in text for _, m in rule.margins)
    assert "| [0.85, 1.15] |" in text and "**inconclusive** | about " in text
    data = json.loads((tmp_path / "out" / "reproduction.json").read_text())  # strict JSON: NaN and inf as null
    (row,) = [c for c in data["claims"] if c["rule"] == "optimum near s = 1"]
    assert row["verdict"] == INCONCLUSIVE and row["parts"][0]["margin"]["low"] == 0.85 and row["settle"]
