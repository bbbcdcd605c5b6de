"""The hostile corpus through one process (read -> purify -> outputs): nothing stops, nothing hostile
passes unexamined, nothing is lost, nothing is written outside the output."""

import io
import json
import os
import tarfile

import pyarrow.parquet as pq
import pytest

from pipeline.defense import ConsensusConfig, ConsensusPurifier, VerdictPolicy
from pipeline.io.shards import is_image_extension, key_bytes, read_samples, safe_key
from pipeline.io.storage import Storage, shard_name
from pipeline.presets import get_preset
from pipeline.sanitize.stages import process_shard
from tests.hostile import EXPECTED, TINY_CAP, hostile_corpus


@pytest.fixture(scope="module")
def flag_everything():
    """The demo models with a drift threshold of 0: every examined image is an illusion, so every
    image member that is examined shows up in its sample's note as one."""
    demo = get_preset("demo")
    config = ConsensusConfig(n=2, verdict=VerdictPolicy(max_drift=0.0))
    return ConsensusPurifier(demo.load_reconstructor("vae"), demo.load_encoder(), demo.label_bank(), config)


def write_corpus(directory) -> list[str]:
    storage = Storage()
    uris = []
    for name, data in hostile_corpus().items():
        uris.append(str(directory / name))
        storage.write_bytes(uris[-1], data)
    return uris


def written(key: bytes) -> bytes:
    """A key as the output shard names it (see `safe_key`)."""
    return key_bytes(safe_key(key.decode("utf-8", "surrogateescape")))


def files_under(root) -> set[str]:
    return {os.path.relpath(os.path.join(d, f), root) for d, _, names in os.walk(root) for f in names}


def test_every_case_is_a_row_or_a_problem_and_every_image_is_examined(tmp_path, flag_everything):
    uris = write_corpus(tmp_path / "in")
    before = files_under(tmp_path)
    out = tmp_path / "out"
    for uri in uris:
        manifest = process_shard(Storage(), uri, str(out), flag_everything, policy="keep", batch_size=8, max_shard_bytes=TINY_CAP)
        expected = EXPECTED[shard_name(uri)]
        table = pq.read_table(out / "verdicts" / f"{manifest['shard']}.parquet").to_pylist()
        assert [r["key_bytes"] for r in table] == expected["keys"]  # exactly one row per readable key, in order
        assert {r["key_bytes"] for r in table if r["status"] == "error"} == expected["errors"]
        assert all(r["error"] for r in table if r["status"] == "error")
        assert manifest["complete"] == expected["complete"]
        assert len(manifest["problems"]) == len(expected["problems"])
        assert all(words in problem for words, problem in zip(expected["problems"], manifest["problems"]))

        kept = list(read_samples((out / "shards" / f"{manifest['shard']}.tar").read_bytes()))
        assert [key_bytes(s.key) for s in kept] == [written(k) for k in expected["keys"]]  # error samples kept (on_error keep)
        rows = {written(r["key_bytes"]): r for r in table}
        for sample in kept:
            note = json.loads(sample.members["disillusion.json"])
            images = [ext for ext in sample.members if is_image_extension(ext)]
            if rows[key_bytes(sample.key)]["status"] == "ok":  # every image member was examined (and judged an illusion)
                assert images and note["images"] == {ext: "illusion" for ext in images}
    assert files_under(tmp_path) - before <= {f"out/{p}" for p in files_under(out)}  # nothing outside the output

    rows = {r["key_bytes"]: r for r in pq.read_table(out / "verdicts" / "mixed.parquet").to_pylist()}
    assert rows[b"two"]["image_members"] == 2 and rows[b"caf\xe9-\xff\xfe"]["key"] == "caf\\xe9-\\xff\\xfe"
    for key in (b"jpe", b"jfif", b"tga", b"ico", b"pnm", b"apng"):
        assert rows[key]["status"] == "ok", rows[key]["error"]
    assert "not an image in a decoded format" in rows[b"eps-as-png"]["error"]
    assert "exceeds the limit" in rows[b"overlimit"]["error"] and "symbolic link" in rows[b"link"]["error"]
    huge = pq.read_table(out / "verdicts" / "huge.parquet").to_pylist()
    assert [(r["original_width"], r["original_height"]) for r in huge] == [(4000, 4000), (250_000, 8), (6000, 4000)]

    with tarfile.open(out / "shards" / "mixed.tar") as archive:
        names = archive.getnames()
        assert all(not n.startswith("/") and ".." not in n.split("/") for n in names)
        assert "__/__/escape.png" in names and "abs/rooted.png" in names
        assert any(len(n) > 100 for n in names)  # a PAX name USTAR could not hold
        archive.extractall(tmp_path / "extracted", filter="data")  # Python's own safety filter accepts every member


