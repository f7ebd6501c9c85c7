"""Binance public-archive importers (perpdesk.data.sources.binance_archive).

No archive files exist in shared data, so the fixtures are built here: real Binance
BTCUSDT ticks (``tests/realdata.py`` ``ws_trades()``) written out in the archive's
trades / aggTrades / klines layouts, zipped and plain, with and without header, in ms
and µs. Klines are built from those trades by a slow reference aggregation.
"""

from __future__ import annotations

import csv
import zipfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from perpdesk.data.catalog import Catalog
from perpdesk.data.sources.binance_archive import (
    QUARANTINE_FILE,
    import_archive_files,
    parse_archive_name,
    read_archive_file,
    read_archive_metrics,
)
from perpdesk.errors import CatalogError
from tests.realdata import ws_trades

DAY = "2024-07-19"
TRADES_HDR = "id,price,qty,quote_qty,time,is_buyer_maker"
AGG_HDR = "agg_trade_id,price,quantity,first_trade_id,last_trade_id,transact_time,is_buyer_maker"
KLINE_HDR = (
    "open_time,open,high,low,close,volume,close_time,quote_volume,count,"
    "taker_buy_volume,taker_buy_quote_volume,ignore"
)


def _write(path: Path, lines: list[str], header: str | None = None, zipped: bool = False) -> Path:
    text = "\n".join(([header] if header else []) + lines) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    if zipped:
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
            zf.writestr(path.with_suffix(".csv").name, text)
    else:
        path.write_text(text)
    return path


@pytest.fixture(scope="module")
def ticks() -> dict[str, np.ndarray]:
    t = ws_trades()
    t = {k: v[:3000] for k, v in t.items()}
    t["id"] = np.arange(5_000_000_001, 5_000_000_001 + t["ts_ns"].size, dtype=np.int64)
    return t


def _trade_lines(t: dict[str, np.ndarray], us: bool = False, spot: bool = False) -> list[str]:
    div = 1_000 if us else 1_000_000
    out = []
    for i in range(t["ts_ns"].size):
        m = "True" if t["is_buyer_maker"][i] else "False"
        if not spot:
            m = m.lower()
        row = (
            f"{t['id'][i]},{float(t['price'][i])!r},{float(t['qty'][i])!r},"
            f"{float(t['quote_volume'][i])!r},"
            f"{t['ts_ns'][i] // div},{m}"
        )
        out.append(row + (",True" if spot else ""))
    return out


def _agg_rows(t: dict[str, np.ndarray]) -> list[tuple[int, float, float, int, int, int, bool]]:
    """Slow reference: consecutive trades with equal time, price and side form one
    aggregate trade."""
    rows: list[list] = []
    for i in range(t["ts_ns"].size):
        key = (int(t["ts_ns"][i]), float(t["price"][i]), bool(t["is_buyer_maker"][i]))
        if rows and (rows[-1][5], rows[-1][1], rows[-1][6]) == key:
            rows[-1][2] = round(rows[-1][2] + float(t["qty"][i]), 3)
            rows[-1][4] = int(t["id"][i])
        else:
            rows.append([0, key[1], float(t["qty"][i]), int(t["id"][i]), int(t["id"][i]), *key])
            rows[-1][5], rows[-1][6] = key[0], key[2]
    return [(900 + j, r[1], r[2], r[3], r[4], r[5], r[6]) for j, r in enumerate(rows)]


def _agg_lines(rows, us: bool = False, spot: bool = False) -> list[str]:
    div = 1_000 if us else 1_000_000
    out = []
    for a, p, q, f, last, ts, m in rows:
        b = ("True" if m else "False") if spot else ("true" if m else "false")
        out.append(f"{a},{p!r},{q!r},{f},{last},{ts // div},{b}" + (",True" if spot else ""))
    return out


def _kline_rows(t: dict[str, np.ndarray], step_ns: int = 60_000_000_000) -> list[tuple]:
    """Slow reference 1m klines: one bar per minute that has trades."""
    bars: dict[int, list] = {}
    for i in range(t["ts_ns"].size):
        k = int(t["ts_ns"][i]) // step_ns * step_ns
        p, q, qv = float(t["price"][i]), float(t["qty"][i]), float(t["quote_volume"][i])
        buy = not t["is_buyer_maker"][i]
        if k not in bars:
            bars[k] = [p, p, p, p, 0.0, 0.0, 0, 0.0, 0.0]
        b = bars[k]
        b[1], b[2], b[3] = max(b[1], p), min(b[2], p), p
        b[4] += q
        b[5] += qv
        b[6] += 1
        if buy:
            b[7] += q
            b[8] += qv
    return [(k, *bars[k]) for k in sorted(bars)]


