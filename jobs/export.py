"""`disillusion export`: a run's purified embeddings into a vector database (embedded LanceDB)."""

from __future__ import annotations

import argparse

NAME = "export"
HELP = "Export the purified embeddings of a sanitize or audit run to a LanceDB table (incremental: new shards only)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", required=True, metavar="OUTPUT_URI", help="the --output of a sanitize or audit run (directory or S3 prefix)")
    parser.add_argument("--to", required=True, metavar="lancedb://DIR[?table=NAME]", help="the LanceDB database and table (default table: embeddings)")
    parser.add_argument("--exclude", metavar="VERDICTS", help="leave out samples with these verdicts, e.g. illusion,uncertain")
    parser.add_argument("--rebuild", action="store_true", help="drop the table and export every shard again (after a run with --overwrite)")
    parser.add_argument("--s3-endpoint", metavar="URL", help="S3-compatible endpoint URL of the input and of an s3:// database")


def run(args: argparse.Namespace) -> int:
    from pipeline.export.lancedb import export, parse_exclude

    summary = export(args.input, args.to, exclude=parse_exclude(args.exclude), s3_endpoint=args.s3_endpoint, rebuild=args.rebuild)
    print(f"{summary['exported']} shard(s) exported ({summary['rows']} rows), {summary['skipped']} already in table "
          f"{summary['table']!r}; {summary['total_rows']} rows in all" + (f", index {summary['indexed']}" if summary["indexed"] else ""))
    return 0
