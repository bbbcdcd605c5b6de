"""Tar walks and image decodes in a child process, under budgets of CPU time and memory.

A crafted shard can make Python's tarfile or an image decoder run for minutes, allocate gigabytes or
crash the process, and none of that may stop a corpus. So the two steps that parse corpus bytes run
in a child process (one per worker process, started on first use, replaced after any fault):

- memory: before each operation the child lowers its own address-space limit to what it holds plus
  the operation's budget, so an allocation beyond the budget fails there (MemoryError) instead of
  exhausting the worker;
- time: the parent watches the child's CPU time (and, against a child that sleeps, wall time) and
  kills it when an operation overruns its budget;
- crashes: a child that dies (a decoder's segfault, the kernel's OOM killer) ends its operation.

Whatever happens, the operation's result says why: a walk that stops early keeps the members read
before it and becomes a shard problem; a decode becomes an ImageDecodeError, that is one error row.
Messages between the processes are a JSON header and raw bytes (no pickle).
"""

from __future__ import annotations

import atexit
import json
import os
import resource
import select
import signal
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

from .images import DECODE_BYTES_PER_PIXEL_MAX, DEFAULT_MAX_PIXELS, ImageDecodeError, WorkingImage
from .shards import RawMember, ShardProblem

DEFAULT_PARSE_SECONDS = 60.0  # CPU seconds to walk one shard's headers (tarfile reads a 2 GiB tar in a few)
DEFAULT_DECODE_SECONDS = 10.0  # CPU seconds to decode one image (a 64 M-pixel PNG takes about 1)
HEADROOM_BYTES = 64 << 20  # beyond an operation's own need: Python's allocations, the reply
WALL_FACTOR, WALL_SLACK_S = 4.0, 10.0  # a child that waits instead of computing is stopped after this much wall time
POLL_S = 0.2
START_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class Budgets:
    """What one operation may cost in the child. `decode_memory_bytes` None: the worst format's
    bytes per pixel times the pixel limit, plus headroom (every legitimate image fits)."""

    parse_seconds: float = DEFAULT_PARSE_SECONDS
    decode_seconds: float = DEFAULT_DECODE_SECONDS
    decode_memory_bytes: int | None = None

    def decode_memory(self, max_pixels: int) -> int:
        return self.decode_memory_bytes or DECODE_BYTES_PER_PIXEL_MAX * max_pixels + HEADROOM_BYTES


class BudgetExceeded(Exception):
    """The child overran an operation's budget or died during it; the message says which."""


