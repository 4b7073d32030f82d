#!/usr/bin/env python3
"""Writes the Parquet inputs of sql-tests/explain.slt (run from this directory; needs pyarrow).

ticks_ordered.parquet: 2,000 ts-ordered ticks over 10 symbols in 4 row groups, so that
DataFusion can split the file into byte ranges. ticks_parts/: the same ticks as two files,
the first 1,000 and the last 1,000. ticks_thirds/: the same ticks as three files
of 700, 700 and 600 rows, in ts order. ticks_interleaved/: the same ticks as two files whose ts
ranges overlap, symbols S0-S4 and S5-S9 (a key's rows in one file, so that how a merge orders
equal timestamps of the two files changes no result).
"""
import os
import random

import pyarrow as pa
import pyarrow.parquet as pq

rng = random.Random(20261201)
mids = [100.0 + s for s in range(10)]
rows = {"seq": [], "ts": [], "symbol": [], "price": [], "qty": []}
ts = 0
for i in range(2_000):
    ts += rng.randrange(0, 3)
    s = rng.randrange(10)
    mids[s] = round(mids[s] + rng.randrange(-2, 3) * 0.01, 2)
    for k, v in [("seq", i), ("ts", ts), ("symbol", f"S{s}"), ("price", mids[s]),
                 ("qty", float(rng.randrange(1, 50)))]:
        rows[k].append(v)
table = pa.table(rows)
pq.write_table(table, "ticks_ordered.parquet", row_group_size=500)
os.makedirs("ticks_parts", exist_ok=True)
pq.write_table(table.slice(0, 1_000), "ticks_parts/part-0.parquet", row_group_size=500)
pq.write_table(table.slice(1_000), "ticks_parts/part-1.parquet", row_group_size=500)
os.makedirs("ticks_interleaved", exist_ok=True)
low = pa.array([i for i, s in enumerate(rows["symbol"]) if s < "S5"])
high = pa.array([i for i, s in enumerate(rows["symbol"]) if s >= "S5"])
pq.write_table(table.take(low), "ticks_interleaved/part-0.parquet", row_group_size=500)
pq.write_table(table.take(high), "ticks_interleaved/part-1.parquet", row_group_size=500)
os.makedirs("ticks_thirds", exist_ok=True)
for i, (start, length) in enumerate([(0, 700), (700, 700), (1_400, 600)]):
    pq.write_table(table.slice(start, length), f"ticks_thirds/part-{i}.parquet", row_group_size=350)
