"""A seeded, structure-aware fuzzer of the shard reader: `mutations` makes hostile shards,
`campaign` runs them through read, decode, purify and write and checks every outcome,
`reproducers` holds the shards that once broke the reader (regression tests)."""
