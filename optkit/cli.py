"""The ``optkit`` command line.

    optkit plugins [--json]
    optkit check TASK.toml [--set KEY=VALUE ...]
    optkit run TASK.toml [--out DIR] [--set KEY=VALUE ...] [--resume] [--launcher NAME] [--jobs N]
    optkit bench TASK.toml [--out DIR] [--resume] [--set KEY=VALUE ...] [--launcher NAME] [--jobs N]
    optkit report DIR [--metric NAME] [--x sequential_steps|grad_evals|wall_s|iteration]
                      [--format table|json] [--versus LABEL]
    optkit diagnose noise TASK.toml [--sizes 8,32,128] [--draws 32] [--set KEY=VALUE ...]
    optkit data list | fetch NAME... | fetch --all

Errors in the input (a bad task file, an unknown plugin, a results directory that holds
another task) print one paragraph and exit with status 2; no traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import textwrap
import warnings
from collections.abc import Sequence
from pathlib import Path

from optkit.errors import ConfigError, OptkitError

EXIT_INPUT_ERROR = 2


def cmd_plugins(args: argparse.Namespace) -> int:
    """List every registration, exit 0 even with clashes (flagged) or failed plugins: this is
    the diagnostic that shows what ``run`` and ``check`` would refuse."""
    from optkit.registry import get_registry

    registry = get_registry(allow_clashes=True)
    listing = registry.listing()
    if args.json:
        payload = {
            "plugins": [
                {
                    "kind": e.kind,
                    "name": e.name,
                    "plugin": e.source.plugin,
                    "distribution": e.source.distribution,
                    "version": e.source.version,
                    "class": f"{e.cls.__module__}.{e.cls.__qualname__}",
                    "summary": e.cls.summary,
                    "clash": clash is not None,
                }
                for e, clash in listing
            ],
            "failed": [vars(f) for f in registry.failed],
            "clashes": [
                {"kind": c.kind, "name": c.name, "claims": list(c.claims), "message": str(c)}
                for c in registry.clashes
            ],
            "unknown_hooks": [{**vars(u), "message": str(u)} for u in registry.unknown_hooks],
        }
        print(json.dumps(payload, indent=2))
        return 0
    width = max((len(e.name) for e, _ in listing), default=4)
    for kind in ("objective", "optimizer", "hyperoptimizer", "executor", "launcher"):
        group = [(e, c) for e, c in listing if e.kind == kind]
        if not group:
            continue
        print(f"{kind}s:")
        for e, clash in group:
            source = f"{e.source.distribution} {e.source.version} [{e.source.plugin}]"
            flag = "  CLASH" if clash is not None else ""
            print(f"  {e.name:<{width}}  {source:<28}  {e.cls.summary}{flag}")
    if registry.clashes:
        print("name clashes (run and check refuse until one is uninstalled or renamed):")
        for c in registry.clashes:
            print(f"  {c}")
    if registry.unknown_hooks:
        print("functions that are never called:")
        for u in registry.unknown_hooks:
            print(f"  {u}")
    if registry.failed:
        print("failed to load:")
        for f in registry.failed:
            print(f"  {f.plugin} ({f.distribution}): {f.error}")
    return 0


def _load(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from optkit.tasks import load_task

    return load_task(args.task, args.set or [], override_flag="--set")


def cmd_check(args: argparse.Namespace) -> int:
    from optkit.checking import check_task

    task = _load(args)
    report = check_task(task)
    print(f"{task.source}: task '{task.name}' is valid: {len(report.runnable)} runnable cells")
    for cell, reason in report.skipped:
        print(f"  skip {cell.key}: {reason}")
    if task.tuning is not None:
        from optkit.tuning import describe_plan

        print(f"  {describe_plan(task, report.runnable)}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from optkit.report import report
    from optkit.runner import run_task

    task = _load(args)
    out = args.out
    if out is None and args.command == "bench":
        out = Path("runs") / task.name
    launcher = args.launcher or args.executor or ("processes" if args.jobs else "local")
    if args.executor is not None:
        print(
            f"optkit: note: --executor {args.executor} is deprecated, use --launcher"
            f" {args.executor} (a task's executor is something else: how the gradient"
            " evaluations of one round run)",
            file=sys.stderr,
        )
    spec: dict[str, object] = {"name": launcher}
    if args.ray_address is not None:
        spec["address"] = args.ray_address
    if args.jobs is not None:  # a launcher without `jobs` refuses the key, naming itself
        spec["jobs"] = args.jobs
    summary = run_task(task, out, resume=args.resume, launcher=spec)
    print(
        f"results: {summary.out}/results.jsonl ({summary.cells_run} cells run in"
        f" {summary.wall_s:.1f} s, {len(summary.cells_failed)} failed,"
        f" {summary.cells_resumed} resumed, {len(summary.cells_skipped)} skipped)"
    )
    if summary.cells_run + summary.cells_resumed > len(summary.cells_failed):
        from optkit.comparisons import compare
        from optkit.comparisons.table import format_comparison

        comparison = compare(summary.out, metric=args.metric)
        table, figure = report(summary.out, metric=args.metric, x=args.x, comparison=comparison)
        print(table)
        print()
        print(format_comparison(comparison))
        print(f"figure: {figure}")
    if summary.cells_failed:
        print("failed cells: " + ", ".join(summary.cells_failed), file=sys.stderr)
        return 1
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from optkit.comparisons import compare
    from optkit.comparisons.table import format_comparison
    from optkit.report import report

    comparison = compare(args.dir, metric=args.metric, versus=args.versus)  # checks --versus
    if args.format == "json":  # stdout holds the JSON list only; nothing is written
        print(json.dumps(comparison.to_json(), indent=2, allow_nan=False))
        return 0
    table, figure = report(args.dir, metric=args.metric, x=args.x, comparison=comparison)
    print(table)
    print()
    print(format_comparison(comparison))
    print(f"figure: {figure}")
    return 0


def cmd_diagnose_noise(args: argparse.Namespace) -> int:
    from optkit.diagnose.noise import diagnose_noise, format_noise

    sizes = None
    if args.sizes:
        try:
            sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
        except ValueError:
            raise ConfigError(
                f"--sizes: expected integers like 8,32,128, got '{args.sizes}'"
            ) from None
    reports = diagnose_noise(
        _load(args), sizes=sizes, draws=args.draws, middle_iterations=args.middle_iterations
    )
    print(format_noise(reports))
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    from optkit.data import cli as data_cli

    return int(data_cli.main(args))


def build_parser() -> argparse.ArgumentParser:
    from optkit.report import X_AXES

    parser = argparse.ArgumentParser(
        prog="optkit", description="Run and compare objectives, optimizers and hyperoptimizers."
    )
    from optkit import __version__

    parser.add_argument("--version", action="version", version=f"optkit {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("plugins", help="list registered plugins")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_plugins)

    def task_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("task", help="task file (TOML)")
        p.add_argument(
            "--set",
            action="append",
            metavar="KEY=VALUE",
            help="override a task key, e.g. budget.iterations=10 or optimizers.0.lr=0.1",
        )

    p = sub.add_parser("check", help="validate a task file without running it")
    task_args(p)
    p.set_defaults(func=cmd_check)

    for name, help_text in (
        ("run", "run a task, then print its table and write its figure"),
        ("bench", "run a task's matrix into a stable directory (resumable)"),
    ):
        p = sub.add_parser(name, help=help_text)
        task_args(p)
        p.add_argument(
            "--out",
            help="results directory (run: runs/NAME-TIMESTAMP; bench: runs/NAME)",
        )
        p.add_argument("--resume", action="store_true", help="finish the missing cells of --out")
        p.add_argument(
            "--launcher",
            default=None,
            metavar="NAME",
            help="where whole cells run: a registered launcher (`optkit plugins` lists them):"
            " local (default: in this process), processes (parallel worker processes here)"
            " or ray (cells as Ray tasks)",
        )
        p.add_argument(
            "--jobs",
            type=int,
            default=None,
            metavar="N",
            help="run up to N cells (and tuning trials) at once in worker processes on this"
            " machine (the `processes` launcher; default launcher when --jobs is given)",
        )
        p.add_argument(
            "--executor",
            choices=("local", "ray"),
            default=None,
            help="deprecated spelling of --launcher",
        )
        p.add_argument(
            "--ray-address",
            default=None,
            help="the launcher's cluster address, for --launcher ray ('auto', host:port;"
            " default: start one)",
        )
        p.add_argument("--metric", default=None, help="metric for the table and figure")
        p.add_argument(
            "--x",
            default="sequential_steps",
            help=f"figure x axis: {', '.join(X_AXES)} or any numeric column (e.g. episodes)",
        )
        p.set_defaults(func=cmd_run)

    p = sub.add_parser("report", help="table and convergence figure of a results directory")
    p.add_argument("dir", help="results directory")
    p.add_argument("--metric", default=None, help="metric (default: gap, else loss)")
    p.add_argument(
        "--x",
        default="sequential_steps",
        help=f"figure x axis: {', '.join(X_AXES)} or any numeric column (e.g. episodes)",
    )
    p.add_argument(
        "--format",
        choices=("table", "json"),
        default="table",
        help="table: print tables, write report.md and figures; json: print one JSON row per"
        " (objective, method) with 95%% bootstrap CIs over seeds, write nothing",
    )
    p.add_argument(
        "--versus",
        default=None,
        metavar="LABEL",
        help="also give every method's steps to target over this method's, paired by seed"
        " (e.g. --versus data_parallel-W8)",
    )
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("diagnose", help="diagnose a task's training regime")
    diagnose = p.add_subparsers(dest="diagnosis", required=True)
    p = diagnose.add_parser(
        "noise",
        help="gradient noise scale B_simple of each objective, at the start and middle of"
        " training, beside the task's batch size",
    )
    task_args(p)
    p.add_argument(
        "--sizes",
        default=None,
        help="comma-separated batch sizes to measure (default: b/4, b, 4b of the task's b)",
    )
    p.add_argument("--draws", type=int, default=32, help="minibatches per size and point")
    p.add_argument(
        "--middle-iterations",
        type=int,
        default=None,
        help="iterations of the first optimizer before the middle point (default: half budget)",
    )
    p.set_defaults(func=cmd_diagnose_noise)

    try:
        from optkit.data import cli as data_cli
    except ImportError:
        pass
    else:
        data_cli.add_parser(sub).set_defaults(func=cmd_data)
    return parser


def _error(exc: Exception) -> int:
    """Print ``exc`` as one paragraph on stderr; the exit status of an input error."""
    message = textwrap.fill(str(exc), width=100, break_long_words=False)
    print(f"optkit: error: {message}", file=sys.stderr)
    return EXIT_INPUT_ERROR


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("default")
            status = int(args.func(args))
            sys.stdout.flush()  # a closed pipe surfaces here, not in the interpreter's exit
            return status
    except OptkitError as exc:
        return _error(exc)
    except BrokenPipeError:  # the reader went away (`optkit plugins | head`): no traceback
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so the interpreter's final flush cannot fail
        return 141  # 128 + SIGPIPE, what a shell reports for a killed writer
    except ModuleNotFoundError as exc:  # an optional package that a plugin imports late
        from optkit.envproblems import missing_package

        return _error(missing_package(exc))
    except OSError as exc:  # a write outside the run directory's own guards (a figure, say)
        from optkit.envproblems import is_environment_fault, output_error

        if not is_environment_fault(exc):
            raise
        return _error(output_error(exc.filename or "the output", exc))
    except KeyboardInterrupt:
        if getattr(args, "command", None) == "data":
            print(
                "optkit: interrupted; the data cache holds only complete, verified files"
                " (downloads and extractions are staged): run the same command again",
                file=sys.stderr,
            )
        else:
            print("optkit: interrupted; finished cells are kept (use --resume)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
