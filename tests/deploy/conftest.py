"""Fixtures of the serving tests: export folders (see exported.py)."""

import os
import pathlib
import shutil
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))  # exported, serve_process

import exported  # noqa: E402


@pytest.fixture(scope="session")
def export_v1(tmp_path_factory):
    """An export folder of a seeded student, version 1 (read-only: copy it to change it)."""
    return pathlib.Path(exported.write_export(tmp_path_factory.mktemp("export-v1"), seed=0,
                                              version=1))


@pytest.fixture(scope="session")
def export_v2(tmp_path_factory):
    """The same layout, another student, version 2."""
    return pathlib.Path(exported.write_export(tmp_path_factory.mktemp("export-v2"), seed=1,
                                              version=2))


@pytest.fixture
def model_copy(export_v1, tmp_path):
    """A copy of version 1 a test may change."""
    return shutil.copytree(export_v1, tmp_path / "model")
