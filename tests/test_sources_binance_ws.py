"""Binance websocket captures: parsing, catalog import and order-book rebuild (real data)."""

from __future__ import annotations

import gzip
from functools import lru_cache

import numpy as np
import pytest

from perpdesk.data.catalog import Catalog
from perpdesk.data.orderbook import DepthDiffs, SequenceGapError, find_gaps, rebuild_book
from perpdesk.data.sources.binance_ws import CaptureTables, import_capture, read_capture
from perpdesk.errors import CatalogError
from tests.realdata import shared_file


@lru_cache(maxsize=8)
def _cap(rel: str) -> CaptureTables:
    return read_capture(shared_file(f"binance-ws/{rel}"))


# (file, symbol, trades, book_ticker, mark_price row counts,
#  first/last trade ts_ns, first/last bookTicker ts_ns) — printed once from the files
COUNTS = [
    (
        "usdm/btcusdt_20230404.dat.gz", "BTCUSDT", 2197, 6765, 99,
        (1680652700452000000, 1680652799965000000), (1680652700435000000, 1680652800001000000),
    ),
    (
        "usdm/btcusdt_20230405.dat.gz", "BTCUSDT", 10738, 37440, 415,
        (1680652804962000000, 1680653214437000000), (1680652800093000000, 1680653214649000000),
    ),
    (
        "spot/btcusdt_20230405.dat.gz", "BTCUSDT", 3144, 8015, 0,
        (1680652799999000000, 1680653214256000000), (1680652800004231000, 1680653214585027000),
    ),
    (
        "usdm/btcusdt_20240718.gz", "BTCUSDT", 974, 7113, 0,
        (1721347022956000000, 1721347199877000000), (1721347022507000000, 1721347200457000000),
    ),
    (
        "usdm/btcusdt_20240719.gz", "BTCUSDT", 9727, 45147, 0,
        (1721347202812000000, 1721347502282000000), (1721347202813000000, 1721347502291000000),
    ),
    (
        "usdm/ethusdt_20240718.gz", "ETHUSDT", 1640, 9089, 0,
        (1721347022707000000, 1721347199923000000), (1721347022561000000, 1721347199923000000),
    ),
    (
        "usdm/ethusdt_20240719.gz", "ETHUSDT", 12015, 38239, 0,
        (1721347202808000000, 1721347502276000000), (1721347202808000000, 1721347502291000000),
    ),
]  # fmt: skip


@pytest.mark.parametrize(("rel", "sym", "n_tr", "n_bt", "n_mp", "tr_ts", "bt_ts"), COUNTS)
def test_counts_and_spans(rel, sym, n_tr, n_bt, n_mp, tr_ts, bt_ts) -> None:
    cap = _cap(rel)
    assert cap.market == ("spot" if rel.startswith("spot") else "usdm")
    assert not cap.skipped  # every line is a known stream (or the snapshot)
    tr, bt = cap.trades[sym], cap.book_ticker[sym]
    assert tr.num_rows == n_tr and bt.num_rows == n_bt
    assert cap.mark_price.get(sym) is None if n_mp == 0 else cap.mark_price[sym].num_rows == n_mp
    ts = tr["ts_ns"].to_numpy()
    assert (ts[0], ts[-1]) == tr_ts
    ts = bt["ts_ns"].to_numpy()
    assert (ts[0], ts[-1]) == bt_ts
    # receive stamps are ns whatever the file's unit (µs in 2023, ns in 2024)
    recv = tr["ts_recv_ns"].to_numpy()
    assert (recv > 1.6e18).all() and (recv < 1.8e18).all()


