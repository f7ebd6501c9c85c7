"""A freqtrade futures data folder → catalog datasets.

freqtrade stores one file per pair, timeframe and candle type:
``<BASE>_<QUOTE>_<SETTLE>-<tf>-<kind>.<feather|json.gz>`` with ``kind`` one of
``futures`` (perp OHLCV, volume in base units), ``mark`` (mark-price OHLC),
``funding_rate`` (rate per settlement in ``open``, other columns 0). Feather files hold
``date, open, high, low, close, volume``; ``json.gz`` files hold rows
``[ms, open, high, low, close, volume]``. The symbol is the venue id:
``BTC_USDT_USDT`` → ``BTCUSDT``, ``1000PEPE_USDT_USDT`` → ``1000PEPEUSDT``.

Timestamps carry millisecond jitter (``08:00:00.008``) and are **floored to the whole
second** (jitter is always a few ms *after* the bar/settlement second).

Mapping:

* ``futures`` → ``perp_bars_<tf>``. freqtrade has no quote or taker-buy volume, and the
  catalog requires both, so they are **approximated** (never silently):
  ``volume_quote = volume_base × (open+high+low+close)/4`` and
  ``taker_buy_volume_quote = volume_quote / 2`` (neutral order flow). The returned table
  carries schema metadata ``perpdesk.approximated`` naming these columns and the import
  summary lists them; do not use these bars for order-flow features.
* ``mark`` → ``mark_bars_<tf>``: OHLC as given; mark prices have no volume, so the three
  volume columns are 0 (as in Binance's own mark-price klines).
* ``funding_rate`` (8h) → ``funding`` with interval 8 h and ``mark_price`` = the open of
  the ``-8h-mark`` bar at the same (floored) time when that file exists, else null.
"""

from __future__ import annotations

import gzip
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.feather as feather

from perpdesk.data.catalog import NS_PER_S, Catalog, dataset_spec, validate_table
from perpdesk.data.sources.funding import PathLike, funding_table
from perpdesk.errors import CatalogError

FILE_RE = re.compile(
    r"^(?P<pair>[A-Z0-9]+_[A-Z0-9]+_[A-Z0-9]+)-(?P<tf>\d+[smhdw])-(?P<kind>futures|mark|funding_rate)"
    r"\.(?P<ext>feather|json\.gz)$"
)
OHLCV = ("open", "high", "low", "close", "volume")
APPROX_NOTE = (
    "volume_quote=volume_base*(o+h+l+c)/4; taker_buy_volume_quote=volume_quote/2 "
    "(freqtrade has neither)"
)


def freqtrade_symbol(pair: str) -> str:
    """``BTC_USDT_USDT`` → ``BTCUSDT`` (base + quote; the settle currency is dropped)."""
    parts = pair.split("_")
    if len(parts) != 3 or not all(parts):
        raise CatalogError(f"freqtrade pair {pair!r} is not <BASE>_<QUOTE>_<SETTLE>")
    return parts[0] + parts[1]


Quarantine = list[tuple[int, str, str]]
"""``(row, reason, raw row text)`` of rows set aside in quarantine mode (rows from 1)."""


class _Rows:
    """Parsed rows of one freqtrade file: times, OHLCV columns, 0-based source row
    numbers, and the raw text of each source row (for quarantine reports)."""

    def __init__(
        self,
        ts: np.ndarray,
        cols: dict[str, np.ndarray],
        raw: Sequence[str],
        rows: np.ndarray | None = None,
    ) -> None:
        self.ts = ts
        self.cols = cols
        self.rows = np.arange(ts.size, dtype=np.int64) if rows is None else rows
        self.raw = raw

    def drop(self, bad: np.ndarray, reason: str, where: str, quarantine: Quarantine | None) -> None:
        """Set rows ``bad`` (mask over the current rows) aside, or raise at the first."""
        if not bad.any():
            return
        if quarantine is None:
            i = int(np.flatnonzero(bad)[0])
            raise CatalogError(f"{where}: row {int(self.rows[i]) + 1}: {reason}")
        for i in np.flatnonzero(bad):
            r = int(self.rows[i])
            quarantine.append((r + 1, reason, self.raw[r]))
        keep = ~bad
        self.ts, self.rows = self.ts[keep], self.rows[keep]
        self.cols = {k: v[keep] for k, v in self.cols.items()}


