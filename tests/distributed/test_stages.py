import subprocess
import sys

from pipeline.distributed.runner import plan_resources
from pipeline.distributed.stages import plan_stages
from pipeline.io.sandbox import Budgets
from pipeline.models.noise import NoiseKey
from pipeline.sanitize.config import SanitizeConfig


def test_read_and_write_workers_never_import_a_model_library():
    # A worker that imports torch and transformers spends seconds of CPU before its first shard.
    code = "import sys, pipeline.distributed.stages; print(sorted(m for m in ('torch', 'transformers', 'diffusers') if m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "[]"


def test_each_stage_declares_its_resources():
    resources = plan_resources({"CPU": 16.0, "GPU": 2.0})
    noise = NoiseKey.fresh()
    read, purify, write = plan_stages(SanitizeConfig.resolve(), "/out", resources, noise)
    assert purify.kwargs["noise"] is noise  # to the actors' constructors, never through the config
    assert (read.actors, read.num_gpus, write.actors, write.num_gpus) == (0, 0.0, 0, 0.0)
    assert purify.actors == 2 and purify.num_gpus == 1.0 and purify.num_cpus == 1.0
    assert read.kwargs == {"work_size": 32, "max_shard_bytes": 2 << 30, "budgets": Budgets(), "s3_endpoint": None}  # plain settings: no torch to import


def test_outputs_come_from_the_bytes_that_were_examined(tmp_path):
    """The input shard is replaced between reading and writing (a producer re-uploading it): the
    outputs still hold exactly the samples and bytes that were examined, with their verdicts."""
    import json

    from pipeline.distributed.rows import uri_field
    from pipeline.distributed.stages import Purify, read_and_decode, write_outputs
    from pipeline.io.shards import Sample, read_samples, write_samples
    from tests.corpora import corpus_samples

    config = SanitizeConfig.resolve(preset="demo", n=2, on_illusion="keep")
    examined, replacement = corpus_samples(0, 3), [Sample("never-examined", {"png": b"\x89PNG swapped in"})]
    shard = tmp_path / "shard-000000.tar"
    shard.write_bytes(write_samples(examined))
    decoded = read_and_decode({"uri": uri_field(str(shard))}, work_size=32, max_shard_bytes=1 << 30, s3_endpoint=None)
    shard.write_bytes(write_samples(replacement))
    purified = Purify(config, NoiseKey.fresh())(decoded)
    done = write_outputs(purified, output=str(tmp_path / "out"), policy="keep", on_error="keep", on_uncertain="keep",
                         s3_endpoint=None)
    assert done["stop"] == "" and json.loads(done["manifest"])["samples"] == 3
    written = list(read_samples((tmp_path / "out" / "shards" / "shard-000000.tar").read_bytes()))
    assert [s.key for s in written] == [s.key for s in examined]
    assert all(w.members["png"] == e.members["png"] for w, e in zip(written, examined))
