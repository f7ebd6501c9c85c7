"""Tick collector (perpdesk.live.collector) against a loopback Binance websocket server
(tests/fake_ws.py) replaying real recorded frames from ``shared/data``.

Expected values come from the capture files: counts, ids and prices written here were
read off the files by hand (``zcat … | head -3000 | grep '@trade"'``), and whole-column
checks use a slow reference decoder (``json.loads`` + ``float``) in this file.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from perpdesk.data.catalog import Catalog
from perpdesk.live.collector import LIQUIDATIONS_SPEC, TickCollector
from tests.fake_ws import FakeBinanceWS, Faults, load_capture
from tests.realdata import shared_file

BTC = "binance-ws/usdm/btcusdt_20240719.gz"
CRYPTOFEED = "exchange-responses/cryptofeed/BINANCE_FUTURES-1125a2.0"
LIQ_EXAMPLE = (
    "exchange-responses/binance-nautilus/crate_futures/market_data_json/liquidation_stream.json"
)
MS = 1_000_000


def fast(**kw) -> dict:
    """Collector settings for tests: short parse interval and backoffs."""
    return {"parse_interval_s": 0.02, "backoff_base_s": 0.01, "backoff_cap_s": 0.05} | kw


def collect(col: TickCollector, expected: int, timeout_s: float = 60.0) -> None:
    """Run ``col`` until it has received ``expected`` frames (or the timeout: generous, as a
    fresh clone compiles the numba scanner on first use, on a possibly loaded machine), then
    stop."""

    async def main() -> None:
        task = asyncio.create_task(col.run())
        t0 = time.monotonic()
        while col.stats.messages < expected and time.monotonic() - t0 < timeout_s:
            if task.done():
                break
            await asyncio.sleep(0.02)
        col.stop()
        await task

    asyncio.run(main())


def reference(frames: list[tuple[int, str]], kind: str) -> dict[str, list[dict]]:
    """Slow obvious decoder: ``data`` dicts of ``kind`` frames per symbol, arrival order."""
    out: dict[str, list[dict]] = defaultdict(list)
    for _, text in frames:
        msg = json.loads(text)
        if msg["stream"].endswith("@" + kind):
            out[msg["data"]["s"]].append(msg["data"])
    return out


@pytest.fixture(scope="module")
def btc_frames() -> list[tuple[int, str]]:
    return load_capture(BTC, limit=3000)


def test_replay_rows_equal_the_capture(tmp_path: Path, btc_frames) -> None:
    with FakeBinanceWS(btc_frames) as srv:
        col = TickCollector(
            ["BTCUSDT"], tmp_path, ws_url=srv.url, kinds=("trade", "bookTicker"), **fast()
        )
        collect(col, 824 + 2071)
    cat = Catalog(tmp_path)
    tr = cat.read("binance", "trades", "BTCUSDT")
    bt = cat.read("binance", "book_ticker", "BTCUSDT")
    # counted in the first 3000 lines: 824 @trade, 2071 @bookTicker frames
    assert (tr.num_rows, bt.num_rows) == (824, 2071)
    ids = tr.column("trade_id").to_numpy()
    # first and last trade of the cut, read from the file; 5182007534 - 5182006711 + 1 = 824
    assert (ids[0], ids[-1]) == (5182006711, 5182007534)
    first = tr.slice(0, 1).to_pylist()[0]
    assert first["ts_ns"] == 1721347202812 * MS
    assert (first["price"], first["qty_base"], first["is_buyer_maker"]) == (63960.0, 0.31, False)
    assert first["quote_qty"] == 63960.0 * 0.31
    assert tr.column("ts_ns").to_numpy()[-1] == 1721347208234 * MS
    # trade 5182006811 (101st): T 1721347204107, 63958.20 × 0.169, m false
    row = tr.slice(100, 1).to_pylist()[0]
    assert (row["trade_id"], row["price"], row["qty_base"]) == (5182006811, 63958.2, 0.169)
    b0, b1 = bt.slice(0, 1).to_pylist()[0], bt.slice(2070, 1).to_pylist()[0]
    assert (b0["update_id"], b0["ts_ns"]) == (4984035701909, 1721347202813 * MS)
    assert (b0["bid_px"], b0["bid_qty"], b0["ask_px"], b0["ask_qty"]) == (
        63959.9, 20.327, 63960.0, 4.952,
    )  # fmt: skip
    assert (b1["update_id"], b1["ts_ns"]) == (4984036570469, 1721347208237 * MS)
    assert (b1["bid_px"], b1["ask_qty"]) == (63951.6, 13.355)
    # every value against the slow reference decoder
    ref = reference(btc_frames, "bookTicker")["BTCUSDT"]
    np.testing.assert_array_equal(bt.column("ask_px").to_numpy(), [float(d["a"]) for d in ref])
    np.testing.assert_array_equal(bt.column("bid_qty").to_numpy(), [float(d["B"]) for d in ref])
    rt = reference(btc_frames, "trade")["BTCUSDT"]
    np.testing.assert_array_equal(tr.column("qty_base").to_numpy(), [float(d["q"]) for d in rt])
    np.testing.assert_array_equal(tr.column("is_buyer_maker").to_numpy(), [d["m"] for d in rt])
    recv = tr.column("ts_recv_ns").to_numpy()
    assert (recv > 1_700_000_000 * 10**9).all()  # stamped with the local clock on receipt
    st = col.stats
    assert (st.gaps, st.duplicates, st.out_of_order, st.malformed, st.reconnects) == (0,) * 5
    assert st.per_stream == {"btcusdt@trade": 824, "btcusdt@bookTicker": 2071}


def test_real_aggtrades_five_symbols(tmp_path: Path) -> None:
    frames = load_capture(CRYPTOFEED)
    ref = reference(frames, "aggTrade")
    refb = reference(frames, "bookTicker")
    symbols = sorted(ref)
    assert symbols == ["BATUSDT", "CHRUSDT", "CTKUSDT", "NEOUSDT", "SANDUSDT"]
    with FakeBinanceWS(frames) as srv:
        col = TickCollector(symbols, tmp_path, ws_url=srv.url, kinds=("aggTrade", "bookTicker"),
                            **fast())  # fmt: skip
        collect(col, 574 + 3424)  # grep -c of the two streams in the file
    cat = Catalog(tmp_path)
    for sym in symbols:
        t = cat.read("binance", "agg_trades", sym)
        np.testing.assert_array_equal(
            t.column("agg_trade_id").to_numpy(), [d["a"] for d in ref[sym]]
        )
        np.testing.assert_array_equal(
            t.column("price").to_numpy(), [float(d["p"]) for d in ref[sym]]
        )
        np.testing.assert_array_equal(
            t.column("first_trade_id").to_numpy(), [d["f"] for d in ref[sym]]
        )
        np.testing.assert_array_equal(t.column("ts_ns").to_numpy(), [d["T"] * MS for d in ref[sym]])
        b = cat.read("binance", "book_ticker", sym)
        assert b.num_rows == len(refb[sym])
    assert sum(len(v) for v in ref.values()) == 574
    # first aggTrade frame of the file: SANDUSDT a 9445517, p 0.69067, q 369, f = l = 12821738
    s0 = cat.read("binance", "agg_trades", "SANDUSDT").slice(0, 1).to_pylist()[0]
    assert (s0["agg_trade_id"], s0["price"], s0["qty_base"]) == (9445517, 0.69067, 369.0)
    assert (s0["first_trade_id"], s0["last_trade_id"], s0["is_buyer_maker"]) == (
        12821738, 12821738, True,
    )  # fmt: skip
    assert col.stats.gaps == col.stats.duplicates == col.stats.malformed == 0


def test_ticks_across_utc_midnight_split_into_daily_partitions(tmp_path: Path) -> None:
    # the two 2024-07-18/19 captures are one recording across 00:00 UTC; trade ids run on
    frames = load_capture("binance-ws/usdm/btcusdt_20240718.gz")[-1500:] + load_capture(
        BTC, limit=1500
    )
    ref = reference(frames, "trade")["BTCUSDT"]
    midnight_ms = 1721347200000  # 2024-07-19T00:00:00Z
    n_before = sum(d["T"] < midnight_ms for d in ref)
    with FakeBinanceWS(frames) as srv:
        col = TickCollector(["BTCUSDT"], tmp_path, ws_url=srv.url, kinds=("trade",), **fast())
        collect(col, len(ref))
    d = tmp_path / "binance" / "trades" / "BTCUSDT"
    assert sorted(p.name for p in d.iterdir()) == ["2024-07-18.parquet", "2024-07-19.parquet"]
    old, new = pq.read_table(d / "2024-07-18.parquet"), pq.read_table(d / "2024-07-19.parquet")
    assert (old.num_rows, new.num_rows) == (n_before, len(ref) - n_before)
    # last trade before midnight / first after, read from the two files
    assert old.column("trade_id")[-1].as_py() == 5182006710
    assert old.column("ts_ns")[-1].as_py() == 1721347199877 * MS  # 23:59:59.877
    assert new.column("trade_id")[0].as_py() == 5182006711
    assert col.stats.gaps == 0


def test_dropped_connection_reconnects_without_duplicates(tmp_path: Path, btc_frames) -> None:
    # each subscription's first two connections close after 300 frames; every reconnect
    # sees the last 40 frames again
    faults = Faults(drop_after=300, drop_connections=2, resume_overlap=40)
    with FakeBinanceWS(btc_frames, faults) as srv:
        col = TickCollector(["BTCUSDT"], tmp_path, ws_url=srv.url,
                            kinds=("trade", "bookTicker"), **fast())  # fmt: skip
        # trade: 824 + 2 × 40 resent; bookTicker: 2071 + 2 × 40
        collect(col, 824 + 2071 + 4 * 40)
        dropped = [c for c in srv.connections if c.how_closed == "dropped"]
    assert len(dropped) == 4
    st = col.stats
    assert st.reconnects == 4
    assert st.duplicates == 4 * 40
    assert (st.gaps, st.out_of_order) == (0, 0)
    cat = Catalog(tmp_path)
    ids = cat.read("binance", "trades", "BTCUSDT").column("trade_id").to_numpy()
    np.testing.assert_array_equal(ids, np.arange(5182006711, 5182007535))
    assert cat.read("binance", "book_ticker", "BTCUSDT").num_rows == 2071


def _trade_index(frames, k: int) -> int:
    """Index in ``frames`` of the k-th (0-based) @trade frame."""
    return [i for i, (_, t) in enumerate(frames) if '@trade"' in t][k]


def test_duplicates_and_out_of_order_are_counted(tmp_path: Path, btc_frames) -> None:
    i10, i20, i30 = (_trade_index(btc_frames, k) for k in (10, 20, 30))
    b_idx = [i for i, (_, t) in enumerate(btc_frames) if "@bookTicker" in t]
    faults = Faults(
        duplicate=frozenset({i10, i20, b_idx[5]}),
        swap=frozenset({i30, b_idx[50]}),  # sent after the next frame of its subscription
    )
    with FakeBinanceWS(btc_frames, faults) as srv:
        col = TickCollector(["BTCUSDT"], tmp_path, ws_url=srv.url,
                            kinds=("trade", "bookTicker"), **fast())  # fmt: skip
        collect(col, 824 + 2 + 2071 + 1)
    st = col.stats
    # trades: 2 repeats dropped; the late trade (31st) fills the 1-id hole → out of order,
    # kept; bookTicker: 1 repeat dropped, the late update (51st) is stale → dropped
    assert st.duplicates == 3
    assert st.out_of_order == 2
    assert st.gaps == 0 and st.missing_ids == 0
    cat = Catalog(tmp_path)
    ids = cat.read("binance", "trades", "BTCUSDT").column("trade_id").to_numpy()
    np.testing.assert_array_equal(ids, np.arange(5182006711, 5182007535))
    u = cat.read("binance", "book_ticker", "BTCUSDT").column("update_id").to_numpy()
    ref_u = [d["u"] for d in reference(btc_frames, "bookTicker")["BTCUSDT"]]
    np.testing.assert_array_equal(u, ref_u[:50] + ref_u[51:])


def test_aggtrade_gap_is_logged_with_its_id_range(tmp_path: Path, caplog) -> None:
    frames = load_capture(CRYPTOFEED)
    sand = [i for i, (_, t) in enumerate(frames) if "sandusdt@aggTrade" in t]
    ids = [json.loads(frames[i][1])["data"]["a"] for i in sand]
    skip = frozenset(sand[20:23])  # three consecutive SANDUSDT aggTrades never sent
    lo, hi = ids[20], ids[22]
    assert hi - lo == 2  # the file's ids are contiguous
    with FakeBinanceWS(frames, Faults(skip=skip)) as srv:
        col = TickCollector(["SANDUSDT"], tmp_path, ws_url=srv.url, kinds=("aggTrade",), **fast())
        with caplog.at_level(logging.WARNING, logger="perpdesk.live.collector"):
            collect(col, len(sand) - 3)
    st = col.stats
    assert (st.gaps, st.missing_ids, st.duplicates, st.out_of_order) == (1, 3, 0, 0)
    ev = st.gap_log[0]
    assert (ev.symbol, ev.kind, ev.first_missing_id, ev.last_missing_id) == (
        "SANDUSDT", "aggTrade", lo, hi,
    )  # fmt: skip
    assert f"ids {lo}..{hi} missing (3)" in caplog.text
    got = Catalog(tmp_path).read("binance", "agg_trades", "SANDUSDT").column("agg_trade_id")
    assert got.to_pylist() == ids[:20] + ids[23:]


def test_malformed_frames_are_counted_and_collection_goes_on(tmp_path: Path, btc_frames) -> None:
    b_idx = [i for i, (_, t) in enumerate(btc_frames) if "@bookTicker" in t]
    bad = frozenset({b_idx[3], b_idx[1000], b_idx[2070]})  # truncated to half their length
    with FakeBinanceWS(btc_frames, Faults(malformed=bad)) as srv:
        col = TickCollector(["BTCUSDT"], tmp_path, ws_url=srv.url, kinds=("bookTicker",), **fast())
        collect(col, 2071)
    assert col.stats.malformed == 3
    assert col.stats.reconnects == 0
    u = Catalog(tmp_path).read("binance", "book_ticker", "BTCUSDT").column("update_id")
    ref_u = [d["u"] for d in reference(btc_frames, "bookTicker")["BTCUSDT"]]
    assert u.to_pylist() == [x for k, x in enumerate(ref_u) if k not in (3, 1000, 2070)]


def test_scanner_agrees_with_reference_and_rejects_every_truncation(tmp_path: Path) -> None:
    frames = load_capture(BTC, limit=3000) + load_capture(CRYPTOFEED)
    by_kind = {"trade": [], "bookTicker": [], "aggTrade": []}
    for _, t in frames:
        k = json.loads(t)["stream"].split("@")[1]
        if k in by_kind:
            by_kind[k].append(t.encode())
    symbols = sorted({json.loads(t)["data"]["s"] for _, t in frames})
    for use_scanner in (True, False):
        col = TickCollector(symbols, tmp_path, kinds=tuple(by_kind), use_scanner=use_scanner)
        for conn in col.conns:
            for raw in by_kind[conn.kind.name]:
                col.feed(conn, raw, 1)
        col.process()
        for (dataset, sym), tables in col._pending.items():
            kind = {"trades": "trade", "book_ticker": "bookTicker", "agg_trades": "aggTrade"}[
                dataset
            ]
            ref = [json.loads(r)["data"] for r in by_kind[kind]]
            ref = [d for d in ref if d["s"] == sym]
            got = tables[0].to_pydict()
            price_key = {"trade": "p", "aggTrade": "p", "bookTicker": "b"}[kind]
            col_name = "bid_px" if kind == "bookTicker" else "price"
            assert got[col_name] == [float(d[price_key]) for d in ref]
            ts_key = "E" if kind == "bookTicker" else "T"
            assert got["ts_ns"] == [d[ts_key] * MS for d in ref]
    # every proper prefix of a frame is invalid JSON: all must be refused and counted
    col = TickCollector(["BTCUSDT", "SANDUSDT"], tmp_path, kinds=("bookTicker", "aggTrade"))
    cuts = 0
    for conn in col.conns:
        frame = by_kind[conn.kind.name][0]
        for n in range(len(frame)):
            col.feed(conn, frame[:n], 1)
            cuts += 1
        col.feed(conn, frame, 1)
    col.process()
    assert col.stats.malformed == cuts
    assert col.pending_rows == 2
    # valid JSON the scanner does not take (spaces, exponent, key order, a control reply,
    # another symbol) is decided by Arrow
    bconn = next(c for c in col.conns if c.kind.name == "bookTicker")
    d = json.loads(by_kind["bookTicker"][1])
    pretty = json.dumps(d).encode()  # ", " and ": " separators
    d2 = dict(d["data"], u=d["data"]["u"] + 1, b="6.39599e4")
    expo = json.dumps({"data": d2, "stream": d["stream"]}, separators=(",", ":")).encode()
    reply = b'{"result":null,"id":1}'
    other = json.dumps({"stream": "ethusdt@bookTicker", "data": dict(d2, s="ETHUSDT")}).encode()
    for raw in (pretty, expo, reply, other):
        col.feed(bconn, raw, 1)
    col.process()
    assert (col.stats.malformed, col.stats.unexpected) == (cuts, 2)
    rows = col._pending[("book_ticker", "BTCUSDT")][-1].to_pylist()
    assert [r["update_id"] for r in rows] == [d["data"]["u"], d["data"]["u"] + 1]
    assert [r["bid_px"] for r in rows] == [float(d["data"]["b"]), 63959.9]


def _liquidation_frames(n: int) -> list[tuple[int, str]]:
    """forceOrder frames in the shape of Binance's documented example (the only recorded
    one; illustrative values), one per second as Binance pushes them."""
    d = json.loads(shared_file(LIQ_EXAMPLE).read_text())
    out = []
    for k in range(n):
        o = dict(d["o"], T=d["o"]["T"] + 1000 * k, p=f"{9910 + k}.00000000")
        data = dict(d, E=d["E"] + 1000 * k, o=o)
        out.append((0, json.dumps({"stream": "btcusdt@forceOrder", "data": data})))
    return out


def test_force_orders_land_in_a_daily_liquidations_partition(tmp_path: Path) -> None:
    frames = _liquidation_frames(3)
    with FakeBinanceWS(frames) as srv:
        col = TickCollector(["BTCUSDT"], tmp_path, ws_url=srv.url, kinds=("forceOrder",), **fast())
        collect(col, 3)
    # E 1568014460893 ms = 2019-09-09 07:34:20 UTC
    path = tmp_path / "binance" / "liquidations" / "BTCUSDT" / "2019-09-09.parquet"
    t = pq.read_table(path)
    assert t.schema.equals(LIQUIDATIONS_SPEC.schema)
    rows = t.to_pylist()
    assert [r["ts_ns"] for r in rows] == [(1568014460893 + 1000 * k) * MS for k in range(3)]
    assert [r["price"] for r in rows] == [9910.0, 9911.0, 9912.0]
    assert rows[0]["side"] == "SELL" and rows[0]["status"] == "FILLED"
    assert (rows[0]["avg_price"], rows[0]["qty_base"], rows[0]["filled_qty_base"]) == (
        9910.12345678, 0.014, 0.014,
    )  # fmt: skip


def test_failed_flush_leaves_the_partition_intact(tmp_path: Path, btc_frames, monkeypatch) -> None:
    raw = [t.encode() for _, t in btc_frames if '@trade"' in t]
    col = TickCollector(["BTCUSDT"], tmp_path, kinds=("trade",))
    (conn,) = col.conns
    for r in raw[:400]:
        col.feed(conn, r, 1)
    col.process()
    assert col.flush() == 400
    path = tmp_path / "binance" / "trades" / "BTCUSDT" / "2024-07-19.parquet"
    before = path.read_bytes()

    import perpdesk.data.catalog as catalog_mod

    real_write = catalog_mod.pq.write_table

    def dies_half_way(table, where, **kw) -> None:  # the disk fills up mid-file
        real_write(table.slice(0, table.num_rows // 2), where, **kw)
        raise OSError(28, "No space left on device (injected)")

    for r in raw[400:]:
        col.feed(conn, r, 1)
    col.process()
    monkeypatch.setattr(catalog_mod.pq, "write_table", dies_half_way)
    assert col.flush() == 0
    assert col.stats.write_errors == 1
    assert path.read_bytes() == before  # the old partition, byte for byte
    assert list(path.parent.iterdir()) == [path]  # no temp file left behind
    assert col.pending_rows == 824 - 400  # kept for the next flush
    monkeypatch.setattr(catalog_mod.pq, "write_table", real_write)
    assert col.flush() == 424
    ids = Catalog(tmp_path).read("binance", "trades", "BTCUSDT").column("trade_id").to_numpy()
    np.testing.assert_array_equal(ids, np.arange(5182006711, 5182007535))


def test_stall_and_scheduled_close_reconnect(tmp_path: Path, btc_frames) -> None:
    # the first connection goes silent after 100 frames (socket open): the collector's
    # watchdog closes it after 0.3 s; every connection is closed by the server after 1.2 s
    # like Binance's 24 h limit
    faults = Faults(stall_after=100, stall_s=30.0, max_connection_s=1.2)
    with FakeBinanceWS(btc_frames, faults) as srv:
        col = TickCollector(["BTCUSDT"], tmp_path, ws_url=srv.url, kinds=("trade",),
                            **fast(stall_timeout_s=0.3))  # fmt: skip
        collect(col, 824)
        closes = [c.how_closed for c in srv.connections]
    assert col.stats.reconnects >= 1
    assert closes[0] == "client"  # the stalled one, closed by the watchdog
    ids = Catalog(tmp_path).read("binance", "trades", "BTCUSDT").column("trade_id").to_numpy()
    np.testing.assert_array_equal(ids, np.arange(5182006711, 5182007535))
    assert col.stats.gaps == col.stats.duplicates == 0


def test_flush_triggers_and_backoff_bounds(tmp_path: Path) -> None:
    now = [np.datetime64("2024-07-19T23:59:00", "ns").astype(np.int64).item()]
    col = TickCollector(["BTCUSDT"], tmp_path, flush_seconds=600, flush_rows=10,
                        clock_ns=lambda: now[0])  # fmt: skip
    assert not col.flush_due(now[0] + 59 * 10**9)  # same day, 59 s later
    assert col.flush_due(now[0] + 60 * 10**9)  # 2024-07-20 00:00:00: midnight UTC
    assert col.flush_due(now[0] + 600 * 10**9)
    col.backoff_base_s, col.backoff_cap_s = 0.5, 30.0
    for attempt, cap in ((0, 0.5), (3, 4.0), (6, 30.0), (20, 30.0)):  # min(30, 0.5 × 2^k)
        d = [col.backoff_s(attempt) for _ in range(200)]
        assert min(d) >= 0.0 and max(d) <= cap
        assert max(d) > cap / 2  # full jitter spreads over the whole range


def test_stats_rate_and_age() -> None:
    from perpdesk.live.collector import CollectorStats

    st = CollectorStats(started_ns=10**18)
    assert st.last_message_age_s(10**18) is None
    st.messages, st.last_message_recv_ns = 1000, 10**18 + 1_500_000_000
    assert st.messages_per_s(10**18 + 2 * 10**9) == 500.0  # 1000 frames in 2 s
    assert st.last_message_age_s(10**18 + 2 * 10**9) == 0.5
    st.messages = 1600
    assert st.messages_per_s(10**18 + 3 * 10**9) == 600.0  # 600 more in the next 1 s


def test_cli_collect(tmp_path: Path, btc_frames) -> None:
    from typer.testing import CliRunner

    from perpdesk.app.cli import app

    with FakeBinanceWS(btc_frames) as srv:
        res = CliRunner().invoke(
            app,
            ["collect", "--symbols", "BTCUSDT", "--catalog", str(tmp_path), "--ws-url", srv.url,
             "--streams", "trade,bookTicker", "--duration", "0.8", "--flush-seconds", "0.3"],
        )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "collected 2,895 messages" in res.output
    cat = Catalog(tmp_path)
    assert cat.read("binance", "trades", "BTCUSDT").num_rows == 824
    assert cat.read("binance", "book_ticker", "BTCUSDT").num_rows == 2071


def test_flushes_append_parts_and_midnight_compacts_the_day(tmp_path: Path, btc_frames) -> None:
    """Ten flushes of real frames, one trade arriving late (after the flush of the ids
    past it): read back equals the slow reference at every step; the flush after UTC
    midnight folds the day's parts into its daily file."""
    from perpdesk.data.catalog import PARTS_SUFFIX
    from perpdesk.data.query import query

    trades = [t.encode() for _, t in btc_frames if '@trade"' in t]
    books = [t.encode() for _, t in btc_frames if "@bookTicker" in t]
    ref_t = reference(btc_frames, "trade")["BTCUSDT"]
    ref_b = reference(btc_frames, "bookTicker")["BTCUSDT"]
    assert (len(trades), len(books)) == (824, 2071)
    # the capture is 2024-07-19 00:00:02-08 UTC; the wall clock starts that noon
    now = [np.datetime64("2024-07-19T12:00:00", "ns").astype(np.int64).item()]
    col = TickCollector(["BTCUSDT"], tmp_path, kinds=("trade", "bookTicker"),
                        clock_ns=lambda: now[0])  # fmt: skip
    tconn, bconn = col.conns
    late = 150  # trade frame 150 is held back until after the flush of frames 100..199
    sent_t: list[int] = []
    for k in range(10):
        lo, hi = 100 * k, min(100 * k + 100, 824) if k < 9 else 824
        idx = [i for i in range(lo, hi) if i != late] + ([late] if k == 2 else [])
        for i in idx:
            col.feed(tconn, trades[i], 1)
        for raw in books[210 * k : 210 * k + 210 if k < 9 else 2071]:
            col.feed(bconn, raw, 1)
        col.process()
        col.flush()
        sent_t += idx
        got = Catalog(tmp_path).read("binance", "trades", "BTCUSDT")
        want = sorted(int(ref_t[i]["t"]) for i in sent_t)
        assert got.column("trade_id").to_pylist() == want
    assert col.stats.out_of_order == 1 and col.stats.duplicates == 0
    d = tmp_path / "binance" / "trades" / "BTCUSDT"
    # the first flush wrote 2024-07-19.parquet, each later one a part: trades arrive in
    # flushes 1-9 (ids 800..823 in the 9th), book updates in all ten
    bd = tmp_path / "binance" / "book_ticker" / "BTCUSDT"
    assert len(list((d / f"2024-07-19{PARTS_SUFFIX}").iterdir())) == 8
    assert len(list((bd / f"2024-07-19{PARTS_SUFFIX}").iterdir())) == 9
    # parts are temporary: written uncompressed (compaction re-encodes them as zstd)
    for part in (bd / f"2024-07-19{PARTS_SUFFIX}").iterdir():
        md = pq.read_metadata(part)
        assert {md.row_group(0).column(c).compression for c in range(md.num_columns)} == {
            "UNCOMPRESSED"
        }
    cat = Catalog(tmp_path)

    def check_all() -> None:
        tr = cat.read("binance", "trades", "BTCUSDT")
        assert tr.column("trade_id").to_pylist() == [int(r["t"]) for r in ref_t]
        np.testing.assert_array_equal(tr.column("price").to_numpy(), [float(r["p"]) for r in ref_t])
        bt = cat.read("binance", "book_ticker", "BTCUSDT")
        assert bt.column("update_id").to_pylist() == [int(r["u"]) for r in ref_b]
        np.testing.assert_array_equal(
            bt.column("bid_px").to_numpy(), [float(r["b"]) for r in ref_b]
        )
        q = query(tmp_path, "binance", "trades", ["BTCUSDT"], columns=["price"])
        assert q.column("ts_ns").to_pylist() == [int(r["T"]) * MS for r in ref_t]

    check_all()
    now[0] += 11 * 3600 * 10**9  # 23:00: same day, parts stay
    col.flush()
    assert (d / f"2024-07-19{PARTS_SUFFIX}").is_dir()
    now[0] += 3600 * 10**9 + 1  # 2024-07-20 00:00:00.000000001: yesterday is compacted
    col.flush()
    for ds in ("trades", "book_ticker"):
        names = [p.name for p in (tmp_path / "binance" / ds / "BTCUSDT").iterdir()]
        assert names == ["2024-07-19.parquet"]
    md = pq.read_metadata(d / "2024-07-19.parquet")
    assert md.row_group(0).column(2).compression == "ZSTD"  # the catalog's final encoding
    check_all()