def _kline_lines(rows, us: bool = False, step_ns: int = 60_000_000_000) -> list[str]:
    div = 1_000 if us else 1_000_000
    return [
        f"{k // div},{o!r},{h!r},{lo!r},{c!r},{v!r},{(k + step_ns) // div - 1},{qv!r},{n},"
        f"{tb!r},{tbq!r},0"
        for k, o, h, lo, c, v, qv, n, tb, tbq in rows
    ]


# -- happy paths -----------------------------------------------------------------------


def test_trades_header_zip_plain_ms_us_identical(tmp_path, ticks):
    lines = _trade_lines(ticks)
    a = _write(tmp_path / "a" / f"BTCUSDT-trades-{DAY}.zip", lines, TRADES_HDR, zipped=True)
    b = _write(tmp_path / "b" / f"BTCUSDT-trades-{DAY}.csv", lines)
    c = _write(tmp_path / "c" / f"BTCUSDT-trades-{DAY}.csv", _trade_lines(ticks, us=True))
    d = _write(
        tmp_path / "d" / f"BTCUSDT-trades-{DAY}.zip",
        _trade_lines(ticks, us=True, spot=True),
        zipped=True,
    )
    ds, sym, ta = read_archive_file(a)
    assert (ds, sym) == ("trades", "BTCUSDT")
    assert ta.num_rows == 3000
    assert ta["ts_ns"][0].as_py() == int(ticks["ts_ns"][0])
    assert ta["ts_ns"][-1].as_py() == int(ticks["ts_ns"][-1])
    np.testing.assert_array_equal(ta["price"].to_numpy(), ticks["price"])
    np.testing.assert_array_equal(ta["qty_base"].to_numpy(), ticks["qty"])
    np.testing.assert_array_equal(ta["is_buyer_maker"].to_numpy(False), ticks["is_buyer_maker"])
    np.testing.assert_array_equal(ta["trade_id"].to_numpy(), ticks["id"])
    assert ta["ts_recv_ns"].null_count == 3000
    assert read_archive_file(b)[2].equals(ta)
    assert read_archive_file(c)[2].equals(ta)
    ds_spot, _, td = read_archive_file(d, market="spot")
    assert ds_spot == "spot_trades"
    assert td.equals(ta)


def test_agg_trades_futures_and_spot(tmp_path, ticks):
    rows = _agg_rows(ticks)
    assert 1000 < len(rows) < 3000
    a = _write(tmp_path / f"BTCUSDT-aggTrades-{DAY}.zip", _agg_lines(rows), AGG_HDR, zipped=True)
    s = _write(
        tmp_path / "spot" / f"BTCUSDT-aggTrades-{DAY}.csv", _agg_lines(rows, us=True, spot=True)
    )
    ds, sym, t = read_archive_file(a)
    assert (ds, sym, t.num_rows) == ("agg_trades", "BTCUSDT", len(rows))
    assert t["ts_ns"][0].as_py() == rows[0][5] and t["ts_ns"][-1].as_py() == rows[-1][5]
    assert t["agg_trade_id"].to_pylist() == [r[0] for r in rows]
    assert t["qty_base"].to_pylist() == [r[2] for r in rows]
    assert t["last_trade_id"][-1].as_py() == int(ticks["id"][-1])
    assert read_archive_file(s, market="spot")[2].equals(t)
    # futures layout expected but spot file given: column count error
    with pytest.raises(CatalogError, match=r"row 1: 8 columns, expected 7"):
        read_archive_file(s)