def _read_raw(path: Path, quarantine: Quarantine | None = None) -> _Rows:
    """ts_ns floored to the second and {open..volume} of a freqtrade feather/json.gz file;
    validates types, NaNs (volume may be null → NaN) and strict ordering. With a
    ``quarantine`` list, bad rows are appended there and left out instead of raising."""
    where = str(path)
    if path.name.endswith(".json.gz"):
        try:
            with gzip.open(path, "rt", encoding="utf-8") as fh:
                rows = json.load(fh)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise CatalogError(f"{where}: cannot read ({exc})") from None
        if not isinstance(rows, list) or not rows:
            raise CatalogError(f"{where}: expected a non-empty JSON list of rows")
        raw = [json.dumps(r) for r in rows]
        good: list[list[float]] = []
        rownos: list[int] = []
        for i, r in enumerate(rows, start=1):
            problem = None
            if not isinstance(r, list) or len(r) != 6:
                problem = "expected [ms, o, h, l, c, v]"
            else:
                for v in r[:5]:
                    if isinstance(v, bool) or not isinstance(v, int | float):
                        problem = f"value {v!r} is not a number"
                        break
                v = r[5]
                if problem is None and v is not None and not isinstance(v, int | float):
                    problem = f"volume {v!r} is not a number"
            if problem is not None:
                if quarantine is None:
                    raise CatalogError(f"{where}: row {i}: {problem}")
                quarantine.append((i, problem, raw[i - 1]))
                continue
            good.append([np.nan if v is None else v for v in r])
            rownos.append(i - 1)
        arr = np.array(good, dtype=float).reshape(-1, 6)
        out = _Rows(
            arr[:, 0].astype(np.int64) * 1_000_000,
            {c: arr[:, k + 1] for k, c in enumerate(OHLCV)},
            raw,
            np.asarray(rownos, dtype=np.int64),
        )
    else:
        try:
            t = feather.read_table(path)
        except (OSError, pa.ArrowInvalid) as exc:
            raise CatalogError(f"{where}: cannot read feather ({exc})") from None
        missing = [c for c in ("date", *OHLCV) if c not in t.column_names]
        if missing:
            raise CatalogError(f"{where}: missing column(s) {', '.join(missing)}")
        try:
            ts = (
                t["date"].cast(pa.timestamp("ns", tz="UTC")).cast(pa.int64())
                if pa.types.is_timestamp(t["date"].type)
                else None
            )
            cols = {
                c: t[c].cast(pa.float64()).to_numpy(zero_copy_only=False).astype(float)
                for c in OHLCV
            }
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise CatalogError(f"{where}: a column is not numeric ({exc})") from None
        if ts is None:
            raise CatalogError(f"{where}: column date is {t['date'].type}, not a timestamp")
        null_date = ts.is_null().to_numpy(zero_copy_only=False)
        ts_np = pc.fill_null(ts, 0).to_numpy()

        def raw_row(i: int) -> str:
            d = None if null_date[i] else str(np.datetime64(int(ts_np[i]), "ns"))
            return json.dumps([d, *(None if np.isnan(cols[c][i]) else cols[c][i] for c in OHLCV)])

        out = _Rows(ts_np, cols, _LazyRaw(raw_row, ts_np.size))
        out.drop(null_date, "date is null", where, quarantine)
    out.ts = out.ts - out.ts % NS_PER_S
    for c in OHLCV[:4]:
        out.drop(~np.isfinite(out.cols[c]), f"{c} is null/NaN", where, quarantine)
    if out.ts.size > 1:
        if quarantine is None:
            d = np.diff(out.ts)
            if (d <= 0).any():
                i = int(np.flatnonzero(d <= 0)[0]) + 1
                what = "duplicates" if out.ts[i] == out.ts[i - 1] else "is before"
                raise CatalogError(
                    f"{where}: row {int(out.rows[i]) + 1}: date {what} row {int(out.rows[i - 1]) + 1} "
                    "(after flooring to the second); timestamps must be strictly increasing"
                )
        else:
            prev = np.maximum.accumulate(out.ts)[:-1]
            bad = np.concatenate([[False], out.ts[1:] <= prev])
            out.drop(
                bad,
                "date not after the previous row (after flooring to the second)",
                where,
                quarantine,
            )
    if not out.ts.size:
        raise CatalogError(f"{where}: no valid rows")
    return out


class _LazyRaw:
    """Raw text of feather rows, rendered only for the rows that are reported."""

    def __init__(self, render: Callable[[int], str], n: int) -> None:
        self._render, self._n = render, n

    def __getitem__(self, i: int) -> str:
        return self._render(i)

    def __len__(self) -> int:
        return self._n


