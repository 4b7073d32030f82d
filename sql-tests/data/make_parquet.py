#!/usr/bin/env python3
"""Writes the Parquet inputs of sql-tests/explain.slt (run from this directory; needs pyarrow).

ticks_ordered.parquet: 2,000 ts-ordered ticks over 10 symbols in 4 row groups, so that
DataFusion can split the file into byte ranges. ticks_parts/: the same ticks as two files,
the first 1,000 and the last 1,000.
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
