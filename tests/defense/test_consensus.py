import pytest
import torch
import torch.nn.functional as F

from pipeline.defense import ConsensusConfig, ConsensusPurifier, LabelBank, VerdictPolicy, majority_label
from pipeline.models.reconstructors import VAEReconstructor
from tests.tiny_models import tiny_clip_encoder, tiny_vae

LABELS = ["cat", "dog", "hello", "photo"]


@pytest.fixture(scope="module")
def parts(bpe_path):
    return VAEReconstructor(tiny_vae(), latent_noise=1.0), tiny_clip_encoder(bpe_path)


def purifier(parts, **config):
    reconstructor, encoder = parts
    return ConsensusPurifier(reconstructor, encoder, LABELS, ConsensusConfig(**config))


def batch(count=6, seed=0):
    return torch.rand(count, 3, 24, 24, generator=torch.Generator().manual_seed(seed))


def test_full_n_votes_agreement_and_purified_embedding(parts):
    reconstructor, encoder = parts
    images, seeds = batch(), [11, 12, 13, 14, 15, 16]
    results = purifier(parts, n=7, early_exit="off").purify(images, seeds=seeds)
    text = encoder.embed_texts([f"a photo of a {label}." for label in LABELS])
    with torch.no_grad():
        recon = reconstructor.reconstruct(images, 7, seeds=seeds)
        emb = encoder.embed_images(recon.flatten(0, 1)).unflatten(0, (6, 7))
        original = encoder.embed_images(images)
    for i, result in enumerate(results):
        votes = (emb[i] @ text.T).argmax(-1)
        assert result.samples_used == 7 and result.votes == votes.tolist()
        counts = torch.bincount(votes, minlength=len(LABELS))
        assert result.label_consensus == majority_label(counts, (emb[i] @ text.T).mean(0))
        assert result.agreement == pytest.approx(counts[result.label_consensus].item() / 7)
        expected = F.normalize(emb[i][votes == result.label_consensus].mean(0), dim=-1)
        torch.testing.assert_close(result.embedding, expected, atol=1e-5, rtol=0)
        assert result.drift == pytest.approx(1 - float(original[i] @ expected), abs=1e-5)
        assert result.label_original == int((original[i] @ text.T).argmax())
        assert result.topk_consensus[0] == result.label_consensus and len(result.topk_consensus) == 4
        assert result.votes[result.representative_index] == result.label_consensus
        torch.testing.assert_close(result.similarity_purified, result.embedding @ text.T, atol=1e-5, rtol=0)


def test_certain_early_exit_gives_the_full_n_label(parts):
    images = batch(12, seed=3)
    full = purifier(parts, n=9, early_exit="off").purify(images)
    early = purifier(parts, n=9, early_exit="certain").purify(images)
    assert [r.label_consensus for r in early] == [r.label_consensus for r in full]
    assert all(r.samples_used <= 9 for r in early)
    assert any(r.samples_used < 9 for r in early)
    for e, f in zip(early, full):
        assert e.votes == f.votes[: e.samples_used]  # the same draws, just fewer of them


def test_sequential_early_exit_uses_fewer_samples(parts):
    images = batch(12, seed=3)
    full = purifier(parts, n=15, early_exit="off").purify(images)
    certain = purifier(parts, n=15, early_exit="certain").purify(images)
    sequential = purifier(parts, n=15, early_exit="sequential", alpha=0.05, round_size=3).purify(images)
    assert sum(r.samples_used for r in sequential) <= sum(r.samples_used for r in certain)
    agree = sum(s.label_consensus == f.label_consensus for s, f in zip(sequential, full))
    assert agree >= 10


def test_results_do_not_depend_on_the_batch(parts):
    images, seeds = batch(), [5, 6, 7, 8, 9, 10]
    together = purifier(parts, n=5).purify(images, seeds=seeds)
    alone = purifier(parts, n=5).purify(images[2:3], seeds=seeds[2:3])[0]
    assert alone.votes == together[2].votes
    torch.testing.assert_close(alone.embedding, together[2].embedding, atol=1e-5, rtol=0)