def test_hand_read_values() -> None:
    # usdm/btcusdt_20230404.dat.gz, first markPrice line (µs stamp):
    # 1680652701048293 {..."E":1680652701000,"p":"28147.27373413","i":"28159.75642857",
    #  "r":"0.00002754","T":1680652800000}
    mp = _cap("usdm/btcusdt_20230404.dat.gz").mark_price["BTCUSDT"].slice(0, 1).to_pylist()[0]
    assert mp == {
        "ts_ns": 1680652701000000000,
        "mark_px": 28147.27373413,
        "index_px": 28159.75642857,
        "predicted_funding_rate": 0.00002754,
        "next_funding_ts_ns": 1680652800000000000,
        "ts_recv_ns": 1680652701048293000,
    }
    # spot first bookTicker (no E/T → ts_ns is the receive stamp):
    # 1680652800004231 {"u":36090299876,"b":"28165.47000000","B":"7.98680000",
    #  "a":"28165.48000000","A":"3.26888000"}
    bt = _cap("spot/btcusdt_20230405.dat.gz").book_ticker["BTCUSDT"].slice(0, 1).to_pylist()[0]
    assert bt == {
        "ts_ns": 1680652800004231000,
        "update_id": 36090299876,
        "bid_px": 28165.47,
        "bid_qty": 7.9868,
        "ask_px": 28165.48,
        "ask_qty": 3.26888,
        "ts_recv_ns": 1680652800004231000,
    }
    # usdm/ethusdt_20240719.gz first trade (ns stamp):
    # 1721347201288432323 {..."T":1721347202808,"t":4217898224,"p":"3424.99","q":"0.022","m":false}
    tr = _cap("usdm/ethusdt_20240719.gz").trades["ETHUSDT"].slice(0, 1).to_pylist()[0]
    assert tr["ts_ns"] == 1721347202808000000 and tr["trade_id"] == 4217898224
    assert tr["price"] == 3424.99 and tr["qty_base"] == 0.022 and tr["is_buyer_maker"] is False
    assert tr["quote_qty"] == pytest.approx(3424.99 * 0.022)
    assert tr["ts_recv_ns"] == 1721347201288432323


def test_snapshots_present_only_where_recorded() -> None:
    assert _cap("usdm/btcusdt_20230404.dat.gz").snapshot.line == 17
    assert _cap("usdm/btcusdt_20230404.dat.gz").snapshot.last_update_id == 2710246765483
    assert _cap("usdm/btcusdt_20240718.gz").snapshot.line == 14
    assert _cap("usdm/ethusdt_20240718.gz").snapshot.line == 27
    for rel in ("usdm/btcusdt_20230405.dat.gz", "spot/btcusdt_20230405.dat.gz"):
        cap = _cap(rel)
        assert cap.snapshot is None
        with pytest.raises(CatalogError, match="no REST depth snapshot"):
            cap.require_snapshot()
        with pytest.raises(CatalogError, match="cannot be rebuilt"):
            rebuild_book(cap.snapshot, cap.depth["BTCUSDT"])


PAIRS = [
    ("usdm/btcusdt_20230404.dat.gz", "usdm/btcusdt_20230405.dat.gz", "BTCUSDT", 310 + 1255),
    ("usdm/btcusdt_20240718.gz", "usdm/btcusdt_20240719.gz", "BTCUSDT", 195 + 430),
    ("usdm/ethusdt_20240718.gz", "usdm/ethusdt_20240719.gz", "ETHUSDT", 281 + 553),
]


