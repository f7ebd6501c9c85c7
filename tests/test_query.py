"""DuckDB queries over the catalog, compared with a plain pyarrow read + NumPy filter."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from perpdesk.data.catalog import Catalog
from perpdesk.data.query import connect, query, select_files, sql
from perpdesk.errors import CatalogError, PerpdeskError
from tests.helpers import BAR_NS, DAY_NS, H_NS, T0, write_symbol

SYMBOLS = ["AAAUSDT", "BBBUSDT", "CCCUSDT"]
SETTLE = [T0 + 8 * H_NS * k for k in range(1, 11)]
RATES = [0.0001 * k for k in range(1, 11)]


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three symbols, 5m perp bars from 2023-12-31 to 2024-01-04 01:00 (two monthly files
    each), prices distinct per symbol and bar; funding; a second venue with one symbol."""
    r = tmp_path_factory.mktemp("cat")
    for k, sym in enumerate(SYMBOLS):
        write_symbol(
            r,
            sym,
            SETTLE,
            RATES,
            8,
            lambda t, k=k: 100.0 * (k + 1) + (t - T0) / H_NS,
            None,
        )
    write_symbol(r, "ZZZUSDT", SETTLE, RATES, 8, lambda t: 7.0, None, venue="other")
    return r


def reference(root: Path, venue: str, dataset: str, symbols, start, end, columns) -> pa.Table:
    """Every file of each symbol read with pyarrow, filtered with NumPy, symbol prepended."""
    parts = []
    for sym in symbols:
        files = sorted((root / venue / dataset / sym).glob("*.parquet"))
        t = pa.concat_tables([pq.read_table(f) for f in files])
        ts = t.column("ts_ns").to_numpy()
        keep = np.ones(ts.size, dtype=bool)
        if start is not None:
            keep &= ts >= start
        if end is not None:
            keep &= ts < end
        t = t.filter(pa.array(keep)).select(columns)
        parts.append(t.add_column(0, "symbol", pa.array([sym] * t.num_rows, pa.string())))
    return pa.concat_tables(parts)


ALL_BAR_COLS = [
    "ts_ns",
    "open",
    "high",
    "low",
    "close",
    "volume_base",
    "volume_quote",
    "taker_buy_volume_quote",
]


@pytest.mark.parametrize(
    ("symbols", "start", "end", "columns"),
    [
        (None, None, None, None),
        (["CCCUSDT", "AAAUSDT"], T0 + 7 * BAR_NS, T0 + DAY_NS + 3 * BAR_NS, ["close"]),
        (["BBBUSDT"], T0 - 2 * H_NS, T0 + H_NS, ["high", "ts_ns", "low"]),  # across files
        (["BBBUSDT"], None, T0, None),  # only the December file
        (["AAAUSDT"], T0 + 5, T0 + BAR_NS + 1, None),  # bounds between bar stamps
    ],
)
def test_query_matches_plain_read(root: Path, symbols, start, end, columns) -> None:
    got = query(root, "test", "perp_bars_5m", symbols, start, end, columns)
    want_syms = sorted(symbols or SYMBOLS)
    want_cols = ALL_BAR_COLS if columns is None else ["ts_ns", "high", "low"]
    if columns == ["close"]:
        want_cols = ["ts_ns", "close"]
    want = reference(root, "test", "perp_bars_5m", want_syms, start, end, want_cols)
    assert got.column_names == ["symbol", *want_cols]
    assert got.num_rows > 0
    assert got.equals(want)


def test_query_half_open_counts_by_hand(root: Path) -> None:
    # [T0, T0 + 1 h) holds the bars stamped T0, T0 + 5 min, …, T0 + 55 min: 12 per symbol
    t = query(root, "test", "perp_bars_5m", start_ns=T0, end_ns=T0 + H_NS, columns=["close"])
    assert t.num_rows == 3 * 12
    # AAA's close is 100 + hours since T0: the first bar 100, the last (55 min) 100 + 11/12
    aaa = t.filter(pa.compute.equal(t.column("symbol"), "AAAUSDT")).column("close").to_pylist()
    assert aaa[0] == 100.0 and aaa[-1] == pytest.approx(100.0 + 55 / 60)


