"""Binance websocket captures (``<recv stamp> <combined-stream JSON>`` per line) → catalog.

A capture is a gzip (or plain) text file with one message per line: the recorder's local
receive timestamp, one space, then the combined-stream JSON ``{"stream": ..., "data": ...}``.
Some captures start with a REST ``/fapi/v1/depth`` snapshot (a bare JSON object with
``lastUpdateId``/``bids``/``asks``) instead of a stream message; it is kept as
:attr:`CaptureTables.snapshot` for :mod:`perpdesk.data.orderbook`.

Receive stamps: the unit is detected per line **by magnitude** (≥ 1e17 → ns, as in the
2024 captures; ≥ 1e14 → µs, as in the 2023 ``*.dat.gz`` files; ≥ 1e11 → ms) and always
normalised to ns. Exchange times (``E``/``T``, ms) become ns.

Streams and what they become (one table per symbol, ``s`` of the message):

* ``<sym>@trade`` → ``trades`` (:data:`TRADE_SCHEMA`): ``ts_ns`` = trade time ``T``,
  ``trade_id`` = ``t``, ``quote_qty`` = price × qty, ``ts_recv_ns`` = receive stamp.
* ``<sym>@bookTicker`` → ``book_ticker`` (:data:`BOOK_TICKER_SCHEMA`): ``ts_ns`` = event
  time ``E`` (else ``T``); **spot** bookTicker carries neither, so there ``ts_ns`` is the
  local receive stamp (clock of the recorder, not of the exchange).
* ``<sym>@markPrice@1s`` → ``mark_price`` (:data:`MARK_PRICE_SCHEMA`): ``E``, ``p``,
  ``i``, ``r``, ``T`` (next funding time).
* ``<sym>@depth…`` → :class:`perpdesk.data.orderbook.DepthDiffs` (not a catalog dataset).
* anything else is skipped and counted in :attr:`CaptureTables.skipped` by stream type.

Tables are sorted by their catalog key (``trade_id``/``update_id``/``ts_ns``); a message
repeated (same key, same row; the receive stamp may differ) is kept once and counted in ``skipped`` as
``duplicate <dataset>``; the same key with different contents is a :class:`CatalogError`.

Markets: a capture is **USD-M** when its depth diffs carry ``pu`` or its bookTicker/
markPrice carry ``E``, **spot** when its depth diffs lack ``pu`` or its bookTicker lacks
``E``. The catalog's ``trades``/``book_ticker`` datasets have no market dimension, so
:func:`import_capture` writes USD-M captures under ``venue`` (``binance``) and spot
captures under ``<venue>-spot`` (``binance-spot``).

Errors: a malformed line (no/invalid receive stamp, truncated JSON, a message missing a
field, a non-finite number, a non-positive price, a negative quantity) raises
:class:`CatalogError` ``"<file>: line <n>: <problem>"``. With ``strict=False`` such lines
are skipped instead and counted under ``"malformed"``; with a ``quarantine`` list they
(and conflicting repeats of a key) are also handed back as ``(line, reason, raw line)``
for the quarantine file.
"""

from __future__ import annotations

import gzip
import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from perpdesk.data.catalog import (
    BOOK_TICKER_SCHEMA,
    MARK_PRICE_SCHEMA,
    TRADE_SCHEMA,
    Catalog,
    dataset_spec,
    validate_table,
)
from perpdesk.data.orderbook import DepthDiffs, DepthSnapshot
from perpdesk.errors import CatalogError

NS_PER_MS = 1_000_000

PathLike = str | os.PathLike[str]


@dataclass
class CaptureTables:
    """Everything :func:`read_capture` extracted from one capture file."""

    path: Path
    market: str  # "usdm" or "spot"
    n_lines: int
    trades: dict[str, pa.Table] = field(default_factory=dict)
    book_ticker: dict[str, pa.Table] = field(default_factory=dict)
    mark_price: dict[str, pa.Table] = field(default_factory=dict)
    depth: dict[str, DepthDiffs] = field(default_factory=dict)
    snapshot: DepthSnapshot | None = None  # the REST snapshot line, if the capture has one
    skipped: Counter[str] = field(default_factory=Counter)

    def require_snapshot(self) -> DepthSnapshot:
        """The capture's REST depth snapshot; CatalogError if it has none (then the book
        cannot be rebuilt from this file alone — no snapshot is ever invented)."""
        if self.snapshot is None:
            raise CatalogError(
                f"{self.path}: no REST depth snapshot line in this capture; the order book "
                "cannot be rebuilt from it (use a capture that starts with one, or chain "
                "its diffs after one that does)"
            )
        return self.snapshot


