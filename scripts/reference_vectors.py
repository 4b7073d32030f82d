#!/usr/bin/env python3
"""Writes the reference vectors that the kernel unit tests compare against.

Run from the repository root:  python3 scripts/reference_vectors.py
Needs pandas (and numpy). `cargo test` only reads the CSVs this writes.
"""
import math
import os
from fractions import Fraction

import numpy as np
import pandas as pd

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "data", "reference")
rng = np.random.default_rng(20261126)


def prices(n, start=100.0):
    # A random walk in log space, rounded to cents like real quotes.
    steps = rng.normal(0.0, 0.002, n)
    return np.round(start * np.exp(np.cumsum(steps)), 2)


def write(name, frame):
    path = os.path.join(OUT, name)
    # repr() of a Python float is the shortest string that round-trips: no digits lost.
    with open(path, "w") as f:
        f.write(",".join(frame.columns) + "\n")
        for row in frame.itertuples(index=False):
            f.write(",".join("" if (v is None or (isinstance(v, float) and math.isnan(v)))
                             else repr(float(v)) for v in row) + "\n")
    print("wrote", path, len(frame), "rows")


def exact_std(window):
    """Sample standard deviation of a window, computed in exact rationals, then rounded once."""
    n = len(window)
    if n < 2:
        return float("nan")
    xs = [Fraction(x) for x in window]
    m = sum(xs) / n
    var = sum((x - m) ** 2 for x in xs) / (n - 1)
    return math.sqrt(float(var))


def main():
    os.makedirs(OUT, exist_ok=True)

    x = pd.Series(prices(500))
    ewma = pd.DataFrame({"x": x})
    for alpha in ["0.06", "0.5", "1"]:
        ewma[f"ewma_{alpha}"] = x.ewm(alpha=float(alpha), adjust=False).mean()
    write("ewma.csv", ewma)

    x = pd.Series(prices(300))
    rolling = pd.DataFrame({"x": x})
    for n in [1, 2, 5, 20]:
        rolling[f"mean_{n}"] = x.rolling(n).mean()
        rolling[f"std_{n}"] = x.rolling(n).std(ddof=1)
        vals = x.tolist()
        rolling[f"std_exact_{n}"] = [
            exact_std(vals[i + 1 - n:i + 1]) if i + 1 >= n else float("nan")
            for i in range(len(vals))
        ]
    # n = 1: pandas gives NaN for std; a one-value sample has no spread estimate.
    write("rolling.csv", rolling)

    price = pd.Series(prices(400))
    qty = pd.Series(rng.integers(1, 500, 400).astype(float))
    write("vwap.csv", pd.DataFrame({
        "price": price, "qty": qty, "vwap": (price * qty).cumsum() / qty.cumsum()}))

    price = pd.Series(prices(400))
    write("log_return.csv", pd.DataFrame({
        "price": price, "log_return": np.log(price / price.shift(1))}))

    # Quotes on a coarse tick grid so that equal prices (the middle cases of OFI) are common.
    n = 400
    mid = np.round(np.cumsum(rng.choice([-0.01, 0.0, 0.0, 0.01], n)) + 50.0, 2)
    spread = rng.choice([0.01, 0.02], n)
    bid_px = np.round(mid - spread / 2, 3)
    ask_px = np.round(mid + spread / 2, 3)
    bid_sz = rng.integers(1, 20, n) * 100.0
    ask_sz = rng.integers(1, 20, n) * 100.0
    q = pd.DataFrame({"bid_px": bid_px, "bid_sz": bid_sz, "ask_px": ask_px, "ask_sz": ask_sz})
    pb, qb, pa, qa = (q[c].shift(1) for c in ["bid_px", "bid_sz", "ask_px", "ask_sz"])
    e = ((q.bid_px >= pb) * q.bid_sz - (q.bid_px <= pb) * qb
         - (q.ask_px <= pa) * q.ask_sz + (q.ask_px >= pa) * qa)
    e[0] = np.nan  # no previous quote
    q["ofi"] = e
    write("ofi.csv", q)


if __name__ == "__main__":
    main()
