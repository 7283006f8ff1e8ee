"""The readable form of a :class:`~optkit.comparisons.summary.Comparison`: a Markdown table
with the same content as ``optkit report DIR --format json``."""

from __future__ import annotations

from typing import Any

from optkit.comparisons.bootstrap import Interval
from optkit.comparisons.summary import Comparison, ToTarget

HEADER = (
    "| objective | method | tuned | target | final | steps to target |"
    " wall s to target | grad evals to target | steps / reference |"
)
NOTE = (
    "Mean [95% percentile-bootstrap CI over seeds]; '[1 seed]': no interval from one seed."
    " To-target columns average the seeds that reach the target (k/n). The steps ratio is"
    " paired by seed."
)


def _num(value: float, digits: int) -> str:
    return f"{value:.{digits}g}"


def format_interval(interval: Interval | None, digits: int = 4) -> str:
    """``mean [low, high]``; ``mean [1 seed]`` when degenerate; ``—`` when undefined."""
    if interval is None or interval.mean is None:
        return "—"
    mean = _num(interval.mean, digits)
    if interval.ci_low is None or interval.ci_high is None:
        return f"{mean} [1 seed]"
    return f"{mean} [{_num(interval.ci_low, digits)}, {_num(interval.ci_high, digits)}]"


def format_to_target(cost: ToTarget, digits: int = 4) -> str:
    return f"{format_interval(cost.interval, digits)} ({cost.reached}/{cost.seeds})"


def _tuned(tuned: dict[str, Any]) -> str:
    if not tuned:
        return "—"
    return ", ".join(
        f"{k}={_num(v, 3) if isinstance(v, float) else v}" for k, v in sorted(tuned.items())
    )


def format_comparison(comparison: Comparison) -> str:
    """The Markdown table (one line per row of the comparison) and its reading note; with a
    ``versus`` method, one more column: steps to target over that method's, paired."""
    header, columns = HEADER, 9
    if comparison.versus is not None:
        header += f" steps / {comparison.versus} |"
        columns += 1
    out = [header, "|" + "---|" * columns]
    for row in comparison.rows:
        spec = comparison.targets[row.objective]
        target = spec.describe(comparison.maximize[row.objective])
        line = (
            f"| {row.objective} | {row.label} | {_tuned(row.tuned)} | {target} |"
            f" {format_interval(row.final)} | {format_to_target(row.steps_to_target)} |"
            f" {format_to_target(row.wall_to_target, 3)} |"
            f" {format_to_target(row.grad_evals_to_target)} |"
            f" {format_interval(row.ratio_to_reference, 3)} |"
        )
        if comparison.versus is not None:
            line += f" {format_interval(row.ratio_to_versus, 3)} |"
        out.append(line)
    note = NOTE if comparison.versus is None else NOTE.replace("steps ratio is", "steps ratios are")
    return "\n".join(out) + "\n\n" + note