def test_klines_match_reference_aggregation(tmp_path, ticks):
    rows = _kline_rows(ticks)
    f = _write(tmp_path / f"BTCUSDT-1m-{DAY}.zip", _kline_lines(rows), KLINE_HDR, zipped=True)
    g = _write(tmp_path / "us" / f"BTCUSDT-1m-{DAY}.csv", _kline_lines(rows, us=True))
    ds, sym, t = read_archive_file(f)
    assert (ds, sym, t.num_rows) == ("perp_bars_1m", "BTCUSDT", len(rows))
    assert t["ts_ns"][0].as_py() == rows[0][0]
    assert t["ts_ns"][-1].as_py() == rows[-1][0]
    assert t["open"].to_pylist() == [r[1] for r in rows]
    assert t["high"].to_pylist() == [r[2] for r in rows]
    assert t["low"].to_pylist() == [r[3] for r in rows]
    assert t["close"].to_pylist() == [r[4] for r in rows]
    assert t["volume_base"].to_pylist() == [r[5] for r in rows]
    assert t["volume_quote"].to_pylist() == [r[6] for r in rows]
    assert t["taker_buy_volume_quote"].to_pylist() == [r[9] for r in rows]
    assert sum(r[7] for r in rows) == 3000
    ds2, _, t2 = read_archive_file(g, market="spot")
    assert ds2 == "spot_bars_1m" and t2.equals(t)
    mark = _write(
        tmp_path / "markPriceKlines" / "BTCUSDT" / "1m" / f"BTCUSDT-1m-{DAY}.csv",
        _kline_lines(rows),
    )
    assert read_archive_file(mark)[0] == "mark_bars_1m"
    assert read_archive_file(mark, kind="premiumIndexKlines")[0] == "premium_bars_1m"


def test_funding_book_ticker_metrics(tmp_path):
    base = 1_704_067_200_000
    fr = _write(
        tmp_path / "BTCUSDT-fundingRate-2024-01.zip",
        [f"{base + i * 28_800_000 + 3},8,{0.0001 * (i - 1)!r}" for i in range(3)],
        "calc_time,funding_interval_hours,last_funding_rate",
        zipped=True,
    )
    ds, _, t = read_archive_file(fr)
    assert ds == "funding"
    assert t["ts_ns"].to_pylist() == [(base + i * 28_800_000) * 10**6 for i in range(3)]
    assert t["funding_rate"].to_pylist() == [-0.0001, 0.0, 0.0001]
    assert t["mark_price"].null_count == 3
    bt = _write(
        tmp_path / "BTCUSDT-bookTicker-2024-01-01.csv",
        [f"{100 + i},42000.{i},1.5,42000.{i + 1},2.0,{base + i},{base + i + 2}" for i in range(4)],
        "update_id,best_bid_price,best_bid_qty,best_ask_price,best_ask_qty,"
        "transaction_time,event_time",
    )
    ds, _, t = read_archive_file(bt)
    assert ds == "book_ticker"
    assert t["ts_ns"].to_pylist() == [(base + i) * 10**6 for i in range(4)]
    assert t["bid_px"][1].as_py() == 42000.1 and t["ask_px"][1].as_py() == 42000.2
    me = _write(
        tmp_path / "BTCUSDT-metrics-2024-01-01.zip",
        [
            "2024-01-01 00:05:00,BTCUSDT,80000.5,3400000000.0,1.2,1.3,1.4,0.9",
            "2024-01-01 00:10:00,BTCUSDT,80010.5,3400500000.0,1.21,1.31,1.41,1.1",
        ],
        "create_time,symbol,sum_open_interest,sum_open_interest_value,"
        "count_toptrader_long_short_ratio,sum_toptrader_long_short_ratio,"
        "count_long_short_ratio,sum_taker_long_short_vol_ratio",
        zipped=True,
    )
    ds, _, oi = read_archive_file(me)
    assert ds == "open_interest"
    assert oi["ts_ns"][0].as_py() == (base + 300_000) * 10**6
    assert oi["open_interest_base"].to_pylist() == [80000.5, 80010.5]
    sym, oi2, ratios = read_archive_metrics(me)
    assert sym == "BTCUSDT" and oi2.equals(oi)
    assert ratios["sum_taker_long_short_vol_ratio"].to_pylist() == [0.9, 1.1]


def test_import_idempotent(tmp_path, ticks):
    t = _write(tmp_path / f"BTCUSDT-trades-{DAY}.zip", _trade_lines(ticks), zipped=True)
    k = _write(tmp_path / f"BTCUSDT-1m-{DAY}.csv", _kline_lines(_kline_rows(ticks)))
    cat = Catalog(tmp_path / "cat")
    s1 = import_archive_files([t, k], cat)
    assert s1.rows_imported == 3000 + len(_kline_rows(ticks)) and s1.rows_quarantined == 0
    first = cat.read("binance", "trades", "BTCUSDT")
    bars = cat.read("binance", "perp_bars_1m", "BTCUSDT")
    import_archive_files([t, k], cat)
    assert cat.read("binance", "trades", "BTCUSDT").equals(first)
    assert cat.read("binance", "perp_bars_1m", "BTCUSDT").equals(bars)
    assert first.equals(read_archive_file(t)[2])


