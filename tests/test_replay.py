"""Replay: k-way merge order, tie-break, bars at close, chunking and bad input."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from perpdesk.data.catalog import Catalog
from perpdesk.domain import Bar, BookTop, FundingSettlement, MarkPrice, Trade
from perpdesk.errors import CatalogError
from perpdesk.sim.replay import Replay, StreamSpec, catalog_streams
from tests.helpers import T0, bar_table, funding_table

S = 1_000_000_000
V = "test"


def trades_table(ts: list[int], prices: list[float], first_id: int = 1) -> pa.Table:
    n = len(ts)
    return pa.table(
        {
            "ts_ns": pa.array(ts, pa.int64()),
            "trade_id": pa.array(range(first_id, first_id + n), pa.int64()),
            "price": pa.array(prices, pa.float64()),
            "qty_base": pa.array([1.0] * n, pa.float64()),
            "quote_qty": pa.array(prices, pa.float64()),
            "is_buyer_maker": pa.array([i % 2 == 0 for i in range(n)]),
            "ts_recv_ns": pa.array([None] * n, pa.int64()),
        }
    )


def book_table(ts: list[int], bid: list[float]) -> pa.Table:
    n = len(ts)
    return pa.table(
        {
            "ts_ns": pa.array(ts, pa.int64()),
            "update_id": pa.array(range(1, n + 1), pa.int64()),
            "bid_px": bid,
            "bid_qty": [1.0] * n,
            "ask_px": [b + 0.1 for b in bid],
            "ask_qty": [2.0] * n,
            "ts_recv_ns": pa.array([None] * n, pa.int64()),
        }
    )


def mark_table(ts: list[int], mark: list[float]) -> pa.Table:
    n = len(ts)
    return pa.table(
        {
            "ts_ns": pa.array(ts, pa.int64()),
            "mark_px": mark,
            "index_px": pa.array([None] * n, pa.float64()),
            "predicted_funding_rate": [0.0001] * n,
            "next_funding_ts_ns": pa.array([T0 + 8 * 3600 * S] * n, pa.int64()),
            "ts_recv_ns": pa.array([None] * n, pa.int64()),
        }
    )


@pytest.fixture()
def cat(tmp_path: Path) -> Path:
    """Two symbols with bars, trades (repeated times), book, marks and funding that collide
    on the same instants, spread over two days (two daily tick partitions)."""
    c = Catalog(tmp_path)
    for k, sym in enumerate(["AAAUSDT", "BBBUSDT"]):
        bars = np.arange(T0, T0 + 2 * 86_400 * S, 3_600 * S, dtype=np.int64)
        c.write(V, "perp_bars_1h", sym, bar_table(bars, 100.0 + k + np.arange(bars.size), 1e6))
        c.write(V, "spot_bars_1h", sym, bar_table(bars, 99.0 + k + np.arange(bars.size), 1e6))
        settle = [T0 + 8 * 3_600 * S * j for j in range(1, 6)]
        c.write(V, "funding", sym, funding_table(settle, [0.0001 * (j + k) for j in range(5)], 8))
        # trades every 20 minutes, three per instant (same ts), plus the settlement instants
        tt = sorted(
            [int(t) for t in np.arange(T0, T0 + 2 * 86_400 * S, 1_200 * S) for _ in range(3)]
        )
        c.write(V, "trades", sym, trades_table(tt, [200.0 + k + 0.01 * i for i in range(len(tt))]))
        bt = [int(t) for t in np.arange(T0, T0 + 2 * 86_400 * S, 1_800 * S)]
        c.write(V, "book_ticker", sym, book_table(bt, [150.0 + k + i for i in range(len(bt))]))
        c.write(V, "mark_price", sym, mark_table(bt, [170.0 + k + i for i in range(len(bt))]))
    return tmp_path


ALL = [
    "perp_bars_1h",
    "spot_bars_1h",
    "funding",
    "trades",
    "book_ticker",
    "mark_price",
]
PRIO = {
    "perp_bars_1h": 1,
    "spot_bars_1h": 1,
    "perp_bars_8h": 1,
    "spot_bars_8h": 1,
    "mark_price": 2,
    "book_ticker": 3,
    "trades": 4,
    "funding": 6,
}


def _reference(root: Path, streams: list[StreamSpec], start=None, end=None) -> list[tuple]:
    """The obvious merge: read every table whole, stamp bars at close, sort by the
    documented key (event time, kind priority, venue, symbol, dataset, row)."""
    cat = Catalog(root)
    rows = []
    for s in streams:
        t = cat.read(s.venue, s.dataset, s.symbol)
        off = int(s.dataset.rsplit("_", 1)[1][:-1]) * 3_600 * S if "bars" in s.dataset else 0
        ev = [x + off for x in t.column("ts_ns").to_pylist()]
        ev = [x for x in ev if (start is None or x >= start) and (end is None or x < end)]
        for r, x in enumerate(ev):  # r: row among the selected rows of the stream
            rows.append((x, PRIO[s.dataset], s.venue, s.symbol, s.dataset, r))
    rows.sort()
    return rows


def _replayed(root: Path, streams: list[StreamSpec], **kw) -> list[tuple]:
    """(event time, priority, venue, symbol, dataset, row) of every replayed event, from the
    chunk arrays (the row within the stream is recovered from a running count)."""
    rp = Replay(root, streams, **kw)
    counters = [0] * len(rp.streams)
    out = []
    for ch in rp.chunks():
        for t, s in zip(ch.ts_ns.tolist(), ch.stream.tolist(), strict=True):
            sp = rp.streams[s]
            out.append((t, PRIO[sp.dataset], sp.venue, sp.symbol, sp.dataset, counters[s]))
            counters[s] += 1
    return out


def test_merge_order_and_tie_break_match_the_reference(cat: Path) -> None:
    streams = catalog_streams(cat, V, ALL)
    assert len(streams) == 12
    ref = _reference(cat, streams)
    # small chunks (many horizons, buffers refilled at repeated timestamps) and one big one
    for chunk_rows in (12 * 5, 10_000_000):
        assert _replayed(cat, streams, chunk_rows=chunk_rows) == ref
    # the order the streams are listed in does not matter
    assert _replayed(cat, list(reversed(streams)), chunk_rows=60) == ref


def test_window_selects_event_times(cat: Path) -> None:
    streams = catalog_streams(cat, V, ALL, symbols=["AAAUSDT"])
    start, end = T0 + 8 * 3_600 * S, T0 + 30 * 3_600 * S
    ref = _reference(cat, streams, start, end)
    assert _replayed(cat, streams, start_ns=start, end_ns=end, chunk_rows=50) == ref
    # the bar that opened at start − 1 h closes at start: it is in; the one opening at
    # end − 1 h closes at end: it is out
    ev = [e for e in Replay(cat, streams, start, end).events() if isinstance(e, Bar)]
    assert ev[0].ts_ns == start - 3_600 * S and ev[-1].close_ts_ns == end - 3_600 * S


def test_events_are_typed_and_bars_come_at_close(cat: Path) -> None:
    streams = [
        StreamSpec(V, "perp_bars_1h", "AAAUSDT"),
        StreamSpec(V, "spot_bars_1h", "AAAUSDT"),
        StreamSpec(V, "funding", "AAAUSDT"),
        StreamSpec(V, "trades", "AAAUSDT"),
        StreamSpec(V, "book_ticker", "AAAUSDT"),
        StreamSpec(V, "mark_price", "AAAUSDT"),
    ]
    events = list(Replay(cat, streams, T0, T0 + 8 * 3_600 * S + 1).events())
    first_bar = next(e for e in events if isinstance(e, Bar))
    # the first bar opened at T0 with close 100.0; it is delivered at T0 + 1 h, after the
    # book/mark/trades stamped at T0 … T0 + 40 min
    assert first_bar == Bar(V, "AAAUSDT", T0, 3_600, 100.0, 100.0, 100.0, 100.0, 1e4, 1e6, 5e5)
    before = events[: events.index(first_bar)]
    assert before and all(e.ts_ns < T0 + 3_600 * S for e in before)
    spot = next(e for e in events if isinstance(e, Bar) and e.symbol == "AAAUSDT.SPOT")
    assert spot.close == 99.0
    # at T0 + 8 h: perp bar, spot bar (priority 1, symbol, dataset order: perp < spot), then
    # mark, book, three trades, and the funding settlement last
    last8 = [
        e
        for e in events
        if (e.close_ts_ns if isinstance(e, Bar) else e.ts_ns) == T0 + 8 * 3_600 * S
    ]
    assert [type(e).__name__ for e in last8] == [
        "Bar",
        "Bar",
        "MarkPrice",
        "BookTop",
        "Trade",
        "Trade",
        "Trade",
        "FundingSettlement",
    ]
    assert last8[0].symbol == "AAAUSDT" and last8[1].symbol == "AAAUSDT.SPOT"
    assert isinstance(last8[2], MarkPrice) and math.isnan(last8[2].index_price)
    assert isinstance(last8[3], BookTop) and last8[3].ask_qty_base == 2.0
    assert isinstance(last8[-1], FundingSettlement) and last8[-1].funding_rate == 0.0
    trades = [e for e in last8 if isinstance(e, Trade)]
    assert [t.buyer_is_maker for t in trades] == [True, False, True]  # file row order kept


def test_bad_partition_names_the_file(cat: Path) -> None:
    path = sorted((cat / V / "trades" / "AAAUSDT").glob("*.parquet"))[0]
    t = pq.read_table(path)
    ts = t.column("ts_ns").to_numpy().copy()
    ts[5] = ts[4] - 1  # goes back in time
    pq.write_table(t.set_column(0, "ts_ns", pa.array(ts)), path)
    with pytest.raises(CatalogError, match=rf"{path.name}.*row 6: ts_ns"):
        list(Replay(cat, [StreamSpec(V, "trades", "AAAUSDT")]).chunks())
    with pytest.raises(CatalogError, match="not replayable"):
        Replay(cat, [StreamSpec(V, "index_bars_1h", "AAAUSDT")])
    with pytest.raises(CatalogError, match="no partitions"):
        list(Replay(cat, [StreamSpec(V, "trades", "ZZZUSDT")]).chunks())


def test_uncompacted_collector_parts_are_refused_then_replayed_after_compaction(
    tmp_path: Path,
) -> None:
    """Rows still in the collector's part files are not in the daily files the replay reads:
    it refuses the partition (naming it and the command) rather than skip them; after
    `compact` every row is replayed once."""
    c = Catalog(tmp_path)
    c.append(V, "trades", "AAAUSDT", trades_table([T0, T0 + S], [100.0, 101.0]))
    c.append(V, "trades", "AAAUSDT", trades_table([T0 + 2 * S], [102.0], first_id=3))
    assert c.pending_partitions(V, "trades", "AAAUSDT")
    spec = [StreamSpec(V, "trades", "AAAUSDT")]
    with pytest.raises(CatalogError, match=r"uncompacted collector parts.*perpdesk data compact"):
        list(Replay(tmp_path, spec).chunks())
    c.compact(V, "trades", "AAAUSDT")
    evs = list(Replay(tmp_path, spec).events())
    assert [e.price for e in evs] == [100.0, 101.0, 102.0]


@pytest.fixture()
def monthly(tmp_path: Path) -> tuple[Path, list[StreamSpec]]:
    """Three symbols × 8h perp/spot bars and funding over 7 months: 21 small monthly files
    per stream (read whole, in groups)."""
    c = Catalog(tmp_path)
    h8 = 8 * 3_600 * S
    ts = np.arange(T0, T0 + 212 * 86_400 * S, h8, dtype=np.int64)
    streams = []
    for k, sym in enumerate(["AAAUSDT", "BBBUSDT", "CCCUSDT"]):
        px = 100.0 + k + np.arange(ts.size) * 0.01
        c.write(V, "perp_bars_8h", sym, bar_table(ts, px, 1e6))
        c.write(V, "spot_bars_8h", sym, bar_table(ts, px - 1, 1e6))
        fund = funding_table(list(ts + h8), [1e-4 * k] * ts.size, 8, mark=list(px))
        c.write(V, "funding", sym, fund)
        streams += [StreamSpec(V, d, sym) for d in ("perp_bars_8h", "spot_bars_8h", "funding")]
    return tmp_path, streams


def test_grouped_small_files_match_the_reference_in_every_reading_mode(
    monthly: tuple[Path, list[StreamSpec]], monkeypatch: pytest.MonkeyPatch
) -> None:
    root, streams = monthly
    files = sorted((root / V / "funding" / "AAAUSDT").glob("*.parquet"))
    assert len(files) == 7  # 2024-01 … 2024-07 (212 days from Jan 1, 2024: to Jul 31)
    ref = _reference(root, streams)
    start, end = T0 + 40 * 86_400 * S, T0 + 150 * 86_400 * S
    ref_window = _reference(root, streams, start, end)
    # groups read in this thread (DuckDB, one query per round) and by a reader process
    assert _replayed(root, streams) == ref
    assert _replayed(root, streams, reader_processes=1) == ref
    assert _replayed(root, streams, start_ns=start, end_ns=end, reader_processes=1) == ref_window
    # every file "large": the streaming (iter_batches) path, batch by batch
    monkeypatch.setattr("perpdesk.sim.replay._GROUP_BYTES_MAX", 1)
    monkeypatch.setattr("perpdesk.sim.replay._GROUP_BYTES_MIN", 1)
    assert _replayed(root, streams, chunk_rows=90) == ref
    assert _replayed(root, streams, start_ns=start, end_ns=end) == ref_window


def test_grouped_files_report_a_bad_file_like_the_streaming_path(
    monthly: tuple[Path, list[StreamSpec]],
) -> None:
    root, streams = monthly
    path = sorted((root / V / "perp_bars_8h" / "BBBUSDT").glob("*.parquet"))[3]
    t = pq.read_table(path)
    close = t.column("close").to_numpy().copy()
    close[7] = math.nan
    pq.write_table(t.set_column(t.schema.get_field_index("close"), "close", pa.array(close)), path)
    # the group that holds it fails validation and is re-checked file by file: the
    # message names the file, its rows (one batch: the whole file) and the row
    msg = rf"{path.name} \(rows 1\.\.{t.num_rows}\): row 8: close is null/NaN"
    for procs in (0, 1):
        with pytest.raises(CatalogError, match=msg):
            list(Replay(root, streams, reader_processes=procs).chunks())
    # a file without a column the replay needs
    other = sorted((root / V / "funding" / "CCCUSDT").glob("*.parquet"))[2]
    pq.write_table(pq.read_table(other).drop_columns(["funding_interval_h"]), other)
    with pytest.raises(CatalogError, match=rf"{other.name}: missing column\(s\) funding_int"):
        list(Replay(root, [StreamSpec(V, "funding", "CCCUSDT")]).chunks())


def test_funding_and_mark_bar_events_built_in_bulk_equal_one_by_one(
    monthly: tuple[Path, list[StreamSpec]],
) -> None:
    from perpdesk.sim.replay import event_maker, events_maker

    root, _ = monthly
    spec = StreamSpec(V, "funding", "BBBUSDT")
    rp = Replay(root, [spec])
    for ch in rp.chunks():
        cols = ch.columns[0]
        lists = {k: v.tolist() for k, v in cols.items()}
        one = event_maker(spec)
        assert events_maker(spec)(cols) == [one(lists, r) for r in range(len(ch))]
    # the first settlement: 8h after T0, rate 1e-4 × 1, mark = the first perp close 101.0
    assert events_maker(spec)(rp_first(root, spec))[0] == FundingSettlement(
        V, "BBBUSDT", T0 + 8 * 3_600 * S, 1e-4, 8, 101.0
    )


def rp_first(root: Path, spec: StreamSpec) -> dict:
    return next(Replay(root, [spec]).chunks()).columns[0]
