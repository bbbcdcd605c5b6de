"""`disillusion train-demo`: train the bundled demo models on Fashion-MNIST and write a demo directory."""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
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
    parser.add_argument("--models", default="clip,vae,ae,dm", help="comma-separated subset to train")
    parser.add_argument("--train-size", type=int, default=60000, help="use the first K training images")
    parser.add_argument("--clip-epochs", type=int, default=4)
    parser.add_argument("--vae-epochs", type=int, default=2)
    parser.add_argument("--ae-epochs", type=int, default=2)
    parser.add_argument("--dm-epochs", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)


def run(args: argparse.Namespace) -> int:
    from pipeline.data.fashion_mnist import LabelledImages, load_split, write_sample
    from pipeline.models.encoders import CLIPEncoder
    from pipeline.models.reconstructors import AEReconstructor, DiffusionReconstructor, VAEReconstructor
    from pipeline.training import demo_models as dm

    torch.set_num_threads(args.threads)
    wanted = set(args.models.split(","))
    train, test = load_split("train", args.data), load_split("t10k", args.data)
    train = LabelledImages(train.images[: args.train_size], train.labels[: args.train_size])
    os.makedirs(args.out, exist_ok=True)
    metrics_path = os.path.join(args.out, "metrics.json")
    metrics = json.load(open(metrics_path)) if os.path.exists(metrics_path) else {}
    metrics["command"] = "disillusion " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    metrics["machine"] = f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, {args.threads} threads"
    write_sample(test, os.path.join(args.out, "fashion_mnist_sample.npz"), seed=args.seed)

    def timed(name, fn):
        start = time.time()
        result = fn()
        metrics.setdefault(name, {})["train_seconds"] = round(time.time() - start, 1)
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
    for name in ("vae", "ae", "dm"):
        if os.path.isdir(os.path.join(args.out, name)):
            with open(os.path.join(args.out, name, "disillusion.json"), "w") as handle:
                json.dump({"resolution": 32}, handle)
    with open(metrics_path, "w") as handle:
        json.dump(metrics, handle, indent=2)
    print(json.dumps(metrics, indent=2))
    return 0