def test_funding_and_pandas(root: Path) -> None:
    df = query(root, "test", "funding", ["AAAUSDT"], SETTLE[2], SETTLE[5], as_="pandas")
    assert list(df["funding_rate"]) == pytest.approx(RATES[2:5])
    assert list(df["ts_ns"]) == SETTLE[2:5] and set(df["symbol"]) == {"AAAUSDT"}


def test_empty_range_keeps_schema(root: Path) -> None:
    t = query(root, "test", "funding", start_ns=T0 + 400 * DAY_NS)
    assert t.num_rows == 0
    assert t.column_names == ["symbol", "ts_ns", "funding_rate", "funding_interval_h", "mark_price"]


def test_only_needed_files_are_opened(tmp_path: Path) -> None:
    """A corrupt December partition does not matter to a January query (the file is never
    handed to DuckDB); a query that reaches December fails naming the dataset."""
    write_symbol(tmp_path, "AAAUSDT", SETTLE, RATES, 8, lambda t: 100.0, None)
    dec = tmp_path / "test" / "perp_bars_5m" / "AAAUSDT" / "2023-12.parquet"
    dec.write_bytes(b"not parquet at all")
    files = select_files(tmp_path, "test", "perp_bars_5m", None, T0, T0 + DAY_NS)
    assert [p.name for p in files["AAAUSDT"]] == ["2024-01.parquet"]
    jan = query(tmp_path, "test", "perp_bars_5m", start_ns=T0)
    # bars from T0 to the last settlement + 1 h (SETTLE[-1] = T0 + 80 h), 5 min apart
    assert jan.num_rows == 81 * 12
    with pytest.raises(CatalogError, match=r"^test/perp_bars_5m: query failed \(.*\)"):
        query(tmp_path, "test", "perp_bars_5m", end_ns=T0 + BAR_NS)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(venue="nope"), r"unknown venue 'nope' \(known: other, test\)"),
        (dict(dataset="perp_bars_1h"), r"unknown dataset 'perp_bars_1h' \(known: funding, "),
        (dict(symbols=["XXXUSDT"]), r"unknown symbol\(s\) XXXUSDT \(known: AAAUSDT, BBBUSDT"),
        (dict(columns=["price"]), r"has no column\(s\) price \(columns: ts_ns, open,"),
    ],
)
def test_errors_list_the_known(root: Path, kwargs: dict, message: str) -> None:
    args = {"venue": "test", "dataset": "perp_bars_5m", **kwargs}
    with pytest.raises(CatalogError, match=message):
        query(root, **args)


def test_polars_output_or_clear_error(root: Path) -> None:
    if importlib.util.find_spec("polars") is None:
        with pytest.raises(PerpdeskError, match="needs the polars package"):
            query(root, "test", "funding", as_="polars")
    else:
        assert query(root, "test", "funding", as_="polars").height == 30


def test_sql_views(root: Path) -> None:
    t = sql(
        root,
        "SELECT symbol, count(*) AS n, max(close) AS hi FROM perp_bars_5m "
        "GROUP BY symbol ORDER BY symbol",
        venue="test",
    )
    # each symbol: bars from T0 − 1 day to T0 + 81 h → (24 + 81) × 12 = 1,260 bars;
    # the last close is 100(k + 1) + (81 h − 5 min) / 1 h
    assert t.column("symbol").to_pylist() == SYMBOLS
    assert t.column("n").to_pylist() == [1260] * 3
    assert t.column("hi").to_pylist() == pytest.approx(
        [100.0 * (k + 1) + 81 - 5 / 60 for k in range(3)]
    )
    # both venues by schema; the instruments table as a view
    con = connect(root, "test")
    assert con.execute('SELECT count(*) FROM "other".funding').fetchone() == (10,)
    assert con.execute("SELECT count(DISTINCT symbol) FROM instruments").fetchone() == (3,)
    with pytest.raises(CatalogError, match="SQL: query failed"):
        sql(root, "SELECT * FROM no_such_view", venue="test")


