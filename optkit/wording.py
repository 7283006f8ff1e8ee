"""How an error names the user's own input: the command line's flags or the API's keywords.

The same check (``out`` holds another task, ``resume`` without ``out``) is reached from
``optkit run --out DIR --resume`` and from ``optkit.run(task, out=DIR, resume=True)``; the
message should use the words of the caller.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Words:
    """The caller's names for the run's output directory and for resuming.

    Attributes:
        out: ``"--out"`` or ``"out="``.
        resume: ``"--resume"`` or ``"resume=True"``.
    """

    out: str
    resume: str

    def out_is(self, path: str | Path) -> str:
        """``"--out runs/x"`` (CLI) or ``"out='runs/x'"`` (API)."""
        if self.out.endswith("="):
            return f"{self.out}{str(path)!r}"
        return f"{self.out} {path}"


CLI = Words(out="--out", resume="--resume")
API = Words(out="out=", resume="resume=True")