def test_names():
    n = parse_archive_name("x/BTCUSDT-5m-2024-01-01.zip")
    assert (n.symbol, n.kind, n.interval, n.dataset) == ("BTCUSDT", "klines", "5m", "perp_bars_5m")
    with pytest.raises(CatalogError, match="not a Binance archive file name"):
        parse_archive_name("btc.csv")
    with pytest.raises(CatalogError, match="only for futures"):
        parse_archive_name("BTCUSDT-fundingRate-2024-01.zip", market="spot")


# -- bad input -------------------------------------------------------------------------

GOOD = [
    "1,42000.5,0.1,0.1,1704067200000,true",
    "2,42000.6,0.2,0.2,1704067200001,false",
    "3,42000.7,0.3,0.3,1704067200002,true",
]


def _bad(lines: list[str], i: int, repl: str) -> list[str]:
    out = list(lines)
    out[i] = repl
    return out


BAD_ROWS = [
    ("columns", _bad(GOOD, 1, "2,42000.6,0.2,0.2,1704067200001"), "row 2: 5 columns, expected 6"),
    ("price", _bad(GOOD, 1, "2,abc,0.2,0.2,1704067200001,false"), "row 2: price 'abc' is not"),
    ("negative", _bad(GOOD, 2, "3,42000.7,-0.3,0.3,1704067200002,true"), "row 3: qty is neg"),
    ("nan", _bad(GOOD, 1, "2,nan,0.2,0.2,1704067200001,false"), "row 2: price is NaN"),
    ("ts", _bad(GOOD, 2, "3,42000.7,0.3,0.3,1704067100002,true"), "row 3: time before"),
    ("ids", _bad(GOOD, 2, "1,42000.7,0.3,0.3,1704067200002,true"), "row 3: id not above"),
    ("units", _bad(GOOD, 2, "3,42000.7,0.3,0.3,1704067200002000,true"), "row 3: time unit"),
]


@pytest.mark.parametrize(("lines", "msg"), [b[1:] for b in BAD_ROWS], ids=[b[0] for b in BAD_ROWS])
def test_bad_rows_one_line_error_nothing_written(tmp_path, lines, msg):
    good = _write(tmp_path / "ok" / "BTCUSDT-trades-2024-01-01.csv", GOOD)
    p = _write(tmp_path / "BTCUSDT-trades-2024-01-02.zip", lines, TRADES_HDR, zipped=True)
    cat = Catalog(tmp_path / "cat")
    with pytest.raises(CatalogError) as ei:
        import_archive_files([good, p], cat)
    text = str(ei.value)
    assert "\n" not in text
    assert text.startswith(f"{p}[BTCUSDT-trades-2024-01-02.csv]: {msg}")
    assert not (tmp_path / "cat").exists()


def test_bad_files(tmp_path):
    corrupt = tmp_path / "BTCUSDT-trades-2024-01-01.zip"
    corrupt.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(CatalogError, match="corrupt zip"):
        read_archive_file(corrupt)
    empty = tmp_path / "e" / "BTCUSDT-trades-2024-01-01.zip"
    empty.parent.mkdir()
    zipfile.ZipFile(empty, "w").close()
    with pytest.raises(CatalogError, match="exactly one CSV member, found 0"):
        read_archive_file(empty)
    two = tmp_path / "t" / "BTCUSDT-trades-2024-01-01.zip"
    two.parent.mkdir()
    with zipfile.ZipFile(two, "w") as zf:
        zf.writestr("a.csv", "\n".join(GOOD))
        zf.writestr("b.csv", "\n".join(GOOD))
    with pytest.raises(CatalogError, match=r"found 2 \(a.csv, b.csv\)"):
        read_archive_file(two)
    hdr = _write(tmp_path / "h" / "BTCUSDT-trades-2024-01-01.csv", GOOD, AGG_HDR)
    with pytest.raises(CatalogError, match="header has 7 columns, expected 6"):
        read_archive_file(hdr)
    kl = _write(
        tmp_path / "k" / "BTCUSDT-1m-2024-01-01.csv",
        ["1704067200000,10,9,8,9.5,1,1704067259999,10,1,0.5,5,0"],
    )
    with pytest.raises(CatalogError, match="row 1: high/low do not bracket"):
        read_archive_file(kl)


