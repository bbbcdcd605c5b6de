import json
import os

import pytest
from PIL import Image

from jobs.cli import build_parser, main
from tests.tiny_models import tiny_clip_encoder, tiny_vae


def test_help_lists_the_jobs(capsys):
    parser = build_parser()
    help_text = parser.format_help()
    assert "check" in help_text
    assert main([]) == 2


def test_check_reports_every_file_including_bad_ones(tmp_path, bpe_path, capsys):
    tiny_vae().save_pretrained(tmp_path / "vae")
    tiny_clip_encoder(bpe_path).save_pretrained(str(tmp_path / "clip"))
    good = []
    for i, colour in enumerate([(200, 10, 10), (10, 200, 10)]):
        path = tmp_path / f"img{i}.png"
        Image.new("RGB", (20, 20), colour).save(path)
        good.append(str(path))
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not a jpeg")
    out_json = tmp_path / "out.jsonl"
    (tmp_path / "labels.txt").write_text("cat\ndog\n")
    code = main([
        "check", *good, str(bad), "--reconstructor", f"vae:{tmp_path / 'vae'}", "--encoder", f"clip:{tmp_path / 'clip'}",
        "--labels", str(tmp_path / "labels.txt"), "--n", "4", "--json", str(out_json), "--save-purified", str(tmp_path / "purified"),
    ])
    assert code == 1  # one file could not be read
    rows = [json.loads(line) for line in out_json.read_text().splitlines()]
    assert [row["path"] for row in rows] == [*good, str(bad)]
    assert [row["status"] for row in rows] == ["ok", "ok", "error"]
    assert "not an image in a decoded format" in rows[2]["error"]
    assert all(row["verdict"] in ("clean", "illusion", "uncertain") for row in rows[:2])
    assert sorted(p.name for p in (tmp_path / "purified").iterdir()) == ["img0.purified.png", "img1.purified.png"]
    printed = capsys.readouterr().out
    assert "broken.jpg" in printed and "error" in printed
    assert f"reconstructor vae:{tmp_path / 'vae'}, encoder clip:{tmp_path / 'clip'}, witness none" in printed


def test_check_judges_a_png_and_a_jpeg_of_ones_own_with_the_defaults_as_sanitize_would(tmp_path, capsys):
    from pipeline.io.images import encode_png
    from pipeline.io.shards import Sample, write_samples
    from pipeline.io.storage import Storage
    from pipeline.models.noise import NoiseKey
    from pipeline.presets import get_preset
    from pipeline.research.data.fashion_mnist import load_sample
    from pipeline.sanitize.config import SanitizeConfig
    from pipeline.sanitize.stages import process_shard

    images, _ = load_sample().tensors(slice(0, 2))
    (tmp_path / "coat.png").write_bytes(encode_png(images[0]))
    photo = Image.fromarray((images[1].permute(1, 2, 0).numpy() * 255).astype("uint8")).resize((300, 300))
    photo.save(tmp_path / "photo.jpg", quality=90)
    files = [str(tmp_path / "coat.png"), str(tmp_path / "photo.jpg")]
    assert main(["check", *files, "--seed", "0", "--json", str(tmp_path / "out.jsonl")]) == 0
    printed = capsys.readouterr().out
    demo = get_preset("demo")
    assert f"judged by preset demo: reconstructor {demo.reconstructors['vae']}, encoder {demo.encoder}, witness {demo.witness}" in printed
    assert f"max_drift {demo.verdict.max_drift:g}" in printed and "noise public seed 0" in printed
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [r["status"] for r in rows] == ["ok", "ok"] and all(r["witness_gap"] is not None for r in rows)
    assert rows[0]["thresholds"]["max_witness_gap"] == demo.verdict.max_witness_gap and rows[0]["models"]["witness"] == demo.witness
    # The same files inside a shard, sanitised with the same settings: the same verdicts and scores.
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "shard-000000.tar").write_bytes(write_samples([Sample("coat", {"png": (tmp_path / "coat.png").read_bytes()}),
                                                                     Sample("photo", {"jpg": (tmp_path / "photo.jpg").read_bytes()})]))
    config = SanitizeConfig.resolve(seed=0)
    process_shard(Storage(), str(tmp_path / "in" / "shard-000000.tar"), str(tmp_path / "out"), config.build_purifier(), policy=None,
                  work_size=config.working_size(), noise=NoiseKey.public(0), batch_size=16)
    import pyarrow.parquet as pq

    table = pq.read_table(tmp_path / "out" / "verdicts" / "shard-000000.parquet").to_pylist()
    by_key = {r["key"]: r for r in table}
    for key, row in zip(("coat", "photo"), rows):
        assert by_key[key]["verdict"] == row["verdict"] and by_key[key]["label_consensus"] == row["label_consensus"]
        assert abs(by_key[key]["drift"] - row["drift"]) < 1e-5


