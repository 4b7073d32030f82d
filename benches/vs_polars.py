#!/usr/bin/env python3
"""Ours against Polars, DuckDB and DataFusion's own window functions, on one Parquet file.

    python3 benches/vs_polars.py [--rows 10000000] [--symbols 10000] [--runs 3] [--only ewma,...]

Writes a ts-ordered Parquet file (ts BIGINT, symbol BIGINT, price, qty, bid/ask DOUBLE; pyarrow
defaults: snappy, row groups of 1Mi rows) under benches/data/ unless it exists, then times each
workload on each engine, in this one run, over the same file: the query reads the file and
reduces the output column to count and sum, so every engine computes every output. Prints
rows/s and ours / peer, best of --runs. Needs polars, duckdb and pyarrow (pip), and builds
`fintech-sql` and the `plain_loop` example with cargo --release.

Semantics are the same across engines for ewma (pandas adjust=False), vwap and ofi. For the
rolling statistics, DuckDB and DataFusion are given `ROWS n-1 PRECEDING` frames, which also
output partial windows before the key has n values (ours and Polars give NULL there): the same
work per row.
"""
import argparse
import os
import re
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write_file(path, rows, symbols):
    import numpy as np
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(20261201)
    sym = rng.integers(0, symbols, rows, dtype=np.int64)
    # Per-symbol random walks from 100, in cents.
    steps = pd.Series(rng.integers(-2, 3, rows) * 0.01)
    price = np.round(100.0 + steps.groupby(sym).cumsum().to_numpy(), 2)
    table = pa.table({
        "ts": np.arange(rows, dtype=np.int64),
        "symbol": sym,
        "price": price,
        "qty": rng.integers(1, 100, rows).astype(np.float64),
        "bid_px": price - 0.01,
        "bid_sz": rng.integers(1, 10, rows) * 100.0,
        "ask_px": price + 0.01,
        "ask_sz": rng.integers(1, 10, rows) * 100.0,
    })
    os.makedirs(os.path.dirname(path), exist_ok=True)
    pq.write_table(table, path)


def polars_expr(work):
    import polars as pl

    p, q = pl.col("price"), pl.col("qty")
    if work == "ewma":
        return p.ewm_mean(alpha=0.06, adjust=False).over("symbol")
    if work == "rolling_mean(100)":
        return p.rolling_mean(100).over("symbol")
    if work == "rolling_std(100)":
        return p.rolling_std(100).over("symbol")
    if work == "rolling_std(1000)":
        return p.rolling_std(1000).over("symbol")
    if work == "vwap":
        return (p * q).cum_sum().over("symbol") / q.cum_sum().over("symbol")
    if work == "ofi":
        bp, bs, ap, az = (pl.col(c) for c in ["bid_px", "bid_sz", "ask_px", "ask_sz"])
        pbp, pbs, pap, paz = (pl.col(c).shift(1).over("symbol") for c in
                              ["bid_px", "bid_sz", "ask_px", "ask_sz"])
        one = lambda c: pl.when(c).then(1.0).otherwise(0.0)
        return one(bp >= pbp) * bs - one(bp <= pbp) * pbs - one(ap <= pap) * az + one(ap >= pap) * paz
    raise KeyError(work)


ALL_SIX = ["ewma", "rolling_mean(100)", "rolling_std(100)", "vwap", "log_return", "ofi"]


def polars_time(path, work):
    import polars as pl

    if work == "all six":
        log_return = (pl.col("price") / pl.col("price").shift(1).over("symbol")).log()
        exprs = [(log_return if w == "log_return" else polars_expr(w)).alias(f"e{i}")
                 for i, w in enumerate(ALL_SIX)]
        agg = [pl.len()] + [pl.col(e.meta.output_name()).sum() for e in exprs]
    else:
        exprs = [polars_expr(work).alias("e")]
        agg = [pl.len(), pl.col("e").sum()]
    start = time.perf_counter()
    pl.scan_parquet(path).select(exprs).select(agg).collect()
    return time.perf_counter() - start


OURS = {
    "ewma": "ewma(price, 0.06)",
    "rolling_mean(100)": "rolling_mean(price, 100)",
    "rolling_std(100)": "rolling_std(price, 100)",
    "rolling_std(1000)": "rolling_std(price, 1000)",
    "vwap": "vwap(price, qty)",
    "ofi": "ofi(bid_px, bid_sz, ask_px, ask_sz)",
    "log_return": "log_return(price)",
}

W = "OVER (PARTITION BY symbol ORDER BY ts"
OFI_SQL = ("CASE WHEN bid_px >= lag(bid_px) {w} THEN bid_sz ELSE 0 END"
           " - CASE WHEN bid_px <= lag(bid_px) {w} THEN lag(bid_sz) {w} ELSE 0 END"
           " - CASE WHEN ask_px <= lag(ask_px) {w} THEN ask_sz ELSE 0 END"
           " + CASE WHEN ask_px >= lag(ask_px) {w} THEN lag(ask_sz) {w} ELSE 0 END")