def test_quarantine_imports_the_rest(tmp_path):
    lines = [*GOOD, "4,oops,0.1,0.1,1704067200003,true", "5,42001.0,0.1,0.1,1704067200004,true"]
    lines = _bad(lines, 1, "2,42000.6,-1,0.2,1704067200001,false")
    p = _write(tmp_path / "BTCUSDT-trades-2024-01-01.zip", lines, TRADES_HDR, zipped=True)
    cat = Catalog(tmp_path / "cat")
    q = tmp_path / "q"
    s = import_archive_files([p], cat, quarantine_dir=q)
    assert (s.rows_imported, s.rows_quarantined) == (3, 2)
    assert s.quarantine_file == q / QUARANTINE_FILE
    assert "quarantined 2 row(s)" in str(s)
    with (q / QUARANTINE_FILE).open() as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["file", "row", "reason", "raw_line"]
    assert rows[1][1:] == ["2", "qty is negative", "2,42000.6,-1,0.2,1704067200001,false"]
    assert rows[2][1] == "4" and "price 'oops' is not a number" in rows[2][2]
    assert rows[1][0].endswith("[BTCUSDT-trades-2024-01-01.csv]")
    got = cat.read("binance", "trades", "BTCUSDT")
    assert got["trade_id"].to_pylist() == [1, 3, 5]
    assert isinstance(got, pa.Table)


def test_crlf_blank_line_and_header_only(tmp_path):
    ref = read_archive_file(_write(tmp_path / "BTCUSDT-trades-2024-01-01.csv", GOOD))[2]
    crlf = tmp_path / "c" / "BTCUSDT-trades-2024-01-01.csv"
    crlf.parent.mkdir()
    crlf.write_bytes(("\r\n".join([TRADES_HDR, *GOOD]) + "\r\n").encode())
    assert read_archive_file(crlf)[2].equals(ref)
    blank = _write(tmp_path / "b" / "BTCUSDT-trades-2024-01-01.csv", [GOOD[0], "", *GOOD[1:]])
    with pytest.raises(CatalogError, match=r"\.csv: row 2: empty line"):
        read_archive_file(blank)
    only = _write(tmp_path / "o" / "BTCUSDT-trades-2024-01-01.zip", [], TRADES_HDR, zipped=True)
    ds, _, t = read_archive_file(only)
    assert (ds, t.num_rows) == ("trades", 0)
    assert import_archive_files([only], Catalog(tmp_path / "cat")).rows_imported == 0


# -- bookDepth -------------------------------------------------------------------------

DEPTH_HDR = "timestamp,percentage,depth,notional"
BANDS_PCT = (-0.2, -0.1, -0.05, 0.05, 0.1, 0.2)


@pytest.fixture(scope="module")
def depth_rows() -> tuple[int, list[tuple[float, float, float]]]:
    """bookDepth rows computed from the real REST snapshot at the start of
    usdm/btcusdt_20240718.gz (1000 levels a side, about ±0.21 % of mid) by a slow
    reference: mid = (best bid + best ask) / 2; band -p holds the bid levels priced at or
    above mid·(1 − p/100), band +p the ask levels at or below mid·(1 + p/100); depth is
    their summed quantity, notional their summed price × quantity."""
    from perpdesk.data.sources.binance_ws import read_capture
    from tests.realdata import shared_file

    snap = read_capture(shared_file("binance-ws/usdm/btcusdt_20240718.gz")).require_snapshot()
    mid = (snap.bids[0][0] + snap.asks[0][0]) / 2
    out = []
    for pct in BANDS_PCT:
        if pct < 0:
            lv = [(p, q) for p, q in snap.bids if p >= mid * (1 + pct / 100)]
        else:
            lv = [(p, q) for p, q in snap.asks if p <= mid * (1 + pct / 100)]
        out.append((pct, sum(q for _, q in lv), sum(p * q for p, q in lv)))
    assert snap.event_ts_ns is not None
    return snap.event_ts_ns // 10**9 * 10**9, out


