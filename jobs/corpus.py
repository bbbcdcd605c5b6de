"""`disillusion corpus`: a scraped-style demo corpus. Held-out Fashion-MNIST test images (none of them
in the bundled sample) written as WebDataset shards, each image stored by every scraper pipeline asked
for (pipeline/research/data/encodings.py: PNG, JPEG and WebP at many sizes, filters and qualities)
with its label, so that `calibrate --input` (and `--unlabelled`), `attack` and `sanitize` can be tried
on the corpora a new user brings rather than on clean PNGs."""

from __future__ import annotations

import argparse

NAME = "corpus"
HELP = "Write held-out Fashion-MNIST test images as a scraper would store them (WebDataset shards, with labels)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from pipeline.research.data.encodings import ENCODINGS

    parser.add_argument("--output", required=True, metavar="URI", help="output directory or S3 prefix")
    parser.add_argument("--data", metavar="DIR", help="the Fashion-MNIST directory (default: the Debian package's)")
    parser.add_argument("--offset", type=int, default=0, help="skip the first K held-out test images")
    parser.add_argument("--limit", type=int, default=1000, help="held-out test images, each stored once per encoding")
    parser.add_argument("--encodings", default=",".join(ENCODINGS), help="the scraper pipelines (default: all)")
    parser.add_argument("--per-shard", type=int, default=500, help="samples per shard")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sizes, filters and qualities")
    parser.add_argument("--s3-endpoint", metavar="URL")


def run(args: argparse.Namespace) -> int:
    from pipeline.io.shards import write_samples
    from pipeline.io.storage import Storage, join
    from pipeline.research.data.encodings import scraped_samples
    from pipeline.research.data.fashion_mnist import DEBIAN_DIR

    if args.per_shard < 1:
        raise ValueError("--per-shard must be at least 1")
    samples = scraped_samples(args.data or DEBIAN_DIR, offset=args.offset, limit=args.limit, encodings=args.encodings.split(","),
                              seed=args.seed)
    storage = Storage(args.s3_endpoint)
    for start in range(0, len(samples), args.per_shard):
        shard = samples[start : start + args.per_shard]
        uri = join(args.output, f"scraped-{start // args.per_shard:06d}.tar")
        storage.write_bytes(uri, write_samples(shard))
        print(f"{uri}: {len(shard)} samples", flush=True)
    return 0
