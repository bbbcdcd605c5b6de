"""Run fuzzed shards through the product's read, decode, purify and write path and check each one.

For every shard the oracle demands:
- no exception out of the shard's work, and an end within `timeout` seconds (else `abort` / `hang`);
- a manifest; a verdict table with one row per key the reader reports, keys unique (`accounting`);
- the keys an independent in-process read of the same bytes finds, unless the sandbox stopped the
  read on a budget (then a subset, and the manifest says so) (`accounting`);
- outputs that read back without problems, holding every sample exactly once (sanitised shard plus
  quarantine), each kept sample with its verdict member naming its verdict key (`accounting`);
- no sample that decoded yet could not be purified (it would pass unexamined) (`accounting`);
- every decode within the documented memory bound for its format (`memory`).
Failing shards are saved under `failures/` with their seed, so each can become a reproducer.
"""

from __future__ import annotations

import collections
import json
import os
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from ...io.images import DECODE_FIXED_BYTES, decode_bytes_per_pixel
from ...io.sandbox import HEADROOM_BYTES, Budgets, Sandbox
from ...io.shards import key_bytes, plain_tar, read_shard_bytes, safe_key
from ...io.storage import Storage
from ...sanitize.outputs import output_paths
from ...sanitize.stages import process_shard
from .mutations import fuzz_shard

# Rotated over shards so that every writer path is exercised: each of sanitize's POLICIES
# (sanitize/outputs.py), in the order the seeded campaigns have always used, then None (audit).
POLICY_ROTATION = ("drop", "purify", "keep", None)


class _Timeout(Exception):
    pass


@dataclass
class Outcome:
    seed: int
    mutations: list[str]
    status: str  # ok, abort, hang, accounting, memory
    detail: str = ""
    seconds: float = 0.0
    samples: int = 0
    errors: int = 0
    problems: list[str] = field(default_factory=list)


class RecordingSandbox(Sandbox):
    """A sandbox that keeps each decode's format, size and peak memory, and each walk's peak."""

    def __init__(self, budgets: Budgets):
        super().__init__(budgets)
        self.decodes: list[dict[str, Any]] = []
        self.walks: list[tuple[int, int]] = []  # (tar bytes, peak bytes)

    def walk(self, tar):
        yield from super().walk(tar)
        if tar:  # an empty tar is not sent to the child: `last` is still the previous operation's
            self.walks.append((len(tar), self.last.get("peak_bytes", 0)))

    def decode(self, data, size, *, max_pixels):
        try:
            return super().decode(data, size, max_pixels=max_pixels)
        finally:
            self.decodes.append(dict(self.last))


def memory_violations(sandbox: RecordingSandbox) -> list[str]:
    """Decodes and walks that held more than the documented bound."""
    found = []
    for reply in sandbox.decodes:
        if reply.get("kind") == "image":
            width, height = reply["original_size"]
            bound = decode_bytes_per_pixel(reply["format"]) * width * height + DECODE_FIXED_BYTES
            if reply["peak_bytes"] > bound:
                found.append(f"{reply['format']} {width}x{height}: {reply['peak_bytes']} bytes > {bound}")
    found += [f"walk of {size} bytes: {peak} > {size + HEADROOM_BYTES}" for size, peak in sandbox.walks if peak > size + HEADROOM_BYTES]
    return found


