"""The pipeline end to end on the phantom with a shrunken smoke profile, then resume / refusal behaviour."""

from __future__ import annotations

import os

import pytest

from fortify.errors import ConfigError, DataError, SpecError
from fortify.fileio import read_json, read_yaml, write_yaml
from fortify.pipeline import reproduce
from fortify.pipeline.run_config import prepare_out

STUDY = ["normal", "normal/eval", "adversarial", "adversarial/eval", "transfer", "compare", "report"]
STAGES = ["audit", "split", *STUDY]
# The smoke profile made smaller still, so the whole pipeline runs in seconds in the unit suite.
TINY = {
    "image_size": 16,
    "limit_per_class": 4,
    "evaluate.limit": 12,
    "evaluate.pgd_steps": 2,
    "evaluate.strong_steps": 1,
    "evaluate.square_queries": 5,
    "evaluate.l2_steps": 1,
    "evaluate.cw_steps": 2,
    "evaluate.cw_binary_steps": 1,
    "evaluate.eps_curve": [0, "8/255"],
    "evaluate.curve_attacks": ["pgd:steps=2"],
    "evaluate.sanity_restarts": 1,
    "extras": [],  # explain/detect/certify have their own pipeline test (test_extras.py)
}
DATA = "phantom:n=12"


def run(out, statuses=None, **kw):
    log = statuses if statuses is not None else []
    kw.setdefault("overrides", TINY)
    return reproduce(
        DATA, out, profile="smoke", progress=False, on_stage=lambda n, s: log.append((n, s)), **kw
    )


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("pipeline") / "run"
    statuses: list = []
    run(out, statuses)
    return out, statuses


def test_layout_and_config(tiny_run):
    out, statuses = tiny_run
    assert [n for n, s in statuses if s == "done"] == STAGES
    for rel in [
        "config.yaml",
        "audit.json",
        "split.json",
        "transfer.json",
        "comparison.json",
        "report/report.md",
        "report/report.html",
        "normal/config.yaml",
        "normal/metrics.jsonl",
        "normal/best.safetensors",
        "normal/best.json",
        "normal/last.safetensors",
        "normal/eval/results.json",
        "adversarial/best.safetensors",
        "adversarial/eval/results.json",
        "adversarial/eval/examples.safetensors",
    ]:
        assert (out / rel).is_file(), rel
    cfg = read_yaml(out / "config.yaml")
    assert cfg["profile"] == "smoke" and cfg["defense"] == "mixed" and cfg["data"] == DATA
    assert cfg["image_size"] == 16 and cfg["overrides"]["evaluate.limit"] == 12  # every parameter recorded
    assert read_yaml(out / "adversarial" / "config.yaml")["mode"] == "mixed"
    assert read_yaml(out / "normal" / "config.yaml")["mode"] == "standard"
    pairs = read_json(out / "transfer.json")["pairs"]
    assert {(p["source"], p["target"]) for p in pairs} == {
        ("normal", "adversarial"),
        ("adversarial", "normal"),
    }
    assert "SYNTHETIC" in (out / "report" / "report.md").read_text()


def test_time_budget_is_written_with_first_and_measured_figures(tiny_run):
    out, _ = tiny_run
    est = read_json(out / "estimate.json")
    names = [s["name"] for s in est["stages"]]
    assert names == STAGES
    assert all(s["measured"] is not None and s["seconds"] > 0 for s in est["stages"])
    assert est["first_estimate_seconds"] > 0 and est["machine"]["gradient"] > 0
    # the current estimate of a finished run is what it took, stage by stage
    assert est["current_estimate_seconds"] == pytest.approx(sum(s["measured"] for s in est["stages"]))


def test_resume_skips_every_finished_stage(tiny_run):
    out, _ = tiny_run
    estimate = (out / "estimate.json").read_text()
    statuses: list = []
    run(out, statuses, resume=True)
    assert statuses == [(n, "skipped (up to date)") for n in STAGES]
    assert (out / "estimate.json").read_text() == estimate  # nothing to do: no machine measurement


