"""Funding-rate histories in third-party shapes → the catalog's ``funding`` table.

Every reader returns a :class:`pyarrow.Table` with :data:`FUNDING_SCHEMA` (``ts_ns``
settlement time in ns UTC, ``funding_rate`` as a fraction per settlement,
``funding_interval_h``, ``mark_price`` — null where the source has none), sorted by
``ts_ns``, validated as a whole before it is returned, so a bad file raises
:class:`CatalogError` (one line naming the file, the row and the problem) and nothing
is written.

Settlement times: Binance stamps settlements a few ms late (``08:00:00.003``), so Binance
times are normalised by **rounding to the nearest whole second** (the jitter in the real
files is < 100 ms). Hyperliquid stamps can be up to ~2 minutes late and settle hourly, so
they are rounded to the nearest whole hour (an offset over 5 minutes is an error).
"""

from __future__ import annotations

import csv
import io
import json
import os
from datetime import datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from perpdesk.data.catalog import (
    NS_PER_S,
    Catalog,
    check_increasing,
    dataset_spec,
    validate_table,
)
from perpdesk.errors import CatalogError

NS_PER_MS = 1_000_000
NS_PER_H = 3600 * NS_PER_S
ALLOWED_INTERVALS_H = (1, 2, 4, 8)
LONDON = ZoneInfo("Europe/London")

PathLike = str | os.PathLike[str]