@pytest.mark.parametrize(("first", "second", "sym", "n_cmp"), PAIRS)
def test_rebuilt_book_matches_book_ticker(first, second, sym, n_cmp) -> None:
    """Binance numbers every book update with one id sequence shared by depth diffs and
    bookTicker. Diff k covers ids U_k..u_k, so the book after diff k is the exchange's
    book at every id v with u_k <= v < U_{k+1}; a bookTicker with U_{k+1} <= v < u_{k+1}
    shows an intermediate state inside diff k+1's batch that the diff stream never
    exposes, so it is not comparable. Each day's second file chains onto the first
    (no gap), so the snapshot of the first file rebuilds both."""
    c1, c2 = _cap(first), _cap(second)
    diffs = DepthDiffs.concat([c1.depth[sym], c2.depth[sym]])
    assert find_gaps(diffs).size == 0
    st = rebuild_book(c1.require_snapshot(), diffs, levels=5)
    assert st.gap_index == -1 and st.update_id.size == len(diffs) - st.n_dropped
    # sanity: never crossed, levels ordered
    assert (st.bid_px[:, 0] < st.ask_px[:, 0]).all()
    assert (np.diff(st.bid_px, axis=1)[~np.isnan(st.bid_px[:, 1:])] < 0).all()
    n_cmp_total = 0
    for cap in (c1, c2):
        bt = cap.book_ticker[sym]
        v = bt["update_id"].to_numpy()
        k = np.searchsorted(st.update_id, v, side="right") - 1
        # after the last diff nothing bounds v (the diff stream ended): not comparable
        ok = (k >= 0) & (k + 1 < st.update_id.size)
        nxt_u0 = st.first_update_id[np.minimum(k + 1, st.update_id.size - 1)]
        comparable = ok & (v < nxt_u0)
        kk = k[comparable]
        for col, arr in (
            ("bid_px", st.bid_px),
            ("bid_qty", st.bid_qty),
            ("ask_px", st.ask_px),
            ("ask_qty", st.ask_qty),
        ):
            np.testing.assert_array_equal(arr[kk, 0], bt[col].to_numpy()[comparable], col)
        n_cmp_total += int(comparable.sum())
        # in these captures every comparable bookTicker carries exactly a diff's final u
        assert (v[comparable] == st.update_id[kk]).all()
    assert n_cmp_total == n_cmp  # exact match of best bid/ask px and qty on all of them


def test_injected_gap_is_detected() -> None:
    cap = _cap("usdm/btcusdt_20240718.gz")
    d = cap.depth["BTCUSDT"]
    drop = 1000
    cut = d.take(np.delete(np.arange(len(d)), drop))
    np.testing.assert_array_equal(find_gaps(cut), [drop])
    line = int(d.line[drop + 1])
    with pytest.raises(SequenceGapError, match=rf"line {line}: depth sequence gap"):
        rebuild_book(cap.snapshot, cut)
    st = rebuild_book(cap.snapshot, cut, on_gap="stop")
    assert st.gap_index == drop and st.diff_index[-1] == drop - 1
    # spot rule (U == previous u + 1) on the spot capture
    sd = _cap("spot/btcusdt_20230405.dat.gz").depth["BTCUSDT"]
    assert find_gaps(sd).size == 0
    np.testing.assert_array_equal(find_gaps(sd.take(np.delete(np.arange(len(sd)), 7))), [7])


def test_snapshot_must_be_straddled() -> None:
    cap = _cap("usdm/btcusdt_20240718.gz")
    d = cap.depth["BTCUSDT"]
    first = int(np.flatnonzero(d.last_update_id >= cap.snapshot.last_update_id)[0])
    cut = d.take(np.delete(np.arange(len(d)), first))
    with pytest.raises(SequenceGapError, match="does not straddle"):
        rebuild_book(cap.snapshot, cut)


def test_import_roundtrip_and_idempotent(tmp_path) -> None:
    cat = Catalog(tmp_path / "cat")
    path = shared_file("binance-ws/usdm/btcusdt_20230404.dat.gz")
    cap = import_capture(path, cat)
    for ds in ("trades", "book_ticker", "mark_price"):
        got = cat.read("binance", ds, "BTCUSDT")
        assert got.equals(getattr(cap, ds)["BTCUSDT"])
    # its bookTicker crosses midnight (last E 00:00:00.001) → two daily partitions
    assert len(cat.partitions("binance", "book_ticker", "BTCUSDT")) == 2
    before = {p: p.read_bytes() for p in (tmp_path / "cat").rglob("*.parquet")}
    import_capture(path, cat)
    after = {p: p.read_bytes() for p in (tmp_path / "cat").rglob("*.parquet")}
    assert before.keys() == after.keys()
    assert cat.read("binance", "trades", "BTCUSDT").num_rows == 2197
    # spot goes under binance-spot
    import_capture(shared_file("binance-ws/spot/btcusdt_20230405.dat.gz"), cat)
    assert cat.read("binance-spot", "book_ticker", "BTCUSDT").num_rows == 8015
    assert cat.read("binance", "book_ticker", "BTCUSDT").num_rows == 6765
    # a column subset of a tick dataset: trades sharing a millisecond still read (the
    # key, trade_id, is read along to validate the order)
    sub = cat.read("binance", "trades", "BTCUSDT", columns=["price"])
    assert sub.column_names == ["ts_ns", "trade_id", "price"] and sub.num_rows == 2197
    ts = sub.column("ts_ns").to_numpy()
    assert (np.diff(ts) == 0).any()


