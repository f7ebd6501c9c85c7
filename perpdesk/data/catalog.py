"""The Parquet catalog: columnar market data at rest, partitioned by venue/dataset/symbol/date.

Layout (one directory tree per catalog root)::

    <root>/<venue>/instruments.parquet                  one row per instrument
    <root>/<venue>/<dataset>/<symbol>/<YYYY-MM>.parquet  monthly partitions (bars, funding, OI)
    <root>/<venue>/<dataset>/<symbol>/<YYYY-MM-DD>.parquet  daily partitions (tick datasets)

``<symbol>`` is the venue's own id (``BTCUSDT``); the spot leg of a perp lives under the
same symbol in the ``spot_*`` datasets of the same venue. Every dataset has an int64
``ts_ns`` column (ns since epoch, UTC; bars are stamped with their open time), strictly
increasing within a symbol. Writers are atomic (tmp file + rename) and merge with what a
partition already holds: identical rows dedupe, conflicting rows are an error. Readers
validate and raise :class:`CatalogError` naming the file, the row and the problem —
nothing is silently dropped or filled.

Append-only parts (the tick collector's writes)
-----------------------------------------------
:meth:`Catalog.write` rewrites a whole partition file, so a writer that adds a little to
the same daily partition every few seconds all day pays O(rows of the day) per write —
quadratic over the day. :meth:`Catalog.append` instead adds one immutable *part* file
per call and partition::

    <root>/<venue>/<dataset>/<symbol>/<YYYY-MM-DD>.parts/<ns>-<pid>-<n>.parquet

(the first append to an empty partition writes ``<YYYY-MM-DD>.parquet`` itself). Parts are
temporary (compaction rewrites them) and written with a cheap encoding: delta-coded
integers, plain floats, no dictionary (except strings), no compression, and the columns
without nulls as Parquet REQUIRED columns, so no definition levels are computed (encoding
1.42 M book_ticker rows in memory: ~49 ns a row and ~37 B, against ~75 ns with nullable
columns, ~28 ns and 56 B with plain integers — slower once written, as this machine's page
cache takes ~2 ns a byte — and ~250 ns and ~10 B for the zstd + dictionary of a daily
file; readers cast back to the dataset's schema). An
append never reads the partition back: it keeps the key and ``ts_ns`` range of every
file of the partition (from the Parquet footers, cached), so rows whose key is above
everything stored are checked in O(1); only rows at or below the stored maximum (late
rows) are compared with the stored rows of the files whose key range covers them —
identical rows dedupe, a different row with the same key is a :class:`CatalogError`, as
in :meth:`Catalog.write`.
So the union of a partition's files never holds the same key twice.

Readers (:meth:`Catalog.read`, :mod:`perpdesk.data.query`, :mod:`perpdesk.data.check`)
see a partition as the union of its daily file and its *live* parts, sorted by the key,
with the same dedupe / validation rules as a merge. :meth:`Catalog.compact` folds the
live parts into the daily file (zstd, streamed cluster by cluster of overlapping key
ranges, so memory stays at one part unless parts overlap) in three steps, each safe to
crash after:

1. write the merged daily file to a temp file; its footer lists the names of the parts
   it *absorbs* (``perpdesk.absorbed_parts``);
2. rename it over ``<YYYY-MM-DD>.parquet`` — from now on readers ignore absorbed parts,
   so nothing is seen twice;
3. delete the absorbed parts and the empty ``.parts`` directory.

A crash before 2 leaves the old daily file and every part (a stray ``.tmp`` at most); a
crash after 2 leaves absorbed parts that readers skip and the next compaction deletes.
Part names (wall clock ns, pid, counter) are never reused. One writer per partition at a
time (the collector's single writer thread), as for :meth:`Catalog.write`.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from perpdesk.domain import Instrument, InstrumentKind
from perpdesk.errors import CatalogError
from perpdesk.files import atomic_write

NS_PER_S = 1_000_000_000

BAR_SCHEMA = pa.schema(
    [
        ("ts_ns", pa.int64()),
        ("open", pa.float64()),
        ("high", pa.float64()),
        ("low", pa.float64()),
        ("close", pa.float64()),
        ("volume_base", pa.float64()),
        ("volume_quote", pa.float64()),
        ("taker_buy_volume_quote", pa.float64()),
    ]
)

FUNDING_SCHEMA = pa.schema(
    [
        ("ts_ns", pa.int64()),
        ("funding_rate", pa.float64()),
        ("funding_interval_h", pa.int32()),
        ("mark_price", pa.float64()),
    ]
)

OPEN_INTEREST_SCHEMA = pa.schema(
    [
        ("ts_ns", pa.int64()),
        ("open_interest_base", pa.float64()),
        ("open_interest_usd", pa.float64()),
    ]
)

TRADE_SCHEMA = pa.schema(
    [
        ("ts_ns", pa.int64()),  # exchange trade time
        ("trade_id", pa.int64()),
        ("price", pa.float64()),
        ("qty_base", pa.float64()),
        ("quote_qty", pa.float64()),
        ("is_buyer_maker", pa.bool_()),  # True: the seller was the aggressor
        ("ts_recv_ns", pa.int64()),  # when we received it (null for archives)
    ]
)

AGG_TRADE_SCHEMA = pa.schema(
    [
        ("ts_ns", pa.int64()),
        ("agg_trade_id", pa.int64()),
        ("price", pa.float64()),
        ("qty_base", pa.float64()),
        ("first_trade_id", pa.int64()),
        ("last_trade_id", pa.int64()),
        ("is_buyer_maker", pa.bool_()),
        ("ts_recv_ns", pa.int64()),
    ]
)

BOOK_TICKER_SCHEMA = pa.schema(
    [
        ("ts_ns", pa.int64()),  # exchange event (or transaction) time
        ("update_id", pa.int64()),
        ("bid_px", pa.float64()),
        ("bid_qty", pa.float64()),
        ("ask_px", pa.float64()),
        ("ask_qty", pa.float64()),
        ("ts_recv_ns", pa.int64()),
    ]
)

MARK_PRICE_SCHEMA = pa.schema(
    [
        ("ts_ns", pa.int64()),  # exchange event time
        ("mark_px", pa.float64()),
        ("index_px", pa.float64()),  # null when the source lacks it
        ("predicted_funding_rate", pa.float64()),  # fraction for the next settlement
        ("next_funding_ts_ns", pa.int64()),
        ("ts_recv_ns", pa.int64()),
    ]
)

BOOK_DEPTH_SCHEMA = pa.schema(
    [
        ("ts_ns", pa.int64()),  # snapshot time (ns UTC)
        ("band_pct", pa.float64()),  # signed distance from mid in %: < 0 bids, > 0 asks
        ("depth_base", pa.float64()),  # resting quantity within the band, base units
        ("notional_usd", pa.float64()),  # the same in quote (USDT) notional
        ("depth_key", pa.int64()),  # natural key of (ts_ns, band_pct): see book_depth_key
    ]
)
"""Binance futures ``bookDepth`` snapshots (data.binance.vision ``futures/um/daily/
bookDepth``): one row per snapshot and band, sorted by ``(ts_ns, band_pct)``."""

BAND_STEPS = 20_001  # band_pct in [-100, 100] at 0.01 % resolution


def book_depth_key(ts_ns: np.ndarray, band_pct: np.ndarray) -> np.ndarray:
    """One int64 that orders and identifies ``(ts_ns, band_pct)`` rows of ``book_depth``:
    ``ts_ms × 20001 + round(band_pct × 100) + 10000`` (snapshots are whole milliseconds
    and bands are multiples of 0.01 % within ±100 %; fits int64 until the year 2484)."""
    ts_ms = np.asarray(ts_ns, dtype=np.int64) // 1_000_000
    code = np.rint(np.asarray(band_pct, dtype=np.float64) * 100.0).astype(np.int64) + 10_000
    return ts_ms * BAND_STEPS + code


LIQUIDATION_SCHEMA = pa.schema(
    [
        ("ts_ns", pa.int64()),  # order trade time o.T (exchange clock)
        ("side", pa.string()),  # o.S: SELL = a long was liquidated, BUY = a short
        ("order_type", pa.string()),  # o.o (LIMIT)
        ("time_in_force", pa.string()),  # o.f (IOC)
        ("price", pa.float64()),  # o.p, order price
        ("avg_price", pa.float64()),  # o.ap, average fill price
        ("qty_base", pa.float64()),  # o.q, original quantity
        ("last_filled_qty_base", pa.float64()),  # o.l
        ("filled_qty_base", pa.float64()),  # o.z, accumulated filled quantity
        ("status", pa.string()),  # o.X (FILLED …)
        ("event_ts_ns", pa.int64()),  # event time E
        ("ts_recv_ns", pa.int64()),
    ]
)
"""Forced liquidations from the ``<sym>@forceOrder`` stream (Binance USD-M): one row per
liquidation order update; Binance pushes at most one per symbol per second, so ``ts_ns``
is the key."""

INSTRUMENT_SCHEMA = pa.schema(
    [
        ("venue", pa.string()),
        ("symbol", pa.string()),
        ("kind", pa.string()),
        ("base", pa.string()),
        ("quote", pa.string()),
        ("tick_size", pa.float64()),
        ("lot_size", pa.float64()),
        ("funding_interval_h", pa.int32()),
        ("funding_cap", pa.float64()),
        ("funding_floor", pa.float64()),
    ]
)


@dataclass(frozen=True, slots=True)
class DatasetSpec:
    """What a dataset must hold: its schema, which columns may never be NaN/null, the
    partition granularity (``month`` or ``day``) and the natural key.

    ``key`` is ``ts_ns`` for series with one row per instant (bars, funding, OI), whose
    ``ts_ns`` must strictly increase; tick datasets key on the exchange's own id
    (``trade_id``…): their ``ts_ns`` may repeat (many trades share a millisecond) but
    must not decrease, and the key must strictly increase.
    """

    name: str
    schema: pa.Schema
    not_null: tuple[str, ...]
    partition: str = "month"
    key: str = "ts_ns"


_BAR_RE = re.compile(r"^(perp|spot|mark|index|premium)_bars_(\d+[smhd])$")

_FIXED_SPECS = {
    "funding": DatasetSpec(
        "funding", FUNDING_SCHEMA, ("ts_ns", "funding_rate", "funding_interval_h")
    ),
    "open_interest": DatasetSpec(
        "open_interest", OPEN_INTEREST_SCHEMA, ("ts_ns", "open_interest_base", "open_interest_usd")
    ),
    "mark_price": DatasetSpec("mark_price", MARK_PRICE_SCHEMA, ("ts_ns", "mark_px"), "day"),
    "trades": DatasetSpec(
        "trades",
        TRADE_SCHEMA,
        tuple(n for n in TRADE_SCHEMA.names if n != "ts_recv_ns"),
        "day",
        "trade_id",
    ),
    "agg_trades": DatasetSpec(
        "agg_trades",
        AGG_TRADE_SCHEMA,
        tuple(n for n in AGG_TRADE_SCHEMA.names if n != "ts_recv_ns"),
        "day",
        "agg_trade_id",
    ),
    "book_depth": DatasetSpec(
        "book_depth", BOOK_DEPTH_SCHEMA, tuple(BOOK_DEPTH_SCHEMA.names), "day", "depth_key"
    ),
    "liquidations": DatasetSpec(
        "liquidations",
        LIQUIDATION_SCHEMA,
        tuple(n for n in LIQUIDATION_SCHEMA.names if n != "ts_recv_ns"),
        "day",
    ),
    "book_ticker": DatasetSpec(
        "book_ticker",
        BOOK_TICKER_SCHEMA,
        tuple(n for n in BOOK_TICKER_SCHEMA.names if n != "ts_recv_ns"),
        "day",
        "update_id",
    ),
}


def dataset_spec(name: str) -> DatasetSpec:
    """The spec of dataset ``name`` (``funding``, ``open_interest``, ``perp_bars_5m`` …)."""
    if name in _FIXED_SPECS:
        return _FIXED_SPECS[name]
    if _BAR_RE.match(name):
        return DatasetSpec(name, BAR_SCHEMA, tuple(BAR_SCHEMA.names))
    raise CatalogError(
        f"unknown dataset '{name}' (known: {', '.join(_FIXED_SPECS)}, <kind>_bars_<tf>)"
    )


def bar_interval_s(dataset: str) -> int:
    """Bar length in seconds from a bar dataset's name (``perp_bars_5m`` → 300)."""
    m = _BAR_RE.match(dataset)
    if not m:
        raise CatalogError(f"'{dataset}' is not a bar dataset")
    tf = m.group(2)
    return int(tf[:-1]) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[tf[-1]]


