import json
import os

import pytest
from PIL import Image

from jobs.cli import build_parser, main
from tests.conftest import tiny_clip_encoder, tiny_vae


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
    code = main([
        "check", *good, str(bad), "--reconstructor", f"vae:{tmp_path / 'vae'}", "--encoder", f"clip:{tmp_path / 'clip'}",
        "--label", "cat", "--label", "dog", "--n", "4", "--json", str(out_json), "--save-purified", str(tmp_path / "purified"),
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