@dataclass
class ShardCheck:
    """The oracle for one shard (see the module's docstring)."""

    purifier: Any
    sandbox: RecordingSandbox
    workdir: str
    timeout: float = 120.0

    def __call__(self, seed: int, data: bytes, mutations: list[str]) -> Outcome:
        storage, name = Storage(), f"fuzz-{seed:06d}"
        uri, output = os.path.join(self.workdir, "in", f"{name}.tar"), os.path.join(self.workdir, "out")
        storage.write_bytes(uri, data)
        policy = POLICY_ROTATION[seed % len(POLICY_ROTATION)]
        self.sandbox.decodes.clear()
        self.sandbox.walks.clear()
        outcome = Outcome(seed, mutations, "ok")
        start = time.perf_counter()
        try:
            with _alarm(self.timeout):
                manifest = process_shard(storage, uri, output, self.purifier, policy=policy, batch_size=16, sandbox=self.sandbox)
                outcome.detail = "; ".join(self._accounting(storage, data, output, name, manifest, policy))
        except _Timeout:
            outcome.status, outcome.detail = "hang", f"not finished after {self.timeout:g} s"
        except Exception as error:  # the product raised: exactly what must never happen
            outcome.status, outcome.detail = "abort", f"{type(error).__name__}: {error}"[:500]
        else:
            outcome.samples, outcome.errors, outcome.problems = manifest["samples"], manifest["errors"], manifest["problems"]
            if outcome.detail:
                outcome.status = "accounting"
            elif violations := memory_violations(self.sandbox):
                outcome.status, outcome.detail = "memory", "; ".join(violations)
        outcome.seconds = round(time.perf_counter() - start, 3)
        os.remove(uri)
        return outcome

    def _accounting(self, storage: Storage, data: bytes, output: str, name: str, manifest: dict, policy: str | None) -> list[str]:
        paths, wrong = output_paths(output, name), []
        table = pq.read_table(pa.BufferReader(storage.read_bytes(paths["verdicts"])))
        keys = table.column("key_bytes").to_pylist()
        if len(keys) != manifest["samples"] or len(set(keys)) != len(keys):
            wrong.append(f"{len(keys)} verdict rows ({len(set(keys))} keys) for {manifest['samples']} samples")
        # A sample that decoded but could not be purified goes unexamined: an evasion, not an input error.
        wrong += [f"decoded but not examined: {e}" for e in table.column("error").to_pylist() if e and e.startswith("purification failed")]
        with _alarm(self.timeout):  # the same bytes read in this process, without the sandbox
            tar, problem = plain_tar(data)
            reference, _ = read_shard_bytes(tar)
        expected = [key_bytes(s.key) for s in reference]
        stopped = any("budget" in p or "sandbox" in p for p in manifest["problems"])
        if (keys != expected and not stopped) or (stopped and not set(keys) <= set(expected)):
            wrong.append(f"verdict keys {keys[:5]}... differ from the reader's {expected[:5]}...")
        written: list[bytes] = []
        for part in ("shard", "quarantine"):
            if storage.exists(paths[part]):
                samples, problems = read_shard_bytes(storage.read_bytes(paths[part]))
                if problems:
                    wrong.append(f"{part} reads back with problems: {[p.message for p in problems]}")
                for sample in samples:
                    written.append(key_bytes(sample.key))
                    note = sample.members.get("disillusion.json")
                    if part == "shard" and (note is None or json.loads(note)["key"].encode() not in {_display(k) for k in keys}):
                        wrong.append(f"kept sample {sample.key!r} has no verdict member naming its verdict key")
        if policy is not None:
            want = sorted(key_bytes(safe_key(k.decode("utf-8", "surrogateescape"))) for k in keys)
            if sorted(written) != want:
                wrong.append(f"outputs hold {len(written)} samples for {len(keys)} verdict rows (or other keys)")
        return wrong


def _display(key: bytes) -> bytes:
    return key.decode("utf-8", "backslashreplace").encode()


class _alarm:
    """Raise _Timeout in this (the main) thread after `seconds`: a hang detector for the campaign."""

    def __init__(self, seconds: float):
        self.seconds = seconds

    def __enter__(self):
        def ring(*_):
            raise _Timeout

        self.previous = signal.signal(signal.SIGALRM, ring)
        signal.setitimer(signal.ITIMER_REAL, self.seconds)

    def __exit__(self, *exc):
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, self.previous)


