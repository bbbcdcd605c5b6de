import torch

from pipeline.defense import ConsensusConfig, ConsensusPurifier, LabelBank
from pipeline.models.reconstructors import VAEReconstructor
from pipeline.research.attacks import AttackConfig
from pipeline.research.defense_harness import adaptive_inputs, blur_defense, evaluate_defense, jpeg_defense, none_defense, reconstruction_defense
from tests.tiny_models import tiny_clip_encoder, tiny_vae

LABELS = ["cat", "dog", "hello", "photo"]


def setup(bpe_path):
    encoder = tiny_clip_encoder(bpe_path)
    bank = LabelBank(LABELS)
    text = bank.embeddings(encoder)
    images = torch.rand(6, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        labels = (encoder.embed_images(images) @ text.T).argmax(-1)  # the model's own labels as truth
    targets = (labels + 1) % len(LABELS)
    return encoder, bank, text, images, labels, targets


def test_rows_for_every_input_and_metric_ranges(bpe_path):
    encoder, bank, text, images, labels, targets = setup(bpe_path)
    attack = AttackConfig(steps=5, step_size=4 / 255)

    def purifier(n: int) -> ConsensusPurifier:
        return ConsensusPurifier(VAEReconstructor(tiny_vae()), encoder, bank, ConsensusConfig(n=n, early_exit="off", top_k=len(bank), seed=0))

    defenses = [
        none_defense(encoder, text),
        jpeg_defense(encoder, text),
        blur_defense(encoder, text),
        reconstruction_defense("vae", purifier(1), eot_samples=2, seed=0),
        reconstruction_defense("vae+consensus", purifier(3), eot_samples=2, seed=0),
    ]
    assert defenses[3].attack_key == defenses[4].attack_key == "vae"
    for defense in defenses:
        adaptive = adaptive_inputs(defense, text, images[:4], targets[:4], attack, batch_size=4)
        assert adaptive.shape == (4, 3, 32, 32) and (adaptive - images[:4]).abs().max() <= attack.eps + 1e-6
        rows = evaluate_defense(defense, text, {"clean": images, "illusion": images.clone(), "adaptive": adaptive}, labels, targets, batch_size=4)
        assert [r.input for r in rows] == ["clean", "illusion", "adaptive"]
        for row in rows:
            assert 0 <= row.top1 <= row.top5 <= 1 and 0 <= row.asr <= 1
            assert -1 <= row.cos_true <= 1 and -1 <= row.cos_target <= 1 and row.sec_per_sample > 0
        if defense.name == "none":
            assert rows[0].top1 == 1.0 and rows[0].asr == 0.0  # truth is the undefended model's label
        assert rows[0].n == (3 if defense.name == "vae+consensus" else 1)


def test_attack_on_the_undefended_model_moves_towards_the_target(bpe_path):
    encoder, bank, text, images, labels, targets = setup(bpe_path)
    from pipeline.research.attacks import illusion_attack
    from pipeline.research.attacks.illusion import cosine_objective

    illusions = illusion_attack(images, cosine_objective(encoder.embed_images, text[targets]), AttackConfig(steps=20, step_size=2 / 255))
    rows = evaluate_defense(none_defense(encoder, text), text, {"clean": images, "illusion": illusions}, labels, targets)
    clean, attacked = rows
    assert attacked.cos_target > clean.cos_target + 0.05 and attacked.asr >= clean.asr


def test_a_public_seed_draws_the_same_every_call_and_secret_noise_does_not(bpe_path):
    encoder, bank, text, images, labels, targets = setup(bpe_path)

    def defense(public_seed: bool):
        purifier = ConsensusPurifier(VAEReconstructor(tiny_vae()), encoder, bank, ConsensusConfig(n=3, early_exit="off", top_k=len(bank), seed=0))
        return reconstruction_defense("vae+consensus", purifier, eot_samples=2, seed=5, public_seed=public_seed)

    public, secret = defense(True), defense(False)
    assert torch.equal(public.apply(images).embedding, public.apply(images).embedding)
    assert not torch.equal(secret.apply(images).embedding, secret.apply(images).embedding)


def public_consensus_defense(bpe_path):
    """A 3-draw VAE consensus defense with default verdict thresholds and a public seed (exact
    comparisons between iterates); returns the label texts, images, targets and the defense."""
    from pipeline.defense import VerdictPolicy

    encoder, bank, text, images, labels, targets = setup(bpe_path)
    purifier = ConsensusPurifier(VAEReconstructor(tiny_vae()), encoder, bank,
                                 ConsensusConfig(n=3, early_exit="off", top_k=len(bank), seed=0, verdict=VerdictPolicy()))
    return text, images, targets, reconstruction_defense("vae+consensus", purifier, eot_samples=2, seed=0, public_seed=True)


def test_apgd_on_the_detect_adaptive_loss_stays_in_budget_and_lowers_the_loss_on_the_defenses_draws(bpe_path):
    from pipeline.research.attacks.adaptive import DetectAdaptiveConfig
    from pipeline.research.defense_harness import _aimed, detect_apgd_inputs

    text, images, targets, defense = public_consensus_defense(bpe_path)
    config = DetectAdaptiveConfig(eps=8 / 255, eot=2)
    adversarial = detect_apgd_inputs(defense, text, images, targets, config, steps=10, batch_size=4)
    assert adversarial.shape == images.shape and (adversarial - images).abs().max() <= config.eps + 1e-6
    with torch.no_grad():
        for part in (slice(0, 4), slice(4, None)):
            objective = defense.detect_objective(targets[part], _aimed(defense, config))
            assert (objective(adversarial[part], 0) <= objective(images[part], 0)).all()
            assert (objective(adversarial[part], 0) < objective(images[part], 0)).any()


def test_the_square_check_stays_in_budget_and_the_strongest_keeps_what_the_defense_lets_through(bpe_path):
    from pipeline.research.attacks.adaptive import DetectAdaptiveConfig
    from pipeline.research.defense_harness import detect_square_inputs, strongest_inputs

    text, images, targets, defense = public_consensus_defense(bpe_path)
    config = DetectAdaptiveConfig(eps=8 / 255, eot=2)
    queried = detect_square_inputs(defense, text, images, targets, config, queries=5, batch_size=4)
    assert queried.shape == images.shape and (queried - images).abs().max() <= config.eps + 1e-6
    # Per image, the candidate whose downstream label (both policies) is the target more often, then the closer.
    # (A public seed draws by position in the batch: score in the batches of 4 that the choice uses.)
    def score(x, t):
        out = defense.apply(x)
        delivered = sum((out.downstream[p] == t).float() for p in ("purify", "drop"))
        return delivered + 0.01 * (out.embedding * text[t]).sum(-1)

    candidates = [images, queried, torch.rand(images.shape, generator=torch.Generator().manual_seed(1))]
    expected = torch.stack([torch.cat([score(c[:4], targets[:4]), score(c[4:], targets[4:])]) for c in candidates]).argmax(0)
    assert len(set(expected.tolist())) > 1  # the choice is per image
    chosen = strongest_inputs(defense, text, candidates, targets, batch_size=4)
    for i, k in enumerate(expected.tolist()):
        assert torch.equal(chosen[i], candidates[k][i])
    assert torch.equal(strongest_inputs(defense, text, [images, images.clone()], targets, batch_size=4), images)