def _partition_runs(ts_ns: np.ndarray, granularity: str) -> list[tuple[int, int, str]]:
    """``(start_row, end_row, key)`` runs of rows sharing a partition (rows sorted by ts)."""
    unit = "M" if granularity == "month" else "D"
    if ts_ns.size:  # sorted: first and last row in one period means one run (no pass)
        first, last = (np.datetime64(int(ts_ns[k]), "ns").astype(f"datetime64[{unit}]")
                       for k in (0, -1))  # fmt: skip
        if first == last:
            return [(0, int(ts_ns.size), str(first))]
    period = ts_ns.astype("datetime64[ns]").astype(f"datetime64[{unit}]")
    cuts = np.flatnonzero(period[1:] != period[:-1]) + 1
    starts = np.concatenate([[0], cuts]).astype(int)
    ends = np.concatenate([cuts, [ts_ns.size]]).astype(int)
    return [(int(s), int(e), str(period[s])) for s, e in zip(starts, ends, strict=True)]


def _partition_bounds(key: str) -> tuple[int, int]:
    """[start, end) in ns of the partition named ``key`` (``2024-01`` or ``2024-01-31``)."""
    try:
        if len(key) == 7:
            start = np.datetime64(key, "M")
            end = start + np.timedelta64(1, "M")
        else:
            start = np.datetime64(key, "D")
            end = start + np.timedelta64(1, "D")
    except ValueError:
        raise CatalogError(
            f"partition file {key!r}: not a YYYY-MM or YYYY-MM-DD partition name"
        ) from None
    return (
        int(start.astype("datetime64[ns]").astype(np.int64)),
        int(end.astype("datetime64[ns]").astype(np.int64)),
    )


