"""`disillusion train-demo`: train the bundled demo models on Fashion-MNIST and write a demo
directory (weights as safetensors, the sample, metrics.json and the model card generated from it).

Seeded: the same command on the same machine writes byte-identical weights.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass

import torch

from ...models.encoders import CLIPEncoder
from ...models.reconstructors import AEReconstructor, DiffusionReconstructor, VAEReconstructor
from ...settings import SettingsTable, parse_fraction, setting
from ..benchmark import machine_description
from ..data.fashion_mnist import DEBIAN_DIR, LabelledImages, load_split, write_sample
from . import demo_models as dm
from .demo_models import EVAL_TEMPLATE, TRAIN_TEMPLATES

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainDemoSettings:
    out: str = setting("", "output directory (clip/, vae/, ae/, dm/, witness/, aligned-vae/, sample, metrics, card)", metavar="DIR")
    data: str = setting(DEBIAN_DIR, "directory with the Fashion-MNIST IDX .gz files", metavar="DIR")
    models: str = setting("clip,vae,ae,dm,witness", "comma-separated subset to train (witness: a robust copy of the CLIP in --out, "
                                                      "trained after it; aligned-vae: the VAE in --out fine-tuned against that CLIP)")
    train_size: int = setting(60000, "use the first K training images")
    clip_epochs: int = setting(20, "epochs of the CLIP")
    vae_epochs: int = setting(2, "epochs of the VAE")
    ae_epochs: int = setting(2, "epochs of the AE")
    dm_epochs: int = setting(2, "epochs of the diffusion model")
    witness_epochs: int = setting(3, "epochs of the witness")
    witness_eps: str = setting("16/255", "the L-inf radius the witness is trained to withstand")
    witness_stored_share: float = setting(0.0, "the share of each witness batch stored as a random scraper pipeline would store it "
                                               "(resized, upscaled, JPEG, WebP; pipeline/research/data/encodings.py) and decoded back, "
                                               "so that the witness agrees with the encoder on clean re-encoded images too")
    witness_clean_weight: float = setting(0.0, "add this multiple of the witness's distance from the encoder on the clean image to its "
                                                "loss (0: FARE as published); that distance is what the verdict's witness thresholds measure")
    witness_batch_size: int = setting(128, "images per witness training step")
    witness_lr: float = setting(5e-4, "peak learning rate of the witness (AdamW, warm-up then cosine decay)")
    witness_device: str = setting("cpu", "where the witness trains and is measured (cpu, cuda, cuda:1; the other models train on the "
                                         "CPU): data order, augmentation and PGD starts come from the seed either way")
    aligned_images: int = setting(10000, "aligned-vae: fine-tune on the first K training images")
    aligned_epochs: int = setting(1, "aligned-vae: epochs")
    aligned_eps: str = setting("16/255", "aligned-vae: the L-inf radius its reconstructions are trained to withstand")
    aligned_pgd_steps: int = setting(3, "aligned-vae: PGD steps of the inner maximum")
    aligned_pixel_weight: float = setting(50.0, "aligned-vae: weight of the pixel MSE that keeps it a reconstructor")
    aligned_clean_weight: float = setting(1.0, "aligned-vae: weight of the clean reconstruction's embedding distance")
    seed: int = setting(0, "seed of every model's initialisation, data order and augmentation")
    threads: int = setting(os.cpu_count() or 1, "torch threads (the machine's cores by default)")

    def __post_init__(self):
        if not self.out:
            raise ValueError("--out is required")


TRAIN_DEMO_SETTINGS = SettingsTable(TrainDemoSettings)


def train_demo(settings: TrainDemoSettings, command: str) -> dict:
    """Train the models asked for into `settings.out`; returns the metrics (also in metrics.json,
    which keeps the entries of models not retrained), each with `command` and the machine."""
    torch.set_num_threads(settings.threads)
    wanted = set(settings.models.split(","))
    train, test = load_split("train", settings.data), load_split("t10k", settings.data)
    train = LabelledImages(train.images[: settings.train_size], train.labels[: settings.train_size])
    os.makedirs(settings.out, exist_ok=True)
    metrics_path = os.path.join(settings.out, "metrics.json")
    metrics = json.load(open(metrics_path)) if os.path.exists(metrics_path) else {}
    machine = machine_description()  # after set_num_threads, so it names settings.threads
    write_sample(test, os.path.join(settings.out, "fashion_mnist_sample.npz"), seed=settings.seed)

    def timed(name, fn):
        start = time.time()
        result = fn()
        metrics[name] = {"command": command, "machine": machine, "train_seconds": round(time.time() - start, 1)}
        return result

    if "clip" in wanted:
        tokenizer = dm.demo_tokenizer()
        model = timed("clip", lambda: dm.train_clip(train, tokenizer, epochs=settings.clip_epochs, seed=settings.seed))
        encoder = CLIPEncoder(model, tokenizer._tokenizer)
        encoder.save_pretrained(os.path.join(settings.out, "clip"))
        metrics["clip"].update(epochs=settings.clip_epochs, zero_shot_top1_test=round(dm.zero_shot_accuracy(encoder, test), 4))
        log.info("clip zero-shot top-1 on the test split: %.4f", metrics["clip"]["zero_shot_top1_test"])
    if "vae" in wanted:
        vae = timed("vae", lambda: dm.train_vae(train, epochs=settings.vae_epochs, seed=settings.seed))
        recon = VAEReconstructor(vae, sample_scale=0.0)
        recon.save_pretrained(os.path.join(settings.out, "vae"))
        metrics["vae"].update(epochs=settings.vae_epochs, psnr_mode_test=round(dm.reconstruction_psnr(lambda x: recon.reconstruct(x, 1)[:, 0], test), 2))
    if "ae" in wanted:
        ae = timed("ae", lambda: dm.train_ae(train, epochs=settings.ae_epochs, seed=settings.seed))
        recon = AEReconstructor(ae, noise_scale=0.0)
        recon.save_pretrained(os.path.join(settings.out, "ae"))
        metrics["ae"].update(epochs=settings.ae_epochs, psnr_test=round(dm.reconstruction_psnr(lambda x: recon.reconstruct(x, 1)[:, 0], test), 2))
    if "dm" in wanted:
        unet, scheduler = timed("dm", lambda: dm.train_dm(train, epochs=settings.dm_epochs, seed=settings.seed))
        recon = DiffusionReconstructor(unet, scheduler, strength=0.1, denoise_steps=10)
        recon.save_pretrained(os.path.join(settings.out, "dm"))
        metrics["dm"].update(epochs=settings.dm_epochs, psnr_strength_0p1_test=round(dm.reconstruction_psnr(lambda x: recon.reconstruct(x, 1)[:, 0], test, count=200), 2))
    if "witness" in wanted:
        _witness(settings, train, test, timed, metrics)
    if "aligned-vae" in wanted:
        _aligned_vae(settings, train, test, timed, metrics)
    for name in ("vae", "ae", "dm", "aligned-vae"):
        if os.path.isdir(os.path.join(settings.out, name)):
            with open(os.path.join(settings.out, name, "disillusion.json"), "w") as handle:
                json.dump({"resolution": 32}, handle)
    with open(metrics_path, "w") as handle:
        json.dump(metrics, handle, indent=2)
    with open(os.path.join(settings.out, "MODEL_CARD.md"), "w") as handle:
        handle.write(model_card(metrics))
    return metrics


def _witness(settings: TrainDemoSettings, train: LabelledImages, test: LabelledImages, timed, metrics: dict) -> None:
    """The witness: a robust copy of the CLIP in `settings.out`, trained and measured (train_demo's `timed` and `metrics`)."""
    from ...models.registry import load_encoder
    from ..witness import train_witness, witness_metrics

    clip = load_encoder(f"clip:{os.path.join(settings.out, 'clip')}")
    eps = parse_fraction(settings.witness_eps)
    witness = timed("witness", lambda: train_witness(
        clip, train, epochs=settings.witness_epochs, eps=eps, batch_size=settings.witness_batch_size, lr=settings.witness_lr,
        stored_share=settings.witness_stored_share, clean_weight=settings.witness_clean_weight, seed=settings.seed,
        device=settings.witness_device))
    witness.save_pretrained(os.path.join(settings.out, "witness"))
    metrics["witness"].update(machine=machine_description(torch.device(settings.witness_device)), epochs=settings.witness_epochs,
                              eps=settings.witness_eps, stored_share=settings.witness_stored_share, **_witness_recipe(settings),
                              **witness_metrics(clip, witness, test, eps=eps, device=settings.witness_device))


def _aligned_vae(settings: TrainDemoSettings, train: LabelledImages, test: LabelledImages, timed, metrics: dict) -> None:
    """The encoder-aligned VAE: the VAE in `settings.out` fine-tuned against its CLIP (`research/aligned.py`)."""
    from ...models.registry import load_encoder, load_reconstructor
    from ..aligned import aligned_metrics, train_aligned_vae

    clip = load_encoder(f"clip:{os.path.join(settings.out, 'clip')}")
    vae = load_reconstructor(f"vae:{os.path.join(settings.out, 'vae')}", sample_scale=1.0)
    subset = LabelledImages(train.images[: settings.aligned_images], train.labels[: settings.aligned_images])
    eps = parse_fraction(settings.aligned_eps)
    aligned = timed("aligned-vae", lambda: train_aligned_vae(
        vae, clip, subset, epochs=settings.aligned_epochs, eps=eps, pgd_steps=settings.aligned_pgd_steps,
        pixel_weight=settings.aligned_pixel_weight, clean_weight=settings.aligned_clean_weight, seed=settings.seed))
    aligned.save_pretrained(os.path.join(settings.out, "aligned-vae"))
    metrics["aligned-vae"].update(images=len(subset), epochs=settings.aligned_epochs, eps=settings.aligned_eps,
                                  pgd_steps=settings.aligned_pgd_steps, pixel_weight=settings.aligned_pixel_weight,
                                  clean_weight=settings.aligned_clean_weight, **aligned_metrics(vae, aligned, clip, test, eps=eps))


def _witness_recipe(settings: TrainDemoSettings) -> dict:
    """The witness settings that differ from the published recipe, for its metrics (a witness made by
    that recipe records none of them, as before these settings existed)."""
    defaults = TrainDemoSettings(out="-")
    names = ("witness_clean_weight", "witness_batch_size", "witness_lr", "witness_device")
    return {name.removeprefix("witness_"): getattr(settings, name) for name in names if getattr(settings, name) != getattr(defaults, name)}


def model_card(metrics: dict) -> str:
    """The model card, generated from the metrics of the run that produced the weights."""
    def line(name: str, what: str) -> str:
        m = metrics.get(name, {})
        numbers = ", ".join(f"{k} = {v}" for k, v in _flat(m).items() if k not in ("command", "machine"))
        return f"| `{name}/` | {what} | {numbers} |"

    return "\n".join([
        "# Disillusion demo models",
        "",
        "Small models trained by Disillusion itself so that the defense can be shown and tested offline.",
        "They are toys for 32 x 32 Fashion-MNIST images, not general-purpose models.",
        "",
        "## Data, licence and attribution",
        "",
        "Trained on the 60,000-image training split of Fashion-MNIST (Han Xiao, Kashif Rasul, Roland Vollgraf,",
        "Zalando Research, 2017; MIT licence), from the Debian package `dataset-fashion-mnist`. Images are padded",
        "from 28 x 28 to 32 x 32 and replicated to RGB. `fashion_mnist_sample.npz` holds a class-balanced, seeded",
        "sample of 1,000 test-split images (100 per class) with labels and their test-split indices, under the",
        "same licence. The weights here are released with Disillusion under its licence (Apache-2.0).",
        "",
        "## Models",
        "",
        "| directory | model | training and metrics (test split) |",
        "|---|---|---|",
        line("clip", "transformers `CLIPModel` (ViT 32 px, patch 4) + CLIP BPE tokenizer, multi-positive contrastive loss "
             f"over captions from {len(TRAIN_TEMPLATES)} templates; zero-shot with '{EVAL_TEMPLATE}'"),
        line("witness", "a copy of `clip/` whose image tower is adversarially fine-tuned (FARE: PGD in the L-inf ball of radius eps, "
             "7 steps, loss = squared distance of its embedding of the perturbed image from clip's of the clean one); "
             "gap = 1 - cos(clip(x), witness(x)) on clean images; pgd20_moves = median 1 - cos from clip's clean embedding "
             "after a 20-step PGD against the witness, or against clip itself"),
        line("vae", "diffusers `AutoencoderKL`, 8 x 8 x 4 latent, MSE + KL; PSNR of the posterior mode"),
        *([line("aligned-vae", "`vae/` fine-tuned so that clip's embedding of its reconstruction of an image perturbed inside eps "
                "(PGD) stays at clip's embedding of the clean image, plus the same on the clean image and a pixel MSE; before/after: "
                "PSNR of one posterior sample, median clean drift, and how far a 20-step PGD through it moves the reconstruction's "
                "embedding")] if "aligned-vae" in metrics else []),
        line("ae", "diffusers `AutoencoderTiny`, 8 x 8 x 4 latent, trained with latent noise 0.1"),
        line("dm", "diffusers `UNet2DModel` + `DDPMScheduler` (1000 steps), epsilon prediction on t < 400; PSNR of DDIM "
             "purification at strength 0.1"),
        "",
        "## Reproduce",
        "",
        "Each model was trained by the command below (wall-clock `train_seconds` above, on the machine named):",
        "",
        *[f"- `{name}`: `{m['command']}` ({m['machine']})" for name, m in metrics.items() if isinstance(m, dict) and "command" in m],
        "",
        *([metrics["notes"], ""] if metrics.get("notes") else []),
    ])


def _flat(metrics: dict, prefix: str = "") -> dict:
    """{"stored": {"png": {"gap_p985": 0.1}}} -> {"stored.png.gap_p985": 0.1}."""
    out = {}
    for key, value in metrics.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out
