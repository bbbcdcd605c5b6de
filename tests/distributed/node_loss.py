"""A sanitisation on a three-node local Ray cluster whose worker node dies mid-run (its raylet killed,
as a lost machine would), then the same command again. Run in a process of its own
(`python -m tests.distributed.node_loss DIR`): the cluster must not meet the test session's own.
Writes DIR/result.json: what the run and the rerun did (Ray prints to stdout as its nodes go)."""

from __future__ import annotations

import json
import os
import sys
import threading
import time

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

SHARDS, PER_SHARD = 12, 8


def main(workdir: str) -> None:
    import ray
    from ray.cluster_utils import Cluster

    from pipeline.distributed.runner import run_corpus
    from pipeline.io.storage import Storage
    from pipeline.sanitize.config import SanitizeConfig
    from pipeline.stops import RunStopped
    from tests.corpora import write_corpus

    storage = Storage()
    write_corpus(lambda name, data: storage.write_bytes(os.path.join(workdir, "in", name), data), shards=SHARDS, per_shard=PER_SHARD)
    # The head takes one task at a time; each worker node holds one purification actor of 2 CPUs: after
    # the loss, the pool planned at the start no longer fits, and the restarted actor would wait forever.
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    workers = [cluster.add_node(num_cpus=2) for _ in range(2)]
    ray.init(address=cluster.address, log_to_driver=False, configure_logging=False)
    cluster.wait_for_nodes()
    config = SanitizeConfig.resolve(preset="demo", n=4, batch_size=8)
    lines: list[str] = []
    manifests = os.path.join(workdir, "out", "manifests")

    def kill_after_two_shards() -> None:
        deadline = time.time() + 600
        while time.time() < deadline and not (os.path.isdir(manifests) and len(os.listdir(manifests)) >= 2):
            time.sleep(0.05)
        lines.append(f"killed a worker node after {len(os.listdir(manifests))} shards")
        cluster.remove_node(workers[0], allow_graceful=False)

    killer = threading.Thread(target=kill_after_two_shards, daemon=True)
    killer.start()
    result = {"first": None, "rerun": None}
    for attempt in ("first", "rerun"):
        try:
            summary = run_corpus(config, os.path.join(workdir, "in"), os.path.join(workdir, "out"), echo=lines.append, stall_seconds=120)
            result[attempt] = {"processed": summary["processed"], "skipped": summary["skipped"], "replans": summary["replans"]}
        except RunStopped as error:
            result[attempt] = {"stopped": str(error)}
        if attempt == "first":
            killer.join(timeout=600)
    result["lines"] = lines
    with open(os.path.join(workdir, "result.json"), "w") as handle:
        json.dump(result, handle)
    ray.shutdown()
    cluster.shutdown()


if __name__ == "__main__":
    main(sys.argv[1])