@pytest.fixture
def corpus_dir(tmp_path):
    from pipeline.io.shards import Sample, write_samples

    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "shard-000000.tar").write_bytes(write_samples([Sample("a", {"txt": b"no image"})]))
    (tmp_path / "empty-labels.txt").write_text("# nothing but a comment\n\n")
    (tmp_path / "a-file").write_text("not a directory")
    (tmp_path / "settings.json").write_text(json.dumps({"n": 4, "colour": "blue"}))
    return tmp_path


@pytest.mark.parametrize("job", ["sanitize", "audit"])
@pytest.mark.parametrize("change, code, words", [
    ({"--n": "0"}, 2, "n must be at least 1"),
    ({"--batch-size": "0"}, 2, "batch-size must be at least 1"),
    ({"--input": "{tmp}/in/*.tgz"}, 2, "no shards match"),
    ({"--input": "{tmp}/absent"}, 2, "no such file or directory"),
    ({"--labels": "{tmp}/empty-labels.txt"}, 2, "holds no labels"),
    ({"--preset": "no-such-preset"}, 2, "unknown preset 'no-such-preset'"),
    ({"--output": "{tmp}/in/clean"}, 2, "is inside the input"),
    ({"--config": "{tmp}/settings.json"}, 2, "unknown setting(s) colour"),
    ({"--output": "{tmp}/a-file/out"}, 3, "cannot write"),
])
def test_bad_arguments_end_with_one_clear_line_and_a_documented_code(corpus_dir, capsys, job, change, code, words):
    """Checked before Ray starts: one line on stderr, no traceback, the code the README documents."""
    options = {"--input": "{tmp}/in", "--output": "{tmp}/out", **change}
    argv = [job] + [part.format(tmp=corpus_dir) for pair in options.items() for part in pair]
    assert main(argv) == code
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"disillusion {job}: error: ") and words in err, err
    assert not (corpus_dir / "in" / "clean").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="permissions do not bind root; the not-a-directory case covers root")
def test_a_read_only_output_is_exit_code_3(corpus_dir, capsys):
    (corpus_dir / "out").mkdir(mode=0o500)
    assert main(["audit", "--input", str(corpus_dir / "in"), "--output", str(corpus_dir / "out")]) == 3
    assert "Permission denied" in capsys.readouterr().err


def test_native_messages_go_to_a_log_file_and_the_projects_own_lines_to_the_terminal(tmp_path):
    import subprocess
    import sys

    script = (
        "import os, sys\n"
        "from jobs.cli import _native_messages_to_file\n"
        "with _native_messages_to_file(verbose=False) as log:\n"
        "    os.write(2, b'core_worker.cc: a native line\\n')\n"
        "    print('the project line', file=sys.stderr)\n"
        "print(log)\n"
        "with _native_messages_to_file(verbose=True):\n"
        "    os.write(2, b'shown with -v\\n')\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=os.getcwd())
    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines() == ["the project line", "shown with -v"]
    log = done.stdout.strip()
    with open(log) as handle:
        assert handle.read() == "core_worker.cc: a native line\n"
    os.remove(log)
