"""`fortify pool` through the real entry point: per-fold results.json in, the K-fold table out."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "evaluation"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: the report package's fixtures
from report.patient_fixture import WRONG, patient_block  # noqa: E402
from test_compare_cv import LABELS, A, B, per_class_results  # noqa: E402


def write_folds(root: Path, correct: list[dict]) -> list[Path]:
    dirs = []
    for i, c in enumerate(correct):
        d = root / f"fold-{i}"
        d.mkdir(parents=True)
        paths = [f"f{i}/img{j}.jpg" for j in range(10)]
        (d / "results.json").write_text(json.dumps(per_class_results(paths, c, LABELS)))
        dirs.append(d)
    return dirs


def add_patient_blocks(dirs: list[Path], stage: str) -> None:
    """Each fold's results.json gains the fixture's patient block (fold i's patient ids prefixed f"f{i}/")."""
    for i, d in enumerate(dirs):
        results = json.loads((d / "results.json").read_text())
        results["patient"] = patient_block(stage, prefix=f"f{i}/")
        (d / "results.json").write_text(json.dumps(results))


def test_pool_prints_folds_mean_and_pooled_and_compares(cli, tmp_path, capsys):
    a = write_folds(tmp_path / "a", [A, B])
    write_folds(tmp_path / "b", [B, B])
    out = tmp_path / "pool.json"
    code = cli(["pool", *map(str, a), "--against", str(tmp_path / "b" / "fold-*"), "--out", str(out)])
    assert code == 0
    text = capsys.readouterr().out
    assert "fold-0" in text and "fold-1" in text
    assert "17/20 = 85.0" in text  # pooled clean: 9 + 8 of 20
    assert "recall, benign: clean 4/4" in text
    assert "sanity checks: all passed" in text
    assert "LEAKAGE" not in text  # no fold's sentinel warned
    assert "paired over 20 images" in text
    saved = json.loads(out.read_text())
    assert saved["pool"]["pooled"]["clean"]["correct"] == 17
    assert saved["comparison"]["metrics"]["clean"]["b10"] == 1  # image 8 of fold 0: right in a only


def test_pool_shows_a_fold_whose_model_does_not_beat_the_sentinel(cli, tmp_path, capsys):
    a = write_folds(tmp_path / "a", [A, B])
    results = json.loads((a[1] / "results.json").read_text())
    results["leakage_sentinel"]["warning"] = "LEAKAGE SUSPECTED: the model does not beat 1-NN"
    (a[1] / "results.json").write_text(json.dumps(results))
    assert cli(["pool", *map(str, a)]) == 0
    assert "fold-1: LEAKAGE SUSPECTED" in capsys.readouterr().out


def test_pool_errors_are_one_line_and_write_nothing(cli, tmp_path, capsys):
    a = write_folds(tmp_path / "a", [A])
    out = tmp_path / "pool.json"
    cases = [
        ([str(tmp_path / "nope")], "no such results.json"),
        ([str(a[0]), str(a[0])], "test image of both"),  # the same fold twice is not a K-fold study
        ([str(tmp_path / "a" / "x*")], "matches no file"),
    ]
    (tmp_path / "bad.json").write_text("{not json")
    cases.append(([str(tmp_path / "bad.json")], "not readable as JSON"))
    for args, message in cases:
        assert cli(["pool", *args, "--out", str(out)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], err
        assert not out.exists()
    (tmp_path / "file").write_text("")  # an --out under a file: no folder can be made there
    assert cli(["pool", str(a[0]), "--out", str(tmp_path / "file" / "pool.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot write" in err[0], err


def test_pool_against_other_attacks_compares_clean_only_and_says_why(cli, tmp_path, capsys):
    a = write_folds(tmp_path / "a", [A, B])
    b = write_folds(tmp_path / "b", [B, B])
    for d in b:  # the other model was attacked at 8/255: its robust numbers are another measurement
        results = json.loads((d / "results.json").read_text())
        results["attacks"]["pgd"]["spec"] = "pgd:eps=8/255,steps=20"
        (d / "results.json").write_text(json.dumps(results))
    out = tmp_path / "pool.json"
    assert cli(["pool", *map(str, a), "--against", str(tmp_path / "b" / "fold-*"), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "not compared: pgd (measured differently: against pgd:eps=8/255,steps=20; results" in text
    saved = json.loads(out.read_text())["comparison"]
    assert "clean" in saved["metrics"] and "pgd" not in saved["metrics"] and "pgd" in saved["not_compared"]


def test_pool_prints_the_pooled_patients_per_model(cli, tmp_path, capsys):
    """Issue 31's pooled patient figures: each fold's patients once, for the model and --against."""
    folds = {"a": write_folds(tmp_path / "a", [A, B]), "b": write_folds(tmp_path / "b", [B, B])}
    for stage, dirs in zip(("adversarial", "normal"), folds.values(), strict=True):
        add_patient_blocks(dirs, stage)
    assert cli(["pool", *map(str, folds["a"]), "--against", str(tmp_path / "b" / "fold-*")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any(line.startswith("patients, pooled over the folds") for line in lines)
    rows = {line.split()[0]: line for line in lines if line.split()[:1] in (["results"], ["against"])}
    n = 2 * 12  # 12 patients per fold (patient_fixture), 2 folds
    for name, stage in (("results", "adversarial"), ("against", "normal")):
        wrong = WRONG[stage]
        clean, joint = n - 2 * wrong["clean"], n - 2 * wrong["joint"]
        worst = n - 2 * max(wrong.values())
        assert rows[name].split()[1] == str(n), rows[name]
        assert f"{clean}/{n}" in rows[name] and f"{joint}/{n}" in rows[name] and f"{worst}/{n}" in rows[name]
    # the paired comparison over patients (ids match across the two pools): discordant counts per outcome,
    # from the fixture's nested wrong sets: "only against" = wrong for results only, and the reverse
    title = next(
        i for i, line in enumerate(lines) if line.startswith(f"paired over {n} patients (rule mean)")
    )
    paired = {
        line.split()[0]: line.split() for line in lines[title:] if line.split()[:1] in (["clean"], ["joint"])
    }
    for key in ("clean", "joint"):
        w_results, w_against = WRONG["adversarial"][key], WRONG["normal"][key]
        only_against, only_results = 2 * max(0, w_results - w_against), 2 * max(0, w_against - w_results)
        assert paired[key][-3:-1] == [str(only_against), str(only_results)], (key, paired[key])


def test_pool_prints_each_class_recall_over_the_pooled_patients(cli, tmp_path, capsys):
    """Per-class patient recall (clean, joint, worst case) and malignant patients called normal, summed
    over the folds; expected counts come from the fixture's decisions, not from the code under test."""
    from report.patient_fixture import FALL_ORDER, LABELS, WRONG_AS

    dirs = write_folds(tmp_path, [A, B])
    add_patient_blocks(dirs, "adversarial")
    assert cli(["pool", *map(str, dirs)]) == 0
    lines = capsys.readouterr().out.splitlines()
    wrong = WRONG["adversarial"]
    cases = {"clean": wrong["clean"], "joint": wrong["joint"], "worst case": max(wrong.values())}
    for cls in ("benign", "malignant", "normal"):
        line = next(x for x in lines if x.startswith(f"patient recall (results), {cls}:"))
        n = 2 * LABELS.count(cls)
        for key, w in cases.items():
            fallen = sum(LABELS[i] == cls for i in FALL_ORDER[:w])
            assert f"{key} {n - 2 * fallen}/{n} [" in line, (key, line)
    m2n = next(x for x in lines if x.startswith("malignant patients called normal (results):"))
    assert WRONG_AS["malignant"] == "normal"  # so every fallen malignant patient is one called normal
    for key in ("clean", "joint"):
        fallen = sum(LABELS[i] == "malignant" for i in FALL_ORDER[: wrong[key]])
        assert f"{key} {2 * fallen}" in m2n, (key, m2n)


def test_pool_prints_each_folds_patients(cli, tmp_path, capsys):
    """The per-fold patient table: each outcome's correct patients in each fold, from the fixture's wrong
    counts (fold 1 gets one more wrong joint patient, so a column swap or a pooled count shows)."""
    dirs = write_folds(tmp_path, [A, B])
    add_patient_blocks(dirs, "adversarial")
    wrong = dict(WRONG["adversarial"])
    results = json.loads((dirs[1] / "results.json").read_text())
    one_more = {**wrong, "joint": wrong["joint"] + 1}
    results["patient"] = patient_block("adversarial", prefix="f1/", wrong=one_more)
    (dirs[1] / "results.json").write_text(json.dumps(results))
    out = tmp_path / "pool.json"
    assert cli(["pool", *map(str, dirs), "--out", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    start = next(i for i, x in enumerate(lines) if x.startswith("patients (results) per fold"))
    rows = {x.split()[0]: x.split() for x in lines[start:] if x.split()[:1] in (["clean"], ["joint"])}
    clean = 12 - wrong["clean"]
    assert rows["clean"][1:] == [f"{clean}/12", "=", f"{100 * clean / 12:.1f}"] * 2
    joint = [12 - wrong["joint"], 11 - wrong["joint"]]
    assert rows["joint"][1::3] == [f"{c}/12" for c in joint], rows["joint"]
    saved = json.loads(out.read_text())["pool"]["patient"]
    assert saved["correct_per_fold"]["joint"] == joint
    assert saved["correct_per_fold"]["worst_case"] == [12 - max(wrong.values()), 11 - wrong["joint"]]