def fmt_ts(ts_ns: int) -> str:
    """ISO-8601 UTC rendering of a ns timestamp, for error messages and tables."""
    return str(np.datetime64(int(ts_ns), "ns").astype("datetime64[s]")) + "Z"


_PRICE_WORDS = ("px", "price", "open", "high", "low", "close", "bid", "ask")


def _dictionary_columns(schema: pa.Schema) -> list[str]:
    """Columns worth dictionary encoding: strings and prices (few distinct values on a
    tick grid). Timestamps, ids and sizes are nearly unique, and a dictionary there only
    costs time: on book_ticker this halves encode time and shrinks files by ~40 %
    (measured by ``bench/bench_collector.py``)."""
    return [
        f.name
        for f in schema
        if pa.types.is_string(f.type)
        or (pa.types.is_floating(f.type) and any(w in f.name for w in _PRICE_WORDS))
    ]


def atomic_write_parquet(
    table: pa.Table, path: Path, metadata: dict[bytes, bytes] | None = None
) -> None:
    """Write ``table`` to ``path`` (zstd Parquet) via a temp file and a rename; ``metadata``
    replaces the schema's key-value metadata (the catalog's own markers)."""
    if metadata is not None:
        table = table.replace_schema_metadata(metadata)
    cols = _dictionary_columns(table.schema)
    atomic_write(
        path,
        lambda tmp: pq.write_table(table, tmp, compression="zstd", use_dictionary=cols),
    )


PARTS_SUFFIX = ".parts"
META_ABSORBED = b"perpdesk.absorbed_parts"  # JSON list of part names a daily file holds
META_ENCODING = b"perpdesk.encoding"  # b"part": written by an append, re-encoded by compact
_PART_RE = re.compile(r"^\d[^/]*\.parquet$")
_part_counter = itertools.count()


def parts_dir(daily: Path) -> Path:
    """The directory of append-only parts of the partition file ``daily``
    (``2024-07-19.parquet`` → ``2024-07-19.parts``)."""
    return daily.with_name(daily.stem + PARTS_SUFFIX)


def _part_options(schema: pa.Schema, key: str) -> dict:
    """Parquet options of parts (and of a daily file written by an append): no
    compression (parts live until the next compaction; LZ4 took ~30 % of the write time
    for a third less disk), delta integers (ids and stamps shrink to a few bytes: ~20 ns a
    row more to encode than plain, ~20 B a row less to write), plain floats
    (byte-stream-split only helps a compressor), dictionaries only for strings, statistics
    only on ``ts_ns`` and the key (what :meth:`Catalog.append` and the readers prune on)."""
    enc = {f.name: "DELTA_BINARY_PACKED" for f in schema if pa.types.is_integer(f.type)}
    return {
        "compression": "none",
        "use_dictionary": [f.name for f in schema if pa.types.is_string(f.type)],
        "column_encoding": enc,
        "write_statistics": list(dict.fromkeys(["ts_ns", key])),
    }


def part_schema(spec: DatasetSpec, table: pa.Table) -> pa.Schema:
    """``spec.schema`` with every column of ``table`` that holds no null non-nullable: written
    as Parquet REQUIRED columns (no definition levels to encode). Readers cast back to
    ``spec.schema``."""
    return pa.schema(
        [f.with_nullable(table.column(f.name).null_count > 0) for f in spec.schema],
        metadata=spec.schema.metadata,
    )


