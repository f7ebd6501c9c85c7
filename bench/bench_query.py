"""Benchmark: DuckDB queries over a one-year, 50-symbol catalog of 5-minute bars.

Run ``python bench/bench_query.py``. The catalog (2024-01-01 → 2025-01-01, 50 symbols ×
105,408 bars = 5.27 M rows, 600 monthly files; a seeded random walk written through
:class:`~perpdesk.data.catalog.Catalog`) is built on first use under
``~/.cache/perpdesk-bench/query-v1`` (override with ``$PERPDESK_BENCH_CACHE``) and reused.
Prints, best of 3 after a warm-up: a one-month range query for 5 symbols
(:func:`perpdesk.data.query.query`, target well under a second), the same month through a
SQL view (:func:`perpdesk.data.query.connect`), a full-year per-symbol aggregate over all
50 symbols, ``inventory`` (the scan behind ``perpdesk data ls``) and ``check``.

The layout decision of :mod:`perpdesk.data.query` (files chosen from the path, not a
DuckDB glob) is measured here too: the same month × 5 symbols through one
``read_parquet`` glob over the whole dataset with a ``filename`` filter, on this catalog
and on a second cached one with daily partitions (``mark_price``, 20 symbols × 366 days
= 7,320 files of 1,440 rows).
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
from _timing import best_of  # bench/_timing.py (scripts run from bench/)

from perpdesk.data.catalog import Catalog
from perpdesk.data.check import check, inventory
from perpdesk.data.query import connect, query
from perpdesk.domain import Instrument, InstrumentKind

VENUE = "bench"
DATASET = "perp_bars_5m"
N_SYMBOLS = 50
START = np.datetime64("2024-01-01", "ns")
END = np.datetime64("2025-01-01", "ns")
BAR_NS = 300 * 1_000_000_000
RANGE_BUDGET_S = 1.0


def _ns(d: np.datetime64) -> int:
    return int(d.astype("datetime64[ns]").astype(np.int64))


def symbols() -> list[str]:
    return [f"S{k:02d}USDT" for k in range(N_SYMBOLS)]


def _bars(rng: np.random.Generator, ts: np.ndarray) -> pa.Table:
    """Random-walk 5m bars: log-returns N(0, 0.2 %), high/low widened by |N(0, 0.1 %)|."""
    n = ts.size
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.002, n)))
    open_ = np.concatenate([[100.0], close[:-1]])
    hi = np.maximum(open_, close) * (1 + np.abs(rng.normal(0.0, 0.001, n)))
    lo = np.minimum(open_, close) * (1 - np.abs(rng.normal(0.0, 0.001, n)))
    vol = rng.lognormal(10.0, 0.5, n)
    vq = vol * (open_ + hi + lo + close) / 4
    return pa.table(
        {
            "ts_ns": ts,
            "open": open_,
            "high": hi,
            "low": lo,
            "close": close,
            "volume_base": vol,
            "volume_quote": vq,
            "taker_buy_volume_quote": vq * rng.uniform(0.3, 0.7, n),
        }
    )


def _cached(name: str, build: Callable[[Catalog], None]) -> Path:
    """``<cache>/<name>``, built by ``build`` into a temp sibling on first use, then
    renamed into place with a ``_COMPLETE`` marker."""
    cache = Path(os.environ.get("PERPDESK_BENCH_CACHE", "~/.cache/perpdesk-bench")).expanduser()
    final = cache / name
    if (final / "_COMPLETE").is_file():
        return final
    cache.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=cache))
    try:
        t0 = time.perf_counter()
        build(Catalog(tmp))
        (tmp / "_COMPLETE").write_text("ok\n")
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
        print(f"built {final} in {time.perf_counter() - t0:.1f} s")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def build_catalog() -> Path:
    """The cached one-year, 50-symbol 5m-bar catalog."""

    def build(cat: Catalog) -> None:
        ts = np.arange(_ns(START), _ns(END), BAR_NS, dtype=np.int64)
        rng = np.random.default_rng(20241)
        for sym in symbols():
            cat.write(VENUE, DATASET, sym, _bars(rng, ts))
        cat.write_instruments(
            VENUE,
            [
                Instrument(VENUE, s, InstrumentKind.PERP, s[:-4], "USDT", 0.0001, 0.001, 8)
                for s in symbols()
            ],
        )

    return _cached("query-v1", build)


def build_daily_catalog() -> Path:
    """The cached daily-partition catalog: ``mark_price`` once a minute, 20 symbols × 366
    days (7,320 files)."""

    def build(cat: Catalog) -> None:
        ts = np.arange(_ns(START), _ns(END), 60 * 1_000_000_000, dtype=np.int64)
        n = ts.size
        for k in range(20):
            px = 100.0 + np.arange(n) * 1e-4
            t = pa.table(
                {
                    "ts_ns": ts,
                    "mark_px": px,
                    "index_px": px,
                    "predicted_funding_rate": np.full(n, 1e-4),
                    "next_funding_ts_ns": ts - ts % (8 * 3600 * 10**9) + 8 * 3600 * 10**9,
                    "ts_recv_ns": ts,
                }
            )
            cat.write("daily", "mark_price", f"D{k:02d}USDT", t)

    return _cached("query-daily-v1", build)


def glob_query(root: Path, venue: str, dataset: str, syms: list[str], a: int, b: int) -> str:
    """The alternative to choosing files from the path: one DuckDB glob over the whole
    dataset, the symbol taken from each row's file name (no ORDER BY, like query())."""
    likes = " OR ".join(f"filename LIKE '%/{s}/%'" for s in syms)
    return (
        "SELECT regexp_extract(filename, '/([^/]+)/[^/]+$', 1) AS symbol, * EXCLUDE filename "
        f"FROM read_parquet('{root}/{venue}/{dataset}/*/*.parquet', filename=true) "
        f"WHERE ({likes}) AND ts_ns >= {a} AND ts_ns < {b}"
    )