def test_compact_finds_parts_a_crashed_run_left(tmp_path: Path, btc_frames) -> None:
    """Parts written by an earlier collector that died before compacting are folded in by
    the next one's compact(); rows are neither lost nor doubled."""
    trades = [t.encode() for _, t in btc_frames if '@trade"' in t]
    ref_ids = [int(r["t"]) for r in reference(btc_frames, "trade")["BTCUSDT"]]
    dead = TickCollector(["BTCUSDT"], tmp_path, kinds=("trade",))
    for lo in (0, 300, 600):  # three flushes, then the process "dies" (no compact)
        for raw in trades[lo : lo + 300]:
            dead.feed(dead.conns[0], raw, 1)
        dead.process()
        dead.flush()
    d = tmp_path / "binance" / "trades" / "BTCUSDT"
    assert sorted(p.name for p in d.iterdir()) == ["2024-07-19.parquet", "2024-07-19.parts"]
    col = TickCollector(["BTCUSDT"], tmp_path, kinds=("trade",))
    assert col.compact() == 1
    assert [p.name for p in d.iterdir()] == ["2024-07-19.parquet"]
    got = pq.read_table(d / "2024-07-19.parquet").column("trade_id").to_pylist()
    assert got == ref_ids  # 824 ids, each once, in order


