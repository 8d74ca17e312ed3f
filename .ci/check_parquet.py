"""Checks that a runs.parquet written by llmeff opens in pyarrow, polars and DuckDB with typed
columns: counts as integers, seconds and rates as float64, names and dtypes as strings."""

import sys

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

path = sys.argv[1]

table = pq.read_table(path)
schema = table.schema
assert table.num_rows >= 1, "no rows"
for name in ["input_tokens", "output_tokens", "batch_size", "cycle_id", "max_new_tokens"]:
    assert schema.field(name).type == pa.int64(), (name, schema.field(name).type)
for name in ["wall_s", "prefill_s", "decode_s", "ttft_p50_s", "output_tokens_per_s"]:
    assert schema.field(name).type == pa.float64(), (name, schema.field(name).type)
for name in ["model", "dtype", "device", "status", "run_hash"]:
    assert schema.field(name).type in (pa.string(), pa.large_string()), (name, schema.field(name).type)

# Column meanings and units travel in the file as Arrow field metadata.
ttft = schema.field("ttft_p50_s").metadata
assert ttft[b"unit"] == b"s", ttft
assert b"arrival" in ttft[b"description"], ttft

df = pl.read_parquet(path)
assert df.schema["output_tokens"] == pl.Int64
assert df.schema["wall_s"] == pl.Float64
assert df.schema["model"] == pl.String

con = duckdb.connect()
types = dict(con.execute(f"DESCRIBE SELECT * FROM read_parquet('{path}')").fetchall() and
             [(r[0], r[1]) for r in con.execute(f"DESCRIBE SELECT * FROM read_parquet('{path}')").fetchall()])
assert types["output_tokens"] == "BIGINT", types["output_tokens"]
assert types["wall_s"] == "DOUBLE", types["wall_s"]
assert types["model"] == "VARCHAR", types["model"]
rate = con.execute(
    f"SELECT max(abs(output_tokens / wall_s - output_tokens_per_s)) FROM read_parquet('{path}') WHERE status = 'ok'"
).fetchone()[0]
assert rate is not None and rate < 1e-6, rate

print(f"{path}: {table.num_rows} rows, {len(schema)} typed columns; pyarrow, polars and DuckDB agree")
