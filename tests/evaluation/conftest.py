"""Fixtures for the evaluation tests; the checkpoints are shared with tests/cli (made once per session)."""

import pytest
from fortify_eval_fixtures import tiny_checkpoint_b_path, tiny_checkpoint_path, wrong_classes_checkpoint_path


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    return tiny_checkpoint_path(tmp_path_factory)


@pytest.fixture(scope="session")
def tiny_checkpoint_b(tmp_path_factory):
    return tiny_checkpoint_b_path(tmp_path_factory)


@pytest.fixture(scope="session")
def wrong_classes_checkpoint(tmp_path_factory):
    return wrong_classes_checkpoint_path(tmp_path_factory)
