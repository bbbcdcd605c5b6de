"""Why a run stops before its end, resumably (exit code 3 of `sanitize` and `audit`).

Each cause is an exception whose message is the one line the job prints: what went wrong, that the
shards finished so far are kept, and that rerunning the same command resumes."""

from __future__ import annotations

RESUMABLY = "the run stopped, finished shards are kept; rerun to resume"


class RunStopped(Exception):
    """The run cannot go on; finished shards are kept and a rerun resumes."""


class OutputWriteError(RunStopped, OSError):
    """An output could not be written (read-only location, full disk, denied by the object store)."""


class StoreUnreachable(RunStopped, OSError):
    """The object store cannot be reached (after the client's retries)."""


class CannotProgress(RunStopped):
    """The cluster cannot finish the run: it lost the capacity the run needs, or no shard finished for too long."""
