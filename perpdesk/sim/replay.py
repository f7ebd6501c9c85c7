"""Replay: a k-way merge of catalog datasets in event-time order, streamed in chunks.

Each :class:`StreamSpec` is one (venue, dataset, symbol) of the catalog. Its rows are read
partition by partition with ``pyarrow.parquet.ParquetFile.iter_batches`` (so memory holds
one batch per stream, not years of ticks), validated batch by batch, and merged with the
other streams in NumPy, one chunk at a time:

1. every stream keeps a buffer of its next rows; the chunk **horizon** is the smallest
   "last buffered event time" over the streams that still have rows on disk;
2. every buffered row with ``event_ts_ns < horizon`` goes into the chunk (so no event of a
   later chunk can sort before an event of this one, and equal times never straddle two
   chunks);
3. the chunk's streams are concatenated in tie-break rank order and sorted by time with a
   stable sort (timsort: the inputs are sorted runs, so this is a merge).

**Event time and point-in-time.** A bar (``*_bars_<tf>``, stamped with its open) becomes
an event at its **close**, ``ts_ns + interval``; every other dataset at its ``ts_ns``.
``start_ns <= event_ts_ns < end_ns`` selects the events.

**Tie-break (deterministic).** Events are ordered by ``(event_ts_ns, kind priority, venue,
symbol, dataset, row)``. Kind priority at one instant: bars (their values describe the
interval that just ended) → mark prices → book tops → trades → open interest → funding
settlements. Funding comes last so that a decision made on data stamped at ``t`` and
executed at ``t`` holds the position at the settlement of ``t`` (the vectorised carry's
convention: entries at ``t`` earn it, exits at ``t`` do not), while no handler at ``t``
has seen the rate settled at ``t``. Engine-side events (timers, order arrivals) at ``t``
run before all market data at ``t`` (priority 0).

Objects are built only on demand: a :class:`Chunk` holds NumPy columns; the engine turns
the rows it dispatches into domain events with :func:`make_event`.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
import multiprocessing
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from perpdesk.data.catalog import (
    NS_PER_S,
    Catalog,
    DatasetSpec,
    _partition_bounds,
    bar_interval_s,
    dataset_spec,
    validate_table,
)
from perpdesk.domain import (
    Bar,
    BookTop,
    FundingSettlement,
    MarkPrice,
    OpenInterest,
    Trade,
    spot_symbol,
)
from perpdesk.errors import CatalogError


def fast_constructor(cls: type) -> Callable[..., Any]:
    """A constructor of the frozen, slotted dataclass ``cls`` taking every field
    positionally, that fills the slots directly and then runs ``__post_init__`` (if any):
    the same object as ``cls(*fields)``, about twice as fast (a frozen dataclass's
    ``__init__`` goes through ``object.__setattr__`` per field). Returns ``cls`` itself
    for any other kind of class (defaults are not applied: pass every field)."""
    try:
        fs = dataclasses.fields(cls)
    except TypeError:
        return cls
    params = cls.__dataclass_params__  # type: ignore[attr-defined]
    names = tuple(f.name for f in fs)
    init = cls.__dict__.get("__init__")
    if (
        not params.frozen
        or not params.init
        or init is None
        or getattr(getattr(init, "__code__", None), "co_filename", "") != "<string>"
        or tuple(cls.__dict__.get("__slots__", ())) != names
        or any(not f.init for f in fs)
        or not names
    ):
        return cls
    ns: dict[str, Any] = {"_new": object.__new__, "_cls": cls}
    lines = [f"def make({', '.join(f'a{i}' for i in range(len(names)))}):", "    o = _new(_cls)"]
    for i, n in enumerate(names):
        ns[f"_s{i}"] = cls.__dict__[n].__set__
        lines.append(f"    _s{i}(o, a{i})")
    post = getattr(cls, "__post_init__", None)
    if post is not None:
        ns["_post"] = post
        lines.append("    _post(o)")
    lines.append("    return o")
    exec("\n".join(lines), ns)
    return ns["make"]


_new_bar = fast_constructor(Bar)

# kind names and their tie-break priority (0 is reserved for engine events)
BAR, MARK, BOOK, TRADE, OI, FUNDING = "bar", "mark", "book", "trade", "open_interest", "funding"
KIND_PRIORITY = {BAR: 1, MARK: 2, BOOK: 3, TRADE: 4, OI: 5, FUNDING: 6}

_COLUMNS = {
    "bar": [
        "ts_ns",
        "open",
        "high",
        "low",
        "close",
        "volume_base",
        "volume_quote",
        "taker_buy_volume_quote",
    ],
    "mark_bar": ["ts_ns", "close"],
    "funding": ["ts_ns", "funding_rate", "funding_interval_h", "mark_price"],
    "open_interest": ["ts_ns", "open_interest_base", "open_interest_usd"],
    "trades": ["ts_ns", "trade_id", "price", "qty_base", "is_buyer_maker"],
    "agg_trades": ["ts_ns", "agg_trade_id", "price", "qty_base", "is_buyer_maker"],
    "book_ticker": ["ts_ns", "update_id", "bid_px", "bid_qty", "ask_px", "ask_qty"],
    "mark_price": ["ts_ns", "mark_px", "index_px", "predicted_funding_rate", "next_funding_ts_ns"],
}


@dataclass(frozen=True, slots=True)
class StreamSpec:
    """One catalog dataset of one symbol to replay.

    ``dataset`` is a catalog dataset name: ``perp_bars_<tf>``, ``spot_bars_<tf>`` (events
    are :class:`Bar`), ``mark_bars_<tf>`` and ``mark_price`` (:class:`MarkPrice`),
    ``funding`` (:class:`FundingSettlement`), ``open_interest``, ``trades`` /
    ``agg_trades`` (:class:`Trade`), ``book_ticker`` (:class:`BookTop`).
    """

    venue: str
    dataset: str
    symbol: str

    @property
    def engine_symbol(self) -> str:
        """The symbol events carry: spot datasets use ``spot_symbol(symbol)``."""
        return spot_symbol(self.symbol) if self.dataset.startswith("spot_") else self.symbol

    @property
    def layout(self) -> str:
        """Column layout key (``bar``, ``mark_bar`` or the dataset name)."""
        if self.dataset.startswith(("perp_bars_", "spot_bars_")):
            return "bar"
        if self.dataset.startswith("mark_bars_"):
            return "mark_bar"
        if self.dataset in _COLUMNS:
            return self.dataset
        raise CatalogError(
            f"replay: dataset '{self.dataset}' is not replayable (perp/spot/mark bars, "
            "funding, open_interest, trades, agg_trades, book_ticker, mark_price)"
        )

    @property
    def kind(self) -> str:
        """Event kind: ``bar``, ``mark``, ``book``, ``trade``, ``open_interest``, ``funding``."""
        return {
            "bar": BAR,
            "mark_bar": MARK,
            "mark_price": MARK,
            "funding": FUNDING,
            "open_interest": OI,
            "trades": TRADE,
            "agg_trades": TRADE,
            "book_ticker": BOOK,
        }[self.layout]

    @property
    def offset_ns(self) -> int:
        """Event time minus row ``ts_ns``: the bar interval for bars, else 0."""
        if self.layout in ("bar", "mark_bar"):
            return bar_interval_s(self.dataset) * NS_PER_S
        return 0

    @property
    def interval_s(self) -> int:
        """Bar length in seconds (0 for other datasets)."""
        return self.offset_ns // NS_PER_S


def catalog_streams(
    catalog: Catalog | str | os.PathLike[str],
    venue: str,
    datasets: Sequence[str],
    symbols: Sequence[str] | None = None,
) -> list[StreamSpec]:
    """Every (dataset, symbol) of ``venue`` present in the catalog, optionally only
    ``symbols``."""
    cat = catalog if isinstance(catalog, Catalog) else Catalog(catalog)
    out = []
    for ds in datasets:
        for sym in cat.symbols(venue, ds):
            if symbols is None or sym in symbols:
                out.append(StreamSpec(venue, ds, sym))
    return out


@dataclass(slots=True)
class Chunk:
    """Merged events with ``event_ts_ns < horizon_ns`` not in an earlier chunk.

    ``ts_ns[i]``, ``stream[i]``, ``row[i]``: the i-th event's time, its stream index (into
    :attr:`Replay.streams`) and its row in ``columns[stream[i]]`` (NumPy arrays by column
    name, rows of that stream in this chunk, ``None`` when the stream has none).
    """

    ts_ns: np.ndarray
    stream: np.ndarray
    row: np.ndarray
    columns: list[dict[str, np.ndarray] | None]
    horizon_ns: float
    inverse: np.ndarray | None = None
    offsets: dict[int, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.ts_ns.size)

    def positions(self, stream: int) -> np.ndarray:
        """Merged positions of the stream's rows (ascending; empty when it has none)."""
        cols = self.columns[stream]
        if cols is None:
            return np.empty(0, dtype=np.int64)
        k = cols["_ev"].size
        if self.inverse is None:  # a single-stream chunk
            return np.arange(k, dtype=np.int64)
        off = self.offsets[stream]
        return self.inverse[off : off + k]

    def last_before(self, stream: int, pos: int) -> tuple[int, int]:
        """``(row, merged position)`` of the stream's last event before merged position
        ``pos``, or ``(-1, -1)`` when it has none in this chunk."""
        p = self.positions(stream)
        k = int(np.searchsorted(p, pos)) - 1
        return (k, int(p[k])) if k >= 0 else (-1, -1)