def test_on_error_drop_quarantines_what_could_not_be_examined_with_nothing_lost(tmp_path, flag_everything):
    uri = write_corpus(tmp_path / "in")[0]  # mixed.tar
    manifest = process_shard(Storage(), uri, str(tmp_path / "out"), flag_everything, policy="keep", on_error="drop", batch_size=8)
    kept = list(read_samples((tmp_path / "out" / "shards" / "mixed.tar").read_bytes()))
    quarantined = list(read_samples((tmp_path / "out" / "quarantine" / "mixed.tar").read_bytes()))
    assert {key_bytes(s.key) for s in quarantined} == EXPECTED["mixed"]["errors"] - {b"link", b"hard", b"fifo", b"dev"}  # no data to keep
    assert {key_bytes(s.key) for s in kept} == {written(k) for k in set(EXPECTED["mixed"]["keys"]) - EXPECTED["mixed"]["errors"]}
    assert manifest["on_error"] == "drop" and manifest["quarantined"] == len(quarantined) + 4
    dup = next(s for s in quarantined if s.key == "dup")  # both copies of the repeated member kept
    with tarfile.open(fileobj=io.BytesIO((tmp_path / "out" / "quarantine" / "mixed.tar").read_bytes())) as archive:
        assert archive.getnames().count("dup.png") == 2 and "png" in dup.members


def test_purify_replaces_each_accepted_illusion_member_and_quarantines_the_rest():
    from pipeline.io.shards import Sample
    from pipeline.sanitize.outputs import sanitised_samples

    samples = [Sample("two", {"png": b"a", "jpg": b"b", "txt": b"t"}), Sample("rejected", {"jpg": b"c"}), Sample("fine", {"png": b"d"})]
    rows = {s.key: {"status": "ok", "verdict": "illusion" if s.key != "fine" else "clean"} for s in samples}
    members = {"two": {"png": "illusion", "jpg": "illusion"}, "rejected": {"jpg": "illusion"}, "fine": {"png": "clean"}}
    pngs = {("two", "png"): b"P1", ("two", "jpg"): b"P2"}  # "rejected": its purified image failed the check
    kept, quarantined = sanitised_samples(samples, rows, members, pngs, policy="purify", work_size=32)
    assert [s.key for s in kept] == ["two", "fine"] and [s.key for s in quarantined] == ["rejected"]
    two = kept[0]
    assert (two.members["png"], two.members["jpg.png"], two.members["txt"]) == (b"P1", b"P2", b"t")  # names kept apart
    assert json.loads(two.members["disillusion.json"])["purified"] == {"png": "png", "jpg": "jpg.png"}
    assert quarantined[0].members == {"jpg": b"c"} and kept[1].members["png"] == b"d"


def test_uncertain_samples_are_kept_or_quarantined_as_on_uncertain_says():
    from pipeline.io.shards import Sample
    from pipeline.sanitize.outputs import sanitised_samples

    outcomes = {"doubt": {"png": "uncertain"}, "mixed": {"png": "uncertain", "jpg": "illusion"}, "fine": {"png": "clean"}}
    samples = [Sample(key, {ext: key.encode() for ext in members}) for key, members in outcomes.items()]
    rows = {key: {"status": "ok", "verdict": max(m.values(), key=["clean", "uncertain", "illusion"].index)} for key, m in outcomes.items()}
    for on_uncertain, kept_keys in (("keep", ["doubt", "fine"]), ("drop", ["fine"])):
        kept, quarantined = sanitised_samples(samples, rows, outcomes, {}, policy="drop", on_uncertain=on_uncertain, work_size=32)
        assert [s.key for s in kept] == kept_keys
        assert sorted(s.key for s in quarantined) == sorted({"doubt", "mixed", "fine"} - set(kept_keys))
    # Under keep, a sample with an illusion member is kept whatever on_uncertain says: its policy decides.
    kept, _ = sanitised_samples(samples, rows, outcomes, {}, policy="keep", on_uncertain="drop", work_size=32)
    assert [s.key for s in kept] == ["mixed", "fine"]
    with pytest.raises(ValueError, match="on_uncertain"):
        sanitised_samples(samples, rows, outcomes, {}, policy="keep", on_uncertain="maybe", work_size=32)
