"""`disillusion train-demo`: train the bundled demo models on Fashion-MNIST and write a demo directory."""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import sys
import time

import torch

NAME = "train-demo"
HELP = "Train the small demo models (CLIP, VAE, AE, diffusion) on Fashion-MNIST and save them with metrics."
log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", default="/usr/share/datasets/fashion-mnist", help="directory with the Fashion-MNIST IDX .gz files")
    parser.add_argument("--out", required=True, help="output directory (clip/, vae/, ae/, dm/, sample, metrics, card)")
    parser.add_argument("--models", default="clip,vae,ae,dm,witness",
                        help="comma-separated subset to train (witness: a robust copy of the CLIP in --out, trained after it)")
    parser.add_argument("--train-size", type=int, default=60000, help="use the first K training images")
    parser.add_argument("--clip-epochs", type=int, default=20)
    parser.add_argument("--vae-epochs", type=int, default=2)
    parser.add_argument("--ae-epochs", type=int, default=2)
    parser.add_argument("--dm-epochs", type=int, default=2)
    parser.add_argument("--witness-epochs", type=int, default=3)
    parser.add_argument("--witness-eps", default="16/255", help="the L-inf radius the witness is trained to withstand")
    parser.add_argument("--witness-stored-share", type=float, default=0.0,
                        help="the share of each witness batch stored as a random scraper pipeline would store it (resized, "
                             "upscaled, JPEG, WebP; pipeline/research/data/encodings.py) and decoded back, so that the witness agrees "
                             "with the encoder on clean re-encoded images too")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)


def run(args: argparse.Namespace) -> int:
    from pipeline.models.encoders import CLIPEncoder
    from pipeline.models.reconstructors import AEReconstructor, DiffusionReconstructor, VAEReconstructor
    from pipeline.research.benchmark import machine_description
    from pipeline.research.data.fashion_mnist import LabelledImages, load_split, write_sample
    from pipeline.research.training import demo_models as dm

    torch.set_num_threads(args.threads)
    wanted = set(args.models.split(","))
    train, test = load_split("train", args.data), load_split("t10k", args.data)
    train = LabelledImages(train.images[: args.train_size], train.labels[: args.train_size])
    os.makedirs(args.out, exist_ok=True)
    metrics_path = os.path.join(args.out, "metrics.json")
    metrics = json.load(open(metrics_path)) if os.path.exists(metrics_path) else {}
    command = "disillusion " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    machine = machine_description()  # after set_num_threads, so it names args.threads
    write_sample(test, os.path.join(args.out, "fashion_mnist_sample.npz"), seed=args.seed)

    def timed(name, fn):
        start = time.time()
        result = fn()
        metrics[name] = {"command": command, "machine": machine, "train_seconds": round(time.time() - start, 1)}
        return result

    if "clip" in wanted:
        tokenizer = dm.demo_tokenizer()
        model = timed("clip", lambda: dm.train_clip(train, tokenizer, epochs=args.clip_epochs, seed=args.seed))
        encoder = CLIPEncoder(model, tokenizer._tokenizer)
        encoder.save_pretrained(os.path.join(args.out, "clip"))
        metrics["clip"].update(epochs=args.clip_epochs, zero_shot_top1_test=round(dm.zero_shot_accuracy(encoder, test), 4))
        log.info("clip zero-shot top-1 on the test split: %.4f", metrics["clip"]["zero_shot_top1_test"])
    if "vae" in wanted:
        vae = timed("vae", lambda: dm.train_vae(train, epochs=args.vae_epochs, seed=args.seed))
        recon = VAEReconstructor(vae, sample_scale=0.0)
        recon.save_pretrained(os.path.join(args.out, "vae"))
        metrics["vae"].update(epochs=args.vae_epochs, psnr_mode_test=round(dm.reconstruction_psnr(lambda x: recon.reconstruct(x, 1)[:, 0], test), 2))
    if "ae" in wanted:
        ae = timed("ae", lambda: dm.train_ae(train, epochs=args.ae_epochs, seed=args.seed))
        recon = AEReconstructor(ae, noise_scale=0.0)
        recon.save_pretrained(os.path.join(args.out, "ae"))
        metrics["ae"].update(epochs=args.ae_epochs, psnr_test=round(dm.reconstruction_psnr(lambda x: recon.reconstruct(x, 1)[:, 0], test), 2))
    if "dm" in wanted:
        unet, scheduler = timed("dm", lambda: dm.train_dm(train, epochs=args.dm_epochs, seed=args.seed))
        recon = DiffusionReconstructor(unet, scheduler, strength=0.1, denoise_steps=10)
        recon.save_pretrained(os.path.join(args.out, "dm"))
        metrics["dm"].update(epochs=args.dm_epochs, psnr_strength_0p1_test=round(dm.reconstruction_psnr(lambda x: recon.reconstruct(x, 1)[:, 0], test, count=200), 2))
    if "witness" in wanted:
        from pipeline.models.registry import load_encoder
        from pipeline.research.witness import train_witness, witness_metrics

        clip = load_encoder(f"clip:{os.path.join(args.out, 'clip')}")
        from .options import parse_fraction

        eps = parse_fraction(args.witness_eps)
        witness = timed("witness", lambda: train_witness(clip, train, epochs=args.witness_epochs, eps=eps,
                                                                   stored_share=args.witness_stored_share, seed=args.seed))
        witness.save_pretrained(os.path.join(args.out, "witness"))
        metrics["witness"].update(epochs=args.witness_epochs, eps=args.witness_eps, stored_share=args.witness_stored_share, **witness_metrics(clip, witness, test, eps=eps))
    for name in ("vae", "ae", "dm"):
        if os.path.isdir(os.path.join(args.out, name)):
            with open(os.path.join(args.out, name, "disillusion.json"), "w") as handle:
                json.dump({"resolution": 32}, handle)
    with open(metrics_path, "w") as handle:
        json.dump(metrics, handle, indent=2)
    with open(os.path.join(args.out, "MODEL_CARD.md"), "w") as handle:
        handle.write(model_card(metrics))
    print(json.dumps(metrics, indent=2))
    return 0


def model_card(metrics: dict) -> str:
    """The model card, generated from the metrics of the run that produced the weights."""
    from pipeline.research.training.demo_models import EVAL_TEMPLATE, TRAIN_TEMPLATES

    def line(name: str, what: str) -> str:
        m = metrics.get(name, {})
        numbers = ", ".join(f"{k} = {v}" for k, v in m.items() if k not in ("command", "machine"))
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
