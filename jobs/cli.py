"""The `disillusion` command: one subcommand per job module."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import tempfile
import warnings
from collections.abc import Iterator, Sequence

from pipeline import __version__

from . import attack, audit, benchmark, calibrate, check, config, corpus, demo, evaluate, export, frontier, fuzz, sanitize, train_demo

# Each job module provides NAME, HELP, add_arguments(parser) and run(args) -> exit code.
# Exit codes (README): 0 done; 1 done, with problems reported; 2 bad arguments or input, nothing
# done; 3 the run cannot go on (outputs cannot be written, the store is unreachable, the cluster lost
# the capacity it needs): it stopped, rerun to resume; 130 interrupted (rerun to resume).
JOBS = (demo, sanitize, audit, export, check, attack, corpus, evaluate, frontier, calibrate, benchmark, fuzz, train_demo, config)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="disillusion",
        description="Sanitise multi-modal datasets against adversarial illusions by consensus-based generative purification.",
    )
    parser.add_argument("--version", action="version", version=f"disillusion {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    subparsers = parser.add_subparsers(dest="job", metavar="JOB", title="jobs")
    for job in JOBS:
        sub = subparsers.add_parser(job.NAME, help=job.HELP, description=job.HELP)
        job.add_arguments(sub)
        sub.set_defaults(run=job.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    with _native_messages_to_file(args.verbose) as log:
        code = _main(parser, args)
    if code == 1 and log and os.path.exists(log):  # exit codes 2, 3 and 130 keep their one line
        print(f"disillusion {args.job}: messages of Ray and native libraries are in {log} (or rerun with -v)", file=sys.stderr)
    return code


def _main(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("PIL").setLevel(logging.INFO)  # its debug output is one line per PNG chunk read, thousands per job
    for chatty in ("botocore", "boto3", "s3transfer"):  # "Found credentials in environment variables", per client
        logging.getLogger(chatty).setLevel(logging.DEBUG if args.verbose else logging.WARNING)
    _quiet_model_libraries(args.verbose)
    if not getattr(args, "run", None):
        parser.print_help()
        return 2
    from pipeline.malloc_tuning import keep_freed_memory
    from pipeline.stops import RunStopped

    keep_freed_memory()  # jobs that purify or attack in this process reuse their freed batches (pipeline/malloc_tuning.py)
    try:
        return int(args.run(args) or 0)
    except KeyboardInterrupt:
        print(f"disillusion {args.job}: interrupted; finished shards are kept, rerun to resume", file=sys.stderr)
        return 130
    except RunStopped as error:  # outputs that cannot be written, an unreachable store, a cluster that cannot progress
        print(f"disillusion {args.job}: error: {error}", file=sys.stderr)
        return 3
    except (ValueError, FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError) as error:
        print(f"disillusion {args.job}: error: {error}", file=sys.stderr)
        return 2


@contextlib.contextmanager
def _native_messages_to_file(verbose: bool) -> Iterator[str | None]:
    """A normal run prints only the project's own lines. What native code writes to the process's
    stderr (Ray's C++ core and the processes it starts, such as a `core_worker.cc` line about actor
    arguments) goes to a log file instead (yielded; removed when empty), while Python's own stderr
    (errors, warnings, the project's log lines) still reaches the terminal; -v leaves everything on
    the terminal."""
    if verbose:
        yield None
        return
    path = os.path.join(tempfile.gettempdir(), f"disillusion-{os.getpid()}-native.log")
    sys.stderr.flush()
    terminal_fd = os.dup(2)
    with open(path, "ab") as log:
        os.dup2(log.fileno(), 2)
    previous = sys.stderr
    swap = _is_fd_2(previous)  # under a test's capture, sys.stderr is not fd 2 and stays as it is
    if swap:
        sys.stderr = os.fdopen(os.dup(terminal_fd), "w", buffering=1, encoding=previous.encoding, errors="backslashreplace")
    try:
        yield path
    finally:
        sys.stderr.flush()
        os.dup2(terminal_fd, 2)
        os.close(terminal_fd)
        if swap:
            sys.stderr.close()
            sys.stderr = previous
        if os.path.getsize(path) == 0:
            os.remove(path)


def _is_fd_2(stream) -> bool:
    try:
        return stream.fileno() == 2
    except (AttributeError, OSError, ValueError):
        return False


def _quiet_model_libraries(verbose: bool) -> None:
    """Model loading progress bars, advisory warnings and Ray Data's narration drown the job's own output."""
    if verbose:
        return
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    for library in (transformers_logging, diffusers_logging):
        library.set_verbosity_error()
        library.disable_progress_bar()
    # diffusers still passes an argument huggingface_hub deprecated; nothing a user can act on.
    warnings.filterwarnings("ignore", message="The `local_dir_use_symlinks` argument is deprecated")
    # Ray Data narrates each execution plan at INFO; the runner prints a line per shard instead. Ray
    # Data sets up its logger when first imported, from this variable.
    os.environ.setdefault("RAY_DATA_LOG_LEVEL", "WARNING")
    # Ray's notice that a local cluster uses token authentication (a setting, not a problem). Ray
    # resets the level of its "ray" logger on import, not that of the module's own.
    logging.getLogger("ray._private.authentication").setLevel(logging.ERROR)


if __name__ == "__main__":
    sys.exit(main())