_GROUP_BYTES_TOTAL = 256 << 20
"""On-disk bytes of small partition files a replay reads ahead, over all streams."""
_GROUP_BYTES_MIN, _GROUP_BYTES_MAX = 128 << 10, 4 << 20
_PREFETCH_GROUPS = 2  # groups read ahead per stream
_FIRST_GROUP_BYTES = 16 << 10


def _read_whole(path: Path, cols: list[str]) -> pa.Table:
    """One small partition file, the replayed columns (pyarrow; exact error messages)."""
    try:
        with pa.OSFile(str(path)) as f:
            pf = pq.ParquetFile(f)
            names = set(pf.schema_arrow.names)
            missing = [c for c in cols if c not in names]
            if missing:
                raise CatalogError(f"{path}: missing column(s) {', '.join(missing)}")
            return pf.read(columns=cols, use_threads=False)
    except (OSError, pa.ArrowInvalid) as exc:
        raise CatalogError(f"{path}: unreadable Parquet ({exc})") from None


@functools.lru_cache(maxsize=65_536)
def _bounds(stem: str) -> tuple[int, int]:
    """:func:`~perpdesk.data.catalog._partition_bounds`, cached (streams share month names)."""
    return _partition_bounds(stem)


def _read_duckdb(paths: list[str], cols: list[str]) -> tuple[pa.Table, list[int]] | None:
    """The files concatenated in order and their row counts, by DuckDB's Parquet reader
    (one query for many small files: ~4× faster per file than one pyarrow read each), or
    ``None`` when it fails or the rows cannot be told apart by file (an empty file) — then
    pyarrow reads the files one by one and names the problem."""
    try:
        import duckdb

        sel = ", ".join('"' + c.replace('"', '""') + '"' for c in cols)
        q = (
            f"SELECT {sel}, file_row_number AS __row, "
            "CASE WHEN file_row_number = 0 THEN filename END AS __file "
            "FROM read_parquet($files, file_row_number = true, filename = true)"
        )
        # a connection per call, closed at once: no DuckDB threads or state outlive it (a
        # process forked later, e.g. by a process pool, inherits nothing half-locked)
        with duckdb.connect(config={"threads": 1}) as con:
            t = con.sql(q, params={"files": paths})
            t = t.to_arrow_table() if hasattr(t, "to_arrow_table") else t.arrow()
    except Exception:  # any failure: the exact (pyarrow) path reads and reports it
        return None
    if not isinstance(t, pa.Table):
        return None
    starts = np.flatnonzero(t.column("__row").to_numpy() == 0)
    if starts.size != len(paths) or t.column("__file").drop_null().to_pylist() != paths:
        return None  # an empty file, or rows not in file order
    counts = np.diff(np.append(starts, t.num_rows)).tolist()
    return t.drop_columns(["__row", "__file"]), counts