def absorbed_parts(daily: Path) -> frozenset[str]:
    """Names of the parts whose rows the daily file ``daily`` already holds (empty when
    it does not exist or never absorbed any)."""
    try:
        md = pq.read_schema(daily).metadata or {}
    except FileNotFoundError:
        return frozenset()
    except (OSError, pa.ArrowInvalid) as exc:
        raise CatalogError(f"{daily}: unreadable Parquet ({exc})") from None
    raw = md.get(META_ABSORBED)
    return frozenset(json.loads(raw)) if raw else frozenset()


def partition_parts(daily: Path) -> tuple[list[Path], list[Path]]:
    """``(live, absorbed)`` part files of the partition file ``daily``, each sorted by
    name (= write order): live parts hold rows the daily file does not; absorbed ones are
    leftovers of a compaction (readers skip them, the next compaction deletes them)."""
    d = parts_dir(daily)
    if not d.is_dir():
        return [], []
    names = sorted(p for p in d.iterdir() if _PART_RE.match(p.name) and p.is_file())
    if not names:
        return [], []
    gone = absorbed_parts(daily)
    return [p for p in names if p.name not in gone], [p for p in names if p.name in gone]


@dataclass(frozen=True, slots=True)
class _FileRange:
    """Key and ``ts_ns`` range of one stored file of a partition."""

    path: Path
    rows: int
    min_key: int
    max_key: int
    min_ts: int
    max_ts: int


def _file_range(path: Path, spec: DatasetSpec) -> _FileRange | None:
    """The ranges from the Parquet footer's statistics (the columns are read when a row
    group has none); None for an empty file."""
    try:
        md = pq.read_metadata(path)
        names = md.schema.to_arrow_schema().names
        ik, it = names.index(spec.key), names.index("ts_ns")
        lo_k = lo_t = hi_k = hi_t = None
        for g in range(md.num_row_groups):
            rg = md.row_group(g)
            if rg.num_rows == 0:
                continue
            sk, st = rg.column(ik).statistics, rg.column(it).statistics
            if sk is None or st is None or not (sk.has_min_max and st.has_min_max):
                t = pq.read_table(path, columns=list(dict.fromkeys(["ts_ns", spec.key])))
                if t.num_rows == 0:
                    return None
                k, ts = t.column(spec.key), t.column("ts_ns")
                mk, mt = pc.min_max(k).as_py(), pc.min_max(ts).as_py()
                return _FileRange(path, t.num_rows, mk["min"], mk["max"], mt["min"], mt["max"])
            lo_k = sk.min if lo_k is None else min(lo_k, sk.min)
            hi_k = sk.max if hi_k is None else max(hi_k, sk.max)
            lo_t = st.min if lo_t is None else min(lo_t, st.min)
            hi_t = st.max if hi_t is None else max(hi_t, st.max)
    except (OSError, pa.ArrowInvalid, ValueError) as exc:
        raise CatalogError(f"{path}: unreadable Parquet ({exc})") from None
    if lo_k is None:
        return None
    return _FileRange(path, md.num_rows, int(lo_k), int(hi_k), int(lo_t), int(hi_t))


@dataclass
class _PartitionState:
    """What :meth:`Catalog.append` remembers of a partition between calls."""

    stamp: tuple
    files: list[_FileRange]


def _stamp(daily: Path) -> tuple:
    """Changes whenever the daily file is replaced or a part is added or removed."""
    out = []
    for p in (daily, parts_dir(daily)):
        try:
            st = p.stat()
            out.append((st.st_mtime_ns, st.st_size, st.st_ino))
        except FileNotFoundError:
            out.append(None)
    return tuple(out)


CompactHook = Callable[[str, Path], None]
_compact_hook: CompactHook | None = None
"""Test seam: called as ``hook(step, daily)`` at each step of a compaction (``"read"``,
``"written"`` — temp file complete, not yet renamed —, ``"renamed"``, ``"removed"`` —
after each deleted part); raising there simulates a crash at that step."""


def _step(step: str, daily: Path) -> None:
    if _compact_hook is not None:
        _compact_hook(step, daily)


def check_increasing(
    values: np.ndarray,
    where: str,
    name: str,
    *,
    strict: bool = True,
    rows: np.ndarray | None = None,
) -> None:
    """Raise :class:`CatalogError` at the first value that is not after its predecessor
    (``strict``) or is below it. Rows are 1-based data rows, or ``rows[i] + 1`` when the
    values are a subset of a file whose 0-based row numbers are ``rows``. ``ts_ns``-like
    names render as ISO times."""
    if values.size < 2:
        return
    bad = values[1:] <= values[:-1] if strict else values[1:] < values[:-1]  # no diff array
    if not bad.any():
        return
    i = int(np.flatnonzero(bad)[0]) + 1
    d = np.diff(values)
    row, prev_row = (i + 1, i) if rows is None else (int(rows[i]) + 1, int(rows[i - 1]) + 1)
    is_time = name.endswith("ts_ns")
    show = fmt_ts if is_time else str
    what = "is before" if is_time else "is below"
    what = "duplicates" if d[i - 1] == 0 else what
    rule = "must strictly increase" if strict else "must not decrease"
    raise CatalogError(
        f"{where}: row {row}: {name} {show(values[i])} {what} row {prev_row} "
        f"({show(values[i - 1])}); {name} {rule}"
    )


