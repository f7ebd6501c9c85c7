"""What the catalog holds (:func:`inventory`) and what is wrong with it (:func:`check`).

Both walk ``<root>/<venue>/<dataset>/<symbol>/`` series by series and never stop at a
bad file: problems become :class:`Issue` rows naming venue / dataset / symbol / file
(relative to the catalog root), the 1-based data row in that file and its ``ts_ns``.
A partition's live append-only parts (``<period>.parts/*.parquet``, see
:mod:`perpdesk.data.catalog`) are files of the series too, checked one by one; the rows
of a partition file and its parts are then taken in key order, as :meth:`Catalog.read`
sees them (a late part is no ordering issue; a key repeated across them still is a
``duplicate``). Parts a compaction has absorbed are skipped.

Coverage (:class:`SeriesInfo`, the table of ``perpdesk data ls``)
-------------------------------------------------------------------
Over the distinct timestamps of a series (sorted), ``d_i = ts_i − ts_{i−1}``:

* bar datasets (``<kind>_bars_<tf>``, bar length ``Δ`` from the name): a hole wherever
  ``d_i > Δ``, missing bars ``= ⌊(d_i − 1 ns) / Δ⌋`` (so ``d_i = kΔ`` misses ``k − 1``);
* ``funding``: ``h_i`` = the row's own ``funding_interval_h`` (Binance changes a symbol's
  interval over time, and the column records it per settlement). A hole wherever
  ``d_i > max(h_{i−1}, h_i) + 1 min`` — either interval is accepted at a change, and a
  minute absorbs settlement-time jitter — missing settlements ``= round(d_i / h_i) − 1``
  (at least 1);
* every other dataset (ticks, mark price, open interest): no expected spacing; only the
  largest inter-event gap ``max d_i`` is reported.

Nothing is expected before the first or after the last row.

Health (:func:`check`), by issue ``kind``
------------------------------------------
``unreadable``  a file Parquet cannot open; ``schema`` a missing column, a column of the
wrong type, an unknown dataset directory, a bad instruments table, or any other reason
:func:`perpdesk.data.catalog.validate_table` rejects a file (its one-line message is
kept); ``partition`` a file name that is not a period of the dataset's granularity, or
rows outside that period; ``stray`` leftovers (``.*.tmp`` from an interrupted write, other
non-partition files); ``null`` a null/NaN in a required column; ``duplicate`` a natural
key (``ts_ns``; ``trade_id`` … for tick datasets) seen before in the series (the row of
its first occurrence is named, and whether the rows are identical); ``out_of_order`` a
row whose ``ts_ns`` (or key) is below the previous row's (across file boundaries too);
``gap`` a hole as defined above; ``outlier`` a value that breaks a rule:

* bars: ``high < low``; ``open`` or ``close`` outside ``[low, high]``; a non-positive
  price (not for ``premium_bars``, whose index is a signed spread); a negative volume;
  ``taker_buy_volume_quote > volume_quote``. And two robust price rules over *adjacent*
  bars (``d = Δ``, in time order), scaled by ``sd_t = max(1.4826 · median(|r_{t−W}|, …,
  |r_{t−1}|), 1e-4)`` — the median absolute deviation about zero of the previous ``W``
  close-to-close log returns ``r``, scaled to a normal sd (Hampel's identifier;
  Rousseeuw & Croux 1993, JASA 88:1273), ``W = 288`` (:data:`JUMP_WINDOW`, one day of 5m
  bars; at least ``W / 4`` returns needed), floored so a flat series does not flag every
  tick:

  - *discontinuity*: ``|ln(open_t / close_{t−1})| > open_k · sd_t``, ``open_k = 8``
    (:data:`OPEN_K`). In a 24/7 market a bar opens where the last one closed; on the real
    Binance 15m/1h/8h-mark bars of BTC, ETH and 1000PEPE (2023-01 → 2024-05, 170k bars)
    the largest such step is 0.96 sd, while a corrupted close or a spliced source shows
    up here at once;
  - *jump*: ``|r_t| > jump_k · sd_t``, ``jump_k = 200`` (:data:`JUMP_K`). Real crypto
    returns are so heavy-tailed that a tighter bound flags real moves: the same data
    reach 117 sd (BTC 15m, the 2023-08-17 crash) and 149 sd (ETH 15m), and 21 BTC 15m
    bars exceed 20 sd. At 200 only absurd prints (tenfold prices, unit mix-ups) fire;
    lower ``jump_k`` to review big moves;

* funding: a rate above the instrument's ``funding_cap`` or below its ``funding_floor``
  (``instruments.parquet``; skipped when the venue has no such table or no clamp), an
  absurd rate ``|rate| > 5 %`` per settlement (above any clamp Binance has published), an
  interval not in 1/2/4/8 h, a non-positive mark price;
* open interest: negative values; trades / agg trades: non-positive price or quantity;
  book ticker: non-positive prices, negative quantities, bid above ask; mark price:
  non-positive mark or index price.

At most :data:`MAX_LISTED` issues of one kind are listed per file; the rest are counted in
one summary issue of that kind.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from perpdesk.data.catalog import (
    _BAR_RE,
    NS_PER_S,
    PARTS_SUFFIX,
    Catalog,
    DatasetSpec,
    bar_interval_s,
    dataset_spec,
    fmt_ts,
    partition_parts,
    validate_table,
)
from perpdesk.data.query import datasets, partition_bounds
from perpdesk.domain import Instrument, InstrumentKind
from perpdesk.errors import CatalogError

_T = TypeVar("_T")

ProgressFn = Callable[[int, int, str], None]
"""``progress(done, total, label)``: called after each series is scanned."""

H_NS = 3600 * NS_PER_S
FUNDING_JITTER_NS = 60 * NS_PER_S
ABSURD_FUNDING = 0.05  # |rate| per settlement above which a funding rate is absurd
JUMP_K = 200.0
OPEN_K = 8.0
JUMP_WINDOW = 288
JUMP_MIN_SCALE = 1e-4
MAD_TO_SD = 1.4826  # 1 / Φ⁻¹(3/4): MAD of a normal sample → its sd
MAX_LISTED = 20

KINDS = (
    "unreadable",
    "schema",
    "partition",
    "stray",
    "null",
    "duplicate",
    "out_of_order",
    "gap",
    "outlier",
)


@dataclass(frozen=True, slots=True)
class Issue:
    """One problem found by :func:`check`. ``file`` is relative to the catalog root
    (empty for a problem of a whole dataset/venue); ``row`` counts data rows of that file
    from 1 (None for a file-level problem); ``ts_ns`` is the row's timestamp (for a gap:
    the first missing one)."""

    kind: str
    venue: str
    dataset: str
    symbol: str
    file: str
    row: int | None
    ts_ns: int | None
    message: str

    def __str__(self) -> str:
        where = self.file or "/".join(x for x in (self.venue, self.dataset, self.symbol) if x)
        row = f": row {self.row}" if self.row is not None else ""
        return f"{where}{row}: {self.kind}: {self.message}"


@dataclass(frozen=True, slots=True)
class SeriesInfo:
    """What one ``(venue, dataset, symbol)`` holds: ``rows``, first/last ``ts_ns`` (None
    when empty), partition ``files`` and how many of them could not be read
    (``bad_files``); ``missing`` bars/settlements and the holes they sit in (``gap_runs``)
    — None for datasets without an expected spacing — and the largest spacing
    ``max_gap_ns`` between distinct timestamps (None below two rows)."""

    venue: str
    dataset: str
    symbol: str
    rows: int
    first_ts_ns: int | None
    last_ts_ns: int | None
    files: int
    bad_files: int
    missing: int | None
    gap_runs: int | None
    max_gap_ns: int | None


# --------------------------------------------------------------------------------------
# Walking the tree
# --------------------------------------------------------------------------------------


def _targets(
    root: str | Path,
    venue: str | None,
    dataset: str | None,
    symbols: Iterable[str] | None,
) -> tuple[list[tuple[str, str, str]], list[Issue]]:
    """``(venue, dataset, symbol)`` series to scan, and issues for dataset directories the
    catalog has no schema for. Unknown filters are a :class:`CatalogError`."""
    cat = Catalog(root)
    all_venues = cat.venues()
    if venue is not None and venue not in all_venues:
        raise CatalogError(
            f"{cat.root}: unknown venue '{venue}' (known: {', '.join(all_venues) or 'none'})"
        )
    wanted_syms = None if symbols is None else set(symbols)
    out: list[tuple[str, str, str]] = []
    issues: list[Issue] = []
    seen_dataset = False
    seen_syms: set[str] = set()
    all_syms: set[str] = set()
    known_ds: set[str] = set()
    for v in [venue] if venue is not None else all_venues:
        for ds in datasets(root, v):
            known_ds.add(ds)
            if dataset is not None and ds != dataset:
                continue
            seen_dataset = True
            try:
                dataset_spec(ds)
            except CatalogError as exc:
                issues.append(Issue("schema", v, ds, "", f"{v}/{ds}", None, None, str(exc)))
                continue
            d = cat.root / v / ds
            for p in sorted(d.iterdir()):
                if not p.is_dir():
                    if p.name.startswith("."):
                        continue
                    issues.append(
                        Issue(
                            "stray",
                            v,
                            ds,
                            "",
                            f"{v}/{ds}/{p.name}",
                            None,
                            None,
                            "not a symbol directory",
                        )
                    )
                    continue
                if p.name.startswith("."):
                    continue
                all_syms.add(p.name)
                if wanted_syms is not None and p.name not in wanted_syms:
                    continue
                seen_syms.add(p.name)
                out.append((v, ds, p.name))
    if dataset is not None and not seen_dataset:
        known = ", ".join(sorted(known_ds)) or "none"
        raise CatalogError(f"{cat.root}: unknown dataset '{dataset}' (known: {known})")
    if wanted_syms is not None:
        unknown = sorted(wanted_syms - seen_syms)
        if unknown:
            raise CatalogError(
                f"{cat.root}: unknown symbol(s) {', '.join(unknown)} in the selection "
                f"(known: {', '.join(sorted(all_syms)[:30]) or 'none'})"
            )
    return out, issues


class _Sink:
    """Collects issues of one series, listing at most MAX_LISTED per (file, kind)."""

    def __init__(self, venue: str, dataset: str, symbol: str) -> None:
        self.venue, self.dataset, self.symbol = venue, dataset, symbol
        self.issues: list[Issue] = []
        self.counts: dict[tuple[str, str], int] = {}

    def add(self, kind: str, file: str, row: int | None, ts_ns: int | None, msg: str) -> None:
        n = self.counts.get((file, kind), 0) + 1
        self.counts[(file, kind)] = n
        if n <= MAX_LISTED:
            self.issues.append(
                Issue(kind, self.venue, self.dataset, self.symbol, file, row, ts_ns, msg)
            )

    def listing(self, file: str, kind: str) -> bool:
        """Whether the next issue of ``kind`` in ``file`` would be listed."""
        return self.counts.get((file, kind), 0) < MAX_LISTED

    def finish(self) -> list[Issue]:
        for (file, kind), n in self.counts.items():
            if n > MAX_LISTED:
                self.issues.append(
                    Issue(
                        kind,
                        self.venue,
                        self.dataset,
                        self.symbol,
                        file,
                        None,
                        None,
                        f"{n - MAX_LISTED} more {kind} issue(s) in this file not listed",
                    )
                )
        return self.issues


_PARTITION_FILE = re.compile(r"^\d.*\.parquet$")


@dataclass
class _Series:
    """The rows of one series as stored (file order), with where each row came from."""

    tables: list[pa.Table]
    file_of_row: np.ndarray  # index into rels
    row_in_file: np.ndarray  # 0-based
    rels: list[str]
    files: int
    bad_files: int

    @property
    def table(self) -> pa.Table | None:
        return pa.concat_tables(self.tables) if self.tables else None


def _load(
    root: Path,
    venue: str,
    dataset: str,
    symbol: str,
    spec: DatasetSpec,
    columns: list[str],
    sink: _Sink | None,
) -> _Series:
    """Read ``columns`` of every partition of the series. With a ``sink`` (check mode),
    files are validated and every problem is reported; files that cannot be cast to the
    schema are left out of the series."""
    d = root / venue / dataset / symbol
    rels: list[str] = []
    tables: list[pa.Table] = []
    file_of_row: list[np.ndarray] = []
    row_in_file: list[np.ndarray] = []
    n_files = bad = 0
    entries: list[tuple[Path, str]] = []  # (file, its path relative to the root)
    groups: list[tuple[int, int]] = []  # entries of one partition with live parts
    for p in sorted(d.iterdir()):
        rel = f"{venue}/{dataset}/{symbol}/{p.name}"
        if p.is_dir() and p.name.endswith(PARTS_SUFFIX) and p.name[:1].isdigit():
            daily = p.with_name(p.name[: -len(PARTS_SUFFIX)] + ".parquet")
            start = next((j for j, (q, _) in enumerate(entries) if q == daily), len(entries))
            if start < len(entries) and start != len(entries) - 1:  # keep the group together
                entries.append(entries.pop(start))
                start = len(entries) - 1
            try:
                live, _ = partition_parts(daily)
            except CatalogError as exc:  # the partition file's footer is unreadable
                live = []
                if sink is not None:
                    sink.add("unreadable", rel, None, None, str(exc).split(": ", 1)[1])
            entries += [(q, f"{rel}/{q.name}") for q in live]
            if sink is not None:
                for q in sorted(p.iterdir()):
                    if not (q.is_file() and _PART_NAME.match(q.name)):
                        sink.add("stray", f"{rel}/{q.name}", None, None, _stray_what(q))
            if len(entries) - start > 1:
                groups.append((start, len(entries)))
            continue
        entries.append((p, rel))
    group_of = {s: e for s, e in groups}
    group_end = -1
    group_tables = 0
    for i, (p, rel) in enumerate(entries):
        if group_end >= 0 and i == group_end:
            _sort_group(tables, file_of_row, row_in_file, group_tables, spec)
            group_end = -1
        if i in group_of:  # rows of a partition file and its parts: sorted by key below
            group_end, group_tables = group_of[i], len(tables)
        if not p.is_file() or not _PARTITION_FILE.match(p.name):
            if sink is not None:
                sink.add("stray", rel, None, None, _stray_what(p))
            continue
        n_files += 1
        try:
            lo, hi = partition_bounds(_partition_path(p), spec.partition)
        except CatalogError as exc:
            bad += 1
            if sink is not None:
                sink.add("partition", rel, None, None, str(exc).split(": ", 1)[1])
            continue
        try:
            pf = pq.ParquetFile(p)
            present = set(pf.schema_arrow.names)
            raw = pf.read(columns=[c for c in columns if c in present])
        except (OSError, pa.ArrowInvalid) as exc:
            bad += 1
            if sink is not None:
                sink.add("unreadable", rel, None, None, " ".join(str(exc).split()))
            continue
        file_spec = DatasetSpec(
            spec.name,
            pa.schema([spec.schema.field(c) for c in columns]),
            tuple(c for c in spec.not_null if c in columns),
            spec.partition,
            spec.key,
        )
        missing = [c for c in columns if c not in present]
        if missing:
            bad += 1
            if sink is not None:
                sink.add("schema", rel, None, None, f"missing column(s) {', '.join(missing)}")
            continue
        try:
            table = raw.select(columns).cast(file_spec.schema)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            bad += 1
            if sink is not None:
                sink.add(
                    "schema",
                    rel,
                    None,
                    None,
                    f"column types do not match the schema ({' '.join(str(exc).split())})",
                )
            continue
        k = len(rels)
        rels.append(rel)
        if sink is not None:
            _file_checks(table, raw, file_spec, rel, lo, hi, sink)
        rows = np.arange(table.num_rows, dtype=np.int64)
        if table.column("ts_ns").null_count:  # reported as null; the rows cannot be placed
            ok = table.column("ts_ns").is_valid()
            table = table.filter(ok)
            rows = rows[ok.to_numpy(zero_copy_only=False)]
        tables.append(table)
        file_of_row.append(np.full(table.num_rows, k, dtype=np.int32))
        row_in_file.append(rows)
    if group_end >= 0:
        _sort_group(tables, file_of_row, row_in_file, group_tables, spec)
    return _Series(
        tables,
        np.concatenate(file_of_row) if file_of_row else np.zeros(0, np.int32),
        np.concatenate(row_in_file) if row_in_file else np.zeros(0, np.int64),
        rels,
        n_files,
        bad,
    )


_PART_NAME = re.compile(r"^\d[^/]*\.parquet$")


def _stray_what(p: Path) -> str:
    if p.name.startswith(".") and p.name.endswith(".tmp"):
        return "temporary file of an interrupted (or running) write"
    return "not a partition file (<period>.parquet)"


def _partition_path(p: Path) -> Path:
    """The partition file a part belongs to (the file itself otherwise)."""
    if p.parent.name.endswith(PARTS_SUFFIX):
        return p.parent.with_name(p.parent.name[: -len(PARTS_SUFFIX)] + ".parquet")
    return p


def _sort_group(
    tables: list[pa.Table],
    file_of_row: list[np.ndarray],
    row_in_file: list[np.ndarray],
    start: int,
    spec: DatasetSpec,
) -> None:
    """Replace ``tables[start:]`` (a partition file and its live parts) by their rows in
    key order, as :meth:`Catalog.read` sees them (stable: stored order among equal keys;
    repeated keys are kept, so the duplicate check still names them)."""
    if len(tables) - start < 2 or spec.key not in tables[start].column_names:
        return
    t = pa.concat_tables(tables[start:])
    fr = np.concatenate(file_of_row[start:])
    rr = np.concatenate(row_in_file[start:])
    key = t.column(spec.key)
    if key.null_count:
        return  # reported as null; no order to restore
    order = np.argsort(key.to_numpy(), kind="stable")
    del tables[start:], file_of_row[start:], row_in_file[start:]
    tables.append(t.take(pa.array(order)))
    file_of_row.append(fr[order])
    row_in_file.append(rr[order])


def _file_checks(
    table: pa.Table, raw: pa.Table, spec: DatasetSpec, rel: str, lo: int, hi: int, sink: _Sink
) -> None:
    """Nulls and rows outside the partition period of one file; and the catalog's own
    verdict, kept as a ``schema`` issue when nothing more specific explains it."""
    before = sum(sink.counts.values())
    ts_all = table.column("ts_ns").fill_null(0).to_numpy()
    ts_ok = table.column("ts_ns").is_valid().to_numpy(zero_copy_only=False)
    for name in spec.not_null:
        col = table.column(name)
        bad = col.is_null()
        if pa.types.is_floating(col.type):
            bad = pc.or_(bad, pc.fill_null(pc.is_nan(col), False))  # is_nan(null) is null
        for r in np.flatnonzero(bad.to_numpy(zero_copy_only=False)):
            t = int(ts_all[r]) if ts_ok[r] else None
            sink.add("null", rel, int(r) + 1, t, f"{name} is null/NaN")
    ts_col = table.column("ts_ns")
    if ts_col.null_count == 0 and table.num_rows:
        ts = ts_col.to_numpy()
        outside = np.flatnonzero((ts < lo) | (ts >= hi))
        if outside.size:
            r = int(outside[0])
            sink.add(
                "partition",
                rel,
                r + 1,
                int(ts[r]),
                f"{outside.size} row(s) outside the file's period (first: {fmt_ts(ts[r])})",
            )
    try:
        validate_table(raw, spec, rel)
    except CatalogError as exc:
        # ordering problems are reported per row over the whole series; anything else the
        # catalog rejects is kept verbatim unless a specific issue above explains it
        msg = str(exc)
        ordering = "must strictly increase" in msg or "must not decrease" in msg
        if not ordering and sum(sink.counts.values()) == before:
            sink.add("schema", rel, None, None, msg.split(": ", 1)[1])


# --------------------------------------------------------------------------------------
# Series-level checks
# --------------------------------------------------------------------------------------


def _loc(s: _Series, i: int) -> tuple[str, int]:
    return s.rels[int(s.file_of_row[i])], int(s.row_in_file[i]) + 1


def _show(name: str, v: object) -> str:
    return fmt_ts(int(v)) if name.endswith("ts_ns") else str(v)


def _order_checks(s: _Series, table: pa.Table, spec: DatasetSpec, sink: _Sink) -> None:
    """Out-of-order rows (value below the previous row's) and repeated natural keys."""
    keys = ["ts_ns"] if spec.key == "ts_ns" else ["ts_ns", spec.key]
    for name in keys:
        col = table.column(name)
        if col.null_count:
            continue  # reported as null
        v = col.to_numpy()
        if v.size < 2:
            continue
        for i in np.flatnonzero(np.diff(v) < 0) + 1:
            f, r = _loc(s, int(i))
            pf, pr = _loc(s, int(i) - 1)
            prev = f"row {pr}" + ("" if pf == f else f" of {Path(pf).name}")
            sink.add(
                "out_of_order",
                f,
                r,
                int(table.column("ts_ns")[int(i)].as_py()),
                f"{name} {_show(name, v[i])} is below {prev} ({_show(name, v[i - 1])})",
            )
    key = table.column(spec.key)
    if key.null_count:
        return
    kv = key.to_numpy()
    order = np.argsort(kv, kind="stable")
    sk = kv[order]
    rep = np.flatnonzero(sk[1:] == sk[:-1]) + 1
    if not rep.size:
        return
    # first occurrence of each repeated value: walk back to the start of its run
    starts = np.flatnonzero(np.concatenate([[True], sk[1:] != sk[:-1]]))
    run_start = starts[np.searchsorted(starts, rep, side="right") - 1]
    ts = table.column("ts_ns").to_numpy(zero_copy_only=False)
    for j, j0 in zip(rep, run_start, strict=True):
        i, i0 = int(order[j]), int(order[j0])
        f, r = _loc(s, i)
        f0, r0 = _loc(s, i0)
        if not sink.listing(f, "duplicate"):
            sink.add("duplicate", f, r, None, "")  # counted only
            continue
        first = f"row {r0}" + ("" if f0 == f else f" of {Path(f0).name}")
        same = table.slice(i, 1).to_pylist() == table.slice(i0, 1).to_pylist()
        sink.add(
            "duplicate",
            f,
            r,
            int(ts[i]),
            f"{spec.key} {_show(spec.key, kv[i])} repeats {first} "
            f"({'identical row' if same else 'conflicting values'})",
        )


def _distinct_sorted(ts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted distinct timestamps and, for each, the index of its first stored row."""
    order = np.argsort(ts, kind="stable")
    st = ts[order]
    keep = np.concatenate([[True], st[1:] != st[:-1]]) if st.size else np.zeros(0, bool)
    return st[keep], order[keep]


def _holes(
    dataset: str, st: np.ndarray, interval_h: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray] | None:
    """``(positions j in st after each hole, missing count per hole)``; None when the
    dataset has no expected spacing (see the module docstring)."""
    if _BAR_RE.match(dataset):
        step = bar_interval_s(dataset) * NS_PER_S
        d = np.diff(st)
        j = np.flatnonzero(d > step)
        return j + 1, (d[j] - 1) // step
    if dataset == "funding" and interval_h is not None:
        d = np.diff(st)
        h = interval_h.astype(np.int64) * H_NS
        allowed = np.maximum(h[1:], h[:-1]) + FUNDING_JITTER_NS
        j = np.flatnonzero(d > allowed)
        miss = np.maximum(np.rint(d[j] / h[1:][j]).astype(np.int64) - 1, 1)
        return j + 1, miss
    return None


def _bar_outliers(
    s: _Series,
    t: pa.Table,
    dataset: str,
    sink: _Sink,
    jump_k: float,
    open_k: float,
    window: int,
) -> None:
    """Bar rules of the module docstring; one issue per row, its messages joined."""
    ts = t.column("ts_ns").to_numpy()
    o, h, lo, c = (
        t.column(n).to_numpy(zero_copy_only=False) for n in ("open", "high", "low", "close")
    )
    msgs: dict[int, list[str]] = {}

    def flag(mask: np.ndarray, text: Callable[[int], str]) -> None:
        for i in np.flatnonzero(mask):
            msgs.setdefault(int(i), []).append(text(int(i)))

    flag(h < lo, lambda i: f"high {h[i]:g} < low {lo[i]:g}")
    flag((o < lo) | (o > h), lambda i: f"open {o[i]:g} outside [low {lo[i]:g}, high {h[i]:g}]")
    flag((c < lo) | (c > h), lambda i: f"close {c[i]:g} outside [low {lo[i]:g}, high {h[i]:g}]")
    premium = dataset.startswith("premium_")
    if not premium:
        px = np.column_stack([o, h, lo, c])
        flag((px <= 0).any(axis=1), lambda i: f"non-positive price (o/h/l/c {px[i].tolist()})")
    for name in ("volume_base", "volume_quote", "taker_buy_volume_quote"):
        v = t.column(name).to_numpy(zero_copy_only=False)
        flag(v < 0, lambda i, v=v, name=name: f"negative {name} {v[i]:g}")
    vq = t.column("volume_quote").to_numpy(zero_copy_only=False)
    tb = t.column("taker_buy_volume_quote").to_numpy(zero_copy_only=False)
    flag(
        tb > vq * (1 + 1e-9) + 1e-12,
        lambda i: f"taker_buy_volume_quote {tb[i]:g} > volume_quote {vq[i]:g}",
    )
    if not premium and ts.size > 1:
        # adjacent bars in time order (rows as stored may be out of order or repeated)
        step = bar_interval_s(dataset) * NS_PER_S
        st, first = _distinct_sorted(ts)
        cs, os_ = c[first], o[first]
        adj = (np.diff(st) == step) & (cs[1:] > 0) & (cs[:-1] > 0) & (os_[1:] > 0)
        r = np.full(st.size, np.nan)  # close-to-close log return
        g = np.full(st.size, np.nan)  # previous close → open log return
        with np.errstate(divide="ignore", invalid="ignore"):
            r[1:] = np.where(adj, np.log(cs[1:] / cs[:-1]), np.nan)
            g[1:] = np.where(adj, np.log(os_[1:] / cs[:-1]), np.nan)
        sd = (
            pd.Series(np.abs(r))
            .rolling(window, min_periods=max(window // 4, 2))
            .median()
            .shift(1)
            .to_numpy()
            * MAD_TO_SD
        )
        sd = np.maximum(sd, JUMP_MIN_SCALE)  # NaN (too little history) stays NaN
        with np.errstate(invalid="ignore"):
            gaps = np.abs(g) > open_k * sd
            jumps = np.abs(r) > jump_k * sd
        for j in np.flatnonzero(gaps):
            msgs.setdefault(int(first[j]), []).append(
                f"open {100 * np.expm1(g[j]):+.2f} % from the previous close "
                f"({abs(g[j]) / sd[j]:.1f} robust sd > {open_k:g})"
            )
        for j in np.flatnonzero(jumps):
            msgs.setdefault(int(first[j]), []).append(
                f"close {100 * np.expm1(r[j]):+.2f} % from the previous close "
                f"({abs(r[j]) / sd[j]:.1f} robust sd > {jump_k:g})"
            )
    for i in sorted(msgs):
        f, row = _loc(s, i)
        sink.add("outlier", f, row, int(ts[i]), "; ".join(msgs[i]))


def _funding_outliers(s: _Series, t: pa.Table, inst: Instrument | None, sink: _Sink) -> None:
    ts = t.column("ts_ns").to_numpy()
    rate = t.column("funding_rate").to_numpy(zero_copy_only=False)
    ih = t.column("funding_interval_h").to_numpy(zero_copy_only=False)
    mark = t.column("mark_price").to_numpy(zero_copy_only=False)
    for i in range(ts.size):
        msgs = []
        x = rate[i]
        if inst is not None and inst.funding_cap is not None and x > inst.funding_cap + 1e-12:
            msgs.append(f"funding_rate {x:g} above the instrument's cap {inst.funding_cap:g}")
        if inst is not None and inst.funding_floor is not None and x < inst.funding_floor - 1e-12:
            msgs.append(f"funding_rate {x:g} below the instrument's floor {inst.funding_floor:g}")
        if abs(x) > ABSURD_FUNDING:
            msgs.append(
                f"funding_rate {x:g} is absurd (|rate| > {ABSURD_FUNDING:g} per settlement)"
            )
        if ih[i] not in (1, 2, 4, 8):
            msgs.append(f"funding_interval_h {ih[i]} is not 1, 2, 4 or 8")
        if mark[i] <= 0:
            msgs.append(f"mark_price {mark[i]} is not positive")
        if msgs:
            f, r = _loc(s, i)
            sink.add("outlier", f, r, int(ts[i]), "; ".join(msgs))


_SIMPLE_RULES: dict[str, list[tuple[str, str]]] = {
    # dataset: [(column, rule)] with rule "pos" (> 0) or "nonneg" (>= 0)
    "open_interest": [("open_interest_base", "nonneg"), ("open_interest_usd", "nonneg")],
    "trades": [("price", "pos"), ("qty_base", "pos")],
    "agg_trades": [("price", "pos"), ("qty_base", "pos")],
    "book_ticker": [
        ("bid_px", "pos"),
        ("ask_px", "pos"),
        ("bid_qty", "nonneg"),
        ("ask_qty", "nonneg"),
    ],
    "mark_price": [("mark_px", "pos"), ("index_px", "pos")],
}


def _simple_outliers(s: _Series, t: pa.Table, dataset: str, sink: _Sink) -> None:
    ts = t.column("ts_ns").to_numpy()
    for name, rule in _SIMPLE_RULES.get(dataset, []):
        v = t.column(name).to_numpy(zero_copy_only=False)
        bad = v <= 0 if rule == "pos" else v < 0
        for i in np.flatnonzero(bad):
            f, r = _loc(s, int(i))
            what = "not positive" if rule == "pos" else "negative"
            sink.add("outlier", f, r, int(ts[i]), f"{name} {v[i]} is {what}")
    if dataset == "book_ticker":
        b = t.column("bid_px").to_numpy(zero_copy_only=False)
        a = t.column("ask_px").to_numpy(zero_copy_only=False)
        for i in np.flatnonzero(b > a):
            f, r = _loc(s, int(i))
            sink.add("outlier", f, r, int(ts[i]), f"crossed book: bid_px {b[i]} > ask_px {a[i]}")


# --------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------


def _scan(
    root: Path,
    venue: str,
    dataset: str,
    symbol: str,
    sink: _Sink | None,
    inst: Instrument | None = None,
    jump_k: float = JUMP_K,
    open_k: float = OPEN_K,
    jump_window: int = JUMP_WINDOW,
) -> SeriesInfo:
    spec = dataset_spec(dataset)
    if sink is None:
        columns = ["ts_ns", "funding_interval_h"] if dataset == "funding" else ["ts_ns"]
    else:
        columns = list(spec.schema.names)
    s = _load(root, venue, dataset, symbol, spec, columns, sink)
    t = s.table
    rows = 0 if t is None else t.num_rows
    missing = gap_runs = max_gap = first = last = None
    if t is not None and rows and t.column("ts_ns").null_count == 0:
        ts = t.column("ts_ns").to_numpy()
        st, firsts = _distinct_sorted(ts)
        first, last = int(st[0]), int(st[-1])
        if st.size > 1:
            max_gap = int(np.diff(st).max())
        ih = None
        if dataset == "funding":
            ihc = t.column("funding_interval_h")
            if ihc.null_count == 0:
                ih = ihc.to_numpy()[firsts]
        holes = _holes(dataset, st, ih)
        if holes is not None:
            pos, miss = holes
            missing, gap_runs = int(miss.sum()), int(pos.size)
            if sink is not None:
                unit = "settlement(s)" if dataset == "funding" else "bar(s)"
                for j, m in zip(pos, miss, strict=True):
                    f, r = _loc(s, int(firsts[j]))
                    step = (st[j] - st[j - 1]) // (m + 1)
                    sink.add(
                        "gap",
                        f,
                        r,
                        int(st[j - 1] + step),
                        f"{m} missing {unit} between {fmt_ts(st[j - 1])} and {fmt_ts(st[j])}",
                    )
    if sink is not None and t is not None and rows:
        _order_checks(s, t, spec, sink)
        if _BAR_RE.match(dataset):
            _bar_outliers(s, t, dataset, sink, jump_k, open_k, jump_window)
        elif dataset == "funding":
            _funding_outliers(s, t, inst, sink)
        else:
            _simple_outliers(s, t, dataset, sink)
    return SeriesInfo(
        venue,
        dataset,
        symbol,
        rows,
        first,
        last,
        s.files,
        s.bad_files,
        missing,
        gap_runs,
        max_gap,
    )


def _map(
    fn: Callable[[tuple[str, str, str]], _T],
    targets: list[tuple[str, str, str]],
    progress: ProgressFn | None,
) -> list[_T]:
    """``fn`` over the series in order, calling ``progress`` after each. (A thread pool
    over series measured no faster on the 2-core bench machine: the rolling median holds
    the GIL.)"""
    out: list[_T] = []
    for n, target in enumerate(targets, start=1):
        out.append(fn(target))
        if progress is not None:
            progress(n, len(targets), "/".join(target))
    return out


def inventory(
    root: str | Path,
    venue: str | None = None,
    dataset: str | None = None,
    symbols: Iterable[str] | None = None,
    progress: ProgressFn | None = None,
) -> list[SeriesInfo]:
    """One :class:`SeriesInfo` per ``(venue, dataset, symbol)`` (sorted), optionally
    restricted to one venue / dataset / some symbols (unknown ones are a
    :class:`CatalogError` listing the known). Reads only ``ts_ns`` (and
    ``funding_interval_h``); unreadable files are counted in ``bad_files``, not raised."""
    targets, _ = _targets(root, venue, dataset, symbols)
    base = Catalog(root).root
    return _map(lambda t: _scan(base, *t, None), targets, progress)


def check(
    root: str | Path,
    venue: str | None = None,
    dataset: str | None = None,
    symbols: Iterable[str] | None = None,
    *,
    jump_k: float = JUMP_K,
    open_k: float = OPEN_K,
    jump_window: int = JUMP_WINDOW,
    progress: ProgressFn | None = None,
) -> list[Issue]:
    """Every problem of the selected series (see the module docstring for the rules and
    ``jump_k`` / ``open_k`` / ``jump_window``), ordered by venue, dataset, symbol, file,
    row. An empty list means the selection is clean. Never raises on bad data, only on
    bad filters (unknown venue / dataset / symbol, non-positive thresholds)."""
    if jump_k <= 0 or open_k <= 0 or jump_window < 2:
        raise CatalogError(
            f"jump_k {jump_k} and open_k {open_k} must be > 0, jump_window {jump_window} >= 2"
        )
    targets, issues = _targets(root, venue, dataset, symbols)
    cat = Catalog(root)
    insts: dict[str, dict[str, Instrument]] = {}
    for v in sorted({t[0] for t in targets}):
        insts[v] = {}
        if not (cat.root / v / "instruments.parquet").is_file():
            continue
        try:
            insts[v] = {
                sym: i
                for (sym, kind), i in cat.instruments(v).items()
                if kind is InstrumentKind.PERP
            }
        except (CatalogError, OSError, pa.ArrowInvalid) as exc:
            msg = " ".join(str(exc).split())
            issues.append(Issue("schema", v, "", "", f"{v}/instruments.parquet", None, None, msg))

    def one(target: tuple[str, str, str]) -> list[Issue]:
        v, ds, sym = target
        sink = _Sink(v, ds, sym)
        _scan(cat.root, v, ds, sym, sink, insts[v].get(sym), jump_k, open_k, jump_window)
        return sink.finish()

    for found in _map(one, targets, progress):
        issues.extend(found)
    issues.sort(key=lambda i: (i.venue, i.dataset, i.symbol, i.file, i.row or 0))
    return issues


__all__ = [
    "JUMP_K",
    "JUMP_WINDOW",
    "KINDS",
    "MAX_LISTED",
    "OPEN_K",
    "Issue",
    "SeriesInfo",
    "check",
    "inventory",
]