Job = tuple[list[str], list[str], str]  # (paths of one group, columns, dataset)


def _replay_spec(dataset: str, cols: list[str]) -> DatasetSpec:
    """The catalog spec of ``dataset`` restricted to the replayed columns."""
    ds = dataset_spec(dataset)
    return DatasetSpec(
        ds.name,
        pa.schema([ds.schema.field(c) for c in cols]),
        tuple(c for c in ds.not_null if c in cols),
        ds.partition,
        ds.key,
    )


_DUCKDB_MIN_FILES = 32
"""Fewest files one DuckDB query reads: opening a connection costs ~10-30 ms, about what
pyarrow needs for 10-30 small files one by one (measured on 15m bars, 2026-11-23), so
smaller rounds are left to the streams' own pyarrow reads."""


def _read_round(jobs: Sequence[Job]) -> list[tuple[pa.Table, list[int]] | None]:
    """Groups of many streams: one DuckDB query per column set; per group its rows,
    validated (:func:`validate_table` over the group), and the per-file row counts, or
    ``None`` (the stream reads that group itself and reports any problem exactly)."""
    out: list[tuple[pa.Table, list[int]] | None] = [None] * len(jobs)
    by_cols: dict[tuple[str, ...], list[int]] = {}
    for j, (_, cols, _) in enumerate(jobs):
        by_cols.setdefault(tuple(cols), []).append(j)
    for cols, js in by_cols.items():
        paths = [p for j in js for p in jobs[j][0]]
        if len(paths) < _DUCKDB_MIN_FILES:
            continue  # a few files: pyarrow reads them faster than a DuckDB connection opens
        got = _read_duckdb(paths, list(cols))
        if got is None:
            continue
        t, counts = got
        k = row = 0
        for j in js:
            paths, cols_j, dataset = jobs[j]
            c = counts[k : k + len(paths)]
            n = sum(c)
            try:
                part = validate_table(t.slice(row, n), _replay_spec(dataset, cols_j), "")
            except CatalogError:
                part = None  # the stream's own read reports it
            out[j] = None if part is None else (part, c)
            k += len(c)
            row += n
    return out


def _read_round_ipc(jobs: Sequence[Job]) -> list[tuple[bytes, list[int]] | None]:
    """:func:`_read_round` in a reader process: each group as Arrow IPC bytes."""
    out: list[tuple[bytes, list[int]] | None] = []
    for got in _read_round(jobs):
        if got is None:
            out.append(None)
            continue
        t, counts = got
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, t.schema) as w:
            w.write_table(t)
        out.append((sink.getvalue().to_pybytes(), counts))
    return out


