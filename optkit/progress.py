"""Progress lines for a matrix of cells: one when a cell starts, one when it ends, with an ETA.

Plain lines (no progress bar) so that logs of long runs and of runs under ``nohup`` stay
readable; the runner sends them to its :data:`Progress` sink (stderr for the CLI, nothing for
the Python API unless asked).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

Progress = Callable[[str], None]

#: the ETA is shown once the remaining time is estimated at this many seconds or more
ETA_FROM_S = 10.0


def duration(seconds: float) -> str:
    """``"42 s"``, ``"3.5 min"``, ``"2.1 h"``."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


class MatrixProgress:
    """Start and end lines for ``total`` cells run one after another.

    The ETA is the mean time of the finished cells times the cells left (cells of one task
    usually cost alike); it appears on end lines once it is at least :data:`ETA_FROM_S`.
    """

    def __init__(
        self, total: int, sink: Progress, clock: Callable[[], float] = time.perf_counter
    ) -> None:
        self.total = total
        self.sink = sink
        self.clock = clock
        self.t0 = clock()
        self.finished = 0

    def start(self, number: int, key: str) -> None:
        self.sink(f"[{number}/{self.total}] {key}: start")

    def end(self, number: int, key: str, outcome: str, seconds: float) -> None:
        self.finished += 1
        self.sink(f"[{number}/{self.total}] {key}: {outcome} ({seconds:.1f} s){self.eta()}")

    def eta(self) -> str:
        """``"; 5 cells left, about 2.0 min (ETA 04:12 UTC)"`` or ``""``."""
        left = self.total - self.finished
        if left <= 0 or self.finished == 0:
            return ""
        remaining = (self.clock() - self.t0) / self.finished * left
        if remaining < ETA_FROM_S:
            return ""
        at = (datetime.now(UTC) + timedelta(seconds=remaining)).strftime("%H:%M")
        return f"; {left} cells left, about {duration(remaining)} (ETA {at} UTC)"
