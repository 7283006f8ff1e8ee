"""What a manifest records about where a run happened: versions, git revision, hardware."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import re
import subprocess
from pathlib import Path
from typing import Any

import torch

ENTRY_POINT_GROUP = "optkit"


def tracked_distributions() -> list[str]:
    """The distributions whose versions a manifest records, read from the installed metadata
    (no list of plugins' dependencies is written here): every distribution that registers
    plugins in the ``optkit`` entry-point group (optkit itself included), and every package
    those distributions require, extras included (not the ``dev`` extra's tools)."""
    names: dict[str, None] = {"optkit": None}
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        if ep.dist is not None:
            names[ep.dist.name] = None
    for dist in list(names):
        try:
            requires = importlib.metadata.requires(dist) or []
        except importlib.metadata.PackageNotFoundError:
            continue
        for requirement in requires:
            if re.search(r"""extra\s*==\s*["']dev["']""", requirement):
                continue
            match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement)
            if match is not None and match.group(0) not in names:
                names[match.group(0)] = None
    return list(names)


def package_versions(extra: tuple[str, ...] = ()) -> dict[str, str]:
    """Installed versions of the packages that matter for reproduction (absent ones omitted):
    :func:`tracked_distributions` and ``extra``."""
    versions = {}
    for name in (*tracked_distributions(), *extra):
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def git_revision(where: Path) -> str | None:
    """``HEAD`` of the git checkout holding ``where`` (with ``-dirty``), or ``None``."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=5
        )
        if head.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=where,
            capture_output=True,
            text=True,
            timeout=5,
        )
        return head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def hardware() -> dict[str, Any]:
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.is_available(),
    }
    if torch.cuda.is_available():
        info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return info


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        from optkit.errors import ConfigError

        raise ConfigError(
            f"device '{name}' asked for, but torch sees no CUDA GPU; use 'cpu' or 'auto'"
        )
    return device


def resolve_dtype(name: str) -> torch.dtype:
    return {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16}[name]
