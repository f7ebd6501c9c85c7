"""Test-side readers of the real recorded data in ``../shared/data`` (see its README).

Only for tests and benchmarks: the project's importers live in ``perpdesk.data``. Each
reader returns plain NumPy arrays in perpdesk's units (ns UTC, floats) and skips the test
when the data folder is absent.
"""

from __future__ import annotations

import gzip
import json
import os
from functools import lru_cache
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.feather as feather
import pytest

SHARED_DATA = Path(
    os.environ.get("PERPDESK_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
)
"""``shared/data`` beside the repository (override with ``$PERPDESK_SHARED_DATA``)."""


def shared_file(rel: str) -> Path:
    """Path of a file under ``shared/data``; skips the calling test when it is missing."""
    p = SHARED_DATA / rel
    if not p.is_file():
        pytest.skip(f"real data not available: {p}")
    return p


@lru_cache(maxsize=16)
def _ws_messages(rel: str) -> tuple[tuple[str, dict], ...]:
    out = []
    with gzip.open(shared_file(rel), "rt") as fh:
        for line in fh:
            _, _, payload = line.partition(" ")
            msg = json.loads(payload)
            if "stream" in msg:
                out.append((msg["stream"], msg["data"]))
    return tuple(out)


def ws_trades(rel: str = "binance-ws/usdm/btcusdt_20240719.gz") -> dict[str, np.ndarray]:
    """``@trade`` messages: ``ts_ns`` (trade time T), ``price``, ``qty`` (base),
    ``quote_volume`` (price × qty), ``is_buyer_maker`` (bool: the seller aggressed)."""
    rows = [
        (d["T"], float(d["p"]), float(d["q"]), d["m"])
        for s, d in _ws_messages(rel)
        if s.endswith("@trade")
    ]
    a = np.array(rows, dtype=object)
    ts = a[:, 0].astype(np.int64) * 1_000_000
    price = a[:, 1].astype(float)
    qty = a[:, 2].astype(float)
    return {
        "ts_ns": ts,
        "price": price,
        "qty": qty,
        "quote_volume": price * qty,
        "is_buyer_maker": a[:, 3].astype(bool),
    }


def ws_book_ticker(rel: str = "binance-ws/usdm/btcusdt_20240719.gz") -> dict[str, np.ndarray]:
    """``@bookTicker`` messages: ``ts_ns`` (event time E), ``bid_px``, ``bid_qty``,
    ``ask_px``, ``ask_qty``."""
    rows = [
        (d["E"], float(d["b"]), float(d["B"]), float(d["a"]), float(d["A"]))
        for s, d in _ws_messages(rel)
        if s.endswith("@bookTicker")
    ]
    a = np.array(rows, dtype=float)
    return {
        "ts_ns": a[:, 0].astype(np.int64) * 1_000_000,
        "bid_px": a[:, 1],
        "bid_qty": a[:, 2],
        "ask_px": a[:, 3],
        "ask_qty": a[:, 4],
    }


def feather_bars(name: str = "BTC_USDT_USDT-1h-futures.feather") -> dict[str, np.ndarray]:
    """freqtrade bars (``bars/``): ``ts_ns`` (open time, floored to the second),
    ``open, high, low, close, volume`` (base units)."""
    t = feather.read_table(shared_file(f"bars/{name}"))
    ts = t.column("date").cast(pa.timestamp("ns", tz="UTC")).cast(pa.int64()).to_numpy()
    out = {"ts_ns": ts - ts % 1_000_000_000}
    for c in ("open", "high", "low", "close", "volume"):
        out[c] = t.column(c).to_numpy().astype(float)
    return out