def test_quoted_decimal_fast_path_is_exact_or_refuses() -> None:
    from perpdesk.live.collector import _quoted_decimal

    # accepted: at most 18 digits, mantissa below 2**53 (then m / 10**k is exact)
    exact = ["63959.90", "0.5", "-1.25", "007.50", "1", "1234567.12345678",
             "9007199254740991", "0.000001", "-0"]  # fmt: skip
    refused = ["", "-", ".5", "5.", "1.2.3", "1e3", "12a", "--1", " 1", "123456789012.345678",
               "1234567890123456789", "9007199254740992", "0.12345678901234567890"]  # fmt: skip
    for text in exact:
        buf = np.frombuffer(text.encode() + b'"', np.uint8)
        x, q = _quoted_decimal(buf, 0, buf.size)
        assert (x, q) == (float(text), len(text)), text
    for text in refused:
        buf = np.frombuffer(text.encode() + b'"', np.uint8)
        assert _quoted_decimal(buf, 0, buf.size)[1] == -1, text


def test_scan_buffers_reused_across_rounds_with_arrow_fallback(tmp_path: Path) -> None:
    """A smaller second round reuses the first round's scan arrays (stale rows beyond its
    end, slow frames decided by Arrow in between): every row still equals the reference."""
    base = json.loads(next(t for _, t in load_capture(BTC, limit=50) if "@bookTicker" in t))
    col = TickCollector(["BTCUSDT"], tmp_path, kinds=("bookTicker",))
    (conn,) = col.conns
    u0 = base["data"]["u"]

    def frame(k: int, bid: str, pretty: bool = False) -> bytes:
        d = dict(base["data"], u=u0 + k, b=bid)
        sep = (", ", ": ") if pretty else (",", ":")
        return json.dumps({"stream": base["stream"], "data": d}, separators=sep).encode()

    first = [frame(k, f"{63000 + k}.5{k % 10}") for k in range(300)]
    second = [frame(300, "1e3"), frame(301, "63001.25", pretty=True), b'{"stream":"btc']
    second += [frame(302, "0.75"), frame(303, "1234567890123456789")]
    rounds = [first, second]
    for frames in rounds:
        for raw in frames:
            col.feed(conn, raw, 7)
        col.process()
    got = pa_rows(col._pending[("book_ticker", "BTCUSDT")])
    want = [json.loads(r)["data"] for fr in rounds for r in fr if r.endswith(b"}}")]
    assert [r["update_id"] for r in got] == [d["u"] for d in want]
    assert [r["bid_px"] for r in got] == [float(d["b"]) for d in want]
    assert [r["ask_qty"] for r in got] == [float(d["A"]) for d in want]
    assert [r["ts_ns"] for r in got] == [d["E"] * MS for d in want]
    assert {r["ts_recv_ns"] for r in got} == {7}
    assert col.stats.malformed == 1