# Standard SQL windows: DuckDB and DataFusion's own functions.
PEER_SQL = {
    "rolling_mean(100)": f"avg(price) {W} ROWS BETWEEN 99 PRECEDING AND CURRENT ROW)",
    "rolling_std(100)": f"stddev_samp(price) {W} ROWS BETWEEN 99 PRECEDING AND CURRENT ROW)",
    "rolling_std(1000)": f"stddev_samp(price) {W} ROWS BETWEEN 999 PRECEDING AND CURRENT ROW)",
    "vwap": f"sum(price * qty) {W} ROWS UNBOUNDED PRECEDING) / sum(qty) {W} ROWS UNBOUNDED PRECEDING)",
    "ofi": OFI_SQL.format(w=W + ")"),
}


def reduce_sql(table, outputs):
    cols = ", ".join(f"{o} AS e{i}" for i, o in enumerate(outputs))
    sums = ", ".join(f"sum(e{i})" for i in range(len(outputs)))
    return f"SELECT count(*), {sums} FROM (SELECT {cols} FROM {table})"


def fintech_sql_time(binary, path, query):
    create = (f"CREATE EXTERNAL TABLE t STORED AS PARQUET LOCATION '{path}' WITH ORDER (ts ASC);")
    out = subprocess.run([binary, "--timing", "-c", create + query],
                         capture_output=True, text=True, check=True)
    times = re.findall(r"in ([0-9.]+) s", out.stderr)
    return float(times[-1])


def ours_time(binary, path, work):
    works = ALL_SIX if work == "all six" else [work]
    return fintech_sql_time(binary, path, reduce_sql("t", [f"{OURS[w]} {W})" for w in works]))


def datafusion_time(binary, path, work):
    if work not in PEER_SQL:
        return None
    return fintech_sql_time(binary, path, reduce_sql("t", [PEER_SQL[work]]))


def duckdb_time(path, work):
    import duckdb

    if work not in PEER_SQL:
        return None
    con = duckdb.connect()
    q = reduce_sql(f"read_parquet('{path}')", [PEER_SQL[work]])
    start = time.perf_counter()
    con.execute(q).fetchall()
    return time.perf_counter() - start


def best(f, runs):
    times = [t for t in (f() for _ in range(runs)) if t is not None]
    return min(times) if times else None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--symbols", type=int, default=10_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--only", default="", help="comma-separated workloads")
    args = ap.parse_args()

    path = os.path.join(ROOT, "benches", "data", f"ticks_{args.rows}x{args.symbols}.parquet")
    if not os.path.exists(path):
        print(f"writing {path}", file=sys.stderr)
        write_file(path, args.rows, args.symbols)
    subprocess.run(["cargo", "build", "--release", "--quiet", "--bin", "fintech-sql",
                    "--example", "plain_loop"], cwd=ROOT, check=True)
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    binary = os.path.join(target, "release", "fintech-sql")
    loop = subprocess.run([os.path.join(target, "release", "examples", "plain_loop"), path],
                          capture_output=True, text=True, check=True).stdout.strip()

    import duckdb
    import polars

    works = ["ewma", "rolling_mean(100)", "rolling_std(100)", "rolling_std(1000)", "vwap", "ofi",
             "all six"]
    if args.only:
        works = [w for w in works if w in args.only.split(",")]
    rows = args.rows
    print(f"{rows:,} rows x {args.symbols:,} symbols, one Parquet file, best of {args.runs}; "
          f"Polars {polars.__version__}, DuckDB {duckdb.__version__}, {os.cpu_count()} cores")
    print(f"plain Rust loop over the same arrays (EWMA, dense state, one core): {loop}")
    print(f"{'work':<20} {'ours':>10} {'Polars':>10} {'DuckDB':>10} {'DataFusion':>11}"
          f" {'/Polars':>8} {'/DuckDB':>8} {'/DF':>6}   (M rows/s; ratios = ours / peer)")

    def rate(t):
        return None if t is None else rows / t / 1e6

    def fmt(v, width, digits=1):
        return f"{'n/a':>{width}}" if v is None else f"{v:>{width}.{digits}f}"

    for work in works:
        ours = rate(best(lambda: ours_time(binary, path, work), args.runs))
        pol = rate(best(lambda: polars_time(path, work), args.runs))
        duck = rate(best(lambda: duckdb_time(path, work), args.runs))
        df = rate(best(lambda: datafusion_time(binary, path, work), args.runs))
        ratio = lambda peer: None if peer is None else ours / peer
        print(f"{work:<20} {fmt(ours, 10)} {fmt(pol, 10)} {fmt(duck, 10)} {fmt(df, 11)}"
              f" {fmt(ratio(pol), 8, 2)} {fmt(ratio(duck), 8, 2)} {fmt(ratio(df), 6, 2)}",
              flush=True)


if __name__ == "__main__":
    main()