class Sandbox:
    """The parent's side: `walk` (a drop-in for `shards.walk_tar`) and `decode` (for `images.decode_working`).

    `last`: the last finished operation's reply: `peak_bytes` (the child's peak resident memory
    above what it held when the operation began: what the budgets bound) and, for a decoded image,
    its `format` and `original_size` (the fuzzer checks the documented memory bound with them)."""

    def __init__(self, budgets: Budgets = Budgets()):
        self.budgets = budgets
        self.last: dict[str, Any] = {}
        self._child: _Child | None = None
        self._lock = threading.Lock()
        atexit.register(self.close)

    def walk(self, tar: bytes) -> Iterator[RawMember | ShardProblem]:
        if not tar:
            return
        with self._lock:
            try:
                for header, payload in self._operation({"op": "walk", "memory": len(tar) + HEADROOM_BYTES}, tar,
                                                       self.budgets.parse_seconds, "reading the tar"):
                    if header["kind"] == "member":
                        yield RawMember(header["name"], payload if header["refused"] is None else None, header["refused"])
                    elif header["kind"] == "problem":
                        yield ShardProblem(header["message"], header["incomplete"])
            except BudgetExceeded as error:
                yield ShardProblem(f"unreadable tar: stopped by the sandbox: {error}; the members before it were kept", incomplete=True)

    def decode(self, data: bytes, size: int, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> WorkingImage:
        if not data:
            raise ImageDecodeError("empty image (zero bytes)")
        request = {"op": "decode", "size": size, "max_pixels": max_pixels, "memory": self.budgets.decode_memory(max_pixels)}
        with self._lock:
            try:
                [(header, payload)] = list(self._operation(request, data, self.budgets.decode_seconds, "decoding"))
            except BudgetExceeded as error:
                raise ImageDecodeError(str(error)) from None
        if header["kind"] == "error":
            raise ImageDecodeError(header["message"])
        return WorkingImage(_pixels(payload, size), tuple(header["original_size"]), header["format"])

    def close(self) -> None:
        if self._child:
            self._child.kill()
            self._child = None

    def _operation(self, request: dict[str, Any], payload: bytes, seconds: float, what: str) -> Iterator[tuple[dict, bytes]]:
        """The child's replies to one request, up to its last; BudgetExceeded (with the child gone) otherwise."""
        child = self._child if self._child and self._child.alive() else _Child.start()
        self._child = None  # put back only once the operation has ended cleanly
        try:
            child.send(request, payload)
            started_cpu, started = child.cpu_seconds(), time.monotonic()

            def check() -> None:
                if child.cpu_seconds() - started_cpu > seconds:
                    raise BudgetExceeded(f"{what} took more than its budget of {seconds:g} CPU seconds")
                if time.monotonic() - started > seconds * WALL_FACTOR + WALL_SLACK_S:
                    raise BudgetExceeded(f"{what} made no progress for {seconds * WALL_FACTOR + WALL_SLACK_S:g} s")

            while True:
                header, data = child.receive(check, what)
                if header.get("last"):
                    self.last = header
                    yield header, data
                    break
                yield header, data
        except BaseException:
            child.kill()
            raise
        self._child = child


def _pixels(payload: bytes, size: int):
    import numpy as np

    return np.frombuffer(payload, dtype=np.uint8).reshape(size, size, 3).copy()


_shared: dict[Budgets, Sandbox] = {}


def shared_sandbox(budgets: Budgets = Budgets()) -> Sandbox:
    """One sandbox per process and budgets (a Ray worker runs many tasks; each reuses the child)."""
    if budgets not in _shared:
        _shared[budgets] = Sandbox(budgets)
    return _shared[budgets]


# --- the wire: a 4-byte header length, the JSON header, an 8-byte payload length, the payload -------------------

def _frame(header: dict[str, Any], payload: bytes) -> list[bytes]:
    text = json.dumps(header).encode()  # ASCII: names that are not UTF-8 travel as \udcXX escapes
    return [struct.pack("<I", len(text)), text, struct.pack("<Q", len(payload)), payload]


def _write(stream: BinaryIO, header: dict[str, Any], payload: bytes = b"") -> None:
    for part in _frame(header, payload):
        stream.write(part)
    stream.flush()


def _read_exact(stream: BinaryIO, count: int) -> bytes:
    data = stream.read(count)
    if len(data) != count:
        raise EOFError
    return data


def _read(stream: BinaryIO) -> tuple[dict[str, Any], bytes]:
    header = json.loads(_read_exact(stream, struct.unpack("<I", _read_exact(stream, 4))[0]))
    return header, _read_exact(stream, struct.unpack("<Q", _read_exact(stream, 8))[0])


class _Child:
    """The child process as the parent sees it: a pipe each way, read without blocking past a check."""

    def __init__(self, process: subprocess.Popen):
        self.process = process
        self.buffer = bytearray()
        self.fd = process.stdout.fileno()
        self.clock_ticks = os.sysconf("SC_CLK_TCK")

    @classmethod
    def start(cls) -> _Child:
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])),
               "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        # Its own session: a Ctrl-C meant for the job reaches the parent, which stops the child itself.
        process = subprocess.Popen([sys.executable, "-m", "pipeline.io.sandbox"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                   stderr=subprocess.DEVNULL, env=env, start_new_session=True)
        child, started = cls(process), time.monotonic()

        def starting() -> None:
            if time.monotonic() - started > START_TIMEOUT_S:
                child.kill()
                raise BudgetExceeded(f"the decoding process did not start within {START_TIMEOUT_S:g} s")

        child.receive(starting, "starting")  # "ready": its imports are done, so they count against no operation's budget
        return child

    def alive(self) -> bool:
        return self.process.poll() is None

    def send(self, header: dict[str, Any], payload: bytes) -> None:
        try:
            _write(self.process.stdin, header, payload)
        except (BrokenPipeError, OSError) as error:
            raise BudgetExceeded(f"the decoding process could not take the request ({type(error).__name__})") from None

    def cpu_seconds(self) -> float:
        try:
            with open(f"/proc/{self.process.pid}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / self.clock_ticks  # utime, stime
        except (OSError, IndexError, ValueError):
            return 0.0  # no /proc: wall time alone bounds the operation

    def receive(self, check, what: str) -> tuple[dict[str, Any], bytes]:
        while True:
            message = self._parse()
            if message:
                return message
            readable, _, _ = select.select([self.fd], [], [], POLL_S)
            if readable:
                chunk = os.read(self.fd, 1 << 20)
                if not chunk:
                    self.process.wait()
                    code = self.process.returncode
                    cause = f"signal {signal.Signals(-code).name}" if code and code < 0 else f"exit code {code}"
                    raise BudgetExceeded(f"the process {what} died ({cause})")
                self.buffer += chunk
            check()

    def _parse(self) -> tuple[dict[str, Any], bytes] | None:
        if len(self.buffer) < 4:
            return None
        size = struct.unpack_from("<I", self.buffer)[0]
        if len(self.buffer) < 4 + size + 8:
            return None
        length = struct.unpack_from("<Q", self.buffer, 4 + size)[0]
        end = 4 + size + 8 + length
        if len(self.buffer) < end:
            return None
        header = json.loads(bytes(self.buffer[4 : 4 + size]))
        payload = bytes(self.buffer[4 + size + 8 : end])
        del self.buffer[:end]
        return header, payload

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        for stream in (self.process.stdin, self.process.stdout):
            try:
                stream.close()
            except OSError:
                pass


# --- the child ------------------------------------------------------------------------------------------------

def _status(field: str) -> int:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


def _begin(memory: int) -> int:
    """Reset the peak-RSS mark, cap the address space at what is mapped now plus `memory`; returns the RSS now."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        rss, mapped = _status("VmRSS"), _status("VmSize")
    except OSError:
        return 0
    resource.setrlimit(resource.RLIMIT_AS, (mapped + memory, resource.RLIM_INFINITY))
    return rss


def _end(rss: int) -> int:
    resource.setrlimit(resource.RLIMIT_AS, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    try:
        return max(0, _status("VmHWM") - rss)
    except OSError:
        return 0


def _walk(out: BinaryIO, tar: bytes) -> dict[str, Any]:
    from .shards import walk_tar

    for item in walk_tar(tar):
        if isinstance(item, ShardProblem):
            _write(out, {"kind": "problem", "message": item.message, "incomplete": item.incomplete})
        else:
            _write(out, {"kind": "member", "name": item.name, "refused": item.refused}, item.payload or b"")
    return {"kind": "end"}


def _decode(out: BinaryIO, data: bytes, request: dict[str, Any]) -> tuple[dict[str, Any], bytes]:
    from .images import decode_working

    try:
        image = decode_working(data, request["size"], max_pixels=request["max_pixels"])
    except ImageDecodeError as error:
        if isinstance(error.__cause__, MemoryError):
            raise MemoryError from error
        return {"kind": "error", "message": str(error)}, b""
    return {"kind": "image", "original_size": list(image.original_size), "format": image.format}, image.pixels.tobytes()


def serve(inp: BinaryIO, out: BinaryIO) -> None:
    """Say ready, then answer requests until the parent closes the pipe."""
    from . import images, shards  # noqa: F401  (imported before "ready": no operation pays for them)

    _write(out, {"kind": "ready"})
    while True:
        try:
            request, payload = _read(inp)
        except EOFError:
            return
        rss = _begin(request["memory"])
        reply, data = {}, b""
        try:
            if request["op"] == "walk":
                reply = _walk(out, payload)
            else:
                reply, data = _decode(out, payload, request)
        except MemoryError:
            budget = f"its budget of {request['memory'] >> 20} MiB"
            reply = ({"kind": "problem", "message": f"unreadable tar: reading it needs more memory than {budget}", "incomplete": True}
                     if request["op"] == "walk" else {"kind": "error", "message": f"decoding needs more memory than {budget}"})
            data = b""
        finally:
            peak = _end(rss)
        _write(out, {**reply, "last": True, "peak_bytes": peak}, data)


if __name__ == "__main__":
    # The protocol owns the original stdout; anything a library prints goes to stderr instead.
    replies = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    serve(sys.stdin.buffer, replies)
