"""`fortify audit` / `fortify split` through the real CLI entry point, including every bad input."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fortify.cli import main


def _png(path: Path, pixels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


def _folder(root: Path, spec: dict[str, int]) -> Path:
    for c, (name, n) in enumerate(spec.items()):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            _png(
                root / name / f"{i}.png",
                np.random.default_rng([c, i]).integers(0, 256, (24, 24), dtype=np.uint8),
            )
    return root


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    out, err = capsys.readouterr()
    return int(exc.value.code or 0), out, err


@pytest.fixture(autouse=True)
def _private_cache(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("FORTIFY_CACHE", str(tmp_path / "cache"))


def _bad_missing(tmp: Path) -> Path:
    return tmp / "does-not-exist"


def _bad_flat(tmp: Path) -> Path:
    _png(tmp / "flat" / "x.png", np.zeros((8, 8), np.uint8))
    return tmp / "flat"


def _bad_empty_class(tmp: Path) -> Path:
    root = _folder(tmp / "ds", {"a": 3, "b": 3})
    (root / "c").mkdir()
    return root


def _bad_single_class(tmp: Path) -> Path:
    return _folder(tmp / "ds", {"normal cases": 4})


def _bad_only_corrupt(tmp: Path) -> Path:
    root = _folder(tmp / "ds", {"a": 10, "b": 10})
    (root / "c").mkdir()
    (root / "c" / "only.jpg").write_bytes(b"\xff\xd8\xff\xe0 corrupt")
    return root


def _bad_mostly_truncated(tmp: Path) -> Path:
    root = _folder(tmp / "ds", {"a": 2, "b": 2})
    good = (root / "a" / "0.png").read_bytes()
    for i in range(3):
        (root / "b" / f"cut{i}.png").write_bytes(good[: len(good) // 2])
    return root


BAD_INPUTS = {
    "missing path": (_bad_missing, "does not exist"),
    "no class subfolders": (_bad_flat, "no class subfolders"),
    "empty class": (_bad_empty_class, "has no images"),
    "single class": (_bad_single_class, "only one class"),
    "class of only corrupt jpegs": (_bad_only_corrupt, "no readable images"),
    "mostly truncated files": (_bad_mostly_truncated, "unreadable"),
}


@pytest.mark.parametrize("command", ["audit", "split"])
@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_one_line_error_no_output(case: str, command: str, tmp_path: Path, capsys) -> None:
    make, message = BAD_INPUTS[case]
    data = make(tmp_path)
    out_file = tmp_path / "out" / "result.json"
    code, _, err = run([command, str(data), "--out", str(out_file)], capsys)
    assert code != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fortify: error: ") and message in lines[0], err
    assert "Traceback" not in err
    assert not out_file.exists() and not (tmp_path / "out").exists()


def test_few_unreadable_files_are_a_listed_skip(tmp_path: Path, capsys) -> None:
    root = _folder(tmp_path / "ds", {"a": 10, "b": 10})
    jpeg = io.BytesIO()
    Image.fromarray(np.random.default_rng(5).integers(0, 256, (64, 64), dtype=np.uint8)).save(jpeg, "JPEG")
    (root / "b" / "truncated.jpg").write_bytes(jpeg.getvalue()[: len(jpeg.getvalue()) // 2])
    (root / "a" / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 corrupt")
    out_file = tmp_path / "audit.json"
    code, out, err = run(["audit", str(root), "--json", "--out", str(out_file)], capsys)
    assert code == 0
    assert err.strip().splitlines() == [err.strip()] and err.startswith(
        "fortify: warning: skipped 2 unreadable"
    )
    report = json.loads(out)
    assert {u["path"] for u in report["unreadable"]} == {"a/corrupt.jpg", "b/truncated.jpg"}
    assert json.loads(out_file.read_text()) == report


def test_audit_table_lists_skip_once(tmp_path: Path, capsys) -> None:
    root = _folder(tmp_path / "ds", {"a": 10, "b": 10})
    (root / "a" / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 corrupt")
    code, out, err = run(["audit", str(root)], capsys)
    assert code == 0 and "a/corrupt.jpg" in out  # in the integrity table
    assert err.count("skipped 1 unreadable") == 1 and "skipped 1 unreadable" not in out


@pytest.mark.parametrize(
    ("kind", "warning"), [("rgb", "colour RGB image converted to grayscale"), ("16bit", "rescaled to 8-bit")]
)
def test_rgb_and_16bit_are_converted_with_one_warning(
    kind: str, warning: str, tmp_path: Path, capsys
) -> None:
    root = _folder(tmp_path / "ds", {"a": 8, "b": 8})  # big enough that no split is empty (another warning)
    # numbered like the rest: a name without a number would add the scan-grouping fallback warning
    if kind == "rgb":
        Image.fromarray(np.random.default_rng(0).integers(0, 256, (24, 24, 3), dtype=np.uint8)).save(
            root / "a/x99.png"
        )
    else:
        Image.fromarray(np.arange(576, dtype=np.uint16).reshape(24, 24) * 100).save(root / "a/x99.png")
    manifest = tmp_path / "split.json"
    code, out, err = run(["split", str(root), "--out", str(manifest)], capsys)
    assert code == 0 and manifest.exists()
    assert len(err.strip().splitlines()) == 1 and warning in err
    assert "a/x99.png" in manifest.read_text()


def test_split_without_slice_numbers_warns_once_and_groups_near_duplicates(tmp_path: Path, capsys) -> None:
    root = _folder(tmp_path / "ds", {"a": 8, "b": 8})
    for p in sorted(root.glob("*/*.png")):
        p.rename(p.with_name("slice_" + "abcdefghij"[int(p.stem)] + ".png"))
    manifest = tmp_path / "split.json"
    code, out, err = run(["split", str(root), "--out", str(manifest)], capsys)
    assert code == 0 and manifest.exists()
    assert (
        err.strip().splitlines() == [line for line in err.strip().splitlines() if "no slice numbers" in line]
        and len(err.strip().splitlines()) == 1
    )
    assert json.loads(manifest.read_text())["grouping"]["applied"] == "near-duplicate"
    assert "leakage sentinel" in out


def test_audit_table_and_split_on_phantom(tmp_path: Path, capsys) -> None:
    code, out, err = run(["audit", "phantom:n=8", "--image-size", "32"], capsys)
    assert code == 0 and "SYNTHETIC" in out and "benign" in out and err == ""
    manifest = tmp_path / "m.json"
    code, out, _ = run(
        ["split", "phantom:n=20", "--out", str(manifest), "--seed", "3", "--val", "0.2", "--test", "0.1"],
        capsys,
    )
    assert code == 0 and "wrote" in out
    m = json.loads(manifest.read_text())
    assert m["seed"] == 3 and m["fractions"] == [0.7, 0.2, 0.1] and m["dataset"]["synthetic"] is True
    assert [len(m["splits"][k]) for k in ("train", "val", "test")] == [42, 12, 6]


def test_bad_fractions_error(tmp_path: Path, capsys) -> None:
    code, _, err = run(
        ["split", "phantom:n=5", "--out", str(tmp_path / "m.json"), "--val", "0.6", "--test", "0.5"], capsys
    )
    assert code == 2 and err.startswith("fortify: error: split fractions") and len(err.splitlines()) == 1
    assert not (tmp_path / "m.json").exists()


@pytest.mark.slow  # a fresh interpreter imports torch/torchvision: seconds on a busy machine
def test_console_script_prints_no_traceback(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "fortify", "audit", str(tmp_path / "nope")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"fortify: error: dataset path does not exist: {tmp_path / 'nope'}"


@pytest.mark.real_data
def test_audit_json_on_real_data(real_data_path: Path, cache_dir: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("FORTIFY_CACHE", str(cache_dir))
    code, out, _ = run(["audit", str(real_data_path), "--json"], capsys)
    assert code == 0
    r = json.loads(out)
    assert r["counts"] == {"benign": 120, "malignant": 561, "normal": 416}
    assert r["exact_duplicates"]["n_pairs"] == 42
    assert set(r["sizes"]["malignant"]) - set(r["sizes"]["benign"]) - set(r["sizes"]["normal"]) == {
        "623x512",
        "801x512",
        "511x404",
    }
    assert r["near_duplicates"]["n_groups"] > 0


def test_predefined_splits_audit_flags_a_planted_leak_and_split_keeps_them(tmp_path: Path, capsys) -> None:
    for k, part in enumerate(("train", "validation", "test")):
        for c, name in enumerate(("Benign", "Normal")):
            for i in range(3):
                pixels = np.random.default_rng([k, c, i]).integers(0, 256, (24, 24), dtype=np.uint8)
                _png(tmp_path / "ds" / part / name / f"{i}.png", pixels)
    root = tmp_path / "ds"
    code, out, err = run(["audit", str(root)], capsys)
    assert code == 0 and "exact-duplicate groups across several folders: 0" in out and "leak" not in err
    (root / "test" / "Normal" / "copy.png").write_bytes((root / "train" / "Normal" / "1.png").read_bytes())
    code, out, err = run(["audit", str(root)], capsys)
    assert code == 0 and "exact-duplicate groups across several folders: 1" in out
    assert "train/Normal/1.png <-> test/Normal/copy.png" in out
    assert (
        "fortify: warning: the predefined split folders leak" in err or "predefined split folders leak" in out
    )
    manifest = tmp_path / "split.json"
    code, out, err = run(["split", str(root), "--grouping", "given", "--out", str(manifest)], capsys)
    assert code == 0 and "(given grouping)" in out and "predefined split folders leak" in err
    m = json.loads(manifest.read_text())
    assert {e["path"].split("/")[0] for e in m["splits"]["val"]} == {"validation"}


@pytest.mark.parametrize("command", ["audit", "split"])
def test_bad_window_is_a_one_line_error(command: str, tmp_path: Path, capsys) -> None:
    root = _folder(tmp_path / "ds", {"a": 2, "b": 2})
    code, _, err = run([command, str(root), "--window", "bone", "--out", str(tmp_path / "o.json")], capsys)
    assert (
        code == 2 and err.startswith("fortify: error: unknown window 'bone'") and len(err.splitlines()) == 1
    )


def test_split_given_needs_the_layout(tmp_path: Path, capsys) -> None:
    root = _folder(tmp_path / "ds", {"a": 2, "b": 2})
    code, _, err = run(["split", str(root), "--grouping", "given", "--out", str(tmp_path / "o.json")], capsys)
    assert code == 2 and "needs a dataset root of train/" in err and len(err.splitlines()) == 1
