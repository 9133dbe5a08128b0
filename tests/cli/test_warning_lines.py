"""Every warning reaches the console as one `fortify: warning: <message>` line, each distinct one once."""

from __future__ import annotations

import warnings

import fortify.pipeline
from fortify.cli import main
from fortify.data import DataWarning
from fortify.errors import FortifyError


def _stages_that_warn(*args, **kwargs):
    for _stage in range(3):  # each stage meets the same files
        warnings.warn("12 file name(s) carry no slice number", DataWarning, stacklevel=2)
    warnings.warn("something else\nover two lines", UserWarning, stacklevel=2)
    raise FortifyError("stopped here")


def test_each_distinct_warning_once_without_source_lines(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(fortify.pipeline, "reproduce", _stages_that_warn)
    for _ in range(2):  # a second command in the same process prints its warnings again
        try:
            main(["reproduce", "--data", "phantom", "--out", str(tmp_path / "r"), "--profile", "smoke"])
        except SystemExit as e:
            assert e.code == 2
        err = capsys.readouterr().err.splitlines()
        assert err == [
            "fortify: warning: 12 file name(s) carry no slice number",
            "fortify: warning: something else over two lines",
            "fortify: error: stopped here",
        ]
