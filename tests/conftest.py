"""Shared fixtures: the real data in ../shared/data and Fashion-MNIST from Debian."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("GENAUG_SHARED_DATA", REPO.parent / "shared" / "data"))
PNEUMONIA = SHARED / "pneumoniamnist.npz"
CIFAR = SHARED / "cifar10-subset.npz"
OCT = SHARED / "oct2017-sample"
FASHION = Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory):
    """One Inception weights conversion and feature cache per test session."""
    cache = tmp_path_factory.mktemp("genaug-cache")
    os.environ["GENAUG_CACHE_DIR"] = str(cache)
    return cache


@pytest.fixture(scope="session")
def fashion():
    if not FASHION.exists():
        pytest.fail("Fashion-MNIST missing: apt-get install -y dataset-fashion-mnist (make test does this)")
    return "fashion-mnist"


def run_cli(*args: str):
    """Invoke the genaug CLI in-process; returns click's Result."""
    from genaug.cli import main

    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=True)


def assert_clean_error(result, *fragments: str, code: int | None = None):
    """A one-line user error: non-zero exit, no traceback, message containing the fragments."""
    assert result.exit_code != 0, result.output
    if code is not None:
        assert result.exit_code == code, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    for f in fragments:
        assert f in result.output, result.output
