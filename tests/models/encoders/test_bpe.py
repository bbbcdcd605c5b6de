import gzip

import pytest

from pipeline.models.encoders.bpe import CLIP_MERGES, ClipBpeTokenizer, read_merges


def test_vocabulary_layout_matches_clip(bpe_path):
    tok = ClipBpeTokenizer.from_file(bpe_path)
    merges = read_merges(bpe_path)
    assert tok.vocab_size == 512 + len(merges) + 2
    assert tok.sot == tok.vocab_size - 2 and tok.eot == tok.vocab_size - 1
    # CLIP's real merges file yields its 49408-token vocabulary: 512 byte symbols + 48894 merges + 2 specials.
    assert 512 + CLIP_MERGES + 2 == 49408


def test_tokens_are_wrapped_padded_and_truncated(bpe_path):
    tok = ClipBpeTokenizer.from_file(bpe_path, context_length=6)
    ids = tok(["Hello  CAT", "photo " * 20])
    assert ids.shape == (2, 6)
    assert ids[0, 0] == tok.sot and ids[0, 3] == tok.eot and ids[0, 4:].eq(0).all()
    assert ids[0, 1] == tok.vocab["hello</w>"] and ids[0, 2] == tok.vocab["cat</w>"]  # lower-cased, merged
    assert ids[1, 0] == tok.sot and ids[1, -1] == tok.eot  # truncated, end token kept
    assert int(ids[1].argmax()) == 5


def test_save_round_trip(bpe_path, tmp_path):
    tok = ClipBpeTokenizer.from_file(bpe_path)
    tok.save(str(tmp_path / "merges.txt.gz"))
    again = ClipBpeTokenizer.from_file(str(tmp_path / "merges.txt.gz"))
    assert again.vocab == tok.vocab


def test_rejects_a_file_that_is_not_a_merges_file(tmp_path):
    path = tmp_path / "bad.txt.gz"
    with gzip.open(path, "wt") as handle:
        handle.write("header\nonly-one-symbol\n")
    with pytest.raises(ValueError, match="not a BPE merges file"):
        read_merges(str(path))
