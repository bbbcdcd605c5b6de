import json

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
    assert "cannot decode" in rows[2]["error"]
    assert all(row["verdict"] in ("clean", "illusion", "uncertain") for row in rows[:2])
    assert sorted(p.name for p in (tmp_path / "purified").iterdir()) == ["img0.purified.png", "img1.purified.png"]
    printed = capsys.readouterr().out
    assert "broken.jpg" in printed and "error" in printed