def test_resume_redoes_only_a_stage_whose_output_is_gone(tiny_run):
    out, _ = tiny_run
    (out / "report" / "report.html").unlink()
    statuses: list = []
    run(out, statuses, resume=True)
    assert [n for n, s in statuses if s == "done"] == ["report"]
    assert (out / "report" / "report.html").is_file()


def test_interrupted_transfer_resumes_from_its_units(tiny_run):
    """As if killed after the transfer's units but before transfer.json and its record: --resume runs the
    stage again and reuses every unit kept under transfer-units/, recomputing none."""
    out, _ = tiny_run
    first = read_json(out / "transfer.json")["pairs"]
    assert sorted(p.name for p in (out / "transfer-units").iterdir()) == [
        "adversarial-to-normal",
        "normal-to-adversarial",
    ]
    (out / "transfer.json").unlink()
    (out / "transfer.stage.json").unlink()
    statuses: list = []
    run(out, statuses, resume=True)
    assert dict(statuses)["transfer"] == "done"
    pairs = read_json(out / "transfer.json")["pairs"]
    for before, after in zip(first, pairs, strict=True):
        assert after["units"]["count"] > 0 and after["units"]["reused"] == after["units"]["count"]
        assert before["units"]["reused"] == 0  # the first run computed them
        for key in ("transfer_accuracy", "white_box_accuracy", "clean_accuracy", "source_accuracy"):
            assert after[key] == before[key], key


def test_training_record_lost_resumes_from_last_checkpoint(tiny_run):
    """As if killed after training's last checkpoint but before its record: --resume continues from last.*
    (nothing left to train), keeps the checkpoint, and the evaluation of it stays valid."""
    out, _ = tiny_run
    (out / "normal" / "stage.json").unlink()
    best = (out / "normal" / "best.safetensors").read_bytes()
    statuses: list = []
    run(out, statuses, resume=True)
    status = dict(statuses)
    assert status["normal"] == "done" and status["normal/eval"] == "skipped (up to date)"
    assert (out / "normal" / "best.safetensors").read_bytes() == best
    assert (
        len((out / "normal" / "metrics.jsonl").read_text().splitlines()) == 1
    )  # the one epoch, not retrained


def test_existing_run_refused_without_resume_and_other_config_refused(tiny_run):
    out, _ = tiny_run
    before = (out / "config.yaml").stat().st_mtime_ns
    with pytest.raises(ConfigError, match="--resume"):
        run(out)
    with pytest.raises(ConfigError, match="another run"):
        run(out, resume=True, overrides={**TINY, "train.epochs": 2})
    with pytest.raises(ConfigError, match="another run"):
        run(out, resume=True, defense="pgd")
    assert (out / "config.yaml").stat().st_mtime_ns == before  # nothing rewritten


def test_non_run_dir_refused_and_force_wipes(tmp_path):
    out = tmp_path / "notes"
    out.mkdir()
    (out / "mine.txt").write_text("keep")
    with pytest.raises(ConfigError, match="no fortify run"):
        run(out)
    with pytest.raises(ConfigError, match="no fortify run"):
        run(out, resume=True)
    assert (out / "mine.txt").read_text() == "keep"
    prepare_out(out, {"format": "fortify-run/1"}, resume=False, force=True)
    assert list(out.iterdir()) == []


def test_force_refuses_to_wipe_the_current_folder(tmp_path, monkeypatch):
    (tmp_path / "x").write_text("x")
    write_yaml(tmp_path / "config.yaml", {"format": "fortify-run/1"})
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="refusing"):
        prepare_out(tmp_path, {}, resume=False, force=True)
    assert (tmp_path / "x").exists()


@pytest.mark.parametrize(
    "kw, error, match",
    [
        ({"defense": "adamw"}, ConfigError, "unknown defense"),
        ({"profile": "huge"}, ConfigError, "unknown profile"),
        ({"device": "tpu"}, ConfigError, "device"),
        ({"overrides": {"train.epochs": 0}}, ConfigError, "epochs"),
        ({"overrides": {"evaluate.attacks": ["pgd:eps=2/255,stepz=3"]}}, SpecError, "stepz"),
    ],
)
def test_bad_input_writes_nothing(tmp_path, kw, error, match):
    out = tmp_path / "run"
    kw = {"profile": "smoke", **kw}
    with pytest.raises(error, match=match):
        reproduce(DATA, out, progress=False, **kw)
    assert not out.exists()