def pa_rows(tables: list) -> list[dict]:
    return [row for t in tables for row in t.to_pylist()]


def test_warm_up_compiles_without_touching_the_collector(tmp_path: Path) -> None:
    """run() decodes one sample frame per kind in a scratch collector before any socket
    opens: the collector itself gets no rows, no counts and writes nothing; the sample
    frames decode to what json.loads reads in them."""
    from perpdesk.live.collector import _WARM_FRAMES

    col = TickCollector(["ETHUSDT", "BTCUSDT"], tmp_path, kinds=("aggTrade", "bookTicker"))
    assert col.warm_up() >= 0.0
    assert col.pending_rows == 0
    assert col.stats.messages == 0 and col.stats.parsed == 0
    assert not any(tmp_path.iterdir())

    scratch = TickCollector(["BTCUSDT"], tmp_path, kinds=("aggTrade", "trade", "bookTicker"))
    for conn in scratch.conns:
        scratch.feed(conn, _WARM_FRAMES[conn.kind.name], 1)
    assert scratch.process() == 3
    assert scratch.stats.malformed == 0
    got = {ds: t.to_pylist() for (ds, _), ts in scratch._take_pending().items() for t in ts}
    agg = json.loads(_WARM_FRAMES["aggTrade"])["data"]
    book = json.loads(_WARM_FRAMES["bookTicker"])["data"]
    row = got["agg_trades"][0]
    assert row["price"] == float(agg["p"]) and row["agg_trade_id"] == agg["a"]
    assert row["ts_ns"] == agg["T"] * 1_000_000
    row = got["book_ticker"][0]
    assert (row["bid_px"], row["ask_qty"]) == (float(book["b"]), float(book["A"]))
    assert row["update_id"] == book["u"]
    assert got["trades"][0]["trade_id"] == json.loads(_WARM_FRAMES["trade"])["data"]["t"]