class _Rounds:
    """Reads the k-th small-file group of every stream together (round k): one query per
    column set, in a reader process (``pool``) up to two rounds ahead of use, or in the
    caller's thread (always round 0: the first groups are small, and the processes start
    meanwhile)."""

    def __init__(self, readers: Sequence[_StreamReader], pool: ProcessPoolExecutor | None):
        self.readers = readers
        self.pool = pool
        self.n = max((len(r.units) for r in readers), default=0)
        self.jobs: dict[int, list[int]] = {}
        self.futs: dict[int, Future[list[tuple[bytes, list[int]] | None]]] = {}
        self.done: dict[int, dict[int, Any]] = {}

    def _job(self, k: int, i: int) -> Job:
        r = self.readers[i]
        return [str(f[0]) for f in r.units[k][1]], r.cols, r.spec.dataset

    def submit(self, k: int) -> None:
        if k == 0 or k >= self.n or k in self.jobs or self.pool is None:
            return  # round 0 is read in the caller's thread while the processes start
        idx = [
            i for i, r in enumerate(self.readers) if k < len(r.units) and r.units[k][0] == "group"
        ]
        self.jobs[k] = idx
        if idx:
            self.futs[k] = self.pool.submit(_read_round_ipc, [self._job(k, i) for i in idx])

    def take(self, k: int, i: int) -> tuple[pa.Table, list[int]] | None:
        """Round ``k``'s group of stream ``i`` (``None``: read it yourself)."""
        res = self.done.get(k)
        if res is None:
            self.submit(k)
            self.submit(k + 1)  # rounds ahead
            self.submit(k + 2)
            if k not in self.jobs:
                idx = [
                    j
                    for j, r in enumerate(self.readers)
                    if k < len(r.units) and r.units[k][0] == "group"
                ]
                got: list[Any] = _read_round([self._job(k, j) for j in idx])
            else:
                idx = self.jobs[k]
                try:
                    got = self.futs.pop(k).result() if idx else []
                except (BrokenProcessPool, OSError):
                    got = [None] * len(idx)
            res = self.done[k] = dict(zip(idx, got, strict=True))
        item = res.pop(i, None)
        if not res:
            del self.done[k]
        if item is not None and isinstance(item[0], bytes):
            item = (pa.ipc.open_stream(item[0]).read_all(), item[1])
        return item