def test_representative_image_and_captions(parts):
    reconstructor, _ = parts
    images = batch(3)
    results = purifier(parts, n=4, early_exit="off").purify(images, seeds=[1, 2, 3], captions=["a cat", None, "dog"], keep_images=True)
    recon = reconstructor.reconstruct(images, 4, seeds=[1, 2, 3])
    for i, result in enumerate(results):
        torch.testing.assert_close(result.image, recon[i, result.representative_index], atol=1e-5, rtol=0)
    assert results[1].caption_cos_original is None and results[1].caption_cos_purified is None
    assert -1 <= results[0].caption_cos_original <= 1 and -1 <= results[2].caption_cos_purified <= 1
    # each image as written (8-bit) re-embedded: its label and closeness decide whether it may replace the input
    written = torch.stack([r.image for r in results]).mul(255).round().div(255)
    with torch.no_grad():
        emb = parts[1].embed_images(written).float()
    for result, embedding in zip(results, emb):
        assert result.image_cos == pytest.approx(float(embedding @ result.embedding), abs=1e-5)
        assert result.replacement_accepted == VerdictPolicy().replacement_accepted(
            result.label_original, result.label_consensus, result.image_label, result.image_cos)
    assert purifier(parts, n=4).purify(images).__getitem__(0).replacement_accepted is None  # no image, no check


def test_input_validation(parts):
    with pytest.raises(ValueError, match="seeds"):
        purifier(parts).purify(batch(2), seeds=[1])
    with pytest.raises(ValueError):
        ConsensusConfig(n=0)
    with pytest.raises(ValueError):
        ConsensusConfig(early_exit="sometimes")


def test_verdict_policy_order():
    policy = VerdictPolicy(min_agreement=0.6, max_drift=0.3)
    assert policy.decide(1, 1, 0.9, 0.1) == "clean"
    assert policy.decide(1, 2, 0.9, 0.1) == "illusion"
    assert policy.decide(1, 2, 0.5, 0.1) == "uncertain"
    assert policy.decide(1, 1, 0.9, 0.5) == "illusion"
    assert VerdictPolicy(min_agreement=0.6).decide(1, 1, 0.9, 0.9) == "clean"
    # A label flip with a small embedding move is a boundary case, not an illusion.
    gated = VerdictPolicy(max_drift=0.3, flip_min_drift=0.2)
    assert gated.decide(1, 2, 0.9, 0.1) == "uncertain"
    assert gated.decide(1, 2, 0.9, 0.25) == "illusion"
    assert gated.decide(1, 1, 0.9, 0.25) == "clean"
    assert gated.decide(1, 1, 0.4, 0.2) == "uncertain"
    # No free pass: past the drift threshold a sample is an illusion however the votes split, and a
    # label flip with drift above flip_min_drift is one too.
    assert gated.decide(1, 1, 0.4, 0.9) == "illusion"
    assert gated.decide(1, 2, 0.1, 0.31) == "illusion"
    # The witness test, also before the votes; a policy that thresholds it needs the gap.
    witnessed = VerdictPolicy(max_drift=0.3, max_witness_gap=0.1)
    assert witnessed.decide(1, 1, 0.9, 0.1, witness_gap=0.05) == "clean"
    assert witnessed.decide(1, 1, 0.9, 0.1, witness_gap=0.2) == "illusion"
    assert witnessed.decide(1, 1, 0.2, 0.1, witness_gap=0.2) == "illusion"
    assert witnessed.decide(1, 1, 0.2, 0.1, witness_gap=0.05) == "uncertain"
    with pytest.raises(ValueError, match="witness"):
        witnessed.decide(1, 1, 0.9, 0.1)
    # The margin test: a witness that likes its own best label much better than the encoder's flags the sample.
    both = VerdictPolicy(max_drift=0.3, max_witness_gap=0.1, max_witness_margin=0.02)
    assert both.decide(1, 1, 0.9, 0.1, witness_gap=0.05, witness_margin=0.01) == "clean"
    assert both.decide(1, 1, 0.9, 0.1, witness_gap=0.05, witness_margin=0.03) == "illusion"
    assert both.decide(1, 1, 0.2, 0.1, witness_gap=0.05, witness_margin=0.03) == "illusion"
    with pytest.raises(ValueError, match="witness"):
        both.decide(1, 1, 0.9, 0.1, witness_gap=0.05)
    assert both.needs_witness and witnessed.needs_witness and not gated.needs_witness
    assert both.without_witness() == VerdictPolicy(max_drift=0.3)
    with pytest.raises(ValueError):
        VerdictPolicy(flip_min_drift=-0.1)
    with pytest.raises(ValueError):
        VerdictPolicy(max_witness_gap=3.0)
    with pytest.raises(ValueError):
        VerdictPolicy(max_witness_margin=-0.1)


