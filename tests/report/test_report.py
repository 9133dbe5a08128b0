from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fortify.errors import ConfigError
from fortify.fileio import read_json, write_json
from fortify.report import build_report, load_study_table, table1_summary

from .conftest import STAGE_ACCS, SYNTHETIC_IDENTITY


def cell(acc: float, n: int = 30) -> str:
    """Table 1's cell for an accuracy measured on n images: percent and its Wilson 95% interval."""
    from fortify.evaluation.stats import wilson_interval

    lo, hi = wilson_interval(round(acc * n), n)
    return f"{100 * acc:.2f} [{100 * lo:.1f}, {100 * hi:.1f}]"


def table1_rows(md: str) -> dict[tuple[str, str], list[str]]:
    """Parse Table 1 from the Markdown: (training, numbers) -> cells."""
    lines = md.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| Training | Numbers |"))
    header = [c.strip() for c in lines[start].strip("|").split("|")]
    rows = {}
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[(cells[0], cells[1])] = dict(zip(header, cells, strict=True))
    return rows


def test_report_files_and_table1_numbers(built_report):
    out = built_report
    assert out["markdown"].is_file() and out["html"].is_file()
    md = out["markdown"].read_text()
    rows = table1_rows(md)
    for stage, label in (("normal", "Normal training"), ("adversarial", "Adversarial training")):
        ours = rows[(label, "fortify")]
        accs = STAGE_ACCS[stage]
        for col, key in (
            ("Clean", "clean"),
            ("PGD", "pgd"),
            ("FGSM", "fgsm"),
            ("CW", "cw"),
            ("Combined", "combined"),
            ("Worst-case", "worst_case"),
            ("Strong", "strong"),
        ):
            assert ours[col] == cell(accs[key]), (stage, col)
    study = load_study_table()
    assert rows[("Normal training", "study")]["Clean"] == f"{study['rows']['normal']['clean']:.2f}"
    assert (
        rows[("Adversarial training", "study")]["Combined"]
        == f"{study['rows']['adversarial']['combined']:.2f}"
    )
    assert rows[("Normal training", "study")]["PGD"] == f"{study['rows']['normal']['pgd']:.2f}"
    # cells the study did not state are never invented
    assert rows[("Normal training", "study")]["Worst-case"] == "—"
    assert rows[("Adversarial training", "study")]["Strong"] == "—"
    assert "SYNTHETIC" not in md


def test_figures_written_and_linked(built_report):
    out = built_report
    names = {k for k in out if k not in ("markdown", "html")}
    assert {
        "confusion_normal",
        "confusion_adversarial",
        "accuracy_vs_eps",
        "training_normal",
        "examples_normal",
        "examples_adversarial",
    } <= names
    md = out["markdown"].read_text()
    # the curves are cumulative, and the caption says what a point then means
    assert "robust at an eps only if the attack failed at every eps up to it" in md
    for name in names:
        assert f"figures/{name}.png" in md
        assert out[name].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_html_is_self_contained(built_report):
    html = built_report["html"].read_text()
    refs = re.findall(r'(?:src|href)\s*=\s*["\']([^"\']*)', html, flags=re.I)
    assert refs, "expected embedded figures"
    assert all(r.startswith("data:image/png;base64,") for r in refs), [r[:40] for r in refs]
    assert "<link" not in html.lower() and "@import" not in html and "url(" not in html
    assert html.count("data:image/png;base64,") >= 6


def test_failed_sanity_check_is_marked_beside_headline(run_factory):
    md = build_report(run_factory(failing=True, transfer_fail=True))["markdown"].read_text()
    adv = table1_rows(md)[("Adversarial training", "fortify")]
    assert "FAIL" in adv["PGD"] and "FAIL" in adv["Strong"]
    assert adv["PGD"].startswith(f"{100 * STAGE_ACCS['adversarial']['pgd']:.2f}")
    assert "FAIL" not in adv["Clean"] and "FAIL" not in table1_rows(md)[("Normal training", "fortify")]["PGD"]
    assert "| FAIL |" in md and "acc rose from 0.40 to 0.55" in md
    # the transfer pair's check counts against its target model (adversarial), marking PGD there too
    assert "white-box 95% vs transferred 60%" in md
    assert len(re.findall(r"\[\d+\]", adv["PGD"])) == 2


def test_no_fail_marks_when_all_pass(built_report):
    md = built_report["markdown"].read_text()
    assert "FAIL" not in md


def test_synthetic_is_labelled(run_factory):
    out = build_report(run_factory(synthetic=True))
    assert "SYNTHETIC" in out["markdown"].read_text().split("\n", 5)[2]  # right under the title
    assert "SYNTHETIC" in out["html"].read_text()


def test_missing_stage_is_reported_not_invented(run_factory):
    out = build_report(run_factory(stages=("normal",), transfer=False))
    md = out["markdown"].read_text()
    assert "missing: adversarial stage" in md and "missing: transfer evaluation" in md
    assert table1_rows(md)[("Adversarial training", "fortify")]["Clean"].startswith("— (stage not run)")