def read_freqtrade_bars(
    path: PathLike, *, quarantine: Quarantine | None = None
) -> tuple[str, str, pa.Table]:
    """A ``-<tf>-futures`` or ``-<tf>-mark`` file → ``(symbol, dataset, table)`` with
    ``dataset`` ``perp_bars_<tf>`` / ``mark_bars_<tf>`` (see the module docstring for the
    volume approximation). With a ``quarantine`` list, bad rows (non-numeric or NaN
    price, missing/negative volume, a date not after the previous row) are appended as
    ``(row, reason, raw row)`` and left out instead of raising."""
    path = Path(path)
    m = FILE_RE.match(path.name)
    if not m or m["kind"] == "funding_rate":
        raise CatalogError(f"{path}: not a freqtrade futures/mark bar file name")
    r = _read_raw(path, quarantine)
    if m["kind"] == "futures":
        dataset = f"perp_bars_{m['tf']}"
        vol = r.cols["volume"]
        r.drop(
            ~np.isfinite(vol) | (vol < 0), "volume is missing or negative", str(path), quarantine
        )
        c = r.cols
        vol = c["volume"]
        vq = vol * (c["open"] + c["high"] + c["low"] + c["close"]) / 4.0
        taker = vq / 2.0
        meta = {b"perpdesk.approximated": APPROX_NOTE.encode()}
    else:
        dataset = f"mark_bars_{m['tf']}"
        c = r.cols
        vol = vq = taker = np.zeros(r.ts.size)
        meta = {b"perpdesk.note": b"mark-price bars: volumes are 0 by definition"}
    table = pa.table(
        {
            "ts_ns": r.ts,
            "open": c["open"],
            "high": c["high"],
            "low": c["low"],
            "close": c["close"],
            "volume_base": vol,
            "volume_quote": vq,
            "taker_buy_volume_quote": taker,
        }
    )
    table = validate_table(table, dataset_spec(dataset), str(path))
    if quarantine:
        quarantine.sort()
    return freqtrade_symbol(m["pair"]), dataset, table.replace_schema_metadata(meta)


def read_freqtrade_funding(
    path: PathLike, mark_path: PathLike | None = None, *, quarantine: Quarantine | None = None
) -> tuple[str, pa.Table]:
    """A ``-8h-funding_rate`` file → ``(symbol, funding table)``; ``mark_path`` (default:
    the sibling ``-8h-mark`` file of the same format, if present) supplies ``mark_price``
    (its bar open at the same floored time; null where absent). ``quarantine`` as in
    :func:`read_freqtrade_bars`; in quarantine mode a bad row of the mark file leaves
    ``mark_price`` null at that time (the mark file's own import quarantines that row)."""
    path = Path(path)
    m = FILE_RE.match(path.name)
    if not m or m["kind"] != "funding_rate":
        raise CatalogError(f"{path}: not a freqtrade funding_rate file name")
    tf_h = {"h": 1, "d": 24}.get(m["tf"][-1])
    if tf_h is None or int(m["tf"][:-1]) * tf_h not in (1, 2, 4, 8):
        raise CatalogError(f"{path}: funding timeframe {m['tf']} is not 1h/2h/4h/8h")
    interval = int(m["tf"][:-1]) * tf_h
    r = _read_raw(path, quarantine)
    ts = r.ts
    mark = np.full(ts.size, np.nan)
    if mark_path is None:
        cand = path.with_name(path.name.replace("-funding_rate.", "-mark."))
        mark_path = cand if cand.is_file() else None
    if mark_path is not None:
        mr = _read_raw(Path(mark_path), None if quarantine is None else [])
        idx = np.searchsorted(mr.ts, ts)
        ok = idx < mr.ts.size
        ok[ok] = mr.ts[idx[ok]] == ts[ok]
        mark[ok] = mr.cols["open"][idx[ok]]
    table = funding_table(ts, r.cols["open"], np.full(ts.size, interval), mark, str(path))
    if quarantine:
        quarantine.sort()
    return freqtrade_symbol(m["pair"]), table