def test_sql_symbol_filter_skips_other_files(tmp_path: Path) -> None:
    """WHERE symbol = 'X' in a view folds the other symbols' scans away: a corrupt file
    of another symbol is never read."""
    write_symbol(tmp_path, "AAAUSDT", SETTLE, RATES, 8, lambda t: 100.0, None)
    write_symbol(tmp_path, "BBBUSDT", SETTLE, RATES, 8, lambda t: 100.0, None)
    bad = tmp_path / "test" / "perp_bars_5m" / "BBBUSDT" / "2024-01.parquet"
    bad.write_bytes(b"garbage")
    got = sql(tmp_path, "SELECT count(*) AS n FROM perp_bars_5m WHERE symbol = 'AAAUSDT'")
    assert got.column("n").to_pylist() == [1260]
    assert Catalog(tmp_path).venues() == ["test"]


def test_ts_filter_reaches_the_parquet_reader(root: Path) -> None:
    """DuckDB's plan for query()'s SQL applies the ts_ns bound inside READ_PARQUET (where
    row-group statistics can skip data), not in a filter above the scan."""
    import duckdb

    from perpdesk.data.query import _range_sql

    lo = T0 + 7 * BAR_NS
    text = _range_sql(root, "test", "perp_bars_5m", ["AAAUSDT"], lo, None, ["ts_ns", "close"])
    plan = duckdb.connect().execute(f"EXPLAIN {text}").fetchall()[0][1]
    scan = plan[plan.index("READ_PARQUET") :]
    assert f"ts_ns>={lo}" in scan.replace(" ", "").replace("│", "")


def test_query_sees_append_parts_in_key_order(tmp_path: Path) -> None:
    """Trades appended in three calls, the last one delivering ids withheld from the first
    (a part whose keys lie below the previous part's): the query is the plain read."""
    from perpdesk.data.query import is_part

    def trades(ids: list[int]) -> pa.Table:
        k = np.asarray(ids, np.int64)
        ts = T0 + k * 1_000_000  # one a millisecond
        return pa.table({"ts_ns": ts, "trade_id": k, "price": 10.0 + k, "qty_base": 1.0 + 0 * k,
                         "quote_qty": 10.0 + k, "is_buyer_maker": k % 3 == 0,
                         "ts_recv_ns": ts})  # fmt: skip

    c = Catalog(tmp_path)
    c.append("v", "trades", "AAAUSDT", trades([1, 2, 5, 6]))
    c.append("v", "trades", "AAAUSDT", trades([7, 8, 9]))
    c.append("v", "trades", "AAAUSDT", trades([3, 4, 10]))
    c.append("v", "trades", "BBBUSDT", trades([1, 2]))
    files = select_files(tmp_path, "v", "trades", ["AAAUSDT"])["AAAUSDT"]
    assert [is_part(p) for p in files] == [False, True, True]
    got = query(tmp_path, "v", "trades", columns=["price"])
    assert got.column("symbol").to_pylist() == ["AAAUSDT"] * 10 + ["BBBUSDT"] * 2
    assert got.column("price").to_pylist() == [10.0 + k for k in range(1, 11)] + [11.0, 12.0]
    one = query(
        tmp_path, "v", "trades", ["AAAUSDT"], start_ns=T0 + 3_000_000, end_ns=T0 + 7_000_000
    )
    assert one.drop_columns(["symbol"]).equals(trades([3, 4, 5, 6]).select(one.column_names[1:]))
    n = sql(tmp_path, "SELECT count(*) AS n, count(DISTINCT trade_id) AS d FROM trades "
                      "WHERE symbol = 'AAAUSDT'").to_pylist()  # fmt: skip
    assert n == [{"n": 10, "d": 10}]
    c.compact("v", "trades", "AAAUSDT")
    assert query(tmp_path, "v", "trades", columns=["price"]).equals(got)
