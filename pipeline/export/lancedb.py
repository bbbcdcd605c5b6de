"""Purified embeddings from a run's output into an embedded LanceDB table, for retrieval.

    OUTPUT_URI/manifests/*.json (complete shards)  ->  verdicts/<shard>.parquet  ->  LanceDB table

One row per sample that has an embedding (samples that could not be examined have none), with its
key, shard, verdict, labels, drift and caption. The vector column is `fixed_size_list<float32, D>`,
the type vector tools expect. A shard is exported once its manifest says it is complete (the
manifest is written last), never half-written.

Export is incremental, and its cost grows with what is new, not with the table: a ledger beside the
table (`TABLE.exports.json`) names the shards already in it, so a nightly export after a nightly
sanitisation reads only the new shards' verdicts. Shards are marked pending in the ledger before
their rows are added and done after; an export that died between the two deletes the pending
shards' rows first, so every sample is in the table once. Past 50,000 rows an IVF-PQ index is
trained once; later exports add the new rows to it (`optimize`), and it is trained again only when
the table has doubled since (the partitions were fitted to what it held then).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit

import pyarrow as pa
import pyarrow.compute as pc

from ..io.s3 import is_s3_uri
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


@dataclass
class Ledger:
    """What an export has put in a table: rows per shard, the shards being added, and the size of the
    table when its index was last trained."""

    shards: dict[str, int] = field(default_factory=dict)
    pending: list[str] = field(default_factory=list)
    indexed_rows: int = 0

    @staticmethod
    def path(target: Target) -> str:
        return join(target.database, f"{target.table}.exports.json")

    @classmethod
    def read(cls, storage: Storage, target: Target, table) -> Ledger:
        """The ledger beside the table; for a table exported before ledgers existed, built once from
        its shard column."""
        path = cls.path(target)
        if storage.exists(path):
            return cls(**json.loads(storage.read_bytes(path)))
        if table is None:
            return cls()
        counts = table.search().select(["shard"]).limit(None).to_arrow()["shard"].value_counts().to_pylist()
        return cls({c["values"]: c["counts"] for c in counts})

    def write(self, storage: Storage, target: Target) -> None:
        storage.write_bytes(self.path(target), json.dumps(vars(self), sort_keys=True).encode())


def _quoted(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def connect(target: Target, s3_endpoint: str | None):
    """The LanceDB database; one on S3 reaches the same endpoint as the rest of the job (credentials
    from the standard AWS variables, which Lance reads itself)."""
    import os

    import lancedb

    options = {}
    if is_s3_uri(target.database) and s3_endpoint:
        options = {"aws_endpoint": s3_endpoint, "allow_http": str(s3_endpoint.startswith("http://")).lower()}
    if is_s3_uri(target.database):
        options["aws_region"] = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    return lancedb.connect(target.database, storage_options=options or None)


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
    target, excluded, storage = Target.parse(to), tuple(exclude), Storage(s3_endpoint)
    shards = complete_shards(storage, output)
    db = connect(target, s3_endpoint)
    table = _open(db, target.table)
    if table is not None and rebuild:
        db.drop_table(target.table)
        table = None
    ledger = Ledger() if rebuild else Ledger.read(storage, target, table)
    if ledger.pending and table is not None:  # an export that died while adding these: take their rows out first
        table.delete(f"shard IN ({', '.join(map(_quoted, ledger.pending))})")
    new = [name for name in shards if name not in ledger.shards]
    ledger.pending = new
    ledger.write(storage, target)
    summary = {"shards": len(shards), "skipped": len(shards) - len(new), "exported": 0, "rows": 0, "table": target.table, "indexed": False}
    for name in new:
        rows = shard_rows(storage, output, name, excluded)
        summary["exported"] += 1
        ledger.shards[name] = rows.num_rows if rows is not None else 0
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
    if table is not None and summary["rows"]:
        summary["indexed"] = _index(table, ledger, total, index_min_rows)
    ledger.pending = []
    ledger.write(storage, target)
    return summary


def _index(table, ledger: Ledger, total: int, index_min_rows: int) -> str | bool:
    """'trained' (first time past the threshold, or the table doubled since), 'updated' (new rows
    added to the index), or False (too small for one)."""
    if total < index_min_rows:
        return False
    if ledger.indexed_rows and total < 2 * ledger.indexed_rows:
        table.optimize()  # compacts the new fragments and adds their rows to the existing index
        return "updated"
    # Cosine: the embeddings are normalised; partitions ~ sqrt(rows), PQ sub-vectors of 8 dimensions.
    dim = table.schema.field("vector").type.list_size
    table.create_index(metric="cosine", vector_column_name="vector", num_partitions=max(1, int(math.sqrt(total))),
                       num_sub_vectors=max(1, dim // 8) if dim % 8 == 0 else 1, replace=True)
    ledger.indexed_rows = total
    return "trained"
