import json
import subprocess
import sys

from pipeline.io.shards import Sample, read_samples, write_samples
from pipeline.models.noise import NoiseKey
from pipeline.sanitize.config import SanitizeConfig
from pipeline.sanitize.stages import Judge, ReadDecode, WriteOutputs, run_in_process, shard_stages
from tests.corpora import corpus_samples


def test_read_and_write_stages_never_import_a_model_library():
    # A worker that imports torch and transformers spends seconds of CPU before its first shard.
    code = "import sys, pipeline.sanitize.stages; print(sorted(m for m in ('torch', 'transformers', 'diffusers') if m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "[]"


def test_outputs_come_from_the_bytes_that_were_examined(tmp_path):
    """The input shard is replaced between reading and writing (a producer re-uploading it): the
    outputs still hold exactly the samples and bytes that were examined, with their verdicts."""
    from pipeline.sanitize.row_codec import uri_field

    config = SanitizeConfig.resolve(preset="demo", n=2, on_illusion="keep")
    examined, replacement = corpus_samples(0, 3), [Sample("never-examined", {"png": b"\x89PNG swapped in"})]
    shard = tmp_path / "shard-000000.tar"
    shard.write_bytes(write_samples(examined))
    decoded = ReadDecode(work_size=32, max_shard_bytes=1 << 30)({"uri": uri_field(str(shard))})
    shard.write_bytes(write_samples(replacement))
    judged = Judge(config, NoiseKey.fresh())(decoded)
    done = WriteOutputs(output=str(tmp_path / "out"), policy="keep", on_error="keep", on_uncertain="keep")(judged)
    assert done["stop"] == "" and json.loads(done["manifest"])["samples"] == 3
    written = list(read_samples((tmp_path / "out" / "shards" / "shard-000000.tar").read_bytes()))
    assert [s.key for s in written] == [s.key for s in examined]
    assert all(w.members["png"] == e.members["png"] for w, e in zip(written, examined))


def test_the_in_process_executor_runs_a_run_s_stages_shard_after_shard(tmp_path):
    for i in range(2):
        (tmp_path / "in").mkdir(exist_ok=True)
        (tmp_path / "in" / f"shard-{i:06d}.tar").write_bytes(write_samples(corpus_samples(3 * i, 3)))
    config = SanitizeConfig.resolve(preset="demo", n=2, on_illusion="drop")
    stages = shard_stages(config, str(tmp_path / "out"), NoiseKey.fresh())
    assert [s.name for s in stages] == ["read+decode", "judge", "write"] and stages[1].resources.actors == 1
    manifests = list(run_in_process(stages, sorted(str(p) for p in (tmp_path / "in").iterdir())))
    assert [m["shard"] for m in manifests] == ["shard-000000", "shard-000001"] and all(m["samples"] == 3 for m in manifests)
    assert (tmp_path / "out" / "manifests" / "shard-000001.json").exists()
