"""Issue 32: the explorer in a real browser (headless Chromium from the system's package manager, driven
by Playwright for Python; no browser download). Opened from file://, it must list every test image, filter
by class to exactly that class's count, open an image's detail with every attack's prediction, move with
the keyboard, request nothing from the network, and draw a page that is not blank."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import pytest
from safetensors import safe_open

from fortify.fileio import read_json
from fortify.report.explorer import build_explorer

from .test_explorer_data import evaluate_tiny, study_run

CHROMIUM = shutil.which("chromium")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium not installed")


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def explored(tmp_path_factory) -> tuple[Path, dict]:
    """A reproduce-like run of the tiny phantom evaluation (both models, patients) and its explorer."""
    evaluated = evaluate_tiny(tmp_path_factory)
    run = study_run(tmp_path_factory.mktemp("explorer-run"), evaluated, groups=True)
    index = build_explorer(run)
    with safe_open(str(evaluated / "adversarial.safetensors"), framework="pt") as f:
        labels = f.get_tensor("labels").tolist()
    return index, {"results": read_json(evaluated / "results.json"), "labels": labels}


@pytest.fixture(scope="module")
def explored_patients(tmp_path_factory) -> tuple[Path, dict]:
    """The same run with the evaluation's own patients (its manifest's scans) and its patient block."""
    evaluated = evaluate_tiny(tmp_path_factory)
    run = study_run(tmp_path_factory.mktemp("explorer-patients"), evaluated)
    return build_explorer(run), read_json(evaluated / "results.json")


@pytest.fixture
def page(browser, explored):
    """The explorer opened from disk; every request the page makes is recorded."""
    page = browser.new_page(viewport={"width": 1400, "height": 700})
    page.requests, page.errors = [], []
    page.on("request", lambda r: page.requests.append(r.url))
    page.on("pageerror", lambda e: page.errors.append(str(e)))
    page.goto(explored[0].resolve().as_uri())
    page.wait_for_selector(".row.item")
    yield page
    assert page.errors == []
    page.close()


def _count(page) -> tuple[int, int]:
    shown, _, total, _ = page.inner_text("#count").split()
    return int(shown), int(total)


def _rendered(page) -> set[int]:
    return set(page.eval_on_selector_all(".row.item", "rows => rows.map(r => +r.dataset.i)"))


def test_lists_every_test_image(page, explored):
    n = explored[1]["results"]["data"]["n"]
    assert _count(page) == (n, n)
    seen = _rendered(page)
    for _ in range(n):  # the list draws only what is on screen: scroll through it
        page.eval_on_selector("#list", "l => { l.scrollTop += 300; l.dispatchEvent(new Event('scroll')); }")
        page.wait_for_timeout(30)
        seen |= _rendered(page)
    assert seen == set(range(n))


def test_class_filter_shows_exactly_that_class(page, explored):
    labels, classes = explored[1]["labels"], explored[1]["results"]["data"]["classes"]
    for k, name in enumerate(classes):
        page.select_option("#f-class", str(k))
        assert _count(page)[0] == labels.count(k)
        chips = page.eval_on_selector_all(".row.item .chip", "c => c.map(x => x.textContent)")
        assert chips and set(chips) == {name}  # each row's true class
        assert {labels[i] for i in _rendered(page)} == {k}


def test_outcome_and_patient_filters(page, explored):
    correct = explored[1]["results"]["per_sample"]["correct"]
    page.select_option("#f-outcome", "cleanwrong")
    assert _count(page)[0] == correct["clean"].count(0)
    page.select_option("#f-outcome", "all")
    page.fill("#f-patient", "patient-1")
    assert _count(page)[0] == 2  # the fixture puts two images per patient
    assert _rendered(page) == {2, 3}


def test_detail_shows_every_attacks_prediction(page, explored):
    attacks = list(explored[1]["results"]["attacks"])
    page.click(".row.item[data-i='0']")
    assert page.is_visible("#detail")
    first_cells = "#d-body table.preds tr td:first-child"
    rows = page.eval_on_selector_all(first_cells, "c => c.map(x => x.textContent)")
    assert rows == ["clean", *attacks]
    headers = page.eval_on_selector_all("#d-body table.preds th", "c => c.map(x => x.textContent)")
    assert headers == ["input", "normal model", "adversarial model"]  # both models side by side
    assert page.inner_text("#d-title").startswith("#1 ")
    page.keyboard.press("j")  # the next image, detail still open
    assert page.inner_text("#d-title").startswith("#2 ")
    page.keyboard.press("Escape")
    assert not page.is_visible("#detail")


def test_keyboard_opens_the_selected_image(page):
    page.keyboard.press("j")
    page.keyboard.press("ArrowDown")
    page.keyboard.press("k")
    page.keyboard.press("Enter")
    assert page.is_visible("#detail") and page.inner_text("#d-title").startswith("#2 ")


def test_side_by_side_shows_both_models(page, explored):
    page.check("#f-side")
    blocks = page.eval_on_selector_all(".row.item[data-i='0'] .model-block", "b => b.length")
    assert blocks == 2


def test_no_network_request(page):
    page.click(".row.item[data-i='0']")
    page.wait_for_timeout(100)
    assert page.requests and all(url.startswith("file://") for url in page.requests), page.requests


def test_screenshot_is_not_blank(page):
    from PIL import Image, ImageStat

    page.wait_for_function("[...document.images].every(i => i.complete && i.naturalWidth > 0)")
    shot = Image.open(io.BytesIO(page.screenshot())).convert("L")
    assert ImageStat.Stat(shot).var[0] > 500  # scans, text and colour, not an empty page


def test_patient_outcome_filter_and_detail(browser, explored_patients):
    """Issue 31 in the explorer: each image's patient, filtered by its patient-level outcome, and the detail
    with the patient's clean decision, the joint attack and the slices it changed."""
    index, results = explored_patients
    groups = results["per_sample"]["groups"]
    per = {p["id"]: p for p in results["patient"]["per_patient"]}
    assert set(groups) == set(per)  # the smoke evaluation writes the patient block for real
    page = browser.new_page(viewport={"width": 1400, "height": 700})
    page.goto(index.resolve().as_uri())
    page.wait_for_selector(".row.item")
    picks = {
        "wrong": lambda p: not p["clean_correct"],
        "fooled": lambda p: p["clean_correct"] and not p["robust"]["worst_case"],
        "robust": lambda p: p["clean_correct"] and p["robust"]["worst_case"],
        "joint": lambda p: p["clean_correct"] and not p["robust"]["joint"],
    }
    for value, pick in picks.items():
        page.select_option("#f-poutcome", value)
        assert _count(page)[0] == sum(bool(pick(per[g])) for g in groups), value
    page.select_option("#f-poutcome", "all")
    page.click(".row.item[data-i='0']")
    p = per[groups[0]]
    text = page.inner_text("#d-body")
    assert f"slices changed by the joint attack: {p['slices_changed']} of {p['n_slices']}" in text
    assert f"clean {p['clean_pred']} ({'right' if p['clean_correct'] else 'wrong'})" in text
    page.close()