def test_provenance_and_threat_model(built_report):
    md = built_report["markdown"].read_text()
    assert "pgd:eps=2/255,steps=20" in md and "max_l2=0.5" in md and "2/255" in md
    assert "normal/eval/results.json" in md and "study_table1.yaml" in md
    assert "image size 623x512 occurs only in class malignant" in md  # audit warning carried through
    assert "| malignant | 30 | 512x512 (20), 623x512 (10) |" in md
    assert "| exact-duplicate pairs | 2 |" in md
    assert "| test | 15 | 5 | 5 | 5 |" in md  # split sizes per class from split.json
    assert "up to 5 malignant test scans were classified as normal" in md


def test_rebuild_replaces_stale_figures(run_factory):
    root = run_factory()
    build_report(root)
    stale = root / "report" / "figures" / "old.png"
    stale.write_bytes(b"x")
    build_report(root)
    assert not stale.exists()


def test_not_a_run_dir(tmp_path):
    with pytest.raises(ConfigError):
        build_report(tmp_path)
    with pytest.raises(ConfigError):
        build_report(tmp_path / "nope")


@pytest.mark.skipif(shutil.which("chromium") is None, reason="headless Chromium not installed")
def test_html_renders_in_headless_chromium(built_report, tmp_path):
    """The page renders: the screenshot exists and is not blank (scripts/render_report.py does the work)."""
    from PIL import Image

    png = tmp_path / "shot.png"
    script = Path(__file__).resolve().parents[2] / "scripts" / "render_report.py"
    subprocess.run(
        [sys.executable, str(script), str(built_report["html"]), str(png), "--height", "1500"],
        check=True,
        timeout=120,
        capture_output=True,
    )
    with Image.open(png) as img:
        lo, hi = img.convert("L").getextrema()
    assert hi - lo > 100  # text and figures, not an empty page


def test_failed_rebuild_leaves_previous_report(run_factory, monkeypatch):
    from fortify.report import figures

    root = run_factory(stages=("normal",))
    build_report(root)
    md_before = (root / "report" / "report.md").read_text()
    figs_before = sorted(p.name for p in (root / "report" / "figures").iterdir())

    def broken(*args, **kwargs):
        raise RuntimeError("drawing failed")

    monkeypatch.setattr(figures, "eps_curves", broken)
    with pytest.raises(RuntimeError):
        build_report(root)
    assert (root / "report" / "report.md").read_text() == md_before
    assert sorted(p.name for p in (root / "report" / "figures").iterdir()) == figs_before
    assert [p.name for p in (root / "report").iterdir() if p.name.startswith(".")] == []  # no scratch left


def test_study_figures_named_beside_iqothnccd(run_factory):
    assert "Attacked scans (like the study's Fig. 3-6)" in build_report(run_factory())["markdown"].read_text()


@pytest.mark.parametrize(
    "identity, why",
    [
        (SYNTHETIC_IDENTITY, "synthetic phantom data"),
        (
            {"name": None, "reason": "class folders (cats, dogs) are not IQ-OTH/NCCD's"},
            "class folders (cats, dogs)",
        ),
        ({}, "audit.json does not identify the dataset"),  # an audit written before identification
    ],
)
def test_study_rows_only_beside_iqothnccd(run_factory, identity, why):
    run = run_factory(identity=identity or {"name": None})
    if not identity:
        audit = read_json(run / "audit.json")
        del audit["dataset"]["identity"]
        write_json(run / "audit.json", audit)
    md = build_report(run)["markdown"].read_text()
    rows = table1_rows(md)
    assert ("Normal training", "fortify") in rows and not any(k[1] == "study" for k in rows)
    assert "fortify beside the study" not in md and "study_table1.yaml" not in md
    assert "The study's rows are left out" in md and why in md
    assert "Attacked scans" in md and "Fig. 3-6" not in md  # the study's figures show its data only
    summary = table1_summary(run)
    assert [r[1] for r in summary.rows] == ["fortify", "fortify"]


def test_study_rows_beside_iqothnccd(run_factory):
    md = build_report(run_factory())["markdown"].read_text()
    assert ("Adversarial training", "study") in table1_rows(md) and "left out" not in md


@pytest.mark.skipif(shutil.which("chromium") is None, reason="headless Chromium not installed")
def test_every_table_fits_a_1400_px_screen(built_report):
    """Issue 34: Table 1 ran off the right edge at 1,400 and 1,920 px (its last column cut, a horizontal
    scrollbar). Measured in a real browser: no table may end past the viewport, and the page may not
    scroll sideways."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=shutil.which("chromium"), args=["--no-sandbox"])
        try:
            for width in (1400, 1920):
                page = browser.new_page(viewport={"width": width, "height": 900})
                page.goto(built_report["html"].resolve().as_uri())
                rights = page.evaluate(
                    "() => [...document.querySelectorAll('table')].map(t => t.getBoundingClientRect().right)"
                )
                assert rights and max(rights) <= width, (width, max(rights))
                assert page.evaluate("document.documentElement.scrollWidth") <= width
        finally:
            browser.close()