def main() -> int:
    root = build_catalog()
    month = (_ns(np.datetime64("2024-06-01")), _ns(np.datetime64("2024-07-01")))
    five = symbols()[10:15]

    def range_query() -> pa.Table:
        return query(root, VENUE, DATASET, symbols=five, start_ns=month[0], end_ns=month[1])

    t_range = best_of(range_query)
    n_range = range_query().num_rows

    con = connect(root, VENUE)
    in_list = ", ".join(f"'{s}'" for s in five)
    sql_range = (
        f"SELECT * FROM {DATASET} WHERE symbol IN ({in_list}) "
        f"AND ts_ns >= {month[0]} AND ts_ns < {month[1]} ORDER BY symbol, ts_ns"
    )
    t_sql = best_of(lambda: con.sql(sql_range).to_arrow_table())
    n_sql = con.sql(sql_range).to_arrow_table().num_rows

    agg = (
        f"SELECT symbol, count(*) AS bars, sum(volume_quote) AS volume_usd, "
        f"max(high) / min(low) - 1 AS range_frac, arg_max(close, ts_ns) AS last_close "
        f"FROM {DATASET} GROUP BY symbol ORDER BY symbol"
    )
    t_agg = best_of(lambda: con.sql(agg).to_arrow_table())
    n_all = int(np.sum(con.sql(agg).to_arrow_table().column("bars").to_numpy()))

    plain = duckdb.connect()
    g = glob_query(root, VENUE, DATASET, five, *month)
    t_glob = best_of(lambda: plain.sql(g).to_arrow_table())

    t_inv = best_of(lambda: inventory(root, venue=VENUE), repeat=1)
    t_check = best_of(lambda: check(root, venue=VENUE), repeat=1)

    daily = build_daily_catalog()
    dsyms = [f"D{k:02d}USDT" for k in range(5)]

    def daily_query() -> pa.Table:
        return query(daily, "daily", "mark_price", dsyms, *month)

    t_daily = best_of(daily_query)
    n_daily = daily_query().num_rows
    gd = glob_query(daily, "daily", "mark_price", dsyms, *month)
    t_daily_glob = best_of(lambda: plain.sql(gd).to_arrow_table())

    verdict = "ok" if t_range < RANGE_BUDGET_S else f"SLOW (budget {RANGE_BUDGET_S:.0f} s)"
    print(f"catalog: {root} ({n_all:,} rows, {N_SYMBOLS} symbols x 12 monthly files)")
    print(
        f"query(): 1 month x 5 symbols: {t_range:.3f} s, {n_range:,} rows, "
        f"{n_range / t_range:,.0f} rows/s [{verdict}]"
    )
    print(f"  same through a DuckDB glob over all 600 files: {t_glob:.3f} s")
    print(f"connect() view, same range: {t_sql:.3f} s, {n_sql / t_sql:,.0f} rows/s")
    print(
        f"connect() view, full-year aggregate over 50 symbols: {t_agg:.3f} s, "
        f"{n_all:,} rows, {n_all / t_agg:,.0f} rows/s"
    )
    print(f"inventory (data ls), all 50 symbols: {t_inv:.3f} s, {n_all / t_inv:,.0f} rows/s")
    print(f"check (data check), all 50 symbols: {t_check:.3f} s, {n_all / t_check:,.0f} rows/s")
    print(
        f"daily partitions (7,320 files): query() 1 month x 5 symbols {t_daily:.3f} s "
        f"({n_daily:,} rows, {n_daily / t_daily:,.0f} rows/s); DuckDB glob {t_daily_glob:.3f} s"
    )
    return 0 if t_range < RANGE_BUDGET_S else 1


if __name__ == "__main__":
    sys.exit(main())