def validate_table(table: pa.Table, spec: DatasetSpec, where: str) -> pa.Table:
    """Check ``table`` against ``spec``; return it cast to the spec's schema.

    Raises :class:`CatalogError` ``"<where>: <problem>"`` for a missing column, a
    null/NaN in a required column, or ``ts_ns`` that is not strictly increasing (row
    numbers count data rows from 1).
    """
    missing = [n for n in spec.schema.names if n not in table.column_names]
    if missing:
        raise CatalogError(f"{where}: missing column(s) {', '.join(missing)}")
    table = table.select(spec.schema.names)
    try:
        table = table.cast(spec.schema)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise CatalogError(f"{where}: column types do not match the schema ({exc})") from None
    for name in spec.not_null:
        col = table.column(name)
        floating = pa.types.is_floating(col.type)
        if col.null_count == 0 and not (
            floating and any(np.isnan(c.to_numpy()).any() for c in col.chunks)
        ):
            continue  # the common case, one pass at most (~1 ns a value)
        bad = col.is_null()
        if floating:
            bad = pc.or_(bad, pc.fill_null(pc.is_nan(col), True))
        if pc.any(bad).as_py():
            row = int(np.flatnonzero(bad.to_numpy(zero_copy_only=False))[0]) + 1
            raise CatalogError(f"{where}: row {row}: {name} is null/NaN")
    ts = table.column("ts_ns").to_numpy()
    if spec.key == "ts_ns":
        check_increasing(ts, where, "ts_ns", strict=True)
    else:
        check_increasing(ts, where, "ts_ns", strict=False)
        check_increasing(table.column(spec.key).to_numpy(), where, spec.key, strict=True)
    return table


