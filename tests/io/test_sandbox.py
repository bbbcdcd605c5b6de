"""The sandbox that walks tars and decodes images in a child process, under budgets."""

import io
import os
import signal
import threading
import time

import numpy as np
import pytest
from PIL import Image

from pipeline.io.images import ImageDecodeError, decode_working
from pipeline.io.sandbox import Budgets, Sandbox
from pipeline.io.shards import Sample, read_shard_bytes, write_samples


def png(size=(40, 30), mode="RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, (9,) * len(mode)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def sandbox():
    box = Sandbox()
    yield box
    box.close()


def test_results_equal_those_of_this_process(sandbox):
    data = png((300, 200))
    here, there = decode_working(data, 32), sandbox.decode(data, 32)
    assert np.array_equal(here.pixels, there.pixels) and here.original_size == there.original_size == (300, 200)
    assert there.format == "PNG"
    samples = [Sample("caf\udce9", {"png": data, "txt": b"hi"}), Sample("b", {"json": b"{}"}, extra=[("json", b"[]")])]
    tar = write_samples(samples)
    assert read_shard_bytes(tar, sandbox.walk) == read_shard_bytes(tar)
    with pytest.raises(ImageDecodeError, match="not an image"):
        sandbox.decode(b"not an image", 32)


def test_an_image_over_its_cpu_budget_is_an_error_and_the_next_gets_a_fresh_process():
    box = Sandbox(Budgets(decode_seconds=0.05))
    big = png((5000, 5000), "RGBA")
    with pytest.raises(ImageDecodeError, match="more than its budget of 0.05 CPU seconds"):
        box.decode(big, 32)
    assert box.decode(png(), 32).pixels.shape == (32, 32, 3)  # a new child took over
    box.close()


def test_an_image_over_its_memory_budget_is_an_error():
    box = Sandbox(Budgets(decode_memory_bytes=20 << 20))
    with pytest.raises(ImageDecodeError, match="more memory than its budget of 20 MiB"):
        box.decode(png((4000, 4000), "RGBA"), 32)
    assert box.decode(png(), 32).pixels.shape == (32, 32, 3)
    box.close()


def test_a_decoder_that_dies_is_reported_and_replaced(sandbox):
    sandbox.decode(png(), 32)
    pid, slow = sandbox._child.process.pid, png((8000, 8000), "RGBA")  # most of a second to decode

    def kill_during_the_next_decode():
        time.sleep(0.2)
        os.kill(pid, signal.SIGKILL)  # as the kernel's OOM killer, or a decoder's segfault, would

    threading.Thread(target=kill_during_the_next_decode).start()
    with pytest.raises(ImageDecodeError, match=r"the process decoding died \(signal SIGKILL\)"):
        sandbox.decode(slow, 32)
    assert sandbox.decode(png(), 32).pixels.shape == (32, 32, 3)


def test_a_walk_over_its_budget_keeps_the_members_read_before_it():
    box = Sandbox(Budgets(parse_seconds=0.2))
    # Many tiny members: walking them takes well over 0.2 CPU seconds.
    tar = write_samples([Sample(f"k{i:06d}", {"txt": b"x"}) for i in range(60_000)])
    samples, problems = read_shard_bytes(tar, box.walk)
    assert 0 < len(samples) < 60_000
    assert problems[-1].incomplete and "stopped by the sandbox" in problems[-1].message
    box.close()


def test_the_child_never_outlives_its_parent():
    """A parent that goes away closes the pipe: the child reads end-of-file and exits."""
    box = Sandbox()
    box.decode(png(), 32)
    process = box._child.process
    process.stdin.close()
    assert process.wait(timeout=10) == 0
    box._child = None
