"""The report section reads certify.json's payload and shows its numbers (and draws the curve)."""

from __future__ import annotations

import copy

from fortify.report.certify_section import section_certify
from fortify.report.doc import Document, Figure, Table, render_html, render_markdown
from fortify.report.fmt import pct_ci


def test_section_shows_the_payload_numbers_and_the_curve(tiny_payload, tmp_path):
    doc = Document("t")
    section_certify(doc, tiny_payload, "certify/certify.json", fig_dir=tmp_path)
    tables = [b for b in doc.blocks if isinstance(b, Table)]
    main = tables[0]
    assert len(main.rows) == len(tiny_payload["certified"])
    for row, c in zip(main.rows, tiny_payload["certified"], strict=True):
        assert row[2] == pct_ci(c)
    assert any("eps*sqrt(d)/2" in row[1] for row in main.rows)
    assert any("contains the L-inf" in row[1] for row in main.rows)
    per_class = tables[1]
    assert [r[0] for r in per_class.rows] == tiny_payload["data"]["classes"]
    figures = [b for b in doc.blocks if isinstance(b, Figure)]
    assert len(figures) == 1 and figures[0].path.stat().st_size > 1000
    md = render_markdown(doc, tmp_path)
    assert "Randomized smoothing" in md and "certify/certify.json" in md
    verdict = "PASS" if tiny_payload["sanity"][0]["passed"] else "FAIL"
    assert f"Sanity check {verdict}" in md
    assert "data:image/png;base64," in render_html(doc)


def test_a_failed_consistency_check_raises_an_alarm_and_no_fig_dir_means_no_figure(tiny_payload):
    payload = copy.deepcopy(tiny_payload)
    payload["sanity"][0]["passed"] = False
    doc = Document("t")
    section_certify(doc, payload, "certify.json")
    md = render_markdown(doc, figures_dir=None)  # type: ignore[arg-type]
    assert "Sanity check FAIL" in md and "WARNING" in md and "must not be trusted" in md
    assert not [b for b in doc.blocks if isinstance(b, Figure)]
