"""Purified embeddings from a run's output into an embedded LanceDB table, for retrieval.

    OUTPUT_URI/manifests/*.json (complete shards)  ->  verdicts/<shard>.parquet  ->  LanceDB table

One row per sample that has an embedding (samples that could not be examined have none), with its
key, shard, verdict, labels, drift and caption. The vector column is `fixed_size_list<float32, D>`,
the type vector tools expect. Export is incremental: shards already in the table are skipped, so a
nightly export after a nightly sanitisation adds only the new shards. A shard is exported once its
manifest says it is complete (the manifest is written last), never half-written.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

import pyarrow as pa
import pyarrow.compute as pc

from ..io.storage import Storage, join
from ..sanitize.outputs import read_manifests, read_verdicts

DEFAULT_TABLE = "embeddings"
VERDICTS = ("clean", "illusion", "uncertain")
# Below this many rows a flat scan answers in milliseconds and an IVF index has too little to train on.
INDEX_MIN_ROWS = 50_000
COLUMNS = ("key", "key_bytes", "shard", "verdict", "label_original", "label_consensus", "agreement", "drift", "caption")


@dataclass(frozen=True)
class Target:
    database: str  # a directory, or any URI lancedb.connect takes (s3://...)
    table: str

    @classmethod
    def parse(cls, uri: str) -> Target:
        """lancedb://DIR[?table=NAME]"""
        if not uri.startswith("lancedb://"):
            raise ValueError(f"--to must be lancedb://DIR[?table=NAME], not {uri!r}")
        parts = urlsplit(uri)
        database = uri[len("lancedb://"):].split("?", 1)[0]
        if not database:
            raise ValueError(f"{uri}: no database directory after lancedb://")
        query = parse_qs(parts.query)
        unknown = set(query) - {"table"}
        if unknown:
            raise ValueError(f"{uri}: unknown parameter(s) {', '.join(sorted(unknown))}; only table=NAME")
        return cls(database, query.get("table", [DEFAULT_TABLE])[0])


def parse_exclude(text: str | None) -> tuple[str, ...]:
    excluded = tuple(v.strip() for v in (text or "").split(",") if v.strip())
    unknown = set(excluded) - set(VERDICTS)
    if unknown:
        raise ValueError(f"--exclude takes verdicts ({', '.join(VERDICTS)}), not {', '.join(sorted(unknown))}")
    return excluded


def complete_shards(storage: Storage, output: str) -> list[str]:
    """Names of the shards whose manifest says complete, in name order."""
    names = sorted(m["shard"] for m in read_manifests(storage, output) if m.get("complete", True))
    if not names and not storage.exists(join(output, "run.json")):
        raise FileNotFoundError(f"{output} holds no run (no run.json and no manifests): pass the --output of a sanitize or audit run")
    return names


def shard_rows(storage: Storage, output: str, name: str, excluded: tuple[str, ...]) -> pa.Table | None:
    """The exportable rows of one shard's verdict table, the vector column typed for vector tools."""
    table = read_verdicts(storage, output, name)
    rows = table.filter(pc.is_valid(table["embedding"]))
    if excluded:
        rows = rows.filter(pc.invert(pc.is_in(rows["verdict"], pa.array(excluded))))
    if not rows.num_rows:
        return None
    dim = rows.schema.field("embedding").type.list_size
    columns = {c: rows[c] if c in rows.column_names else pa.nulls(rows.num_rows, pa.string()) for c in COLUMNS}  # caption: newer runs
    vectors = rows["embedding"].cast(pa.list_(pa.float32(), dim))
    return pa.table({**columns, "vector": vectors})


def _open(db, name: str):
    try:
        return db.open_table(name)
    except ValueError:  # "Table ... was not found"
        return None


def export(
    output: str,
    to: str,
    *,
    exclude: Iterable[str] = (),
    s3_endpoint: str | None = None,
    rebuild: bool = False,
    index_min_rows: int = INDEX_MIN_ROWS,
    echo: Callable[[str], None] = print,
) -> dict:
    """Add every complete shard of `output` not yet in the table (every one with `rebuild`); returns counts."""
    import lancedb

    target, excluded, storage = Target.parse(to), tuple(exclude), Storage(s3_endpoint)
    shards = complete_shards(storage, output)
    db = lancedb.connect(target.database)
    table = _open(db, target.table)
    if table is not None and rebuild:
        db.drop_table(target.table)
        table = None
    # The shard column is the record of what was exported: each shard's rows are added in one commit.
    done = set(table.search().select(["shard"]).limit(None).to_arrow()["shard"].unique().to_pylist()) if table is not None else set()
    summary = {"shards": len(shards), "skipped": 0, "exported": 0, "rows": 0, "table": target.table, "indexed": False}
    for name in shards:
        if name in done:
            summary["skipped"] += 1
            continue
        rows = shard_rows(storage, output, name, excluded)
        summary["exported"] += 1
        if rows is None:
            continue
        if table is None:
            table = db.create_table(target.table, data=rows)
        else:
            table.add(rows)
        summary["rows"] += rows.num_rows
        echo(f"{name}: {rows.num_rows} rows")
    total = table.count_rows() if table is not None else 0
    summary["total_rows"] = total
    if table is not None and summary["rows"] and total >= index_min_rows:
        # Cosine: the embeddings are normalised; partitions ~ sqrt(rows), PQ sub-vectors of 8 dimensions.
        dim = table.schema.field("vector").type.list_size
        table.create_index(metric="cosine", vector_column_name="vector", num_partitions=max(1, int(math.sqrt(total))),
                           num_sub_vectors=max(1, dim // 8) if dim % 8 == 0 else 1, replace=True)
        summary["indexed"] = True
    return summary