def run_campaign(
    shards: int, *, seed: int = 0, workdir: str, purifier, budgets: Budgets = Budgets(), timeout: float = 120.0,
    shard_maker: Callable[[int], tuple[bytes, list[str]]] = fuzz_shard, progress: Callable[[int, Outcome], None] | None = None,
) -> dict[str, Any]:
    """`shards` fuzzed shards (seeds `seed` .. `seed + shards - 1`) through the oracle; the summary."""
    check = ShardCheck(purifier, RecordingSandbox(budgets), workdir, timeout)
    outcomes = []
    for index, outcome in enumerate(_outcomes(check, range(seed, seed + shards), shard_maker)):
        outcomes.append(outcome)
        if outcome.status != "ok":
            data, _ = shard_maker(outcome.seed)
            Storage().write_bytes(os.path.join(workdir, "failures", f"seed-{outcome.seed}.tar"), data)
        if progress:
            progress(index, outcome)
    check.sandbox.close()
    return summarise(outcomes, seed=seed, budgets=budgets, timeout=timeout)


def _outcomes(check: ShardCheck, seeds, shard_maker) -> Iterator[Outcome]:
    for seed in seeds:
        data, mutations = shard_maker(seed)
        yield check(seed, data, mutations)


def summarise(outcomes: list[Outcome], **settings) -> dict[str, Any]:
    statuses = collections.Counter(o.status for o in outcomes)
    by_mutation: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for outcome in outcomes:
        for mutation in set(outcome.mutations):
            by_mutation[mutation][outcome.status] += 1
    seconds = sorted(o.seconds for o in outcomes)
    return {
        "settings": {k: (asdict(v) if hasattr(v, "__dataclass_fields__") else v) for k, v in settings.items()},
        "shards": len(outcomes),
        "statuses": {s: statuses.get(s, 0) for s in ("ok", "abort", "hang", "accounting", "memory")},
        "samples": sum(o.samples for o in outcomes),
        "error_rows": sum(o.errors for o in outcomes),
        "shards_with_problems": sum(bool(o.problems) for o in outcomes),
        "seconds": {"total": round(sum(seconds), 1), "median": seconds[len(seconds) // 2] if seconds else None,
                    "max": seconds[-1] if seconds else None},
        "by_mutation": {m: dict(c) for m, c in sorted(by_mutation.items())},
        "failures": [asdict(o) for o in outcomes if o.status != "ok"],
    }


def run_cli_campaign(shards: int, *, seed: int, workdir: str, timeout: float = 3600.0) -> dict[str, Any]:
    """`shards` fuzzed shards in one directory through `disillusion audit` (a local Ray cluster), run
    twice: each run must end (exit 0 or 1, never a traceback), every shard must have a manifest whose
    sample count its verdict table matches, and the rerun redoes only the incomplete shards."""
    import subprocess
    import sys

    storage, source, output = Storage(), os.path.join(workdir, "cli-in"), os.path.join(workdir, "cli-out")
    for index in range(seed, seed + shards):
        storage.write_bytes(os.path.join(source, f"fuzz-{index:06d}.tar"), fuzz_shard(index)[0])
    runs, wrong = [], []
    for attempt in ("first", "rerun"):
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "jobs", "audit", "--input", source, "--output", output, "--n", "2", "--no-report"],
                              capture_output=True, text=True, timeout=timeout)
        runs.append({"run": attempt, "exit_code": done.returncode, "seconds": round(time.perf_counter() - start, 1),
                     "last_line": (done.stdout.strip().splitlines() or [""])[-1][:300]})
        if done.returncode not in (0, 1) or "Traceback" in done.stderr:
            wrong.append(f"{attempt} run: exit {done.returncode}: {done.stderr.strip()[-500:]}")
    manifests = {}
    for index in range(seed, seed + shards):
        paths = output_paths(output, f"fuzz-{index:06d}")
        if not storage.exists(paths["manifest"]):
            wrong.append(f"fuzz-{index:06d}: no manifest")
            continue
        manifests[index] = json.loads(storage.read_bytes(paths["manifest"]))
        rows = pq.read_metadata(paths["verdicts"]).num_rows
        if rows != manifests[index]["samples"]:
            wrong.append(f"fuzz-{index:06d}: {rows} verdict rows for {manifests[index]['samples']} samples")
    incomplete = sum(not m["complete"] for m in manifests.values())
    return {"shards": shards, "seed": seed, "runs": runs, "manifests": len(manifests), "incomplete_shards": incomplete,
            "samples": sum(m["samples"] for m in manifests.values()), "failures": wrong}