class _StreamReader:
    """Batches of one stream as dicts of NumPy columns, event time added as ``_ev``.

    Partition files smaller than the group size are read whole, several at a time (a
    *group*, up to ``group_bytes`` on disk), by the replay's reader threads ahead of use,
    and validated once per group (concatenated); a group that fails validation is checked
    again file by file, batch by batch, so the error names the file and rows exactly as
    the streaming path does. Larger files (ticks) are streamed with ``iter_batches`` in
    ``batch_rows`` batches, so memory stays flat.
    """

    def __init__(
        self,
        cat: Catalog,
        spec: StreamSpec,
        start_ns: int | None,
        end_ns: int | None,
        batch_rows: int,
        group_bytes: int = _GROUP_BYTES_MAX,
    ) -> None:
        self.spec = spec
        layout = spec.layout
        cols = _COLUMNS[layout]
        if layout == "mark_bar":
            cols = ["ts_ns", "close"]
        self.ds = _replay_spec(spec.dataset, cols)
        self.cols = cols
        self.off = spec.offset_ns
        self.start = start_ns
        self.end = end_ns
        self.batch_rows = batch_rows
        self.files = cat.partitions(spec.venue, spec.dataset, spec.symbol)
        if not self.files:
            raise CatalogError(
                f"{cat.root / spec.venue / spec.dataset}: no partitions for '{spec.symbol}'"
            )
        pending = cat.pending_partitions(spec.venue, spec.dataset, spec.symbol)
        if pending:  # rows still in the collector's part files: replaying would skip them
            raise CatalogError(
                f"{pending[0]}: {len(pending)} partition(s) of {spec.venue}/{spec.dataset}/"
                f"{spec.symbol} hold uncompacted collector parts; run "
                f"`perpdesk data compact --catalog {cat.root}` first"
            )
        self._prev_ts: int | None = None
        self._prev_key: int | None = None
        # the plan: ("big", [path]) streamed, or ("group", [paths]) read whole
        self.units: list[tuple[str, list[tuple[Path, int, int]]]] = []
        cur: list[tuple[Path, int, int]] = []
        cur_bytes = 0
        for path in self.files:
            lo, hi = _bounds(path.stem)
            # partitions hold row ts_ns; events are row ts + offset
            if self.start is not None and hi + self.off <= self.start:
                continue
            if self.end is not None and lo + self.off >= self.end:
                break
            try:
                size = os.stat(path).st_size
            except OSError as exc:
                raise CatalogError(f"{path}: unreadable Parquet ({exc})") from None
            if size >= group_bytes:
                if cur:
                    self.units.append(("group", cur))
                    cur, cur_bytes = [], 0
                self.units.append(("big", [(path, lo, hi)]))
                continue
            # the first groups are small and grow geometrically: the merge needs every
            # stream's first group before its first chunk, so reading starts to overlap
            # with the replay early
            limit = min(group_bytes, _FIRST_GROUP_BYTES << len(self.units))
            if cur and cur_bytes + size > limit:
                self.units.append(("group", cur))
                cur, cur_bytes = [], 0
            cur.append((path, lo, hi))
            cur_bytes += size
        if cur:
            self.units.append(("group", cur))
        self.rounds: _Rounds | None = None  # set by the replay
        self.index = -1
        self._it = self._batches()

    def _take_group(
        self, k: int, files: list[tuple[Path, int, int]]
    ) -> tuple[pa.Table | None, list[pa.Table], bool]:
        """``(validated concatenation or None, per-file tables, validated)``."""
        got = self.rounds.take(k, self.index) if self.rounds is not None else None
        if got is None:  # pyarrow, file by file: reports the first problem exactly
            return None, [_read_whole(f[0], self.cols) for f in files], False
        t, counts = got
        offs = np.cumsum([0, *counts]).tolist()
        return t, [t.slice(offs[j], counts[j]) for j in range(len(counts))], True

    def _batches(self) -> Iterator[dict[str, np.ndarray]]:
        for k, (kind, files) in enumerate(self.units):
            if kind == "big":
                path, lo, hi = files[0]
                got = self._stream_file(path, lo, hi)
            else:
                got = self._group(files, *self._take_group(k, files))
            for out in got:
                if out is None:  # past end_ns
                    return
                yield out

    def _stream_file(self, path: Path, lo: int, hi: int) -> Iterator[dict[str, np.ndarray] | None]:
        try:
            pf = pq.ParquetFile(path)
            names = set(pf.schema_arrow.names)
            missing = [c for c in self.cols if c not in names]
            if missing:
                raise CatalogError(f"{path}: missing column(s) {', '.join(missing)}")
            batches = pf.iter_batches(batch_size=self.batch_rows, columns=self.cols)
            offset = 0
            for rb in batches:
                where = f"{path} (rows {offset + 1}..{offset + rb.num_rows})"
                offset += rb.num_rows
                yield from self._checked(pa.Table.from_batches([rb]), where, path, lo, hi)
        except (OSError, pa.ArrowInvalid) as exc:
            raise CatalogError(f"{path}: unreadable Parquet ({exc})") from None

    def _group(
        self,
        files: list[tuple[Path, int, int]],
        t: pa.Table | None,
        tables: list[pa.Table],
        validated: bool = False,
    ) -> Iterator[dict[str, np.ndarray] | None]:
        """One group of whole files: validated at once; on any problem file by file in
        ``batch_rows`` slices (the streaming path's checks and messages)."""
        if t is not None:
            pass
        elif len(tables) > 1:
            try:
                t = pa.concat_tables(tables)
            except pa.ArrowInvalid:
                t = None  # schemas differ: per file (validate_table casts each)
        elif tables:
            t = tables[0]
        if t is not None:
            t = self._validate_group(t, files, tables, validated)
        if t is None:  # the slow path finds and names the problem (or casts per file)
            for (path, lo, hi), tab in zip(files, tables, strict=True):
                n = tab.num_rows
                for a in range(0, n, self.batch_rows):
                    b = min(n, a + self.batch_rows)
                    where = f"{path} (rows {a + 1}..{b})"
                    yield from self._checked(tab.slice(a, b - a), where, path, lo, hi)
            return
        if t.num_rows:
            yield from self._emit(t, t.column("ts_ns").to_numpy())

    def _validate_group(
        self,
        t: pa.Table,
        files: list[tuple[Path, int, int]],
        tables: list[pa.Table],
        validated: bool = False,
    ) -> pa.Table | None:
        """The concatenated group validated (unless ``validated`` already) and inside its
        partitions, continuing the stream, or ``None``."""
        if not validated:
            try:
                t = validate_table(t, self.ds, f"{files[0][0]}")
            except CatalogError:
                return None
        if t.num_rows == 0:
            return t
        ts = t.column("ts_ns").to_numpy()
        rows = np.array([x.num_rows for x in tables], dtype=np.int64)
        ends = np.cumsum(rows)
        nz = rows > 0
        first = ts[(ends - rows)[nz]]
        last = ts[(ends - 1)[nz]]
        lo = np.array([f[1] for f in files], dtype=np.int64)[nz]
        hi = np.array([f[2] for f in files], dtype=np.int64)[nz]
        if np.any(first < lo) or np.any(last >= hi):
            return None
        f0 = int(ts[0])
        strict = self.ds.key == "ts_ns"
        if self._prev_ts is not None and (f0 < self._prev_ts or (strict and f0 == self._prev_ts)):
            return None
        if not strict:
            k0 = int(t.column(self.ds.key)[0].as_py())
            if self._prev_key is not None and k0 <= self._prev_key:
                return None
            self._prev_key = int(t.column(self.ds.key)[-1].as_py())
        self._prev_ts = int(ts[-1])
        return t

    def _checked(
        self, raw: pa.Table, where: str, path: Path, lo: int, hi: int
    ) -> Iterator[dict[str, np.ndarray] | None]:
        """One batch of one file: validated, inside its partition, continuing the stream."""
        t = validate_table(raw, self.ds, where)
        if t.num_rows == 0:
            return
        ts = t.column("ts_ns").to_numpy()
        if ts[0] < lo or ts[-1] >= hi:
            raise CatalogError(f"{where}: rows outside the partition {path.stem}")
        first = int(ts[0])
        strict = self.ds.key == "ts_ns"
        prev_ts = self._prev_ts
        if prev_ts is not None and (first < prev_ts or (strict and first == prev_ts)):
            raise CatalogError(f"{where}: row 1: ts_ns goes back in time")
        if not strict:
            k0 = int(t.column(self.ds.key)[0].as_py())
            if self._prev_key is not None and k0 <= self._prev_key:
                raise CatalogError(f"{where}: row 1: {self.ds.key} not increasing")
            self._prev_key = int(t.column(self.ds.key)[-1].as_py())
        self._prev_ts = int(ts[-1])
        yield from self._emit(t, ts)

    def _emit(self, t: pa.Table, ts: np.ndarray) -> Iterator[dict[str, np.ndarray] | None]:
        """The rows of validated ``t`` inside ``[start, end)`` as NumPy columns; ``None``
        once the rows reach ``end_ns``."""
        ev = ts + self.off if self.off else ts
        a, b = 0, ev.size
        if self.start is not None:
            a = int(np.searchsorted(ev, self.start, "left"))
        if self.end is not None:
            b = int(np.searchsorted(ev, self.end, "left"))
        if a >= b:
            if self.end is not None and ev[0] >= self.end:
                yield None
            return
        out = {}
        for c in self.cols:
            col = t.column(c)
            if col.null_count:
                col = col.fill_null(math.nan) if pa.types.is_floating(col.type) else col
            arr = col.to_numpy()
            out[c] = arr[a:b]
        out["_ev"] = ev[a:b]
        yield out
        if b < ev.size:
            yield None

    def next_batch(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)