def test_missing_data_path_writes_nothing(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(DataError, match="not found"):
        reproduce(tmp_path / "nope", out, profile="smoke", progress=False)
    assert not out.exists()


@pytest.mark.real_data
def test_smoke_cross_validation_on_real_data(real_data_path, cache_dir, tmp_path, monkeypatch):
    """CI's end-to-end check on IQ-OTH/NCCD: `fortify reproduce --profile smoke --folds 3` as shipped
    (its accuracies mean nothing; the plumbing, the grouping and the bookkeeping are what is checked)."""
    monkeypatch.setenv("FORTIFY_CACHE", str(cache_dir))
    out = reproduce(
        real_data_path, tmp_path / "run", profile="smoke", progress=False, folds=3, overrides={"extras": []}
    )
    audit = read_json(out / "audit.json")
    assert audit["counts"] == {"benign": 120, "malignant": 561, "normal": 416}
    assert audit["scans"]["applied"] == "scan"
    tested = []
    patients_per_fold: dict[str, list[int]] = {"normal": [], "adversarial": []}
    for i in range(3):
        fold = out / f"fold-{i}"
        split = read_json(fold / "split.json")
        assert split["grouping"]["applied"] == "scan" and split["sentinel"]["neighbour_share"] < 0.05
        tested += [e["path"] for e in split["splits"]["test"]]
        assert "SYNTHETIC" not in (fold / "report" / "report.md").read_text()
        for stage in ("normal", "adversarial"):
            r = read_json(fold / stage / "eval" / "results.json")
            assert r["data"]["synthetic"] is False
            assert r["data"]["classes"] == ["benign", "malignant", "normal"]
            assert os.path.samefile(r["data"]["root"], real_data_path)
            # the sentinel is scored on the model's images (smoke's --limit), the split's record beside it
            assert r["leakage_sentinel"]["split"]["accuracy"] == split["sentinel"]["accuracy"]
            assert r["leakage_sentinel"]["n_test"] == r["clean"]["n"]
            assert r["budget"]["full_strength"] is False  # smoke cuts every budget: upper bounds
            assert r["clean"]["accuracy_ci"][0] <= r["clean"]["accuracy"] <= r["clean"]["accuracy_ci"][1]
            checks = {c["check"] for c in r["sanity"]}
            assert any("gradient-free" in c for c in checks) and any("unbounded CW" in c for c in checks)
            assert all("verdict_mismatches" in a for a in r["attacks"].values())
            # patient level: the evaluated slices' scans, named as the split names them
            group_of = {e["path"]: e["group"] for e in split["splits"]["test"]}
            assert r["per_sample"]["groups"] == [group_of[p] for p in r["per_sample"]["paths"]]
            patients = r["patient"]
            ids = [p["id"] for p in patients["per_patient"]]
            assert sorted(ids) == sorted(set(r["per_sample"]["groups"])) and patients["n"] == len(ids)
            assert sum(p["n_slices"] for p in patients["per_patient"]) == r["clean"]["n"]
            assert patients["joint"] is not None and patients["clean"]["n"] == len(ids)
            patients_per_fold[stage].append(len(ids))
    assert len(tested) == len(set(tested)) == 1097 - 42  # every unique image tested exactly once
    summary = read_json(out / "cv" / "summary.json")
    assert summary["k"] == 3 and len(summary["summary"]["sentinel"]["accuracy"]["values"]) == 3
    for stage in ("normal", "adversarial"):  # pooled over patients, each tested in one fold
        assert summary["patient"][stage]["n"] == sum(patients_per_fold[stage])
    assert (out / "cv" / "report.html").is_file()


def test_cross_validation_runs_the_study_per_fold_and_summarises(tmp_path):
    out = tmp_path / "cv"
    statuses: list = []
    run(out, statuses, folds=2)
    done = [n for n, st in statuses if st == "done"]
    assert done == ["audit", "folds", *[f"fold-{i}/{s}" for i in range(2) for s in STUDY], "cv"]
    assert read_yaml(out / "config.yaml")["folds"] == 2
    tested = []
    for i in range(2):
        split = read_json(out / f"fold-{i}" / "split.json")
        assert split["fold"] == {"index": i, "k": 2, "val_fraction": split["fold"]["val_fraction"]}
        assert split["sentinel"]["accuracy"] is not None
        tested += [e["path"] for e in split["splits"]["test"]]
        for rel in (
            "normal/eval/results.json",
            "adversarial/eval/results.json",
            "comparison.json",
            "report/report.md",
        ):
            assert (out / f"fold-{i}" / rel).is_file(), rel
    assert len(tested) == len(set(tested))  # no image is tested in two folds
    summary = read_json(out / "cv" / "summary.json")
    assert summary["k"] == 2 and len(summary["folds"]) == 2
    clean = summary["summary"]["normal"]["clean"]
    assert len(clean["values"]) == 2 and clean["mean"] == pytest.approx(sum(clean["values"]) / 2)
    assert (out / "cv" / "report.md").is_file() and (out / "cv" / "report.html").is_file()
    # resume: every stage is up to date
    again: list = []
    run(out, again, folds=2, resume=True)
    assert all(st == "skipped (up to date)" for _, st in again)
    # another K is another run
    with pytest.raises(ConfigError, match="folds"):
        run(out, [], folds=3, resume=True)
    with pytest.raises(ConfigError, match="folds"):
        run(tmp_path / "bad", [], folds=1)


def test_one_fold_per_machine_on_a_shared_run_directory(tmp_path):
    """`--fold i --resume` runs fold i alone; the summary covers the finished folds and names the rest,
    and the last fold to finish completes it (identical to running both folds in one go)."""
    out = tmp_path / "cv"
    first: list = []
    run(out, first, folds=2, fold=1, resume=True)
    done = [n for n, st in first if st == "done"]
    assert done == ["audit", "folds", *[f"fold-1/{s}" for s in STUDY], "cv"]
    assert not (out / "fold-0" / "normal").exists()
    partial = read_json(out / "cv" / "summary.json")
    assert partial["missing_folds"] == [0] and [f["fold"] for f in partial["folds"]] == [1]
    assert any("folds 0 of 2 not finished" in w for w in partial["warnings"])
    second: list = []
    run(out, second, folds=2, fold=0, resume=True)
    assert [n for n, st in second if st == "done"] == [*[f"fold-0/{s}" for s in STUDY], "cv"]
    summary = read_json(out / "cv" / "summary.json")
    assert summary["missing_folds"] == [] and [f["fold"] for f in summary["folds"]] == [0, 1]
    with pytest.raises(ConfigError, match="--fold"):
        run(tmp_path / "bad", [], folds=2, fold=2)


def test_a_record_from_before_an_option_existed_still_counts_when_the_option_is_at_its_default(tiny_run):
    """An upgrade that adds a TrainConfig option (at the default that keeps the old behaviour) must not
    retrain finished models: rewrite the normal stage's record as the older version wrote it, without
    that key and with the fingerprint computed without it, and resume."""
    from fortify.pipeline.fingerprint import fingerprint, write_record

    out, _ = tiny_run
    record_path = out / "normal" / "stage.json"
    record = read_json(record_path)
    old_config = {k: v for k, v in record["config"].items() if k != "awp_gamma"}
    assert len(old_config) == len(record["config"]) - 1
    old_fp = fingerprint("normal", old_config, record["inputs"])
    write_record(record_path, "normal", old_fp, old_config, record["inputs"], 1.0, 1.0)
    statuses: list = []
    run(out, statuses, resume=True)
    assert statuses == [(n, "skipped (up to date)") for n in STAGES]
    # the rule itself: only keys the record lacks, and only at their defaults
    from fortify.pipeline.fingerprint import without_new_defaults

    new = {**old_config, "awp_gamma": 0.0}
    assert without_new_defaults(new, old_config, {"awp_gamma": 0.0}) == old_config
    assert without_new_defaults({**old_config, "awp_gamma": 0.01}, old_config, {"awp_gamma": 0.0}) is None
    assert without_new_defaults(new, old_config, {}) is None  # no known default: not assumed
    assert without_new_defaults(old_config, old_config, {"awp_gamma": 0.0}) is None  # nothing new
    assert without_new_defaults(new, None, {"awp_gamma": 0.0}) is None  # no record

    # a record that also hashed what training no longer counts: the data folder's file times and the
    # split's path (in a run directory since moved)
    old_inputs = {**record["inputs"], "data": "file times of another copy"}
    older_config = {**old_config, "split": "/elsewhere/run/split.json"}
    old_fp = fingerprint("normal", older_config, old_inputs)
    write_record(record_path, "normal", old_fp, older_config, old_inputs, 1.0, 1.0)
    statuses = []
    run(out, statuses, resume=True)
    assert statuses == [(n, "skipped (up to date)") for n in STAGES]
    from fortify.pipeline.fingerprint import with_retired

    assert with_retired({"split": "s"}, old_inputs | {"split": "s"}, ("data",)) == {
        "split": "s",
        "data": "file times of another copy",
    }
    assert with_retired({"split": "s"}, {"split": "s"}, ("data",)) is None  # nothing retired


def test_a_copy_of_the_same_data_keeps_finished_models_and_changed_data_retrains(tmp_path, monkeypatch):
    """File times change whenever a dataset is copied or unpacked again; the content is what counts.
    With every file's time moved, only the cheap audit and split stages rerun (the split comes out the
    same) and the models and their evaluations are kept; with one image's pixels changed, the split
    manifest pins other hashes and the models are trained again."""
    import numpy as np
    from PIL import Image

    monkeypatch.setenv("FORTIFY_CACHE", str(tmp_path / "cache"))
    data = tmp_path / "ds"
    for c, name in enumerate(("Bengin cases", "Malignant cases", "Normal cases")):
        for i in range(6):
            path = data / name / f"{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            pixels = np.random.default_rng([c, i, 3]).integers(0, 256, (16, 16), dtype=np.uint8)
            Image.fromarray(pixels).save(path)

    def go(statuses, **kw):
        return reproduce(
            str(data),
            tmp_path / "run",
            profile="smoke",
            progress=False,
            overrides=TINY,
            on_stage=lambda n, s: statuses.append((n, s)),
            **kw,
        )

    first: list = []
    go(first)
    assert [n for n, s in first if s == "done"] == STAGES
    split_before = (tmp_path / "run" / "split.json").read_bytes()
    for path in data.rglob("*.png"):
        os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**12))
    again: list = []
    go(again, resume=True)
    assert [n for n, s in again if s == "done"] == ["audit", "split"]
    assert (tmp_path / "run" / "split.json").read_bytes() == split_before
    assert all(s == "skipped (up to date)" for n, s in again if n in STUDY)

    # a run directory that moved (copied to another machine or folder) resumes where it stopped
    import shutil

    shutil.copytree(tmp_path / "run", tmp_path / "moved")
    moved: list = []
    reproduce(
        str(data),
        tmp_path / "moved",
        profile="smoke",
        progress=False,
        overrides=TINY,
        resume=True,
        on_stage=lambda n, s: moved.append((n, s)),
    )
    assert moved == [(n, "skipped (up to date)") for n in STAGES]

    victim = data / "Normal cases" / "0.png"
    pixels = np.asarray(Image.open(victim)).copy()
    pixels[0, 0] ^= 0xFF
    Image.fromarray(pixels).save(victim)
    changed: list = []
    go(changed, resume=True)
    assert ("normal", "done") in changed and ("normal/eval", "done") in changed


def test_the_defence_comes_from_the_profile_unless_given(tmp_path):
    from fortify.pipeline.reproduce import _plan

    def planned(defense, overrides):
        _, stages, cfg = _plan(
            DATA, tmp_path, "smoke", defense, False, {**TINY, **overrides}, "cpu", "fp32", None
        )
        (adv,) = [s for s in stages if s.name == "adversarial"]
        assert adv.config["mode"] == cfg["defense"]  # what config.yaml says is what trains
        return cfg["defense"]

    assert planned(None, {}) == "mixed"  # smoke, like quick, runs the study's recipe
    assert planned(None, {"defense": "pgd"}) == "pgd"
    assert planned("trades", {"defense": "pgd"}) == "trades"  # --defense beats the profile
    with pytest.raises(ConfigError, match="unknown defense"):
        planned("pgdd", {})
