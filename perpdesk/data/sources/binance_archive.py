"""Binance public-archive files (data.binance.vision) → the catalog's tables.

Supported kinds (USD-M futures ``futures/um/...`` as market ``um``, spot ``spot/...`` as
market ``spot``), each a ``.zip`` holding exactly one CSV member, or a plain ``.csv``:

============================  =====================================  ====================
kind (file name token)         columns (header row optional)          dataset
============================  =====================================  ====================
klines (``5m``, ``1h`` …)      open_time … ignore (12)                ``perp_bars_<tf>`` /
                                                                      ``spot_bars_<tf>``
markPriceKlines …              same 12 (parent directory names kind)  ``mark_bars_<tf>``,
                                                                      ``index_bars_<tf>``,
                                                                      ``premium_bars_<tf>``
aggTrades                      7 (um) / 8 with is_best_match (spot)   ``agg_trades``
trades                         6 (um) / 7 with is_best_match (spot)   ``trades``
bookTicker (um)                7                                      ``book_ticker``
bookDepth (um)                 4: timestamp, percentage, depth,       ``book_depth`` (read
                               notional                               only, see below)
metrics (um)                   8                                      ``open_interest``
fundingRate (um)               3                                      ``funding``
============================  =====================================  ====================

Conventions:

* **Header**: detected per file by peeking the first line — a header starts with a
  letter; its column count must match the layout.
* **Timestamp unit**: decided per file from the first data row's time value: a value
  ``< 1e14`` is milliseconds, ``>= 1e14`` microseconds (Binance spot files from 2025 on).
  1e14 ms is the year 5138 and 1e14 µs is 1973, so the rule is unambiguous for real
  data. Every other time value of the file must have the same unit, else the row is bad
  ("mixes ms and µs"). Converted times must fall in 2010–2100.
* **bookTicker**: ``ts_ns`` is the ``transaction_time`` (the matching-engine time, the
  one ``update_id`` is ordered by); ``event_time`` is only checked to be numeric.
* **fundingRate**: ``calc_time`` is rounded to the nearest whole second, like the other
  Binance funding readers (``perpdesk.data.sources.funding``); ``mark_price`` is null.
* **metrics**: ``sum_open_interest`` → ``open_interest_base``,
  ``sum_open_interest_value`` → ``open_interest_usd``. The four long/short ratio columns
  have no catalog schema: :func:`read_archive_metrics` returns them as a second table
  (``ts_ns`` + the four ratios, as in the file); the importers do not store them.
* **Spot ticks**: the catalog has no spot tick datasets, so spot trades / aggTrades read
  fine (dataset ``spot_trades`` / ``spot_agg_trades``) but :func:`import_archive_files`
  refuses them rather than mixing them into the perp ``trades``.
* **bookDepth**: aggregated depth snapshots (data.binance.vision
  ``futures/um/daily/bookDepth``): per snapshot time, one row per band ``percentage``
  (signed % from mid: negative bids, positive asks) with the cumulative ``depth`` (base)
  and ``notional`` (quote) resting inside it. ``timestamp`` is ``YYYY-MM-DD HH:MM:SS``
  UTC (epoch ms/µs digits are accepted too). Read to :data:`BOOK_DEPTH_SCHEMA`
  (``ts_ns, band_pct, depth_base, notional_usd, depth_key``), sorted by ``(ts_ns,
  band_pct)``; snapshot times must not decrease and a band may appear once per snapshot
  (bands may come in any order inside a snapshot). ``depth_key`` is the catalog's natural
  key of a row (:func:`perpdesk.data.catalog.book_depth_key`).
* ``ts_recv_ns`` is null (archives carry no receive time).

Bad rows (wrong column count, non-numeric / empty field, NaN or infinite value, negative
quantity, non-positive price, high < low, mixed time units, time or id out of order —
an out-of-order row is the one that goes below the running maximum of the rows before
it) raise :class:`CatalogError` ``"<file>[<member>]: row <n>: <problem>"`` (``n`` counts
data rows from 1) — or, with a quarantine directory, are set aside with their reason and
the raw line while the good rows are imported.

Parsing is vectorised with :func:`pyarrow.csv.read_csv` using explicit column names and
types (no inference), straight from a memory map (plain CSV) or from the zip member as it
inflates (never holding the whole CSV in memory); checks are NumPy over whole columns,
with a fast path that skips the running-maximum order scan when the file is in order.
Only when parsing fails (some malformed row) are the bytes read whole and re-parsed line
by line to find and name the bad rows.

Quarantine files (every importer's quarantine mode, see :func:`write_quarantine`):
``<dir>/quarantine.csv`` with columns ``file, row, reason, raw_line``.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import re
import zipfile
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from perpdesk.data.catalog import (
    BOOK_DEPTH_SCHEMA,
    Catalog,
    book_depth_key,
    dataset_spec,
    validate_table,
)
from perpdesk.errors import CatalogError
from perpdesk.files import atomic_write_text

PathLike = str | os.PathLike[str]

MARKETS = ("um", "spot")
US_THRESHOLD = 10**14
"""A time value ``>= 1e14`` is in microseconds, below it in milliseconds."""
_TS_MIN_NS = int(np.datetime64("2010-01-01", "ns").astype(np.int64))
_TS_MAX_NS = int(np.datetime64("2100-01-01", "ns").astype(np.int64))

_I, _F, _B, _S = pa.int64(), pa.float64(), pa.bool_(), pa.string()

_KLINE_COLS = [
    ("open_time", _I),
    ("open", _F),
    ("high", _F),
    ("low", _F),
    ("close", _F),
    ("volume", _F),
    ("close_time", _I),
    ("quote_volume", _F),
    ("count", _I),
    ("taker_buy_volume", _F),
    ("taker_buy_quote_volume", _F),
    ("ignore", _S),
]
_AGG_COLS = [
    ("agg_trade_id", _I),
    ("price", _F),
    ("quantity", _F),
    ("first_trade_id", _I),
    ("last_trade_id", _I),
    ("transact_time", _I),
    ("is_buyer_maker", _B),
]
_TRADE_COLS = [
    ("id", _I),
    ("price", _F),
    ("qty", _F),
    ("quote_qty", _F),
    ("time", _I),
    ("is_buyer_maker", _B),
]
_BOOK_COLS = [
    ("update_id", _I),
    ("best_bid_price", _F),
    ("best_bid_qty", _F),
    ("best_ask_price", _F),
    ("best_ask_qty", _F),
    ("transaction_time", _I),
    ("event_time", _I),
]
_METRICS_COLS = [
    ("create_time", _S),
    ("symbol", _S),
    ("sum_open_interest", _F),
    ("sum_open_interest_value", _F),
    ("count_toptrader_long_short_ratio", _F),
    ("sum_toptrader_long_short_ratio", _F),
    ("count_long_short_ratio", _F),
    ("sum_taker_long_short_vol_ratio", _F),
]
_FUNDING_COLS = [("calc_time", _I), ("funding_interval_hours", _I), ("last_funding_rate", _F)]
_DEPTH_COLS = [("timestamp", _S), ("percentage", _F), ("depth", _F), ("notional", _F)]


_RATIO_COLS = [n for n, _ in _METRICS_COLS[4:]]

KLINE_KINDS = {
    "klines": None,  # perp_ or spot_ by market
    "markPriceKlines": "mark",
    "indexPriceKlines": "index",
    "premiumIndexKlines": "premium",
}
KINDS = (
    *KLINE_KINDS,
    "aggTrades",
    "trades",
    "bookTicker",
    "bookDepth",
    "metrics",
    "fundingRate",
)
_FUTURES_ONLY = {"markPriceKlines", "indexPriceKlines", "premiumIndexKlines"} | {
    "bookTicker",
    "bookDepth",
    "metrics",
    "fundingRate",
}

_NAME_RE = re.compile(
    r"^(?P<symbol>[A-Z0-9]+)-(?P<token>[A-Za-z0-9]+)-(?P<date>\d{4}-\d{2}(?:-\d{2})?)"
    r"\.(?P<ext>zip|csv)$"
)
_INTERVAL_RE = re.compile(r"^\d+[smhdw]$|^\d+mo$")


def _layout(kind: str, market: str) -> list[tuple[str, pa.DataType]]:
    if kind in KLINE_KINDS:
        return _KLINE_COLS
    if kind == "aggTrades":
        return _AGG_COLS + ([("is_best_match", _B)] if market == "spot" else [])
    if kind == "trades":
        return _TRADE_COLS + ([("is_best_match", _B)] if market == "spot" else [])
    if kind == "bookTicker":
        return _BOOK_COLS
    if kind == "metrics":
        return _METRICS_COLS
    if kind == "bookDepth":
        return _DEPTH_COLS
    return _FUNDING_COLS


@dataclass(frozen=True, slots=True)
class ArchiveName:
    """What a Binance archive file name says: ``BTCUSDT-5m-2024-01-01.zip``."""

    symbol: str
    kind: str
    market: str
    interval: str | None
    dataset: str


def parse_archive_name(
    path: PathLike, kind: str | None = None, market: str | None = None
) -> ArchiveName:
    """Infer symbol, kind, interval and dataset from a Binance archive file name.

    ``market`` defaults to ``um`` (USD-M futures). A kline file's kind (``klines`` or a
    price-index kind) comes from ``kind`` or else from a parent directory named
    ``markPriceKlines`` / ``indexPriceKlines`` / ``premiumIndexKlines``.
    """
    p = Path(path)
    market = market or "um"
    if market not in MARKETS:
        raise CatalogError(f"{p}: unknown market '{market}' (known: {', '.join(MARKETS)})")
    m = _NAME_RE.match(p.name)
    if not m:
        raise CatalogError(
            f"{p}: not a Binance archive file name (expected e.g. BTCUSDT-5m-2024-01-01.zip, "
            "BTCUSDT-aggTrades-2024-01.zip)"
        )
    symbol, token = m.group("symbol"), m.group("token")
    interval = None
    if _INTERVAL_RE.match(token):
        interval = token
        if kind is None:
            kind = next((d for d in reversed(p.parts[:-1]) if d in KLINE_KINDS), "klines")
        if kind not in KLINE_KINDS:
            raise CatalogError(f"{p}: kind '{kind}' does not match interval file name")
        if not re.match(r"^\d+[smhd]$", interval):
            raise CatalogError(f"{p}: interval '{interval}' has no catalog bar dataset")
    else:
        if kind is None:
            kind = token
        if kind != token:
            raise CatalogError(f"{p}: kind '{kind}' does not match file name token '{token}'")
    if kind not in KINDS:
        raise CatalogError(f"{p}: unknown archive kind '{kind}' (known: {', '.join(KINDS)})")
    if market == "spot" and kind in _FUTURES_ONLY:
        raise CatalogError(f"{p}: kind '{kind}' exists only for futures (market 'um')")
    if kind in KLINE_KINDS:
        prefix = KLINE_KINDS[kind] or ("spot" if market == "spot" else "perp")
        dataset = f"{prefix}_bars_{interval}"
    else:
        dataset = {
            "aggTrades": "agg_trades",
            "trades": "trades",
            "bookTicker": "book_ticker",
            "bookDepth": "book_depth",
            "metrics": "open_interest",
            "fundingRate": "funding",
        }[kind]
        if market == "spot":
            dataset = f"spot_{dataset}"
    return ArchiveName(symbol, kind, market, interval, dataset)


class _Source:
    """One input file: a plain CSV (memory-mapped) or the single CSV member of a zip
    (decompressed as a stream, so a large file is parsed while it inflates and never
    held in memory twice). ``data()`` gives all bytes, only needed for error reports."""

    def __init__(self, p: Path) -> None:
        if not p.is_file():
            raise CatalogError(f"{p}: no such file")
        self.path = p
        self.member: zipfile.ZipInfo | None = None
        self.where = str(p)
        self._data: bytes | None = None
        if p.suffix.lower() == ".zip":
            with self._zip() as zf:
                members = [i for i in zf.infolist() if not i.is_dir()]
            if len(members) != 1:
                names = ", ".join(i.filename for i in members) or "none"
                raise CatalogError(
                    f"{p}: zip must hold exactly one CSV member, found {len(members)} ({names})"
                )
            self.member = members[0]
            self.where = f"{p}[{self.member.filename}]"

    def _zip(self) -> zipfile.ZipFile:
        try:
            return zipfile.ZipFile(self.path)
        except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError) as exc:
            raise CatalogError(f"{self.path}: corrupt zip ({exc})") from None

    def corrupt(self, exc: BaseException) -> CatalogError:
        return CatalogError(f"{self.path}: corrupt zip ({exc})")

    def head(self, n: int) -> bytes:
        """The first ``n`` bytes (fewer when the file is shorter)."""
        if self._data is not None:
            return self._data[:n]
        if self.member is None:
            with self.path.open("rb") as fh:
                return fh.read(n)
        try:
            with self._zip() as zf, zf.open(self.member) as fh:
                return fh.read(n)
        except (zipfile.BadZipFile, zlib.error, OSError, EOFError) as exc:
            raise self.corrupt(exc) from None

    @contextlib.contextmanager
    def stream(self) -> Iterator[pa.NativeFile]:
        """A readable Arrow stream of the CSV bytes, closed (with its zip) on exit."""
        if self.member is None:
            with pa.memory_map(str(self.path)) as mm:
                yield mm
            return
        with self._zip() as zf, zf.open(self.member) as fh, pa.PythonFile(fh, mode="r") as f:
            yield f

    def data(self) -> bytes:
        """All CSV bytes (read once, then cached)."""
        if self._data is None:
            if self.member is None:
                self._data = self.path.read_bytes()
            else:
                try:
                    with self._zip() as zf:
                        self._data = zf.read(self.member)
                except (zipfile.BadZipFile, zlib.error, OSError, EOFError) as exc:
                    raise self.corrupt(exc) from None
        return self._data


@dataclass
class _Bad:
    """Rows set aside: 1-based data row numbers and reasons."""

    rows: list[int] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)

    def add(self, rows: np.ndarray, reason: str) -> None:
        self.rows.extend(int(r) for r in rows)
        self.reasons.extend([reason] * len(rows))


def _parse_fast(
    source: pa.NativeFile | pa.BufferReader, skip: int, cols: list[tuple[str, pa.DataType]]
) -> pa.Table:
    """Vectorised parse with fixed column names and types (no type inference); any
    malformed row raises :class:`pyarrow.ArrowInvalid`. 4 MiB blocks keep a block's
    bytes in cache while its columns are converted (faster than 16 MiB on one core)."""
    return pacsv.read_csv(
        source,
        read_options=pacsv.ReadOptions(
            column_names=[n for n, _ in cols], skip_rows=skip, block_size=1 << 22
        ),
        parse_options=pacsv.ParseOptions(newlines_in_values=False, ignore_empty_lines=False),
        convert_options=pacsv.ConvertOptions(
            column_types=dict(cols),
            null_values=[""],
            strings_can_be_null=False,
            quoted_strings_can_be_null=False,
        ),
    )


_TRUE = {"true", "True", "TRUE", "1"}
_FALSE = {"false", "False", "FALSE", "0"}


def _parse_slow(
    data: bytes, skip: int, cols: list[tuple[str, pa.DataType]], bad: _Bad
) -> tuple[pa.Table, np.ndarray]:
    """Line-by-line parse naming each malformed row; returns the good rows and their
    1-based row numbers."""
    lines = data.decode("utf-8", errors="replace").splitlines()[skip:]
    ncol = len(cols)
    good: list[list[object]] = []
    rownos: list[int] = []
    for i, line in enumerate(lines, start=1):
        if not line.strip():
            if i == len(lines):
                continue
            bad.add(np.array([i]), "empty line")
            continue
        fields = line.split(",")
        if len(fields) != ncol:
            bad.add(np.array([i]), f"{len(fields)} columns, expected {ncol}")
            continue
        row: list[object] = []
        problem = None
        for (name, typ), v in zip(cols, fields, strict=True):
            v = v.strip()
            try:
                if typ == _I:
                    row.append(int(v))
                elif typ == _F:
                    row.append(float(v))
                elif typ == _B:
                    if v not in _TRUE and v not in _FALSE:
                        raise ValueError
                    row.append(v in _TRUE)
                else:
                    row.append(v)
            except ValueError:
                problem = f"{name} {v!r} is not a {'number' if typ != _B else 'boolean'}"
                break
        if problem:
            bad.add(np.array([i]), problem)
            continue
        good.append(row)
        rownos.append(i)
    arrays = {name: pa.array([r[j] for r in good], type=typ) for j, (name, typ) in enumerate(cols)}
    return pa.table(arrays), np.asarray(rownos, dtype=np.int64)


def _time_ns(
    raw: np.ndarray, rows: np.ndarray, what: str, bad: _Bad, unit: list[int]
) -> np.ndarray:
    """ms/µs → ns with the per-file unit rule (``unit`` holds the file's unit once known)."""
    if raw.size == 0:
        return raw
    is_us = raw >= US_THRESHOLD
    if not unit:
        unit.append(1 if is_us[0] else 0)
    mixed = is_us != bool(unit[0])
    if mixed.any():
        bad.add(rows[mixed], f"{what} unit differs from the first row (mixes ms and µs)")
    ns = raw * (1_000 if unit[0] else 1_000_000)
    out = (ns < _TS_MIN_NS) | (ns >= _TS_MAX_NS)
    if (out & ~mixed).any():
        bad.add(rows[out & ~mixed], f"{what} out of range (2010-2100)")
    return ns


def _check(cond: np.ndarray, rows: np.ndarray, reason: str, bad: _Bad) -> None:
    if cond.any():
        bad.add(rows[cond], reason)


def _order(
    ts: np.ndarray, key: np.ndarray | None, rows: np.ndarray, bad: _Bad, flagged: np.ndarray
) -> None:
    """Flag rows that go below the running maximum of the (unflagged) rows before them:
    ``ts`` must strictly increase (bars, funding, OI) or, for ticks, ``key`` strictly
    increase and ``ts`` not decrease."""
    if ts.size < 2:
        return
    if not flagged.any():  # fast path: a clean, ordered file needs no running maximum
        if key is None:
            if (ts[1:] > ts[:-1]).all():
                return
        elif (key[1:] > key[:-1]).all() and (ts[1:] >= ts[:-1]).all():
            return
    okv = ~flagged
    if key is None:
        k = np.where(okv, ts, np.iinfo(np.int64).min)
        prev = np.maximum.accumulate(k)[:-1]
        b = np.concatenate([[False], ts[1:] <= prev]) & okv
        _check(b, rows, "time not after the previous row (duplicate or out of order)", bad)
        return
    k = np.where(okv, key, np.iinfo(np.int64).min)
    prevk = np.maximum.accumulate(k)[:-1]
    bk = np.concatenate([[False], key[1:] <= prevk]) & okv
    _check(bk, rows, "id not above the previous row (duplicate or out of order)", bad)
    t = np.where(okv & ~bk, ts, np.iinfo(np.int64).min)
    prevt = np.maximum.accumulate(t)[:-1]
    bt = np.concatenate([[False], ts[1:] < prevt]) & okv & ~bk
    _check(bt, rows, "time before the previous row", bad)


def _order_depth(
    ts: np.ndarray, pct: np.ndarray, rows: np.ndarray, bad: _Bad, flagged: np.ndarray
) -> None:
    """bookDepth: snapshot times must not decrease, and a snapshot must not list a band
    twice (the band order inside a snapshot is free; rows are sorted by band later)."""
    if ts.size < 2:
        return
    okv = ~flagged
    t = np.where(okv, ts, np.iinfo(np.int64).min)
    prev = np.maximum.accumulate(t)[:-1]
    late = np.concatenate([[False], ts[1:] < prev]) & okv
    _check(late, rows, "timestamp before the previous row", bad)
    okv &= ~late
    idx = np.flatnonzero(okv)
    order = idx[np.lexsort((idx, pct[idx], ts[idx]))]
    same = (ts[order][1:] == ts[order][:-1]) & (pct[order][1:] == pct[order][:-1])
    dup = np.zeros(ts.size, dtype=bool)
    dup[order[1:][same]] = True
    _check(dup, rows, "band already listed for this snapshot (duplicate timestamp+percentage)", bad)


def _text_or_epoch_ns(
    col: pa.ChunkedArray, rows: np.ndarray, what: str, bad: _Bad, unit: list[int]
) -> np.ndarray:
    """A time column written either as ``YYYY-MM-DD HH:MM:SS`` (UTC; how the bookDepth
    archive writes it) or as epoch ms/µs digits (the per-file unit rule) → ns."""
    digits = pc.match_substring_regex(col, r"^\d+$").to_numpy(zero_copy_only=False)
    text = pc.strptime(col, format="%Y-%m-%d %H:%M:%S", unit="s", error_is_null=True)
    ts = pc.fill_null(text.cast(_I), 0).to_numpy() * 1_000_000_000
    if digits.any():
        raw = pc.cast(pc.if_else(pa.array(digits), col, "0"), _I).to_numpy()
        ts[digits] = _time_ns(raw[digits], rows[digits], what, bad, unit)
    badt = ~digits & text.is_null().to_numpy(zero_copy_only=False)
    _check(badt, rows, f"{what} is not 'YYYY-MM-DD HH:MM:SS' or epoch ms/µs", bad)
    _check(
        ~badt & ~digits & ((ts < _TS_MIN_NS) | (ts >= _TS_MAX_NS)),
        rows,
        f"{what} out of range (2010-2100)",
        bad,
    )
    return ts


def _finite(t: pa.Table, names: Iterable[str], rows: np.ndarray, bad: _Bad) -> None:
    for n in names:
        a = t.column(n).to_numpy()
        if t.column(n).type == _F:
            _check(~np.isfinite(a), rows, f"{n} is NaN/infinite", bad)


@dataclass
class _Parsed:
    name: ArchiveName
    where: str
    table: pa.Table  # normalised, good rows only
    bad_rows: list[tuple[int, str, str]]  # (row, reason, raw line)
    ratios: pa.Table | None = None


def _read(path: PathLike, kind: str | None, market: str | None) -> _Parsed:
    p = Path(path)
    name = parse_archive_name(p, kind, market)
    src = _Source(p)
    where = src.where
    cols = _layout(name.kind, name.market)
    head = src.head(1 << 16)
    nl = head.find(b"\n")
    first = (head[:nl] if nl >= 0 else head).lstrip(b"\xef\xbb\xbf").strip()
    skip = 0
    if first[:1].isalpha():
        skip = 1
        n_header = len(first.split(b","))
        if n_header != len(cols):
            raise CatalogError(
                f"{where}: header has {n_header} columns, expected {len(cols)} for "
                f"{name.kind} (market '{name.market}'): {','.join(n for n, _ in cols)}"
            )
    body = (len(head) if nl < 0 else nl + 1) if skip else 0
    # empty: the whole file fits in the peeked head and holds nothing after the header
    empty = len(head) < 1 << 16 and not head[body:].strip()
    bad = _Bad()
    try:
        if empty:
            t = pa.schema(cols).empty_table()
        else:
            try:
                with src.stream() as stream:
                    t = _parse_fast(stream, skip, cols)
            except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
                raise src.corrupt(exc) from None
        rows = np.arange(1, t.num_rows + 1, dtype=np.int64)
        nulls = np.zeros(t.num_rows, dtype=bool)
        all_null = np.ones(t.num_rows, dtype=bool)
        for n in t.column_names:
            c = t.column(n)
            m = c.is_null().to_numpy(zero_copy_only=False) if c.null_count else None
            all_null &= m if m is not None else False
            if m is not None:
                nulls |= m
        if nulls.any():
            bad.add(rows[all_null], "empty line")
            for n in t.column_names:
                c = t.column(n)
                if c.null_count:
                    m = c.is_null().to_numpy(zero_copy_only=False) & ~all_null
                    bad.add(rows[m], f"{n} is empty")
                    all_null |= m
            t, rows = t.filter(pa.array(~nulls)), rows[~nulls]
    except pa.ArrowInvalid:
        t, rows = _parse_slow(src.data(), skip, cols, bad)
    table, ratios = _normalise(name, t, rows, bad, where)
    bad_rows: list[tuple[int, str, str]] = []
    if bad.rows:
        by_row: dict[int, list[str]] = {}
        for r, reason in zip(bad.rows, bad.reasons, strict=True):
            by_row.setdefault(r, []).append(reason)
        lines = src.data().split(b"\n")[skip:]
        for r in sorted(by_row):
            raw = lines[r - 1].rstrip(b"\r").decode("utf-8", "replace") if r <= len(lines) else ""
            bad_rows.append((r, "; ".join(by_row[r]), raw))
    return _Parsed(name, where, table, bad_rows, ratios)


def _normalise(
    name: ArchiveName, t: pa.Table, rows: np.ndarray, bad: _Bad, where: str
) -> tuple[pa.Table, pa.Table | None]:
    """Checks on the parsed good rows (adding to ``bad``) and the catalog table of the
    rows that pass."""
    kind, n0 = name.kind, len(bad.rows)
    unit: list[int] = []
    ratios = None
    col = t.column
    null_ns = pa.nulls(t.num_rows, _I)
    if kind in KLINE_KINDS:
        ts = _time_ns(col("open_time").to_numpy(), rows, "open_time", bad, unit)
        _time_ns(col("close_time").to_numpy(), rows, "close_time", bad, unit)
        _finite(t, [n for n, ty in _KLINE_COLS if ty == _F], rows, bad)
        o, h, lo, c = (col(n).to_numpy() for n in ("open", "high", "low", "close"))
        if kind != "premiumIndexKlines":
            _check(np.minimum.reduce([o, h, lo, c]) <= 0, rows, "price not positive", bad)
        _check(
            (h < np.maximum(o, c)) | (lo > np.minimum(o, c)) | (h < lo),
            rows,
            "high/low do not bracket open/close",
            bad,
        )
        for n in ("volume", "quote_volume", "taker_buy_volume", "taker_buy_quote_volume"):
            _check(col(n).to_numpy() < 0, rows, f"{n} is negative", bad)
        out = {
            "ts_ns": ts,
            "open": o,
            "high": h,
            "low": lo,
            "close": c,
            "volume_base": col("volume").to_numpy(),
            "volume_quote": col("quote_volume").to_numpy(),
            "taker_buy_volume_quote": col("taker_buy_quote_volume").to_numpy(),
        }
        key = None
    elif kind == "aggTrades":
        ts = _time_ns(col("transact_time").to_numpy(), rows, "transact_time", bad, unit)
        px, q = col("price").to_numpy(), col("quantity").to_numpy()
        _finite(t, ["price", "quantity"], rows, bad)
        _check(px <= 0, rows, "price not positive", bad)
        _check(q < 0, rows, "quantity is negative", bad)
        f, last = col("first_trade_id").to_numpy(), col("last_trade_id").to_numpy()
        _check(last < f, rows, "last_trade_id below first_trade_id", bad)
        key = col("agg_trade_id").to_numpy()
        out = {
            "ts_ns": ts,
            "agg_trade_id": key,
            "price": px,
            "qty_base": q,
            "first_trade_id": f,
            "last_trade_id": last,
            "is_buyer_maker": col("is_buyer_maker"),
            "ts_recv_ns": null_ns,
        }
    elif kind == "trades":
        ts = _time_ns(col("time").to_numpy(), rows, "time", bad, unit)
        px, q, qq = (col(n).to_numpy() for n in ("price", "qty", "quote_qty"))
        _finite(t, ["price", "qty", "quote_qty"], rows, bad)
        _check(px <= 0, rows, "price not positive", bad)
        _check(q < 0, rows, "qty is negative", bad)
        _check(qq < 0, rows, "quote_qty is negative", bad)
        key = col("id").to_numpy()
        out = {
            "ts_ns": ts,
            "trade_id": key,
            "price": px,
            "qty_base": q,
            "quote_qty": qq,
            "is_buyer_maker": col("is_buyer_maker"),
            "ts_recv_ns": null_ns,
        }
    elif kind == "bookTicker":
        ts = _time_ns(col("transaction_time").to_numpy(), rows, "transaction_time", bad, unit)
        _time_ns(col("event_time").to_numpy(), rows, "event_time", bad, unit)
        _finite(t, [n for n, _ in _BOOK_COLS[1:5]], rows, bad)
        bp, bq, ap, aq = (col(n).to_numpy() for n, _ in _BOOK_COLS[1:5])
        _check((bp <= 0) | (ap <= 0), rows, "price not positive", bad)
        _check((bq < 0) | (aq < 0), rows, "quantity is negative", bad)
        key = col("update_id").to_numpy()
        out = {
            "ts_ns": ts,
            "update_id": key,
            "bid_px": bp,
            "bid_qty": bq,
            "ask_px": ap,
            "ask_qty": aq,
            "ts_recv_ns": null_ns,
        }
    elif kind == "fundingRate":
        ts = _time_ns(col("calc_time").to_numpy(), rows, "calc_time", bad, unit)
        ts = ((ts + 500_000_000) // 1_000_000_000) * 1_000_000_000
        ih = col("funding_interval_hours").to_numpy()
        _check(~np.isin(ih, (1, 2, 4, 8)), rows, "funding_interval_hours not 1/2/4/8", bad)
        _finite(t, ["last_funding_rate"], rows, bad)
        out = {
            "ts_ns": ts,
            "funding_rate": col("last_funding_rate").to_numpy(),
            "funding_interval_h": ih.astype(np.int32),
            "mark_price": pa.nulls(t.num_rows, _F),
        }
        key = None
    elif kind == "bookDepth":
        ts = _text_or_epoch_ns(col("timestamp"), rows, "timestamp", bad, unit)
        pct = col("percentage").to_numpy()
        _finite(t, [n for n, _ in _DEPTH_COLS[1:]], rows, bad)
        _check(
            (pct == 0) | (np.abs(pct) > 100), rows, "percentage not in [-100, 0) or (0, 100]", bad
        )
        for n in ("depth", "notional"):
            _check(col(n).to_numpy() < 0, rows, f"{n} is negative", bad)
        out = {
            "ts_ns": ts,
            "band_pct": pct,
            "depth_base": col("depth").to_numpy(),
            "notional_usd": col("notional").to_numpy(),
        }
        key = None
    else:  # metrics
        ct = pc.strptime(
            col("create_time"), format="%Y-%m-%d %H:%M:%S", unit="s", error_is_null=True
        )
        badt = ct.is_null().to_numpy(zero_copy_only=False)
        _check(badt, rows, "create_time is not 'YYYY-MM-DD HH:MM:SS'", bad)
        ts = pc.fill_null(ct.cast(_I), 0).to_numpy() * 1_000_000_000
        _check(
            ~badt & ((ts < _TS_MIN_NS) | (ts >= _TS_MAX_NS)), rows, "create_time out of range", bad
        )
        sym = np.asarray(col("symbol").to_pylist(), dtype=object)
        _check(sym != name.symbol, rows, f"symbol is not {name.symbol}", bad)
        _finite(t, [n for n, _ in _METRICS_COLS[2:]], rows, bad)
        for n, _ in _METRICS_COLS[2:]:
            _check(col(n).to_numpy() < 0, rows, f"{n} is negative", bad)
        out = {
            "ts_ns": ts,
            "open_interest_base": col("sum_open_interest").to_numpy(),
            "open_interest_usd": col("sum_open_interest_value").to_numpy(),
        }
        ratios = {"ts_ns": ts, **{n: col(n).to_numpy() for n in _RATIO_COLS}}
        key = None
    flagged = np.zeros(rows.size, dtype=bool)
    if len(bad.rows) > n0:
        flagged = np.isin(rows, np.asarray(bad.rows[n0:], dtype=np.int64))
    if kind == "bookDepth":
        _order_depth(out["ts_ns"], out["band_pct"], rows, bad, flagged)
    else:
        _order(out["ts_ns"], key, rows, bad, flagged)
    if len(bad.rows) > n0:
        flagged = np.isin(rows, np.asarray(bad.rows[n0:], dtype=np.int64))
    table = pa.table(out)
    if ratios is not None:
        ratios = pa.table(ratios)
    if flagged.any():
        keep = pa.array(~flagged)
        table = table.filter(keep)
        ratios = ratios.filter(keep) if ratios is not None else None
    if kind == "bookDepth":
        order = np.lexsort((table.column("band_pct").to_numpy(), table.column("ts_ns").to_numpy()))
        table = table.take(pa.array(order))
        key = book_depth_key(table.column("ts_ns").to_numpy(), table.column("band_pct").to_numpy())
        return table.append_column("depth_key", pa.array(key)).cast(BOOK_DEPTH_SCHEMA), None
    spec = dataset_spec(
        name.dataset.removeprefix("spot_") if kind in ("aggTrades", "trades") else name.dataset
    )
    table = validate_table(table, spec, where)
    return table, ratios


def _strict(parsed: _Parsed) -> _Parsed:
    if parsed.bad_rows:
        row, reason, _ = parsed.bad_rows[0]
        more = len(parsed.bad_rows) - 1
        extra = f" (and {more} more bad row{'s' * (more > 1)})" if more else ""
        raise CatalogError(f"{parsed.where}: row {row}: {reason}{extra}")
    return parsed


def read_archive_file(
    path: PathLike, kind: str | None = None, market: str | None = None
) -> tuple[str, str, pa.Table]:
    """Read one archive file (``.zip`` or ``.csv``) → ``(dataset, symbol, table)``.

    Kind, symbol and interval come from the Binance file name; ``market`` is ``um``
    (default) or ``spot``. The table has the dataset's catalog schema, validated. Any bad
    row raises :class:`CatalogError` naming the file, the zip member, the row and the
    problem.
    """
    p = _strict(_read(path, kind, market))
    return p.name.dataset, p.name.symbol, p.table


def read_archive_metrics(path: PathLike) -> tuple[str, pa.Table, pa.Table]:
    """A futures ``metrics`` file → ``(symbol, open_interest table, ratios table)``; the
    ratios table holds ``ts_ns`` and the four long/short ratio columns as in the file."""
    p = _strict(_read(path, "metrics", "um"))
    assert p.ratios is not None
    return p.name.symbol, p.table, p.ratios


@dataclass
class ImportSummary:
    """What :func:`import_archive_files` did."""

    files: int = 0
    rows_imported: int = 0
    rows_quarantined: int = 0
    per_file: list[tuple[str, str, str, int, int]] = field(default_factory=list)
    """``(file, dataset, symbol, rows imported, rows quarantined)``"""
    quarantine_file: Path | None = None
    written: list[Path] = field(default_factory=list)

    def __str__(self) -> str:
        q = f", quarantined {self.rows_quarantined} row(s)" if self.rows_quarantined else ""
        where = f" → {self.quarantine_file}" if self.quarantine_file else ""
        return f"imported {self.rows_imported} row(s) from {self.files} file(s){q}{where}"


QUARANTINE_FILE = "quarantine.csv"
QUARANTINE_COLUMNS = ("file", "row", "reason", "raw_line")


def write_quarantine(
    quarantine_dir: PathLike, entries: Iterable[tuple[str, int, str, str]]
) -> Path:
    """Append ``(file, row, reason, raw_line)`` entries to
    ``<quarantine_dir>/quarantine.csv`` (header written once) and return its path. The
    file is rewritten atomically (old content + new rows, tmp + rename), so a crash
    never leaves half a row. Shared by every importer's quarantine mode."""
    qpath = Path(quarantine_dir) / QUARANTINE_FILE
    old = qpath.read_text(encoding="utf-8") if qpath.exists() else ""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    if not old:
        w.writerow(QUARANTINE_COLUMNS)
    for e in entries:
        w.writerow(e)
    atomic_write_text(old + buf.getvalue(), qpath)
    return qpath


@dataclass(frozen=True)
class ArchiveFile:
    """One archive file read and checked, not yet written: the good rows as a catalog
    table and the bad rows as ``(row, reason, raw line)``."""

    path: Path
    where: str  # the file, or ``file[member]`` for a zip
    dataset: str
    symbol: str
    table: pa.Table
    bad_rows: list[tuple[int, str, str]]


def parse_archive_file(
    path: PathLike, kind: str | None = None, market: str | None = None
) -> ArchiveFile:
    """Read one archive file keeping bad rows aside instead of raising (file-level
    problems — a corrupt zip, a wrong header — still raise :class:`CatalogError`)."""
    p = _read(path, kind, market)
    return ArchiveFile(Path(path), p.where, p.name.dataset, p.name.symbol, p.table, p.bad_rows)


def check_importable(dataset: str, where: str) -> None:
    """Raise :class:`CatalogError` when the catalog has no dataset to hold ``dataset``
    (spot ticks, bookDepth)."""
    if dataset in ("spot_trades", "spot_agg_trades"):
        raise CatalogError(
            f"{where}: the catalog has no dataset for spot {dataset.removeprefix('spot_')} "
            "(only perp ticks are stored)"
        )
    try:
        dataset_spec(dataset)
    except CatalogError:
        raise CatalogError(
            f"{where}: the catalog has no '{dataset}' dataset yet (read the file with "
            "perpdesk.data.sources.read_archive_file)"
        ) from None


def import_archive_files(
    paths: Iterable[PathLike],
    catalog: Catalog,
    venue: str = "binance",
    quarantine_dir: PathLike | None = None,
    market: str | None = None,
) -> ImportSummary:
    """Read, validate and write archive files into ``catalog``.

    Every file is read and validated (and files of one dataset/symbol checked together)
    before anything is written. Without ``quarantine_dir`` any bad row raises
    :class:`CatalogError` and nothing is written; with it, bad rows are appended to
    ``<quarantine_dir>/quarantine.csv`` (``file,row,reason,raw_line``, see
    :func:`write_quarantine`) and the good rows imported. Conflicts with rows already in
    the catalog are detected by :meth:`Catalog.write` per partition. Metrics ratio
    columns are not stored; bookDepth and spot tick files are refused (no catalog
    dataset).
    """
    parsed = [_read(p, None, market) for p in paths]
    if quarantine_dir is None:
        for p in parsed:
            _strict(p)
    summary = ImportSummary(files=len(parsed))
    groups: dict[tuple[str, str], list[_Parsed]] = {}
    for p in parsed:
        check_importable(p.name.dataset, p.where)
        groups.setdefault((p.name.dataset, p.name.symbol), []).append(p)
        summary.per_file.append(
            (p.where, p.name.dataset, p.name.symbol, p.table.num_rows, len(p.bad_rows))
        )
        summary.rows_imported += p.table.num_rows
        summary.rows_quarantined += len(p.bad_rows)
    merged: list[tuple[str, str, pa.Table]] = []
    for (dataset, symbol), items in groups.items():
        spec = dataset_spec(dataset)
        items = [i for i in items if i.table.num_rows]
        if not items:
            continue
        items.sort(key=lambda i: i.table.column(spec.key)[0].as_py())
        table = pa.concat_tables([i.table for i in items])
        names = ", ".join(Path(i.where).name for i in items)
        table = validate_table(table, spec, f"{venue}/{dataset}/{symbol} (files {names})")
        merged.append((dataset, symbol, table))
    if quarantine_dir is not None and summary.rows_quarantined:
        summary.quarantine_file = write_quarantine(
            quarantine_dir,
            [(p.where, row, reason, raw) for p in parsed for row, reason, raw in p.bad_rows],
        )
    for dataset, symbol, table in merged:
        summary.written.extend(catalog.write(venue, dataset, symbol, table))
    return summary
