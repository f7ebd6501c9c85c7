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
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
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


def _read_raw(path: Path) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(ts_ns floored to the second, {open..volume}) of a freqtrade feather/json.gz file;
    validates types, NaNs (volume may be null → NaN) and strict ordering."""
    where = str(path)
    if path.name.endswith(".json.gz"):
        try:
            with gzip.open(path, "rt", encoding="utf-8") as fh:
                rows = json.load(fh)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise CatalogError(f"{where}: cannot read ({exc})") from None
        if not isinstance(rows, list) or not rows:
            raise CatalogError(f"{where}: expected a non-empty JSON list of rows")
        for i, r in enumerate(rows, start=1):
            if not isinstance(r, list) or len(r) != 6:
                raise CatalogError(f"{where}: row {i}: expected [ms, o, h, l, c, v]")
            for v in r[:5]:
                if isinstance(v, bool) or not isinstance(v, int | float):
                    raise CatalogError(f"{where}: row {i}: value {v!r} is not a number")
        arr = np.array([[np.nan if v is None else v for v in r] for r in rows], dtype=float)
        ts = arr[:, 0].astype(np.int64) * 1_000_000
        cols = {c: arr[:, k + 1] for k, c in enumerate(OHLCV)}
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
                t["date"].cast(pa.timestamp("ns", tz="UTC")).cast(pa.int64()).to_numpy()
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
        if t["date"].null_count:
            i = int(np.flatnonzero(t["date"].is_null().to_numpy(zero_copy_only=False))[0])
            raise CatalogError(f"{where}: row {i + 1}: date is null")
    ts = ts - ts % NS_PER_S
    for c in OHLCV[:4]:
        bad = ~np.isfinite(cols[c])
        if bad.any():
            raise CatalogError(f"{where}: row {int(np.flatnonzero(bad)[0]) + 1}: {c} is null/NaN")
    if ts.size > 1 and (np.diff(ts) <= 0).any():
        i = int(np.flatnonzero(np.diff(ts) <= 0)[0]) + 1
        what = "duplicates" if ts[i] == ts[i - 1] else "is before"
        raise CatalogError(
            f"{where}: row {i + 1}: date {what} row {i} (after flooring to the second); "
            "timestamps must be strictly increasing"
        )
    return ts, cols


def read_freqtrade_bars(path: PathLike) -> tuple[str, str, pa.Table]:
    """A ``-<tf>-futures`` or ``-<tf>-mark`` file → ``(symbol, dataset, table)`` with
    ``dataset`` ``perp_bars_<tf>`` / ``mark_bars_<tf>`` (see the module docstring for the
    volume approximation)."""
    path = Path(path)
    m = FILE_RE.match(path.name)
    if not m or m["kind"] == "funding_rate":
        raise CatalogError(f"{path}: not a freqtrade futures/mark bar file name")
    ts, c = _read_raw(path)
    if m["kind"] == "futures":
        dataset = f"perp_bars_{m['tf']}"
        vol = c["volume"]
        bad = ~np.isfinite(vol) | (vol < 0)
        if bad.any():
            raise CatalogError(
                f"{path}: row {int(np.flatnonzero(bad)[0]) + 1}: volume is missing or negative"
            )
        vq = vol * (c["open"] + c["high"] + c["low"] + c["close"]) / 4.0
        taker = vq / 2.0
        meta = {b"perpdesk.approximated": APPROX_NOTE.encode()}
    else:
        dataset = f"mark_bars_{m['tf']}"
        vol = vq = taker = np.zeros(ts.size)
        meta = {b"perpdesk.note": b"mark-price bars: volumes are 0 by definition"}
    table = pa.table(
        {
            "ts_ns": ts,
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
    return freqtrade_symbol(m["pair"]), dataset, table.replace_schema_metadata(meta)


def read_freqtrade_funding(
    path: PathLike, mark_path: PathLike | None = None
) -> tuple[str, pa.Table]:
    """A ``-8h-funding_rate`` file → ``(symbol, funding table)``; ``mark_path`` (default:
    the sibling ``-8h-mark`` file of the same format, if present) supplies ``mark_price``
    (its bar open at the same floored time; null where absent)."""
    path = Path(path)
    m = FILE_RE.match(path.name)
    if not m or m["kind"] != "funding_rate":
        raise CatalogError(f"{path}: not a freqtrade funding_rate file name")
    tf_h = {"h": 1, "d": 24}.get(m["tf"][-1])
    if tf_h is None or int(m["tf"][:-1]) * tf_h not in (1, 2, 4, 8):
        raise CatalogError(f"{path}: funding timeframe {m['tf']} is not 1h/2h/4h/8h")
    interval = int(m["tf"][:-1]) * tf_h
    ts, c = _read_raw(path)
    mark = np.full(ts.size, np.nan)
    if mark_path is None:
        cand = path.with_name(path.name.replace("-funding_rate.", "-mark."))
        mark_path = cand if cand.is_file() else None
    if mark_path is not None:
        mts, mc = _read_raw(Path(mark_path))
        idx = np.searchsorted(mts, ts)
        ok = idx < mts.size
        ok[ok] = mts[idx[ok]] == ts[ok]
        mark[ok] = mc["open"][idx[ok]]
    table = funding_table(ts, c["open"], np.full(ts.size, interval), mark, str(path))
    return freqtrade_symbol(m["pair"]), table


@dataclass
class ImportSummary:
    """What :func:`import_freqtrade_dir` did: ``imported`` rows
    ``(file, dataset, symbol, rows)``, ``skipped`` ``(file, reason)``, ``notes``."""

    imported: list[tuple[str, str, str, int]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def import_freqtrade_dir(
    src_dir: PathLike, catalog: Catalog, venue: str = "binance"
) -> ImportSummary:
    """Import every recognised file of a freqtrade futures data folder into ``catalog``.

    All files are read and validated first; a bad file raises :class:`CatalogError` and
    nothing is written. When a pair/timeframe/kind exists as both ``.feather`` and
    ``.json.gz`` the feather file is used and the other is skipped (reported). Files with
    unrecognised names are skipped and reported. Re-importing is idempotent (the catalog
    dedupes identical rows).
    """
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
    pending: list[tuple[str, str, str, pa.Table]] = []
    for (_pair, _tf, kind), p in sorted(chosen.items()):
        if kind == "funding_rate":
            sym, table = read_freqtrade_funding(p)
            pending.append((p.name, "funding", sym, table))
        else:
            sym, dataset, table = read_freqtrade_bars(p)
            pending.append((p.name, dataset, sym, table))
            if kind == "futures":
                summary.notes.append(f"{p.name}: approximated {APPROX_NOTE}")
    for name, dataset, sym, table in pending:
        catalog.write(venue, dataset, sym, table)
        summary.imported.append((name, dataset, sym, table.num_rows))
    return summary


__all__ = [
    "ImportSummary",
    "freqtrade_symbol",
    "import_freqtrade_dir",
    "read_freqtrade_bars",
    "read_freqtrade_funding",
]
