from pipeline.distributed.runner import plan_resources
from pipeline.distributed.stages import plan_stages
from pipeline.io.sandbox import Budgets
from pipeline.models.noise import NoiseKey
from pipeline.sanitize.config import SanitizeConfig


def test_each_stage_declares_its_resources():
    resources = plan_resources({"CPU": 16.0, "GPU": 2.0})
    noise = NoiseKey.fresh()
    read, purify, write = plan_stages(SanitizeConfig.resolve(), "/out", resources, noise)
    assert purify.kwargs["noise"] is noise  # to the actors' constructors, never through the config
    assert (read.resources.actors, read.resources.num_gpus, write.resources.actors, write.resources.num_gpus) == (0, 0.0, 0, 0.0)
    assert purify.resources.actors == 2 and purify.resources.num_gpus == 1.0 and purify.resources.num_cpus == 1.0
    assert read.kwargs == {"work_size": 32, "max_shard_bytes": 2 << 30, "budgets": Budgets(), "s3_endpoint": None}  # plain settings: no torch to import