def _write_capture(tmp_path, lines: list[str]):
    path = tmp_path / "cap.gz"
    with gzip.open(path, "wt") as fh:
        fh.write("\n".join(lines) + "\n")
    return path


def test_bad_lines_name_file_and_line(tmp_path) -> None:
    src = shared_file("binance-ws/usdm/btcusdt_20240718.gz")
    with gzip.open(src, "rt") as fh:
        good = [next(fh).rstrip("\n") for _ in range(20)]
    truncated = [*good[:5], good[5][:80], *good[6:]]
    p = _write_capture(tmp_path, truncated)
    with pytest.raises(CatalogError, match=rf"{p}: line 6: invalid JSON"):
        read_capture(p)
    cap = read_capture(p, strict=False)
    assert cap.skipped["malformed"] == 1
    no_stamp = [*good[:3], good[3].partition(" ")[2], *good[4:]]
    with pytest.raises(CatalogError, match="line 4: missing or invalid receive timestamp"):
        read_capture(_write_capture(tmp_path, no_stamp))
    missing_field = [*good[:2], good[2].replace('"u":', '"x":', 1), *good[3:]]
    with pytest.raises(CatalogError, match="line 3: missing field"):
        read_capture(_write_capture(tmp_path, missing_field))
    unknown = [*good, '1721347021080832061 {"stream":"btcusdt@aggTrade","data":{}}']
    assert read_capture(_write_capture(tmp_path, unknown)).skipped == {"aggTrade": 1}


def test_quarantine_sets_bad_lines_aside(tmp_path) -> None:
    src = shared_file("binance-ws/usdm/btcusdt_20240718.gz")
    with gzip.open(src, "rt") as fh:
        good = [next(fh).rstrip("\n") for _ in range(40)]
    trades = [i for i, ln in enumerate(good) if "@trade" in ln]
    assert len(trades) >= 2
    a, b = trades[:2]
    neg = good[a].replace('"q":"', '"q":"-', 1)  # negative quantity
    # same trade id as line b but another price: a conflicting repeat
    conflict = good[b].replace('"p":"', '"p":"1', 1)
    lines = [*good[:a], neg, *good[a + 1 :], good[5][:60], conflict]
    p = _write_capture(tmp_path, lines)
    with pytest.raises(CatalogError, match=rf"line {a + 1}: quantity '-"):
        read_capture(p)
    q: list = []
    cap = read_capture(p, quarantine=q)
    assert [(n, r.split(" ")[0]) for n, r, _ in q] == [
        (a + 1, "quantity"),
        (41, "invalid"),
        (42, "trades"),
    ]
    assert q[2][1] == (
        f"trades key {_trade_id(good[b])} already seen on line {b + 1} with different contents"
    )
    assert q[0][2] == neg and q[2][2] == conflict
    (tmp_path / "ok").mkdir()
    full = read_capture(_write_capture(tmp_path / "ok", good))
    n_tr = full.trades["BTCUSDT"].num_rows
    assert cap.trades["BTCUSDT"].num_rows == n_tr - 1  # the negative one is out
    assert cap.book_ticker["BTCUSDT"].equals(full.book_ticker["BTCUSDT"])


def _trade_id(line: str) -> int:
    import json

    return int(json.loads(line.partition(" ")[2])["data"]["t"])