def _round_ns(ts_ns: np.ndarray, unit_ns: int) -> np.ndarray:
    """Round to the nearest multiple of ``unit_ns`` (halves round up)."""
    return ((ts_ns + unit_ns // 2) // unit_ns) * unit_ns


def _num(value: Any, where: str, what: str) -> float:
    """A finite float from a JSON/CSV value (number or numeric string)."""
    try:
        x = float(Decimal(str(value).strip()))
    except (InvalidOperation, ValueError):
        raise CatalogError(f"{where}: {what} {value!r} is not a number") from None
    if not np.isfinite(x):
        raise CatalogError(f"{where}: {what} {value!r} is not finite")
    return x


def infer_intervals(ts_ns: np.ndarray, where: str) -> np.ndarray:
    """Funding interval per row: the gap to the previous settlement in whole hours (the
    first row takes the gap to the next one); every interval must be 1, 2, 4 or 8 h and
    a whole number of hours."""
    n = ts_ns.size
    if n < 2:
        raise CatalogError(f"{where}: need at least 2 settlements to infer the interval")
    gaps = np.diff(ts_ns)
    per_row = np.concatenate([gaps[:1], gaps])
    hours = per_row / NS_PER_H
    rounded = np.round(hours).astype(np.int64)
    bad = ~np.isin(rounded, ALLOWED_INTERVALS_H) | (np.abs(hours - rounded) > 1e-9)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise CatalogError(
            f"{where}: row {i + 1}: gap of {hours[i]:g} h to the "
            f"{'next' if i == 0 else 'previous'} settlement is not a funding interval "
            f"({', '.join(map(str, ALLOWED_INTERVALS_H))} h)"
        )
    return rounded.astype(np.int32)


def funding_table(
    ts_ns: np.ndarray,
    rate: np.ndarray,
    interval_h: np.ndarray,
    mark_price: np.ndarray | None,
    where: str,
) -> pa.Table:
    """Assemble and validate a FUNDING_SCHEMA table from columns."""
    mark = (
        pa.nulls(len(ts_ns), pa.float64())
        if mark_price is None
        else pa.array(mark_price, pa.float64(), mask=np.isnan(mark_price))
    )
    table = pa.table(
        {
            "ts_ns": pa.array(np.asarray(ts_ns, dtype=np.int64)),
            "funding_rate": pa.array(np.asarray(rate, dtype=np.float64)),
            "funding_interval_h": pa.array(np.asarray(interval_h, dtype=np.int32)),
            "mark_price": mark,
        }
    )
    return validate_table(table, dataset_spec("funding"), where)


def _load_json_list(path: Path) -> list[Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CatalogError(f"{path}: cannot read JSON ({exc})") from None
    if not isinstance(data, list):
        raise CatalogError(f"{path}: expected a JSON list of records")
    if not data:
        raise CatalogError(f"{path}: no records")
    return data


Quarantine = list[tuple[int, str, str]]
"""Rows set aside by a reader in quarantine mode: ``(row, reason, raw row text)``, row
numbers counting data rows/records from 1."""


def _drop_unordered(
    ts_ns: np.ndarray, rows: np.ndarray, raw: list[str], quarantine: Quarantine
) -> np.ndarray:
    """Quarantine mode: rows whose time is not after the running maximum of the rows
    before them (duplicates, out of order); returns the keep mask."""
    if ts_ns.size < 2:
        return np.ones(ts_ns.size, dtype=bool)
    prev = np.maximum.accumulate(ts_ns)[:-1]
    bad = np.concatenate([[False], ts_ns[1:] <= prev])
    for j in np.flatnonzero(bad):
        what = "duplicates" if ts_ns[j] in ts_ns[:j] else "is before"
        quarantine.append(
            (int(rows[j]) + 1, f"settlement time {what} an earlier row", raw[int(rows[j])])
        )
    return ~bad


def _intervals_lenient(
    ts_ns: np.ndarray, rows: np.ndarray, raw: list[str], where: str, quarantine: Quarantine
) -> tuple[np.ndarray, np.ndarray]:
    """Quarantine mode of :func:`infer_intervals`: a row whose gap is not a funding
    interval is set aside (its interval is unknown); returns ``(keep mask, intervals)``."""
    n = ts_ns.size
    if n < 2:
        raise CatalogError(f"{where}: need at least 2 settlements to infer the interval")
    gaps = np.diff(ts_ns)
    per_row = np.concatenate([gaps[:1], gaps])
    hours = per_row / NS_PER_H
    rounded = np.round(hours).astype(np.int64)
    bad = ~np.isin(rounded, ALLOWED_INTERVALS_H) | (np.abs(hours - rounded) > 1e-9)
    for i in np.flatnonzero(bad):
        side = "next" if i == 0 else "previous"
        quarantine.append(
            (
                int(rows[i]) + 1,
                f"gap of {hours[i]:g} h to the {side} settlement is not a funding interval",
                raw[int(rows[i])],
            )
        )
    return ~bad, rounded.astype(np.int32)


def read_binance_funding_json(
    path: PathLike, symbol: str | None = None, *, quarantine: Quarantine | None = None
) -> pa.Table:
    """Binance ``/fapi/v1/fundingRate`` history saved as JSON → funding table.

    Two record shapes are accepted: the raw REST shape ``{symbol, fundingTime (ms),
    fundingRate (string), markPrice?}`` and the saved shape ``{coin, funding_rate,
    time (ms)}``. ``symbol`` (e.g. ``BTCUSDT``) selects one symbol when the file holds
    several (raw shape: ``symbol``; saved shape: ``coin`` + ``USDT``); a file with
    several symbols and no ``symbol`` given is an error. Times are rounded to the nearest
    whole second; rows must be strictly increasing; the interval is inferred from the
    gaps (see :func:`infer_intervals`).

    ``quarantine``: when a list is given, a bad record (missing field, non-numeric value,
    duplicate or out-of-order time, a gap that is not a funding interval) is appended as
    ``(record number, reason, record JSON)`` and left out instead of raising; file-level
    problems (unreadable JSON, no records for the symbol) still raise.
    """
    path = Path(path)
    recs = _load_json_list(path)
    ts, rates, marks, syms, rownos = [], [], [], [], []
    good: list[bool] = []
    for i, r in enumerate(recs, start=1):
        where = f"{path}: row {i}"
        try:
            if not isinstance(r, dict):
                raise CatalogError(f"{where}: record is not an object")
            if "fundingTime" in r:
                keys = ("symbol", "fundingTime", "fundingRate")
            else:
                keys = ("coin", "time", "funding_rate")
            missing = [k for k in keys if k not in r]
            if missing:
                raise CatalogError(f"{where}: missing field(s) {', '.join(missing)}")
            sym = str(r[keys[0]]) if keys[0] == "symbol" else f"{r[keys[0]]}USDT"
            if symbol is not None and sym != symbol:
                continue
            t = _num(r[keys[1]], where, keys[1])
            if t != int(t):
                raise CatalogError(f"{where}: {keys[1]} {r[keys[1]]!r} is not whole milliseconds")
            rate = _num(r[keys[2]], where, keys[2])
            mp = r.get("markPrice")
            mark = np.nan if mp in (None, "") else _num(mp, where, "markPrice")
        except CatalogError as exc:
            if quarantine is None:
                raise
            quarantine.append((i, str(exc).removeprefix(f"{where}: "), json.dumps(r)))
            ghost = _salvage_time(r, symbol)
            if ghost is not None:  # keeps its place in the settlement grid
                ts.append(ghost)
                rates.append(np.nan)
                marks.append(np.nan)
                rownos.append(i - 1)
                good.append(False)
            continue
        syms.append(sym)
        ts.append(int(t))
        rates.append(rate)
        marks.append(mark)
        rownos.append(i - 1)
        good.append(True)
    sym_set = set(syms)
    if symbol is None and len(sym_set) > 1:
        raise CatalogError(
            f"{path}: holds several symbols ({', '.join(sorted(sym_set))}); pass symbol="
        )
    if not syms:
        what = f"records for symbol {symbol}" if symbol is not None else "valid records"
        raise CatalogError(f"{path}: no {what}")
    rows = np.asarray(rownos, dtype=np.int64)
    ts_ns = _round_ns(np.array(ts, dtype=np.int64) * NS_PER_MS, NS_PER_S)
    rate_a, mark_a = np.array(rates), np.array(marks, dtype=float)
    if quarantine is None:
        check_increasing(ts_ns, str(path), "settlement ts_ns", rows=rows)
        interval = infer_intervals(ts_ns, str(path))
        return funding_table(ts_ns, rate_a, interval, mark_a, str(path))
    # quarantine mode: rows set aside for a bad value but with a readable time ("ghosts")
    # still take part in the ordering and interval checks, so one bad rate does not turn
    # its neighbours' 8 h gaps into 16 h ones; they are never reported twice nor kept.
    raw_all = [json.dumps(r) for r in recs]
    is_good = np.asarray(good, dtype=bool)
    seen: Quarantine = []
    keep = _drop_unordered(ts_ns, rows, raw_all, seen)
    ts_ns, rows, rate_a, mark_a, is_good = (
        ts_ns[keep],
        rows[keep],
        rate_a[keep],
        mark_a[keep],
        is_good[keep],
    )
    keep, interval = _intervals_lenient(ts_ns, rows, raw_all, str(path), seen)
    listed = {r for r, _, _ in quarantine}
    quarantine.extend(e for e in seen if e[0] not in listed)
    quarantine.sort()
    keep &= is_good
    return funding_table(ts_ns[keep], rate_a[keep], interval[keep], mark_a[keep], str(path))


def _salvage_time(r: object, symbol: str | None) -> int | None:
    """The settlement time (ms) of a bad record when it is readable, else None."""
    if not isinstance(r, dict):
        return None
    key, sym_key = ("fundingTime", "symbol") if "fundingTime" in r else ("time", "coin")
    sym = r.get(sym_key)
    if symbol is not None and (
        sym is None or (str(sym) if sym_key == "symbol" else f"{sym}USDT") != symbol
    ):
        return None
    try:
        t = float(Decimal(str(r[key]).strip()))
    except (KeyError, InvalidOperation, ValueError):
        return None
    return int(t) if np.isfinite(t) and t == int(t) else None


def _london_to_utc_ns(text: str, interval_h: int, where: str) -> int:
    """A Europe/London wall-clock time → ns UTC, resolving DST.

    Settlements fall on whole UTC hours that are multiples of the interval. An ambiguous
    wall time (the repeated hour when clocks go back) is resolved by taking the reading
    (``fold``) whose UTC hour is on that grid; a nonexistent wall time (the skipped hour
    when clocks go forward) cannot come from a real settlement and is an error, as is any
    time that lands off the grid.
    """
    try:
        naive = datetime.strptime(text.strip(), "%Y-%m-%d %H:%M:%S")
    except ValueError:
        raise CatalogError(f"{where}: time {text!r} is not 'YYYY-MM-DD HH:MM:SS'") from None
    candidates = []
    for fold in (0, 1):
        local = naive.replace(tzinfo=LONDON, fold=fold)
        utc = local.astimezone(ZoneInfo("UTC"))
        # Nonexistent wall times do not survive a round trip.
        if utc.astimezone(LONDON).replace(tzinfo=None) != naive:
            continue
        secs = int(utc.timestamp())
        if secs % (interval_h * 3600) == 0:
            candidates.append(secs)
    candidates = sorted(set(candidates))
    if len(candidates) != 1:
        raise CatalogError(
            f"{where}: London time {text} does not map to exactly one UTC settlement on the "
            f"{interval_h} h grid (nonexistent/ambiguous local time or off-grid)"
        )
    return candidates[0] * NS_PER_S


def read_binance_funding_web_csv(
    path: PathLike, *, quarantine: Quarantine | None = None
) -> pa.Table:
    """The funding-history CSV exported by Binance's website → funding table.

    Header ``Time,Contracts,Funding Interval,Funding Rate`` (UTF-8 with BOM); times are
    Europe/London wall-clock (see :func:`_london_to_utc_ns` for the DST rule), rows newest
    first (sorted ascending here; duplicates are an error), rates are percent strings
    (``"0.010000%"`` → 0.0001), the interval comes from the ``Funding Interval`` column
    (``8h``). One contract per file (``BTCUSDT Perpetual``); several is an error.

    ``quarantine``: when a list is given, a bad row (field count, interval, rate or time
    that does not parse, a duplicate settlement time — the later row in the file) is
    appended as ``(row, reason, raw CSV row)`` and left out instead of raising.
    """
    path = Path(path)
    try:
        with path.open(encoding="utf-8-sig", newline="") as fh:
            rows = list(csv.reader(fh))
    except (OSError, UnicodeDecodeError) as exc:
        raise CatalogError(f"{path}: cannot read CSV ({exc})") from None
    if not rows:
        raise CatalogError(f"{path}: empty file")
    header = [h.strip() for h in rows[0]]
    need = ("Time", "Contracts", "Funding Interval", "Funding Rate")
    missing = [c for c in need if c not in header]
    if missing:
        raise CatalogError(f"{path}: missing column(s) {', '.join(missing)}")
    col = {c: header.index(c) for c in need}
    ts, rates, ivs, contracts, rownos = [], [], [], set(), []

    def raw(row: list[str]) -> str:
        buf = io.StringIO()
        csv.writer(buf, lineterminator="").writerow(row)
        return buf.getvalue()

    for i, row in enumerate(rows[1:], start=1):
        where = f"{path}: row {i}"
        try:
            if len(row) != len(header):
                raise CatalogError(f"{where}: {len(row)} fields, header has {len(header)}")
            iv_text = row[col["Funding Interval"]].strip()
            if not (iv_text.endswith("h") and iv_text[:-1].isdigit()):
                raise CatalogError(f"{where}: funding interval {iv_text!r} is not like '8h'")
            iv = int(iv_text[:-1])
            if iv not in ALLOWED_INTERVALS_H:
                raise CatalogError(f"{where}: funding interval {iv_text!r} is not 1h/2h/4h/8h")
            rate_text = row[col["Funding Rate"]].strip()
            if not rate_text.endswith("%"):
                raise CatalogError(f"{where}: funding rate {rate_text!r} is not a percent string")
            try:
                rate = float(Decimal(rate_text[:-1]) / 100)
            except InvalidOperation:
                raise CatalogError(f"{where}: funding rate {rate_text!r} is not a number") from None
            if not np.isfinite(rate):
                raise CatalogError(f"{where}: funding rate {rate_text!r} is not finite")
            t_ns = _london_to_utc_ns(row[col["Time"]], iv, where)
        except CatalogError as exc:
            if quarantine is None:
                raise
            quarantine.append((i, str(exc).removeprefix(f"{where}: "), raw(row)))
            continue
        ts.append(t_ns)
        rates.append(rate)
        ivs.append(iv)
        rownos.append(i)
        contracts.add(row[col["Contracts"]].strip())
    if not ts:
        raise CatalogError(f"{path}: no {'valid ' if quarantine else ''}data rows")
    if len(contracts) > 1:
        raise CatalogError(f"{path}: several contracts ({', '.join(sorted(contracts))})")
    ts_arr = np.array(ts, dtype=np.int64)
    row_arr = np.array(rownos, dtype=np.int64)
    order = np.lexsort((row_arr, ts_arr))
    sorted_ts = ts_arr[order]
    dup = np.concatenate([[False], np.diff(sorted_ts) == 0])
    if dup.any():
        j = int(np.flatnonzero(dup)[0])
        if quarantine is None:
            a, b = sorted(int(row_arr[order[j - 1]]), int(row_arr[order[j]]))
            raise CatalogError(f"{path}: row {b}: duplicates the settlement time of row {a}")
        for j in np.flatnonzero(dup):
            r = int(row_arr[order[j]])
            quarantine.append((r, "duplicates the settlement time of an earlier row", raw(rows[r])))
        quarantine.sort()
        order, sorted_ts = order[~dup], sorted_ts[~dup]
    return funding_table(sorted_ts, np.array(rates)[order], np.array(ivs)[order], None, str(path))


def read_hyperliquid_funding_json(path: PathLike) -> pa.Table:
    """Hyperliquid hourly funding saved as JSON records ``{coin, funding_rate, premium,
    time (ms)}`` → funding table (interval 1 h). Stamps are rounded to the nearest whole
    hour (Hyperliquid publishes up to a couple of minutes late); an offset over 5 minutes
    is an error. Gaps in the history are kept as gaps."""
    path = Path(path)
    recs = _load_json_list(path)
    ts, rates = [], []
    for i, r in enumerate(recs, start=1):
        where = f"{path}: row {i}"
        if not isinstance(r, dict):
            raise CatalogError(f"{where}: record is not an object")
        missing = [k for k in ("coin", "time", "funding_rate") if k not in r]
        if missing:
            raise CatalogError(f"{where}: missing field(s) {', '.join(missing)}")
        ts.append(int(_num(r["time"], where, "time")) * NS_PER_MS)
        rates.append(_num(r["funding_rate"], where, "funding_rate"))
    raw = np.array(ts, dtype=np.int64)
    snapped = _round_ns(raw, NS_PER_H)
    off = np.abs(raw - snapped)
    if (off > 300 * NS_PER_S).any():
        i = int(np.flatnonzero(off > 300 * NS_PER_S)[0])
        raise CatalogError(f"{path}: row {i + 1}: time is {off[i] / NS_PER_S:g} s off the hour")
    check_increasing(snapped, str(path), "settlement ts_ns")
    return funding_table(
        snapped, np.array(rates), np.ones(len(ts), dtype=np.int32), None, str(path)
    )


def read_multivenue_funding(path: PathLike, venue: str, coin: str) -> pa.Table:
    """One venue/coin of a multi-venue funding Parquet (``timestamp, venue, coin,
    funding_rate``) → funding table. Times are rounded to the nearest whole second and
    the interval is inferred from the gaps (:func:`infer_intervals`), so a venue whose
    history has holes (missed settlements) is an error naming the row. The catalog symbol
    for Binance is ``<COIN>USDT``; see :func:`multivenue_symbol`."""
    path = Path(path)
    try:
        t = pq.read_table(path)
    except (OSError, pa.ArrowInvalid) as exc:
        raise CatalogError(f"{path}: cannot read Parquet ({exc})") from None
    missing = [c for c in ("timestamp", "venue", "coin", "funding_rate") if c not in t.column_names]
    if missing:
        raise CatalogError(f"{path}: missing column(s) {', '.join(missing)}")
    mask = pc.and_(pc.equal(t["venue"], venue), pc.equal(t["coin"], coin))
    rows = np.flatnonzero(mask.to_numpy(zero_copy_only=False))
    if rows.size == 0:
        raise CatalogError(f"{path}: no rows for venue {venue!r} coin {coin!r}")
    sub = t.take(pa.array(rows))
    try:
        ts = sub["timestamp"].cast(pa.timestamp("ns", tz="UTC")).cast(pa.int64())
        rate = sub["funding_rate"].cast(pa.float64())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise CatalogError(f"{path}: bad column type ({exc})") from None
    for name, arr in (("timestamp", ts), ("funding_rate", rate)):
        bad = arr.is_null()
        if pa.types.is_floating(arr.type):
            bad = pc.or_(bad, pc.is_nan(arr))
        if pc.any(bad).as_py():
            j = int(np.flatnonzero(bad.to_numpy(zero_copy_only=False))[0])
            raise CatalogError(f"{path}: row {rows[j] + 1}: {name} is null/NaN")
    ts_ns = _round_ns(ts.to_numpy(), NS_PER_S)
    check_increasing(ts_ns, str(path), "settlement ts_ns", rows=rows)
    interval = infer_intervals(ts_ns, f"{path} ({venue} {coin})")
    return funding_table(ts_ns, rate.to_numpy(), interval, None, str(path))


def multivenue_symbol(venue: str, coin: str) -> str:
    """Catalog symbol of a multivenue coin: ``<COIN>USDT`` on Binance, the coin elsewhere."""
    return f"{coin}USDT" if venue == "binance" else coin


def write_funding(catalog: Catalog, venue: str, symbol: str, table: pa.Table) -> list[Path]:
    """Write a funding table read by one of these readers into ``catalog`` (atomic per
    partition; identical rows dedupe, so re-importing the same file changes nothing)."""
    return catalog.write(venue, "funding", symbol, table)


__all__ = [
    "ALLOWED_INTERVALS_H",
    "Quarantine",
    "funding_table",
    "infer_intervals",
    "multivenue_symbol",
    "read_binance_funding_json",
    "read_binance_funding_web_csv",
    "read_hyperliquid_funding_json",
    "read_multivenue_funding",
    "write_funding",
]