def test_a_purified_image_replaces_an_input_only_when_it_delivers_a_changed_consensus():
    policy = VerdictPolicy(max_drift=0.1)
    assert policy.replacement_accepted(label_original=1, label_consensus=2, image_label=2, image_cos=0.95)
    assert not policy.replacement_accepted(1, 1, 1, 0.99)  # flagged by drift alone: the image carries the suspect label
    assert not policy.replacement_accepted(1, 2, 1, 0.99)  # the image as written embeds as the original's label
    assert not policy.replacement_accepted(1, 2, 2, 0.85)  # too far from the purified embedding


def test_label_bank(tmp_path):
    path = tmp_path / "labels.txt"
    path.write_text("# classes\ncat\n\n dog \n")
    bank = LabelBank.from_file(str(path), template="a picture of the {}")
    assert bank.labels == ["cat", "dog"] and bank.prompts == ["a picture of the cat", "a picture of the dog"]
    with pytest.raises(ValueError, match="unique"):
        LabelBank(["cat", "cat"])
    with pytest.raises(ValueError, match="placeholder"):
        LabelBank(["cat"], template="a photo")


def test_a_witness_adds_its_gap_and_margin_and_the_verdict_thresholds_them(parts, bpe_path):
    reconstructor, encoder = parts
    images, seeds = batch(), list(range(6))
    # A witness identical to the encoder never disagrees with it; another model does.
    same = ConsensusPurifier(reconstructor, encoder, LABELS, ConsensusConfig(n=4), witness=encoder).purify(images, seeds=seeds)
    assert all(abs(r.witness_gap) < 1e-5 and abs(r.witness_margin) < 1e-5 for r in same)
    other = tiny_clip_encoder(bpe_path)
    with torch.no_grad():  # a witness that points the other way: it likes the encoder's label least
        for parameter in other.model.visual_projection.parameters():
            parameter.neg_()
    with torch.no_grad():
        expected = 1 - (encoder.embed_images(images) * other.embed_images(images)).sum(-1)
        text = LabelBank(LABELS).embeddings(encoder)
        witness_sims, encoder_labels = other.embed_images(images) @ text.T, (encoder.embed_images(images) @ text.T).argmax(-1)
        margins = witness_sims.max(-1).values - witness_sims.gather(1, encoder_labels[:, None]).squeeze(1)
    assert (margins > 1e-4).all()
    plain = ConsensusPurifier(reconstructor, encoder, LABELS, ConsensusConfig(n=4)).purify(images, seeds=seeds)
    gated = ConsensusPurifier(reconstructor, encoder, LABELS, ConsensusConfig(n=4, verdict=VerdictPolicy(max_witness_gap=0.0)),
                              witness=other).purify(images, seeds=seeds)
    for i, (before, after) in enumerate(zip(plain, gated)):
        assert after.witness_gap == pytest.approx(float(expected[i]), abs=1e-5) and before.witness_gap is None
        assert after.votes == before.votes  # the witness changes the verdict, never the draws
        assert after.witness_margin == pytest.approx(float(margins[i]), abs=1e-5)
        assert after.verdict == ("illusion" if after.witness_gap > 0 else before.verdict)
    by_margin = ConsensusPurifier(reconstructor, encoder, LABELS, ConsensusConfig(n=4, verdict=VerdictPolicy(max_witness_margin=1e-4)),
                                  witness=other).purify(images, seeds=seeds)
    for before, after in zip(plain, by_margin):
        assert after.verdict == ("illusion" if after.witness_margin > 1e-4 else before.verdict)
    with pytest.raises(ValueError, match="witness"):
        ConsensusPurifier(reconstructor, encoder, LABELS, ConsensusConfig(verdict=VerdictPolicy(max_witness_gap=0.1)))
    with pytest.raises(ValueError, match="witness"):
        ConsensusPurifier(reconstructor, encoder, LABELS, ConsensusConfig(verdict=VerdictPolicy(max_witness_margin=0.1)))