def recv_stamp_ns(raw: int) -> int:
    """A local receive stamp in ns from ns/µs/ms by magnitude (see module docstring)."""
    if raw >= 10**17:
        return raw
    if raw >= 10**14:
        return raw * 1_000
    if raw >= 10**11:
        return raw * 1_000_000
    raise ValueError(f"receive stamp {raw} is too small for ns/µs/ms since epoch")


def _open_text(path: Path):
    with open(path, "rb") as fh:
        magic = fh.read(2)
    if magic == b"\x1f\x8b":
        return gzip.open(path, "rt", encoding="utf-8")
    return open(path, encoding="utf-8")


def _f(value: Any) -> float:
    x = float(value)
    if not np.isfinite(x):
        raise ValueError(f"{value!r} is not finite")
    return x


def _px(value: Any, what: str) -> float:
    x = _f(value)
    if x <= 0:
        raise ValueError(f"{what} {value!r} is not positive")
    return x


def _qty(value: Any, what: str) -> float:
    x = _f(value)
    if x < 0:
        raise ValueError(f"{what} {value!r} is negative")
    return x


def _levels(raw: Any) -> list[tuple[float, float]]:
    return [(_f(p), _f(q)) for p, q in raw]


class _DepthBuilder:
    def __init__(self) -> None:
        self.U: list[int] = []
        self.u: list[int] = []
        self.pu: list[int] = []
        self.E: list[int] = []
        self.recv: list[int] = []
        self.line: list[int] = []
        self.bids: list[list[tuple[float, float]]] = []
        self.asks: list[list[tuple[float, float]]] = []

    def add(self, d: dict[str, Any], recv: int, line: int) -> None:
        bids, asks = _levels(d["b"]), _levels(d["a"])
        self.U.append(int(d["U"]))
        self.u.append(int(d["u"]))
        self.pu.append(int(d["pu"]) if "pu" in d else -1)
        self.E.append(int(d["E"]) * NS_PER_MS)
        self.recv.append(recv)
        self.line.append(line)
        self.bids.append(bids)
        self.asks.append(asks)

    def build(self, symbol: str, market: str, path: Path) -> DepthDiffs:
        def flat(side: list[list[tuple[float, float]]]) -> tuple[np.ndarray, ...]:
            counts = np.array([len(x) for x in side], dtype=np.int64)
            offs = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
            arr = np.array([lv for x in side for lv in x], dtype=np.float64).reshape(-1, 2)
            return offs, arr[:, 0].copy(), arr[:, 1].copy()

        bo, bp, bq = flat(self.bids)
        ao, ap, aq = flat(self.asks)
        return DepthDiffs(
            symbol=symbol,
            market=market,
            source=str(path),
            first_update_id=np.array(self.U, dtype=np.int64),
            last_update_id=np.array(self.u, dtype=np.int64),
            prev_update_id=np.array(self.pu, dtype=np.int64),
            event_ts_ns=np.array(self.E, dtype=np.int64),
            ts_recv_ns=np.array(self.recv, dtype=np.int64),
            line=np.array(self.line, dtype=np.int64),
            bid_offsets=bo,
            bid_px=bp,
            bid_qty=bq,
            ask_offsets=ao,
            ask_px=ap,
            ask_qty=aq,
        )


def _dedupe_sorted(
    rows: list[tuple],
    key_idx: int,
    dataset: str,
    where: str,
    skipped: Counter[str],
    conflicts: list[tuple[int, str]] | None = None,
) -> list[tuple]:
    """Sort rows by their key (then line); drop verbatim repeats, error on conflicts (or,
    with a ``conflicts`` list, set the later line aside there as ``(line, reason)``).
    The last tuple element is the line number and is not part of the comparison."""
    rows.sort(key=lambda r: (r[key_idx], r[-1]))
    out: list[tuple] = []
    for r in rows:
        if out and out[-1][key_idx] == r[key_idx]:
            prev = out[-1]
            if prev[:-1] == r[:-1] or _same_but_recv(prev, r):
                skipped[f"duplicate {dataset}"] += 1
                continue
            reason = (
                f"{dataset} key {r[key_idx]} already seen on line {prev[-1]} with different "
                "contents"
            )
            if conflicts is None:
                raise CatalogError(f"{where}: line {r[-1]}: {reason}")
            conflicts.append((r[-1], reason))
            continue
        out.append(r)
    return out


