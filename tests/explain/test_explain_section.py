"""The report section renders explain.json's numbers (and only those) and brings its figures along."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from fortify.report.doc import Document, Figure, Table, render_html, render_markdown
from fortify.report.explain_section import section_explain


@pytest.mark.slow
def test_section_shows_the_payloads_numbers_and_figures(explained, tmp_path):
    payload, out = explained
    doc = Document("t")
    fig_dir = tmp_path / "figures"
    section_explain(doc, payload, "explain/explain.json", base_dir=out, fig_dir=fig_dir)
    md = render_markdown(doc, fig_dir)
    assert payload["verdict"] in md
    normal = payload["models"]["normal"]
    m = normal["top_overlap"]["all"]
    assert f"{m['mean']:.2f} [{m['ci'][0]:.2f}, {m['ci'][1]:.2f}] (n={m['n']})" in md
    d = payload["paired"]["rank_correlation"]["all"]
    assert f"{d['mean']:+.2f} [{d['ci'][0]:+.2f}, {d['ci'][1]:+.2f}]" in md
    for c in payload["data"]["classes"]:
        assert f"| {c} |" in md
    t = payload["transfer"]
    assert f"{100 * t['surrogate_clean']['accuracy']:.2f}" in md
    figures = [b for b in doc.blocks if isinstance(b, Figure)]
    assert {f.path.name for f in figures} == {"explain-normal.png", "explain-adversarial.png"}
    assert all(f.path.parent == fig_dir and f.path.is_file() for f in figures)
    assert "data:image/png;base64," in render_html(doc)
    tables = [b for b in doc.blocks if isinstance(b, Table)]
    assert any("Transferred from smallcnn %" in h for tb in tables for h in tb.header)


@pytest.mark.slow
def test_section_without_pair_transfer_or_figure_folder(explained):
    payload = copy.deepcopy(explained[0])
    payload["paired"], payload["verdict"], payload["transfer"] = None, None, None
    del payload["models"]["adversarial"]
    doc = Document("t")
    section_explain(doc, payload, "explain.json")
    assert not any(isinstance(b, Figure) for b in doc.blocks)
    md = render_markdown(doc, Path("."))
    assert "adversarial − normal" not in md and "Transfer across architectures" not in md