def _concat(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k: np.concatenate([a[k], b[k]]) for k in a}


def _slice(d: dict[str, np.ndarray], a: int, b: int | None) -> dict[str, np.ndarray]:
    return {k: v[a:b] for k, v in d.items()}


class Replay:
    """Merged, chunked replay of ``streams`` from a catalog (see the module docstring).

    ``streams`` are re-ordered into tie-break rank order (kind priority, venue, symbol,
    dataset); :attr:`streams` holds that order, and ``Chunk.stream`` indexes it.
    ``chunk_rows`` bounds the rows held at a time: each stream reads batches of
    ``chunk_rows // len(streams)`` rows (memory ≈ chunk_rows × row width × 2) from large
    partition files; small files (bars, funding: under ``256 MB / (2 × streams)`` on disk,
    at least 128 KB, at most 4 MB) are read whole, a group of consecutive files at a time
    (with DuckDB's Parquet reader, pyarrow when it fails), and validated once per group.
    ``reader_processes`` > 0 reads those groups in that many spawned processes, two groups
    ahead per stream (at most ~256 MB of Parquet ahead), while the caller merges and
    replays: worth it for thousands of small files, and only from a script whose entry
    point is guarded by ``if __name__ == "__main__"`` (``multiprocessing`` spawn). The
    events do not depend on it (groups are consumed in file order).
    """

    def __init__(
        self,
        catalog: Catalog | str | os.PathLike[str],
        streams: Sequence[StreamSpec],
        start_ns: int | None = None,
        end_ns: int | None = None,
        *,
        chunk_rows: int = 1_000_000,
        reader_processes: int = 0,
    ) -> None:
        self.catalog = catalog if isinstance(catalog, Catalog) else Catalog(Path(catalog))
        if len(set(streams)) != len(streams):
            raise CatalogError("replay: a stream is listed twice")
        self.streams: list[StreamSpec] = sorted(
            streams, key=lambda s: (KIND_PRIORITY[s.kind], s.venue, s.symbol, s.dataset)
        )
        self.start_ns = start_ns
        self.end_ns = end_ns
        self.batch_rows = max(1, chunk_rows // max(1, len(streams)))
        self.reader_processes = max(0, int(reader_processes))
        self.priority = np.array([KIND_PRIORITY[s.kind] for s in self.streams], dtype=np.int8)

    def chunks(self) -> Iterator[Chunk]:
        """Merged chunks in time order."""
        group_bytes = min(
            _GROUP_BYTES_MAX,
            max(_GROUP_BYTES_MIN, _GROUP_BYTES_TOTAL // (_PREFETCH_GROUPS * len(self.streams))),
        )
        pool = None
        if self.reader_processes:
            pool = ProcessPoolExecutor(
                max_workers=self.reader_processes, mp_context=multiprocessing.get_context("spawn")
            )
        try:
            readers = [
                _StreamReader(
                    self.catalog, s, self.start_ns, self.end_ns, self.batch_rows, group_bytes
                )
                for s in self.streams
            ]
            rounds = _Rounds(readers, pool)
            for i, r in enumerate(readers):
                r.rounds, r.index = rounds, i
            rounds.submit(1)
            rounds.submit(2)
            yield from self._merged(readers)
        finally:
            if pool is not None:
                pool.shutdown(wait=False, cancel_futures=True)

    def _merged(self, readers: list[_StreamReader]) -> Iterator[Chunk]:
        n = len(readers)
        buf: list[dict[str, np.ndarray] | None] = [None] * n
        done = [False] * n
        while True:
            for i in range(n):
                # refill an empty buffer, and one whose rows all share one time (it would
                # hold the horizon at that time and stall the merge)
                while not done[i] and (
                    buf[i] is None
                    or buf[i]["_ev"].size == 0
                    or buf[i]["_ev"][0] == buf[i]["_ev"][-1]
                ):
                    b = readers[i].next_batch()
                    if b is None:
                        done[i] = True
                    elif buf[i] is None or buf[i]["_ev"].size == 0:
                        buf[i] = b
                    else:
                        buf[i] = _concat(buf[i], b)
            live = [i for i in range(n) if buf[i] is not None and buf[i]["_ev"].size]
            if not live:
                return
            limits = [int(buf[i]["_ev"][-1]) for i in live if not done[i]]
            horizon: float = min(limits) if limits else math.inf
            cuts = {}
            total = 0
            for i in live:
                ev = buf[i]["_ev"]
                k = ev.size if horizon == math.inf else int(np.searchsorted(ev, horizon, "left"))
                cuts[i] = k
                total += k
            if total == 0:
                # every buffered row sits at the horizon: extend the limiting streams
                for i in live:
                    if not done[i] and int(buf[i]["_ev"][-1]) == horizon:
                        b = readers[i].next_batch()
                        if b is None:
                            done[i] = True
                        else:
                            buf[i] = _concat(buf[i], b)
                continue
            yield self._merge(buf, cuts, horizon)
            for i, k in cuts.items():
                buf[i] = _slice(buf[i], k, None)

    def _merge(
        self, buf: list[dict[str, np.ndarray] | None], cuts: dict[int, int], horizon: float
    ) -> Chunk:
        columns: list[dict[str, np.ndarray] | None] = [None] * len(self.streams)
        ts_parts, sid_parts, row_parts = [], [], []
        offsets = {}
        total = 0
        for i in sorted(cuts):  # stream index = rank order
            k = cuts[i]
            if k == 0:
                continue
            cols = _slice(buf[i], 0, k)
            columns[i] = cols
            offsets[i] = total
            total += k
            ts_parts.append(cols["_ev"])
            sid_parts.append(np.full(k, i, dtype=np.int32))
            row_parts.append(np.arange(k, dtype=np.int64))
        if len(ts_parts) == 1:
            return Chunk(ts_parts[0], sid_parts[0], row_parts[0], columns, horizon)
        ts = np.concatenate(ts_parts)
        # a stable sort of concatenated sorted runs (timsort merges them): ties keep the
        # concatenation order, i.e. stream rank, then row order
        order = np.argsort(ts, kind="stable")
        inverse = np.empty_like(order)
        inverse[order] = np.arange(order.size, dtype=order.dtype)
        return Chunk(
            ts[order],
            np.concatenate(sid_parts)[order],
            np.concatenate(row_parts)[order],
            columns,
            horizon,
            inverse,
            offsets,
        )

    def events(self) -> Iterator[object]:
        """Every event as a typed domain object, in replay order (the slow, simple path:
        for inspection and tests; the engine builds objects only for what it dispatches)."""
        makers = [event_maker(s) for s in self.streams]
        for ch in self.chunks():
            lists: dict[int, dict[str, list]] = {}
            for s, r in zip(ch.stream.tolist(), ch.row.tolist(), strict=True):
                cols = lists.get(s)
                if cols is None:
                    cols = {k: v.tolist() for k, v in ch.columns[s].items()}
                    lists[s] = cols
                yield makers[s](cols, r)


def events_maker(spec: StreamSpec) -> Callable[[dict[str, np.ndarray]], list]:
    """A function ``columns -> [event, …]`` building the events of every row of one
    stream's chunk columns at once (``map`` over ``.tolist()`` columns: about twice as fast
    as one call per row)."""
    venue, sym = spec.venue, spec.engine_symbol
    layout = spec.layout

    def const(x: object, n: int) -> Iterator[object]:
        return itertools.repeat(x, n)

    if layout == "trades" or layout == "agg_trades":

        def trades(c: dict[str, np.ndarray]) -> list:
            n = c["_ev"].size
            return list(
                map(
                    Trade,
                    const(venue, n),
                    const(sym, n),
                    c["ts_ns"].tolist(),
                    c["price"].tolist(),
                    c["qty_base"].tolist(),
                    c["is_buyer_maker"].tolist(),
                )
            )

        return trades
    if layout == "bar":
        iv = spec.interval_s

        def bars(c: dict[str, np.ndarray]) -> list:
            n = c["_ev"].size
            return list(
                map(
                    _new_bar,
                    const(venue, n),
                    const(sym, n),
                    c["ts_ns"].tolist(),
                    const(iv, n),
                    *(c[k].tolist() for k in _COLUMNS["bar"][1:]),
                )
            )

        return bars
    if layout == "book_ticker":

        def books(c: dict[str, np.ndarray]) -> list:
            n = c["_ev"].size
            return list(
                map(
                    BookTop,
                    const(venue, n),
                    const(sym, n),
                    c["ts_ns"].tolist(),
                    c["bid_px"].tolist(),
                    c["bid_qty"].tolist(),
                    c["ask_px"].tolist(),
                    c["ask_qty"].tolist(),
                )
            )

        return books
    if layout == "funding":

        def fundings(c: dict[str, np.ndarray]) -> list:
            n = c["_ev"].size
            return list(
                map(
                    FundingSettlement,
                    const(venue, n),
                    const(sym, n),
                    c["ts_ns"].tolist(),
                    c["funding_rate"].tolist(),
                    c["funding_interval_h"].tolist(),
                    c["mark_price"].tolist(),
                )
            )

        return fundings
    if layout == "mark_bar":

        def mark_bars(c: dict[str, np.ndarray]) -> list:
            n = c["_ev"].size
            return list(
                map(
                    MarkPrice,
                    const(venue, n),
                    const(sym, n),
                    c["_ev"].tolist(),
                    c["close"].tolist(),
                    const(math.nan, n),
                    const(math.nan, n),
                    const(0, n),
                )
            )

        return mark_bars
    one = event_maker(spec)

    def generic(c: dict[str, np.ndarray]) -> list:
        cols = {k: v.tolist() for k, v in c.items()}
        return [one(cols, r) for r in range(c["_ev"].size)]

    return generic


def event_maker(spec: StreamSpec) -> Callable[[dict[str, list], int], object]:
    """A function ``(columns_as_lists, row) -> event`` building the domain event of one row
    of ``spec`` (columns from :class:`Chunk`, converted with ``.tolist()``)."""
    venue, sym = spec.venue, spec.engine_symbol
    layout = spec.layout
    if layout == "bar":
        interval_s = spec.interval_s

        def make_bar(c: dict[str, list], r: int) -> Bar:
            return Bar(
                venue,
                sym,
                c["ts_ns"][r],
                interval_s,
                c["open"][r],
                c["high"][r],
                c["low"][r],
                c["close"][r],
                c["volume_base"][r],
                c["volume_quote"][r],
                c["taker_buy_volume_quote"][r],
            )

        return make_bar
    if layout == "mark_bar":

        def make_mark_bar(c: dict[str, list], r: int) -> MarkPrice:
            return MarkPrice(venue, sym, c["_ev"][r], c["close"][r], math.nan, math.nan, 0)

        return make_mark_bar
    if layout == "mark_price":

        def make_mark(c: dict[str, list], r: int) -> MarkPrice:
            return MarkPrice(
                venue,
                sym,
                c["ts_ns"][r],
                c["mark_px"][r],
                c["index_px"][r],
                c["predicted_funding_rate"][r],
                c["next_funding_ts_ns"][r],
            )

        return make_mark
    if layout == "funding":

        def make_funding(c: dict[str, list], r: int) -> FundingSettlement:
            return FundingSettlement(
                venue,
                sym,
                c["ts_ns"][r],
                c["funding_rate"][r],
                c["funding_interval_h"][r],
                c["mark_price"][r],
            )

        return make_funding
    if layout == "open_interest":

        def make_oi(c: dict[str, list], r: int) -> OpenInterest:
            return OpenInterest(
                venue, sym, c["ts_ns"][r], c["open_interest_base"][r], c["open_interest_usd"][r]
            )

        return make_oi
    if layout in ("trades", "agg_trades"):

        def make_trade(c: dict[str, list], r: int) -> Trade:
            return Trade(
                venue, sym, c["ts_ns"][r], c["price"][r], c["qty_base"][r], c["is_buyer_maker"][r]
            )

        return make_trade

    def make_book(c: dict[str, list], r: int) -> BookTop:
        return BookTop(
            venue,
            sym,
            c["ts_ns"][r],
            c["bid_px"][r],
            c["bid_qty"][r],
            c["ask_px"][r],
            c["ask_qty"][r],
        )

    return make_book


__all__ = [
    "KIND_PRIORITY",
    "Chunk",
    "Replay",
    "StreamSpec",
    "catalog_streams",
    "event_maker",
    "events_maker",
]