@dataclass
class ImportSummary:
    """What :func:`import_freqtrade_dir` did: ``imported`` rows
    ``(file, dataset, symbol, rows)``, ``skipped`` ``(file, reason)``, ``notes``,
    ``quarantined`` ``(file, rows set aside)`` and the quarantine file written, if any."""

    imported: list[tuple[str, str, str, int]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    quarantined: list[tuple[str, int]] = field(default_factory=list)
    quarantine_file: Path | None = None


@dataclass
class FreqtradeFile:
    """One freqtrade file read and validated, not yet written."""

    path: Path
    dataset: str
    symbol: str
    table: pa.Table
    quarantined: Quarantine


def read_freqtrade_dir(
    src_dir: PathLike, *, quarantine: bool = False
) -> tuple[list[FreqtradeFile], ImportSummary]:
    """Read and validate every recognised file of a freqtrade futures data folder
    (nothing is written). When a pair/timeframe/kind exists as both ``.feather`` and
    ``.json.gz`` the feather file is used and the other is skipped (reported); files with
    unrecognised names are skipped and reported. Without ``quarantine`` a bad row raises
    :class:`CatalogError`; with it, bad rows are set aside in each file's
    :attr:`FreqtradeFile.quarantined`."""
    src = Path(src_dir)
    if not src.is_dir():
        raise CatalogError(f"{src}: no such directory")
    summary = ImportSummary()
    chosen: dict[tuple[str, str, str], Path] = {}
    for p in sorted(src.iterdir()):
        if not p.is_file():
            continue
        m = FILE_RE.match(p.name)
        if not m:
            summary.skipped.append((p.name, "name is not <PAIR>-<tf>-<futures|mark|funding_rate>"))
            continue
        key = (m["pair"], m["tf"], m["kind"])
        if key in chosen:
            keep, drop = (p, chosen[key]) if p.suffix == ".feather" else (chosen[key], p)
            chosen[key] = keep
            summary.skipped.append((drop.name, f"same data as {keep.name} (feather preferred)"))
        else:
            chosen[key] = p
    files: list[FreqtradeFile] = []
    for (_pair, _tf, kind), p in sorted(chosen.items()):
        q: Quarantine | None = [] if quarantine else None
        files.append(read_freqtrade_file(p, quarantine=q))
        if kind == "futures":
            summary.notes.append(f"{p.name}: approximated {APPROX_NOTE}")
    return files, summary


def read_freqtrade_file(path: PathLike, *, quarantine: Quarantine | None = None) -> FreqtradeFile:
    """One freqtrade file (bars, mark or funding, by its name) → :class:`FreqtradeFile`."""
    p = Path(path)
    m = FILE_RE.match(p.name)
    if not m:
        raise CatalogError(
            f"{p}: not a freqtrade file name (<PAIR>-<tf>-<futures|mark|funding_rate>)"
        )
    q: Quarantine = [] if quarantine is None else quarantine
    lenient = None if quarantine is None else q
    if m["kind"] == "funding_rate":
        sym, table = read_freqtrade_funding(p, quarantine=lenient)
        return FreqtradeFile(p, "funding", sym, table, q)
    sym, dataset, table = read_freqtrade_bars(p, quarantine=lenient)
    return FreqtradeFile(p, dataset, sym, table, q)


def import_freqtrade_dir(
    src_dir: PathLike,
    catalog: Catalog,
    venue: str = "binance",
    quarantine_dir: PathLike | None = None,
) -> ImportSummary:
    """Import every recognised file of a freqtrade futures data folder into ``catalog``.

    All files are read and validated first (:func:`read_freqtrade_dir`); without
    ``quarantine_dir`` a bad row raises :class:`CatalogError` and nothing is written;
    with it, bad rows are appended to ``<quarantine_dir>/quarantine.csv``
    (``file,row,reason,raw_line``) and the good rows imported. Re-importing is idempotent
    (the catalog dedupes identical rows).
    """
    from perpdesk.data.sources.binance_archive import write_quarantine

    files, summary = read_freqtrade_dir(src_dir, quarantine=quarantine_dir is not None)
    entries = [(str(f.path), r, reason, raw) for f in files for r, reason, raw in f.quarantined]
    if quarantine_dir is not None and entries:
        summary.quarantine_file = write_quarantine(quarantine_dir, entries)
    for f in files:
        catalog.write(venue, f.dataset, f.symbol, f.table)
        summary.imported.append((f.path.name, f.dataset, f.symbol, f.table.num_rows))
        if f.quarantined:
            summary.quarantined.append((f.path.name, len(f.quarantined)))
    return summary


__all__ = [
    "FreqtradeFile",
    "ImportSummary",
    "freqtrade_symbol",
    "import_freqtrade_dir",
    "read_freqtrade_bars",
    "read_freqtrade_dir",
    "read_freqtrade_file",
    "read_freqtrade_funding",
]
