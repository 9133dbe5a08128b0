"""What qualifies the headline numbers must stay in the report: intervals, the leakage sentinel and its
warning, the paired comparison, the upper-bound label, the new per-attack counters; and results.json
files written before these fields existed must still render."""

from __future__ import annotations

from fortify.fileio import read_json
from fortify.report import build_report, table1_summary

from .conftest import BUDGET_NOTE, STAGE_ACCS
from .test_report import cell, table1_rows


def test_table1_cells_carry_intervals_and_say_which(built_report):
    md = built_report["markdown"].read_text()
    rows = table1_rows(md)
    assert rows[("Normal training", "fortify")]["Clean"] == cell(STAGE_ACCS["normal"]["clean"])
    assert rows[("Adversarial training", "fortify")]["Worst-case"] == cell(
        STAGE_ACCS["adversarial"]["worst_case"]
    )
    assert "Wilson score 95% interval, one split" in md
    assert "| pgd | " + cell(STAGE_ACCS["normal"]["pgd"]) + " |" in md  # robustness scores table too
    assert "≤" not in md  # full strength: nothing is an upper bound


def test_sentinel_sits_beside_clean(built_report):
    md = built_report["markdown"].read_text()
    header = next(line for line in md.splitlines() if line.startswith("| Training | Numbers |"))
    cols = [c.strip() for c in header.strip("|").split("|")]
    assert cols.index("1-NN sentinel") == cols.index("Clean") + 1
    ours = table1_rows(md)[("Normal training", "fortify")]
    assert ours["1-NN sentinel"] == cell(0.5)
    assert table1_rows(md)[("Normal training", "study")]["1-NN sentinel"] == "—"
    assert "file-number neighbour" in md and "LEAKAGE" not in md and "WARNING" not in md


def test_sentinel_warning_is_said_once_before_any_number_and_marked_in_table1(run_factory):
    # Issue 34: four alarm boxes on the first screen (each model's, at the top and again after Table 1)
    # taught readers to skip them. Each model's alarm is said once, before any number; Table 1 marks the
    # sentinel cell it concerns.
    out = build_report(run_factory(sentinel_warning=True))
    md = out["markdown"].read_text()
    lines = md.splitlines()
    table1 = next(i for i, line in enumerate(lines) if line.startswith("## Table 1"))
    alarms = [i for i, line in enumerate(lines) if "WARNING: Normal training: LEAKAGE SUSPECTED" in line]
    assert len(alarms) == 1 and alarms[0] < table1
    assert "⚠ LEAKAGE" in table1_rows(md)[("Normal training", "fortify")]["1-NN sentinel"]
    html = out["html"].read_text()
    assert html.count('class="alarm"') == 2  # one per model, at the top
    assert "LEAKAGE SUSPECTED" in html


def test_comparison_section_shows_difference_interval_and_p(built_report):
    md = built_report["markdown"].read_text()
    comp = read_json(built_report["markdown"].parents[1] / "comparison.json")
    assert "## Paired comparison" in md and "Exact McNemar p" in md
    pgd = comp["metrics"]["pgd"]
    lo, hi = pgd["difference_ci"]
    diff = f"{100 * pgd['difference']:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}]"
    row = next(line for line in md.splitlines() if line.startswith("| pgd | 10.00 |"))
    assert diff in row and f"| {pgd['b01']} | {pgd['b10']} |" in row
    assert f"{pgd['p_value']:.1e}" in row  # 22 discordant images all one way: p < 0.001
    assert "Newcombe" in md


def test_upper_bounds_are_labelled(run_factory):
    md = build_report(run_factory(full_strength=False))["markdown"].read_text()
    adv = table1_rows(md)[("Adversarial training", "fortify")]
    for col in ("PGD", "FGSM", "CW", "Combined", "Worst-case", "Strong"):
        assert adv[col].startswith("≤"), col
    assert not adv["Clean"].startswith("≤") and not adv["1-NN sentinel"].startswith("≤")
    assert "≤ = upper bound" in md and BUDGET_NOTE in md
    assert "| pgd | ≤" in md  # robustness scores table
    assert "compare two upper bounds" in md  # the comparison says what its differences are


def test_cli_summary_keeps_upper_bound_and_fail_marks(run_factory):
    t = table1_summary(run_factory(full_strength=False, failing=True))
    adv = next(r for r in t.rows if r[:2] == ["Adversarial training", "fortify"])
    pgd = adv[t.header.index("PGD")]
    assert pgd.startswith("≤83.33 [") and "FAIL" in pgd


def test_per_attack_counters_shown_when_recorded(built_report):
    md = built_report["markdown"].read_text()
    header = next(line for line in md.splitlines() if line.startswith("| Attack | Accuracy % [95% CI] |"))
    assert "Gradient evaluations | Verdict mismatches | Re-attacked in fp32" in header
    pgd = next(
        line for line in md.splitlines() if line.startswith("| pgd | " + cell(STAGE_ACCS["normal"]["pgd"]))
    )
    assert pgd.endswith("| 600 | 2 | 3 |")
    strong = next(line for line in md.splitlines() if line.startswith("| strong | ") and "4500" in line)
    assert strong.endswith("| 4500 | — | — |")


def test_old_results_json_still_renders(run_factory):
    out = build_report(run_factory(old_format=True))
    md = out["markdown"].read_text()
    ours = table1_rows(md)[("Normal training", "fortify")]
    assert ours["Clean"] == f"{100 * STAGE_ACCS['normal']['clean']:.2f}"
    assert ours["1-NN sentinel"] == "—"
    assert "record no intervals" in md and "≤" not in md
    assert "missing: paired comparison" in md and "No paired comparison was recorded" in md
    assert "Verdict mismatches" not in md


def test_cli_summary_can_drop_intervals_but_not_marks(run_factory):
    t = table1_summary(run_factory(full_strength=False, failing=True, sentinel_warning=True), intervals=False)
    adv = next(r for r in t.rows if r[:2] == ["Adversarial training", "fortify"])
    assert adv[t.header.index("PGD")] == "≤83.33 ⚠ FAIL[1]"
    assert adv[t.header.index("Clean")] == "93.33"
    assert adv[t.header.index("1-NN sentinel")] == "93.33 ⚠ LEAKAGE"
