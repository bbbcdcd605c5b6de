"""The heap thresholds, in fresh processes: the C library's state is per process and set once."""

import os
import platform
import subprocess
import sys

import pytest

# A purification-like cycle: 64 MiB of 1 MiB buffers written, freed, written again. glibc's defaults
# hand the freed top of the heap back to the kernel each time (its dynamic trim threshold is twice
# the largest freed block), so every cycle page-faults through all 64 MiB again.
CYCLES = """
import resource, sys
import numpy as np
from pipeline.malloc_tuning import keep_freed_memory

applied = keep_freed_memory()
def cycle():
    buffers = [np.ones(2**18, dtype=np.float32) for _ in range(64)]
    del buffers
cycle()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(4):
    cycle()
print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(**env) -> tuple[bool, int]:
    out = subprocess.run([sys.executable, "-c", CYCLES], env={**os.environ, **env}, capture_output=True, text=True, check=True)
    applied, faults = out.stdout.split()
    return applied == "True", int(faults)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the thresholds are glibc's")
def test_freed_batches_are_reused_instead_of_faulted_in_again():
    applied, faults = _faults()
    assert applied and faults < 1000  # 4 cycles of 64 MiB would be 65,536 faults of 4 KiB pages

    applied, faults = _faults(DISILLUSION_KEEP_FREED_MEMORY="0")  # glibc's defaults: the cost the thresholds remove
    assert not applied and faults > 30_000