def _same_but_recv(a: tuple, b: tuple) -> bool:
    # the recv stamp is the second-to-last field of every row tuple
    return a[:-2] == b[:-2]


def _table(rows: list[tuple], schema: pa.Schema, dataset: str, where: str) -> pa.Table:
    cols = list(zip(*rows, strict=True)) if rows else [[] for _ in range(len(schema) + 1)]
    table = pa.table(
        {
            name: pa.array(list(cols[i]), schema.field(name).type)
            for i, name in enumerate(schema.names)
        }
    )
    return validate_table(table, dataset_spec(dataset), where)


def read_capture(
    path: PathLike,
    *,
    strict: bool = True,
    quarantine: list[tuple[int, str, str]] | None = None,
) -> CaptureTables:
    """Parse one capture file into per-symbol tables (see the module docstring).

    ``strict=False`` skips malformed lines (counted under ``skipped["malformed"]``)
    instead of raising. ``quarantine`` (a list; implies ``strict=False``) also receives
    each malformed line as ``(line, reason, raw line)``, and a message whose key repeats
    an earlier one with different contents is set aside there too (instead of raising).
    A malformed line is one without a valid receive stamp, with truncated JSON, a missing
    field, a non-numeric or non-finite number, a non-positive price or a negative
    quantity.
    """
    if quarantine is not None:
        strict = False
    path = Path(path)
    where = str(path)
    trades: dict[str, list[tuple]] = {}
    tickers: dict[str, list[tuple]] = {}
    marks: dict[str, list[tuple]] = {}
    depth: dict[str, _DepthBuilder] = {}
    skipped: Counter[str] = Counter()
    snapshot: DepthSnapshot | None = None
    market_votes: Counter[str] = Counter()
    n = 0
    with _open_text(path) as fh:
        for n, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                stamp, sep, payload = line.partition(" ")
                if not sep or not stamp.isdigit():
                    raise ValueError(
                        f"missing or invalid receive timestamp {stamp[:30]!r} "
                        "(expected '<stamp> <json>')"
                    )
                recv = recv_stamp_ns(int(stamp))
                try:
                    msg = json.loads(payload)
                except json.JSONDecodeError as exc:
                    raise ValueError(f"invalid JSON ({exc.msg} at column {exc.pos + 1})") from None
                if not isinstance(msg, dict):
                    raise ValueError("JSON payload is not an object")
                if "lastUpdateId" in msg and "stream" not in msg:
                    if snapshot is not None:
                        raise ValueError(
                            f"second REST depth snapshot (first on line {snapshot.line})"
                        )
                    snapshot = DepthSnapshot(
                        last_update_id=int(msg["lastUpdateId"]),
                        bids=_levels(msg["bids"]),
                        asks=_levels(msg["asks"]),
                        event_ts_ns=int(msg["E"]) * NS_PER_MS if "E" in msg else None,
                        ts_recv_ns=recv,
                        line=n,
                        source=where,
                    )
                    continue
                stream, d = msg.get("stream"), msg.get("data")
                if not isinstance(stream, str) or not isinstance(d, dict):
                    raise ValueError("not a combined-stream message (no 'stream'/'data')")
                kind = stream.split("@", 1)[1] if "@" in stream else stream
                if kind == "trade":
                    sym = str(d["s"])
                    px, qty = _px(d["p"], "price"), _qty(d["q"], "quantity")
                    trades.setdefault(sym, []).append(
                        (
                            int(d["T"]) * NS_PER_MS,
                            int(d["t"]),
                            px,
                            qty,
                            px * qty,
                            bool(d["m"]),
                            recv,
                            n,
                        )
                    )
                elif kind == "bookTicker":
                    sym = str(d["s"])
                    ts = d.get("E", d.get("T"))
                    market_votes["usdm" if "E" in d else "spot"] += 1
                    ts_ns = recv if ts is None else int(ts) * NS_PER_MS
                    tickers.setdefault(sym, []).append(
                        (
                            ts_ns,
                            int(d["u"]),
                            _px(d["b"], "bid price"),
                            _qty(d["B"], "bid quantity"),
                            _px(d["a"], "ask price"),
                            _qty(d["A"], "ask quantity"),
                            recv,
                            n,
                        )
                    )
                elif kind.startswith("markPrice"):
                    sym = str(d["s"])
                    market_votes["usdm"] += 1
                    idx = d.get("i")
                    marks.setdefault(sym, []).append(
                        (
                            int(d["E"]) * NS_PER_MS,
                            _px(d["p"], "mark price"),
                            None if idx in (None, "") else _px(idx, "index price"),
                            _f(d["r"]) if d.get("r", "") != "" else None,
                            int(d["T"]) * NS_PER_MS if d.get("T") else None,
                            recv,
                            n,
                        )
                    )
                elif kind.startswith("depth"):
                    sym = str(d["s"])
                    market_votes["usdm" if "pu" in d else "spot"] += 1
                    depth.setdefault(sym, _DepthBuilder()).add(d, recv, n)
                else:
                    skipped[kind] += 1
            except CatalogError:
                raise
            except (ValueError, KeyError, TypeError) as exc:
                what = f"missing field {exc}" if isinstance(exc, KeyError) else str(exc)
                if strict:
                    raise CatalogError(f"{where}: line {n}: {what}") from None
                skipped["malformed"] += 1
                if quarantine is not None:
                    quarantine.append((n, what, line.rstrip("\r\n")))
    if len(market_votes) > 1:
        raise CatalogError(
            f"{where}: mixes USD-M and spot messages ({dict(market_votes)}); "
            "one capture must be one market"
        )
    market = next(iter(market_votes), "usdm")
    out = CaptureTables(path=path, market=market, n_lines=n, snapshot=snapshot, skipped=skipped)
    conflicts: list[tuple[int, str]] | None = [] if quarantine is not None else None
    spec_rows = (
        ("trades", trades, out.trades, 1),
        ("book_ticker", tickers, out.book_ticker, 1),
        ("mark_price", marks, out.mark_price, 0),
    )
    schemas = {
        "trades": TRADE_SCHEMA,
        "book_ticker": BOOK_TICKER_SCHEMA,
        "mark_price": MARK_PRICE_SCHEMA,
    }
    for dataset, by_sym, dest, key_idx in spec_rows:
        for sym, rows in by_sym.items():
            rows = _dedupe_sorted(rows, key_idx, dataset, where, skipped, conflicts)
            dest[sym] = _table(rows, schemas[dataset], dataset, f"{where} ({dataset} {sym})")
    for sym, b in depth.items():
        out.depth[sym] = b.build(sym, market, path)
    if quarantine is not None and conflicts:
        wanted = {ln: reason for ln, reason in conflicts}
        with _open_text(path) as fh:
            for n, line in enumerate(fh, start=1):
                if n in wanted:
                    quarantine.append((n, wanted[n], line.rstrip("\r\n")))
        quarantine.sort()
    return out


def capture_writes(
    cap: CaptureTables, venue: str = "binance"
) -> list[tuple[str, str, str, pa.Table]]:
    """The catalog writes a capture stands for: ``(venue, dataset, symbol, table)`` for
    its non-empty trades / book_ticker / mark_price tables. USD-M captures go under
    ``venue``, spot captures under ``f"{venue}-spot"`` (the datasets have no market
    dimension)."""
    v = venue if cap.market == "usdm" else f"{venue}-spot"
    out = []
    for dataset, tables in (
        ("trades", cap.trades),
        ("book_ticker", cap.book_ticker),
        ("mark_price", cap.mark_price),
    ):
        for sym, table in tables.items():
            if table.num_rows:
                out.append((v, dataset, sym, table))
    return out


def import_capture(path: PathLike, catalog: Catalog, venue: str = "binance") -> CaptureTables:
    """Read a capture and write its trades / book_ticker / mark_price into ``catalog``
    (see :func:`capture_writes` for where). Re-importing is idempotent (the catalog
    dedupes identical rows). Depth diffs are not written. Returns what was read.
    """
    cap = read_capture(path)
    for v, dataset, sym, table in capture_writes(cap, venue):
        catalog.write(v, dataset, sym, table)
    return cap