class Catalog:
    """A Parquet catalog rooted at ``root`` (see the module docstring for the layout)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).expanduser()
        self._states: dict[Path, _PartitionState] = {}  # append's view of each partition

    # -- discovery -------------------------------------------------------------------
    def venues(self) -> list[str]:
        """Venues present in the catalog (directories holding an instruments file or data)."""
        if not self.root.is_dir():
            raise CatalogError(f"catalog {self.root}: no such directory")
        return sorted(
            p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".")
        )

    def symbols(self, venue: str, dataset: str) -> list[str]:
        """Symbols that have at least one partition of ``dataset`` on ``venue``."""
        d = self.root / venue / dataset
        if not d.is_dir():
            return []
        return sorted(
            p.name
            for p in d.iterdir()
            if p.is_dir()
            and (any(p.glob("*.parquet")) or any(p.glob(f"*{PARTS_SUFFIX}/[0-9]*.parquet")))
        )

    def partitions(self, venue: str, dataset: str, symbol: str) -> list[Path]:
        """Partition files of one symbol, oldest first (the daily / monthly files only:
        rows still in append-only parts are not in them, see :meth:`partition_files`)."""
        return sorted((self.root / venue / dataset / symbol).glob("[0-9]*.parquet"))

    def partition_files(
        self, venue: str, dataset: str, symbol: str
    ) -> list[tuple[Path, list[Path]]]:
        """``(partition file, its live parts)`` per partition of one symbol, oldest first;
        the partition file may not exist yet (only parts were written)."""
        d = self.root / venue / dataset / symbol
        if not d.is_dir():
            return []
        keys = {p.stem for p in d.glob("[0-9]*.parquet")}
        keys |= {p.name[: -len(PARTS_SUFFIX)] for p in d.glob(f"[0-9]*{PARTS_SUFFIX}")}
        out = []
        for k in sorted(keys):
            daily = d / f"{k}.parquet"
            out.append((daily, partition_parts(daily)[0]))
        return out

    # -- instruments ---------------------------------------------------------------------
    def write_instruments(self, venue: str, instruments: Iterable[Instrument]) -> Path:
        """Write (replace) the venue's instrument table, atomically."""
        rows = [
            {
                "venue": i.venue,
                "symbol": i.symbol,
                "kind": str(i.kind),
                "base": i.base,
                "quote": i.quote,
                "tick_size": i.tick_size,
                "lot_size": i.lot_size,
                "funding_interval_h": i.funding_interval_h,
                "funding_cap": i.funding_cap,
                "funding_floor": i.funding_floor,
            }
            for i in instruments
        ]
        path = self.root / venue / "instruments.parquet"
        atomic_write_parquet(pa.Table.from_pylist(rows, schema=INSTRUMENT_SCHEMA), path)
        return path

    def instruments(self, venue: str) -> dict[tuple[str, InstrumentKind], Instrument]:
        """The venue's instruments keyed by ``(symbol, kind)``."""
        path = self.root / venue / "instruments.parquet"
        if not path.is_file():
            raise CatalogError(f"{path}: missing (every venue needs its instruments table)")
        table = pq.read_table(path)
        missing = [n for n in INSTRUMENT_SCHEMA.names if n not in table.column_names]
        if missing:
            raise CatalogError(f"{path}: missing column(s) {', '.join(missing)}")
        out: dict[tuple[str, InstrumentKind], Instrument] = {}
        for row_no, r in enumerate(table.to_pylist(), start=1):
            try:
                inst = Instrument(
                    venue=r["venue"],
                    symbol=r["symbol"],
                    kind=InstrumentKind(r["kind"]),
                    base=r["base"],
                    quote=r["quote"],
                    tick_size=r["tick_size"],
                    lot_size=r["lot_size"],
                    funding_interval_h=r["funding_interval_h"] or 0,
                    funding_cap=r["funding_cap"],
                    funding_floor=r["funding_floor"],
                )
            except (ValueError, TypeError) as exc:
                raise CatalogError(f"{path}: row {row_no}: {exc}") from None
            out[(inst.symbol, inst.kind)] = inst
        return out

    # -- data ----------------------------------------------------------------------------
    def write(self, venue: str, dataset: str, symbol: str, table: pa.Table) -> list[Path]:
        """Validate ``table`` and merge it into the symbol's partitions (atomic per file).

        Rows whose ``ts_ns`` a partition already holds must be identical to the stored
        ones (they then dedupe); a differing row is a :class:`CatalogError`. In a nullable
        column (e.g. ``mark_price``) a missing value never conflicts: the known one is kept.
        A partition's append-only parts (:meth:`append`) are folded into the new file,
        which absorbs them (see :meth:`compact`).
        """
        spec = dataset_spec(dataset)
        table = validate_table(table, spec, f"{venue}/{dataset}/{symbol} (input)")
        if table.num_rows == 0:
            return []
        written = []
        for s, e, key in _partition_runs(table.column("ts_ns").to_numpy(), spec.partition):
            part = table.slice(s, e - s)
            path = self.root / venue / dataset / symbol / f"{key}.parquet"
            live, gone = partition_parts(path)
            if live:  # rows still in append-only parts: fold them in with the new rows
                old = self._read_partition(path, live, spec)
                part = self._union([old, part], spec, path)
            elif path.exists():
                part = self._merge(pq.read_table(path), part, spec, path)
            meta = None
            if live or gone:  # the new file holds every part: readers must skip them
                meta = {META_ABSORBED: json.dumps(sorted(p.name for p in live + gone)).encode()}
            atomic_write_parquet(part, path, metadata=meta)
            self._forget(path)
            _remove_parts(path, live + gone)
            written.append(path)
        return written

    @staticmethod
    def _merge(old: pa.Table, new: pa.Table, spec: DatasetSpec, path: Path) -> pa.Table:
        old = validate_table(old, spec, str(path))
        return Catalog._union([old, new], spec, path)

    @staticmethod
    def _union(tables: list[pa.Table], spec: DatasetSpec, path: Path) -> pa.Table:
        """Rows of ``tables`` (each cast to the spec) sorted by the key (stable), identical
        rows deduped (the first kept; a missing nullable value filled from the other),
        a differing row with the same key a :class:`CatalogError`; validated."""
        both = pa.concat_tables(tables)
        kv0 = both.column(spec.key)
        if kv0.null_count == 0 and both.num_rows > 1:
            k = kv0.to_numpy()
            if (k[1:] > k[:-1]).all():  # already in key order, no repeat
                return validate_table(both, spec, f"{path} (merged)")
        order = pc.sort_indices(both, sort_keys=[(spec.key, "ascending")])
        both = both.take(order)
        ts = both.column("ts_ns").to_numpy()
        kv = both.column(spec.key).to_numpy()
        dup = np.flatnonzero(np.diff(kv) == 0)
        if dup.size:
            first, second = pa.array(dup), pa.array(dup + 1)
            for idx, name in enumerate(both.column_names):
                col = both.column(name)
                a, b = col.take(first), col.take(second)
                if pa.types.is_floating(col.type):  # NaN counts as missing
                    a = pc.if_else(pc.is_nan(a), pa.scalar(None, col.type), a)
                    b = pc.if_else(pc.is_nan(b), pa.scalar(None, col.type), b)
                equal = pc.fill_null(pc.equal(a, b), False)
                both_missing = pc.and_(pc.is_null(a), pc.is_null(b))
                same = pc.or_(equal, both_missing)
                if name not in spec.not_null:
                    # a missing value is unknown, not different: keep the known one
                    same = pc.or_(same, pc.or_(pc.is_null(a), pc.is_null(b)))
                    merged = pc.coalesce(a, b)
                    values = col.combine_chunks()
                    mask = np.zeros(len(ts), dtype=bool)
                    mask[dup] = True
                    # place merged values at the first row of each duplicate pair
                    pos = np.zeros(len(ts), dtype=np.int64)
                    pos[dup] = np.arange(dup.size)
                    filler = merged.take(pa.array(pos))
                    both = both.set_column(
                        idx, both.schema.field(idx), pc.if_else(pa.array(mask), filler, values)
                    )
                if not pc.all(same).as_py():
                    k = int(dup[np.flatnonzero(~same.to_numpy(zero_copy_only=False))[0]])
                    vals = col.to_pylist()
                    what = (
                        f"ts_ns {fmt_ts(ts[k])}" if spec.key == "ts_ns" else f"{spec.key} {kv[k]}"
                    )
                    raise CatalogError(
                        f"{path}: {what} already stored with a different "
                        f"{name} ({vals[k]} vs {vals[k + 1]})"
                    )
            keep = np.ones(len(ts), dtype=bool)
            keep[dup + 1] = False
            both = both.filter(pa.array(keep))
        return validate_table(both, spec, f"{path} (merged)")

    def read(
        self,
        venue: str,
        dataset: str,
        symbol: str,
        start_ns: int | None = None,
        end_ns: int | None = None,
        columns: list[str] | None = None,
    ) -> pa.Table:
        """Rows of ``symbol`` with ``start_ns <= ts_ns < end_ns``, validated file by file
        and across file boundaries. ``columns`` reads (and validates) only those columns
        besides ``ts_ns`` and the dataset's key. An unknown symbol is a :class:`CatalogError`."""
        spec = dataset_spec(dataset)
        if columns is not None:
            unknown = [c for c in columns if c not in spec.schema.names]
            if unknown:
                raise CatalogError(f"dataset '{dataset}' has no column(s) {', '.join(unknown)}")
            # ts_ns and the natural key are always read: ordering is validated on them
            keep = list(dict.fromkeys(["ts_ns", spec.key, *columns]))
            spec = DatasetSpec(
                spec.name,
                pa.schema([spec.schema.field(c) for c in keep]),
                tuple(c for c in spec.not_null if c in keep),
                spec.partition,
                spec.key,
            )
        files = self.partition_files(venue, dataset, symbol)
        if not files:
            known = self.symbols(venue, dataset)
            hint = f"known: {', '.join(known[:20])}" if known else "dataset is empty"
            raise CatalogError(f"{self.root / venue / dataset}: unknown symbol '{symbol}' ({hint})")
        tables = []
        prev_last: tuple[int, Path] | None = None
        for path, live in files:
            lo, hi = _partition_bounds(path.stem)
            if (start_ns is not None and hi <= start_ns) or (end_ns is not None and lo >= end_ns):
                continue
            t = self._read_partition(path, live, spec)
            if t.num_rows:
                ts = t.column("ts_ns").to_numpy()
                if ts[0] < lo or ts[-1] >= hi:
                    raise CatalogError(f"{path}: rows outside the partition's period {path.stem}")
                if prev_last is not None and ts[0] <= prev_last[0]:
                    raise CatalogError(
                        f"{path}: row 1: ts_ns {fmt_ts(ts[0])} is not after the last row of "
                        f"{prev_last[1].name}"
                    )
                prev_last = (int(ts[-1]), path)
            tables.append(t)
        table = pa.concat_tables(tables) if tables else spec.schema.empty_table()
        if start_ns is not None or end_ns is not None:
            ts = table.column("ts_ns")
            mask = pa.array(np.ones(table.num_rows, dtype=bool))
            if start_ns is not None:
                mask = pc.and_(mask, pc.greater_equal(ts, start_ns))
            if end_ns is not None:
                mask = pc.and_(mask, pc.less(ts, end_ns))
            table = table.filter(mask)
        return table

    # -- append-only parts -------------------------------------------------------------
    @staticmethod
    def _read_file(path: Path, spec: DatasetSpec) -> pa.Table:
        """One stored file, the spec's columns, validated."""
        try:
            pf = pq.ParquetFile(path)
            names = set(pf.schema_arrow.names)
            raw = pf.read(columns=[c for c in spec.schema.names if c in names])
        except (OSError, pa.ArrowInvalid) as exc:
            raise CatalogError(f"{path}: unreadable Parquet ({exc})") from None
        return validate_table(raw, spec, str(path))

    def _read_partition(self, daily: Path, live: list[Path], spec: DatasetSpec) -> pa.Table:
        """The partition file (if any) and its live parts as one validated table, in key
        order (see :meth:`_union`)."""
        tables = [self._read_file(daily, spec)] if daily.exists() else []
        tables += [self._read_file(p, spec) for p in live]
        if not tables:
            return spec.schema.empty_table()
        if len(tables) == 1:
            return tables[0]
        return self._union(tables, spec, daily)

    def _forget(self, daily: Path) -> None:
        self._states.pop(daily, None)

    def _state(self, daily: Path, spec: DatasetSpec) -> _PartitionState:
        """Key/ts ranges of the partition's stored files (daily + live parts), cached
        while neither the daily file nor the parts directory changes."""
        states = self._states
        stamp = _stamp(daily)
        st = states.get(daily)
        if st is None or st.stamp != stamp:
            live, _ = partition_parts(daily)
            paths = ([daily] if daily.exists() else []) + live
            ranges = [r for r in (_file_range(p, spec) for p in paths) if r is not None]
            st = _PartitionState(stamp, ranges)
            states[daily] = st
        return st

    def append(self, venue: str, dataset: str, symbol: str, table: pa.Table) -> list[Path]:
        """Validate ``table`` and add it to the symbol's partitions as new immutable part
        files (one per partition touched, atomic; the first rows of an empty partition
        become its partition file). Returns the files written.

        Same contract as :meth:`write` — rows whose key is stored already must be
        identical (they are dropped), a differing one is a :class:`CatalogError` and
        nothing is written to that partition — at a cost independent of how much the
        partition holds (see the module docstring). :meth:`compact` folds parts into the
        partition file."""
        spec = dataset_spec(dataset)
        table = validate_table(table, spec, f"{venue}/{dataset}/{symbol} (input)")
        if table.num_rows == 0:
            return []
        written = []
        for s, e, key in _partition_runs(table.column("ts_ns").to_numpy(), spec.partition):
            daily = self.root / venue / dataset / symbol / f"{key}.parquet"
            path = self._append_partition(daily, table.slice(s, e - s), spec)
            if path is not None:
                written.append(path)
        return written

    def _append_partition(self, daily: Path, new: pa.Table, spec: DatasetSpec) -> Path | None:
        st = self._state(daily, spec)
        if st.files:
            key = new.column(spec.key).to_numpy()
            top = max(f.max_key for f in st.files)
            n_late = int(np.searchsorted(key, top, side="right"))  # keys <= stored maximum
            fresh = new.slice(n_late)
            if fresh.num_rows:
                top_ts = max(f.max_ts for f in st.files)
                ts0 = int(fresh.column("ts_ns")[0].as_py())
                if ts0 < top_ts:
                    raise CatalogError(
                        f"{daily}: {spec.key} {key[n_late]} has ts_ns {fmt_ts(ts0)}, before "
                        f"the stored {spec.key} {top} ({fmt_ts(top_ts)}); ts_ns must not decrease"
                    )
            if n_late:
                late = self._late_rows(daily, st, new.slice(0, n_late), spec)
                new = pa.concat_tables([late, fresh]) if late.num_rows else fresh
            if new.num_rows == 0:
                return None
        ts = new.column("ts_ns").to_numpy()
        kv = new.column(spec.key).to_numpy()
        meta = None
        if not st.files and not parts_dir(daily).exists() and not daily.exists():
            path = daily  # an empty partition: its first rows are its partition file
            meta = {META_ENCODING: b"part"}
        else:
            d = parts_dir(daily)
            while True:
                n = next(_part_counter)
                path = d / f"{time.time_ns():019d}-{os.getpid()}-{n}.parquet"
                if not path.exists():
                    break
        made_dir = not path.parent.exists()
        opts = _part_options(spec.schema, spec.key)
        out = new.cast(part_schema(spec, new)).replace_schema_metadata(meta)  # relabels only
        try:
            atomic_write(path, lambda tmp: pq.write_table(out, tmp, **opts))
        except BaseException:
            if made_dir:
                with contextlib.suppress(OSError):
                    path.parent.rmdir()
            raise
        st.files.append(
            _FileRange(path, new.num_rows, int(kv[0]), int(kv[-1]), int(ts[0]), int(ts[-1]))
        )
        st.stamp = _stamp(daily)
        return path

    def _late_rows(
        self, daily: Path, st: _PartitionState, late: pa.Table, spec: DatasetSpec
    ) -> pa.Table:
        """The rows of ``late`` (keys at or below the stored maximum) not stored yet, after
        checking them against the stored files whose key range covers them (conflict and
        ``ts_ns`` order) and against the ``ts_ns`` range of the others."""
        k = late.column(spec.key).to_numpy()
        lo, hi = int(k[0]), int(k[-1])
        near = [f for f in st.files if f.max_key >= lo and f.min_key <= hi]
        below = [f.max_ts for f in st.files if f.max_key < lo]
        above = [f.min_ts for f in st.files if f.min_key > hi]
        stored = [self._read_file(f.path, spec) for f in near]
        self._union([*stored, late], spec, daily)  # conflicts and ts order among them
        if stored:
            have = np.concatenate([t.column(spec.key).to_numpy() for t in stored])
            late = late.filter(pa.array(~np.isin(k, have)))
        if late.num_rows:
            ts = late.column("ts_ns").to_numpy()
            if below and ts[0] < max(below):
                raise CatalogError(
                    f"{daily}: {spec.key} {late.column(spec.key)[0]} has ts_ns {fmt_ts(ts[0])}, "
                    f"before a stored row with a lower {spec.key}; ts_ns must not decrease"
                )
            if above and ts[-1] > min(above):
                raise CatalogError(
                    f"{daily}: {spec.key} {late.column(spec.key)[-1]} has ts_ns "
                    f"{fmt_ts(ts[-1])}, after a stored row with a higher {spec.key}; ts_ns "
                    "must not decrease"
                )
        return late

    def pending_partitions(self, venue: str, dataset: str, symbol: str) -> list[Path]:
        """Partition files of one symbol that have live parts (rows outside the partition
        file) — what :meth:`compact` would fold in."""
        return [daily for daily, live in self.partition_files(venue, dataset, symbol) if live]

    def compact(
        self, venue: str, dataset: str, symbol: str, partition: str | None = None
    ) -> list[Path]:
        """Fold the live parts of one symbol's partitions (``partition``: only that one,
        ``YYYY-MM-DD`` / ``YYYY-MM``) into their partition files, re-encode a partition
        file written by an append, and delete absorbed parts. Crash-safe at every step
        (module docstring). Returns the partition files rewritten."""
        spec = dataset_spec(dataset)
        done = []
        for daily, _ in self.partition_files(venue, dataset, symbol):
            if (partition is None or daily.stem == partition) and self._compact_partition(
                daily, spec
            ):
                done.append(daily)
        return done

    def _compact_partition(self, daily: Path, spec: DatasetSpec) -> bool:
        live, gone = partition_parts(daily)
        encoded_as_part = False
        if daily.exists() and not live:
            try:
                md = pq.read_schema(daily).metadata or {}
            except (OSError, pa.ArrowInvalid) as exc:
                raise CatalogError(f"{daily}: unreadable Parquet ({exc})") from None
            encoded_as_part = md.get(META_ENCODING) == b"part"
        if not live and not encoded_as_part:
            _remove_parts(daily, gone)
            return False
        _step("read", daily)
        ranges = [
            r
            for r in (_file_range(p, spec) for p in ([daily] if daily.exists() else []) + live)
            if r is not None
        ]
        ranges.sort(key=lambda r: (r.min_key, r.max_key))
        clusters: list[list[_FileRange]] = []
        for r in ranges:  # files whose key ranges overlap are merged in memory together
            if clusters and r.min_key <= max(c.max_key for c in clusters[-1]):
                clusters[-1].append(r)
            else:
                clusters.append([r])
        meta = {META_ABSORBED: json.dumps(sorted(p.name for p in live + gone)).encode()}
        schema = spec.schema.with_metadata(meta)
        dict_cols = _dictionary_columns(spec.schema)

        def write(tmp: str) -> None:
            buf: list[pa.Table] = []
            n_buf = 0
            last: tuple[int, int] | None = None  # (key, ts) of the last row written
            with pq.ParquetWriter(tmp, schema, compression="zstd", use_dictionary=dict_cols) as w:
                for cl in clusters:
                    if len(cl) == 1:
                        pf = pq.ParquetFile(cl[0].path)
                        cols = [c for c in spec.schema.names if c in pf.schema_arrow.names]
                        pieces = (
                            validate_table(pf.read_row_group(g, columns=cols), spec,
                                           f"{cl[0].path} (row group {g + 1})")
                            for g in range(pf.num_row_groups)
                        )  # fmt: skip
                    else:
                        pieces = iter(
                            [self._union([self._read_file(f.path, spec) for f in cl], spec, daily)]
                        )
                    for t in pieces:
                        if not t.num_rows:
                            continue
                        k0, t0 = t.column(spec.key)[0].as_py(), t.column("ts_ns")[0].as_py()
                        if last is not None and (k0 <= last[0] or t0 < last[1]):
                            raise CatalogError(
                                f"{daily}: {spec.key} {k0} (ts_ns {fmt_ts(t0)}) does not follow "
                                f"{spec.key} {last[0]} ({fmt_ts(last[1])}) of the previous file"
                            )
                        last = (t.column(spec.key)[-1].as_py(), t.column("ts_ns")[-1].as_py())
                        buf.append(t.cast(schema))
                        n_buf += t.num_rows
                        if n_buf >= _ROW_GROUP:
                            w.write_table(pa.concat_tables(buf), row_group_size=_ROW_GROUP)
                            buf, n_buf = [], 0
                if buf:
                    w.write_table(pa.concat_tables(buf), row_group_size=_ROW_GROUP)
            _step("written", daily)

        atomic_write(daily, write)
        self._forget(daily)
        _step("renamed", daily)
        _remove_parts(daily, live + gone)
        return True


_ROW_GROUP = 1 << 20  # rows per row group of a compacted file (pyarrow's default)


def _remove_parts(daily: Path, parts: list[Path]) -> None:
    """Delete ``parts`` (absorbed by ``daily``) and the parts directory once empty."""
    for p in parts:
        p.unlink(missing_ok=True)
        _step("removed", daily)
    d = parts_dir(daily)
    if d.is_dir():
        with contextlib.suppress(OSError):
            d.rmdir()  # fails while other files (a running write's temp file) are there
