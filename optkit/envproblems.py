"""Turn faults of the machine into one-paragraph :class:`EnvironmentProblem` errors.

An ``OSError`` while writing results (a read-only or foreign directory, a full disk, a file
size limit) and a ``ModuleNotFoundError`` for an optional package are not bugs in optkit and
not mistakes in the task file: the user needs the path or the package and what to do.
"""

from __future__ import annotations

import errno
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from optkit.errors import EnvironmentProblem
from optkit.wording import CLI, Words

#: top-level module -> the optkit extra that installs it (``pip install 'optkit[EXTRA]'``)
EXTRAS: dict[str, str] = {
    "gpytorch": "optex",
    "botorch": "bo",
    "gymnasium": "rl",
    "PIL": "vision",
    "transformers": "nlp",
    "peft": "nlp",
    "safetensors": "nlp",
    "gguf": "nlp",
    "ray": "ray",
}

_FULL = {errno.ENOSPC, errno.EDQUOT}
_DENIED = {errno.EACCES, errno.EPERM, errno.EROFS}


def is_environment_fault(exc: OSError) -> bool:
    """Whether ``exc`` is the machine's doing (permissions, space, limits), not a bug."""
    return exc.errno in _FULL | _DENIED | {errno.EFBIG, errno.ENOTDIR}


def output_error(path: str | Path, exc: OSError, words: Words = CLI) -> EnvironmentProblem:
    """The paragraph for an ``OSError`` raised while creating or writing ``path``."""
    reason = exc.strerror or str(exc)
    where = exc.filename if isinstance(exc.filename, str) else str(path)
    keep = (
        f" Rows of finished cells are kept; once fixed, {words.resume} with the same"
        f" {words.out} finishes the rest."
    )
    if exc.errno in _FULL:
        advice = (
            "The disk (or your quota) is full: free some space, or choose another"
            f" {words.out} on a disk with room." + keep
        )
    elif exc.errno in _DENIED:
        advice = (
            f"This process may not write there: choose a directory you can write with"
            f" {words.out}, or fix the permissions."
        )
    elif exc.errno == errno.EFBIG:
        advice = "A file size limit (ulimit -f) stops the write: raise it." + keep
    elif exc.errno in (errno.ENOTDIR, errno.EEXIST):
        advice = f"A file is in the way of the directory: choose another {words.out}."
    else:
        advice = f"Check the path, or choose another {words.out}."
    return EnvironmentProblem(f"cannot write {where} ({reason}). {advice}")


@contextmanager
def writing(path: str | Path, words: Words = CLI) -> Iterator[None]:
    """Re-raise an ``OSError`` inside the block as :func:`output_error` for ``path``."""
    try:
        yield
    except OSError as exc:
        raise output_error(path, exc, words) from None


def missing_package(exc: ModuleNotFoundError, where: str = "") -> EnvironmentProblem:
    """The paragraph for an optional package that is not installed."""
    module = (exc.name or str(exc)).split(".")[0]
    extra = EXTRAS.get(module)
    install = f"pip install 'optkit[{extra}]'" if extra else f"pip install {module}"
    prefix = f"{where}: " if where else ""
    return EnvironmentProblem(
        f"{prefix}this needs the Python package '{module}', which is not installed in this"
        f" environment. Install it with: {install} (into the environment that runs optkit)."
    )
