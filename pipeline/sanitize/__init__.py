"""Corpus sanitisation without Ray: per-sample records and verdict rows, and per-shard outputs."""
