import subprocess
import sys

from pipeline.distributed.runner import plan_resources
from pipeline.distributed.stages import plan_stages
from pipeline.sanitize.config import SanitizeConfig


def test_read_and_write_workers_never_import_a_model_library():
    # A worker that imports torch and transformers spends seconds of CPU before its first shard.
    code = "import sys, pipeline.distributed.stages; print(sorted(m for m in ('torch', 'transformers', 'diffusers') if m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "[]"


def test_each_stage_declares_its_resources():
    resources = plan_resources({"CPU": 16.0, "GPU": 2.0})
    read, purify, write = plan_stages(SanitizeConfig(), "/out", resources)
    assert (read.actors, read.num_gpus, write.actors, write.num_gpus) == (0, 0.0, 0, 0.0)
    assert purify.actors == 2 and purify.num_gpus == 1.0 and purify.num_cpus == 1.0
    assert read.kwargs == {"work_size": 32, "max_shard_bytes": 2 << 30, "s3_endpoint": None}  # plain settings: no config to unpickle
