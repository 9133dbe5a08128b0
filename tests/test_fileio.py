"""fortify.fileio: atomic writes and the JSON-lines round trip a crash can cut short."""

from __future__ import annotations

from pathlib import Path

import pytest

from fortify.fileio import append_jsonl, atomic_write, atomic_write_text, read_jsonl


def test_jsonl_round_trip_skips_a_line_cut_by_a_crash(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    append_jsonl(path, {"epoch": 1, "loss": 0.5})
    append_jsonl(path, {"epoch": 2, "loss": 0.25})
    with path.open("a", encoding="utf-8") as f:
        f.write('\n{"epoch": 3, "lo')  # a blank line and the half-written last line of a crashed run
    assert read_jsonl(path) == [{"epoch": 1, "loss": 0.5}, {"epoch": 2, "loss": 0.25}]


def test_read_jsonl_of_a_missing_file_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_jsonl(tmp_path / "absent.jsonl")


def test_atomic_write_leaves_nothing_when_the_writer_fails(tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    atomic_write_text(target, "old")

    def fail(p: Path) -> None:
        p.write_text("half")
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        atomic_write(target, fail)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]
