"""One writer per run directory: an operating-system file lock and a record of its holder.

``optkit run`` and ``optkit bench`` (and :func:`optkit.run`) hold the lock for as long as
they write. The lock itself is ``filelock``'s (``flock`` on Unix), so the operating system
releases it when the holder dies, ``kill -9`` included. Beside it, the holder writes who it
is (pid, host, start time, command) to :data:`WRITER_FILE`; that record names the holder to
a second writer, which is refused, and, when a writer finds the lock free but a record still
there, tells it that the previous writer was killed before it could clean up.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from filelock import FileLock, Timeout

from optkit.envproblems import writing
from optkit.errors import ResultsError
from optkit.wording import CLI, Words

LOCK_FILE = ".optkit.lock"
WRITER_FILE = ".optkit.writer.json"


def is_lock_file(name: str) -> bool:
    """Files of the lock (and a record half-written by a killed writer) do not make a
    directory "non-empty" for a new run."""
    return name in (LOCK_FILE, WRITER_FILE) or name.startswith(f"{WRITER_FILE}.")


@dataclass(frozen=True)
class Writer:
    """Who holds (or held) a run directory's lock."""

    pid: int
    host: str
    started: str
    command: str

    @classmethod
    def me(cls) -> Writer:
        return cls(
            pid=os.getpid(),
            host=socket.gethostname(),
            started=datetime.now(UTC).isoformat(timespec="seconds"),
            command=" ".join(sys.argv) or sys.executable,
        )

    def describe(self) -> str:
        return f"pid {self.pid} on host {self.host} (since {self.started}: {self.command})"

    def gone(self) -> bool | None:
        """True: a process of this host that no longer runs; None: another host, cannot tell."""
        if self.host != socket.gethostname():
            return None
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:  # alive, owned by another user
            return False
        return False


def read_writer(directory: Path) -> Writer | None:
    """The holder recorded in ``directory``, or None (no record, or an unreadable one)."""
    try:
        data = json.loads((directory / WRITER_FILE).read_text(encoding="utf-8"))
        return Writer(int(data["pid"]), str(data["host"]), str(data["started"]), data["command"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


class RunLock:
    """The exclusive lock of one run directory (which must exist).

    Use :meth:`acquire` and :meth:`release` (or ``with``); :attr:`note` says whether the lock
    was taken over from a writer that was killed.
    """

    def __init__(self, directory: str | Path, words: Words = CLI) -> None:
        self.directory = Path(directory)
        self.words = words
        self.note: str | None = None
        self._lock = FileLock(str(self.directory / LOCK_FILE))

    def acquire(self) -> RunLock:
        """Take the lock without waiting.

        Raises:
            ResultsError: another process holds it (named by pid and host).
            EnvironmentProblem: the directory cannot be written.
        """
        out = self.words.out_is(self.directory)
        with writing(self.directory / LOCK_FILE, self.words):
            try:
                self._lock.acquire(timeout=0)
            except Timeout:
                holder = read_writer(self.directory)
                who = holder.describe() if holder else "a process that has not yet said who it is"
                dead = ""
                if holder is not None and holder.gone():
                    dead = (
                        f" That process is no longer running, yet the lock is held: on a file"
                        f" system without locks, delete {self.directory / LOCK_FILE} by hand."
                    )
                raise ResultsError(
                    f"{out} is being written by another optkit process: {who}. A run directory"
                    f" has one writer at a time: wait for that run to finish (then"
                    f" {self.words.resume} if cells are missing), or choose another"
                    f" {self.words.out}.{dead}"
                ) from None
        try:
            previous = read_writer(self.directory)
            if previous is not None:
                state = {True: "which is no longer running", None: "on another host"}.get(
                    previous.gone(), "which no longer holds the lock"
                )
                self.note = (
                    f"{out}: taking over the run directory from {previous.describe()}, {state}:"
                    " it ended without releasing the directory (killed?)."
                )
            record = json.dumps(asdict(Writer.me()), indent=2) + "\n"
            target = self.directory / WRITER_FILE
            partial = target.with_name(f"{WRITER_FILE}.{os.getpid()}.tmp")
            with writing(target, self.words):
                partial.write_text(record, encoding="utf-8")
                os.replace(partial, target)  # a reader sees the whole record or none
        except BaseException:
            self._lock.release()
            raise
        return self

    def release(self) -> None:
        """Remove the holder record and release the lock (idempotent)."""
        if not self._lock.is_locked:
            return
        try:
            (self.directory / WRITER_FILE).unlink(missing_ok=True)
        except OSError:
            pass  # the next writer reads a stale record and says so; nothing is lost
        finally:
            self._lock.release()

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