def _depth_lines(ts_s: int, rows, as_text: bool = True) -> list[str]:
    stamp = str(np.datetime64(ts_s, "s")).replace("T", " ") if as_text else str(ts_s * 1000)
    return [f"{stamp},{p!r},{d!r},{n!r}" for p, d, n in rows]


def test_book_depth_from_real_snapshot(tmp_path, depth_rows):
    ts_ns, rows = depth_rows
    ts_s = ts_ns // 10**9
    # second snapshot 30 s later (same bands, listed from the outside in: order is free)
    later = [(p, d * 2, n * 2) for p, d, n in reversed(rows)]
    lines = _depth_lines(ts_s, rows) + _depth_lines(ts_s + 30, later, as_text=False)
    f = _write(tmp_path / "BTCUSDT-bookDepth-2024-07-18.zip", lines, DEPTH_HDR, zipped=True)
    ds, sym, t = read_archive_file(f)
    assert (ds, sym, t.num_rows) == ("book_depth", "BTCUSDT", 12)
    assert t.schema.names == ["ts_ns", "band_pct", "depth_base", "notional_usd", "depth_key"]
    # 2024-07-18 23:57:02 UTC (the snapshot's E = 1721347022759 ms, to the second)
    assert t["ts_ns"][0].as_py() == 1721347022 * 10**9
    assert t["ts_ns"][-1].as_py() == (1721347022 + 30) * 10**9
    assert t["band_pct"].to_pylist() == list(BANDS_PCT) * 2
    assert t["depth_base"].to_pylist()[:6] == [d for _, d, _ in rows]
    assert t["notional_usd"].to_pylist()[6:] == [2 * n for _, _, n in rows]
    # best bid 63943.9 × 46.372 is inside every bid band: depth(-0.05 %) ≥ 46.372
    assert t["depth_base"][2].as_py() >= 46.372
    assert np.all(np.diff(t["depth_base"].to_numpy()[:3]) < 0)  # wider band, more depth
    # (ts_ms × 20001 + band × 100 + 10000): first row is the widest bid band
    assert t["depth_key"][0].as_py() == 1721347022000 * 20001 + round(BANDS_PCT[0] * 100) + 10000
    cat = Catalog(tmp_path / "cat")
    import_archive_files([f], cat)
    assert cat.read("binance", "book_depth", "BTCUSDT").equals(t)
    import_archive_files([f], cat)  # idempotent
    assert cat.read("binance", "book_depth", "BTCUSDT").num_rows == 12


@pytest.mark.parametrize(
    ("bad", "msg"),
    [
        ("2024-07-18 23:57:02,-0.1,1.0,2.0", "row 4: band already listed"),
        ("2024-07-18 23:57:01,0.3,1.0,2.0", "row 4: timestamp before the previous row"),
        ("2024-07-18 23:57:02,0.3,-1.0,2.0", "row 4: depth is negative"),
        ("2024-07-18 25:57:02,0.3,1.0,2.0", "row 4: timestamp is not 'YYYY-MM-DD HH:MM:SS'"),
        ("2024-07-18 23:57:02,0,1.0,2.0", r"row 4: percentage not in \[-100, 0\)"),
    ],
)
def test_book_depth_bad_rows(tmp_path, bad, msg):
    good = [
        "2024-07-18 23:57:02,-0.2,3.0,6.0",
        "2024-07-18 23:57:02,-0.1,1.5,3.0",
        "2024-07-18 23:57:02,0.1,1.0,2.0",
    ]
    f = _write(tmp_path / "BTCUSDT-bookDepth-2024-07-18.csv", [*good, bad], DEPTH_HDR)
    with pytest.raises(CatalogError, match=msg):
        read_archive_file(f)


def test_corrupt_zip_member_found_while_streaming(tmp_path, ticks):
    """A zip whose central directory is fine but whose compressed member is damaged is
    only found out while inflating: it must still be a one-line 'corrupt zip' error."""
    p = _write(tmp_path / f"BTCUSDT-trades-{DAY}.zip", _trade_lines(ticks), zipped=True)
    raw = bytearray(p.read_bytes())
    mid = len(raw) // 2
    raw[mid : mid + 16] = bytes(b ^ 0xFF for b in raw[mid : mid + 16])
    p.write_bytes(bytes(raw))
    with pytest.raises(CatalogError, match=r"corrupt zip") as ei:
        read_archive_file(p)
    assert "\n" not in str(ei.value) and str(p) in str(ei.value)
