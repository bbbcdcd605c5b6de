"""The Ray Data executor of a shard's stage objects (pipeline/sanitize/stages.py):

    read + decode (CPU tasks)  ->  judge (actor pool: models loaded once per actor, GPU when there is one)
                               ->  write outputs, manifest last (CPU tasks)  ->  the driver gets the manifest

A row is one input shard. Workers own whole shards: the bytes read, the pixels decoded and the
outputs written never pass through the driver, which only counts manifests. Stateless stages become
tasks (their object, holding plain settings, is shipped to the workers), stages with models an
actor pool; each reserves the resources its stage declares.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..sanitize.stages import Resources, Stage, shard_stages

if TYPE_CHECKING:
    from ..models.noise import NoiseKey
    from ..sanitize.config import SanitizeConfig

# A lost actor (OOM kill, lost node) is not restarted by Ray: a restart would wait for the resources
# of the capacity that was lost, and take CPUs the read and write tasks need. Its shard's task fails,
# the execution ends, and the runner plans again on the capacity that remains (runner.py).
ACTOR_RESTARTS = 0


def apply(stage: Stage, dataset):
    """`dataset` mapped through `stage` on Ray Data."""
    import warnings

    import ray

    resources = stage.resources
    if not resources.actors:
        return dataset.map(stage.build(), num_cpus=resources.num_cpus, num_gpus=resources.num_gpus)
    pool = ray.data.ActorPoolStrategy(min_size=resources.actors, max_size=max(resources.actors, resources.max_actors))
    with warnings.catch_warnings():
        # Ray 2.60 (pinned) has no named parameter for actor restarts yet; the generic one it
        # deprecates is the only way to set them.
        warnings.filterwarnings("ignore", message="`ray_remote_args` is deprecated")
        return dataset.map(
            stage.make, fn_constructor_kwargs=stage.kwargs, compute=pool, num_cpus=resources.num_cpus, num_gpus=resources.num_gpus,
            max_restarts=ACTOR_RESTARTS, max_task_retries=ACTOR_RESTARTS,
        )


def plan_stages(config: SanitizeConfig, output: str, resources, noise: NoiseKey) -> list[Stage]:
    """The run's stages with the resources of this plan (runner.plan_resources)."""
    judge = Resources(num_cpus=resources.cpus_per_actor, num_gpus=resources.gpus_per_actor, actors=resources.actors,
                      max_actors=resources.max_actors)
    return shard_stages(config, output, noise, task_cpus=resources.task_cpus, judge=judge, threads=resources.threads_per_actor)
