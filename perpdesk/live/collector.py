"""Tick collector: Binance USD-M websocket streams → the Parquet catalog.

Streams (Binance USD-M "Market Streams", https://developers.binance.com/docs/derivatives/
usds-margined-futures/websocket-market-streams) and what they become:

============  =========================  ===========  ============================================
kind          stream                     dataset      ``ts_ns`` (exchange clock) / sequence key
============  =========================  ===========  ============================================
aggTrade      ``<sym>@aggTrade``          agg_trades   trade time ``T`` / ``a``, +1 per message
trade         ``<sym>@trade``             trades       trade time ``T`` / ``t``, +1 per message
bookTicker    ``<sym>@bookTicker``        book_ticker  event time ``E`` / ``u``, increasing
forceOrder    ``<sym>@forceOrder``        liquidations order trade time ``o.T`` / ``o.T``
============  =========================  ===========  ============================================

Every row also carries ``ts_recv_ns``: the local wall clock (``time.time_ns()``) when the
frame was read from the socket.

Design of the hot path (one Python object per message caps a design near a million
messages a second before it does any work, see ARCHITECTURE.md): each connection carries
**one stream kind** (aggTrade streams on one socket, bookTicker on another …, at most
200 streams per connection, Binance's limit), so its frames share one JSON shape. The
receive loop only appends the raw frame bytes and the receive stamp to a list and an
``array('q')`` (whose buffer NumPy reads in place: converting a list of stamps cost ~28 ns a
frame, more than the list append saves). Every ``parse_interval_s`` a connection's frames are joined into one
buffer (in chunks of ``scan_chunk`` frames) and decoded by numba: first against the
stream's *template* (``_TEMPLATE_KERNELS``: Binance writes the keys of a stream in one
order, so a frame is constant text between its values, compared 8 bytes at a time), then
the frames off the template by the general scanner (:func:`_scan_flat`), which validates
each frame and converts the wanted fields in one pass — decimals exactly, by Clinger's
fast path; both read digits and strings 8 bytes at a step (:mod:`perpdesk.live.swar`).
Frames neither accepts go to Arrow's C++
JSON reader (``pyarrow.json.read_json`` with an explicit schema; it is also the only
decoder of forceOrder frames): a batch Arrow refuses is bisected until the bad frames are
isolated; they are counted as ``malformed`` and logged, the rest is kept. The scanner
writes into arrays kept from one round to the next (a fresh page costs a fault each,
dear on a VM), and one pass (:func:`_scatter_rows`) transposes them into per-field columns
grouped by symbol. Symbols map to codes through a hash table; sequence checks run
vectorised per symbol (NumPy running maximum) and only the anomalies (gaps, late and
repeated ids) are visited in Python.

Sequence rules (per symbol, in arrival order):

* aggTrade / trade: ids must increase by exactly 1. A jump opens a gap ``[lo, hi]``; a
  gap still open one parse round later is *confirmed*: logged (warning, with the id range)
  and counted in ``gaps`` / ``missing_ids``. A late id inside an open gap is
  ``out_of_order``: kept (the catalog sorts by id) and the gap shrinks. Any other id at
  or below the highest seen is a ``duplicate`` and dropped.
* bookTicker: ``u`` must increase; it skips values normally (it is the order-book update
  id). A ``u`` at or below the highest seen is dropped: a ``duplicate`` when it is one of
  the last 4096 accepted for the symbol, else ``out_of_order`` (a stale top of book).
* forceOrder: Binance pushes at most one liquidation snapshot per symbol per 1000 ms, so
  the order trade time ``o.T`` is the key; a repeat or regression of it is dropped and
  counted like bookTicker.

Writes: parsed rows wait in memory and are written by :meth:`TickCollector.flush` every
``flush_seconds``, when ``flush_rows`` are pending, at each UTC midnight and at stop,
through :meth:`perpdesk.data.catalog.Catalog.append`: each flush adds one immutable part
file per daily partition touched (tmp + rename; validated; rows already stored dedupe),
at a cost that does not grow as the day fills — :meth:`Catalog.write` would merge with
and rewrite the whole daily file every flush, quadratic over a day. Readers see the
union of a partition's file and its parts. The parts are folded into the daily file
(crash-safe, see :mod:`perpdesk.data.catalog`) by :meth:`TickCollector.compact`: at the
first flush after each UTC midnight for the partitions of earlier days, and at stop for
all. A crash loses at most the unflushed rows; a failed write (disk full …) leaves the
partition as it was and keeps the rows for the next flush. Rows the catalog refuses
(same key stored with different contents) are written to
``<root>/.collector-rejected/<venue>/<dataset>/<symbol>/<recv ns>.parquet`` and counted.

Reconnects: exponential backoff with full jitter, ``sleep = uniform(0, min(cap, base ·
2^attempt))`` (M. Brooker, "Exponential Backoff And Jitter", AWS Architecture Blog,
2015); the attempt counter resets once a connection has delivered a message. Binance
closes every connection after 24 h: that is a normal close, reconnected the same way. A
connection that delivers nothing for ``stall_timeout_s`` is closed and reconnected.
Streams are given in the URL (``/stream?streams=a/b/c``), so no SUBSCRIBE control
messages are sent (Binance allows 10 incoming control messages per second and
connection).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from array import array
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numba
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pajson

from perpdesk.data.catalog import (
    PARTS_SUFFIX,
    Catalog,
    DatasetSpec,
    atomic_write_parquet,
    dataset_spec,
)
from perpdesk.errors import CatalogError, PerpdeskError
from perpdesk.live.swar import IPOW10, digit_run, first_flag, load_u64, parse_digits, stop_mask

log = logging.getLogger(__name__)

NS_PER_MS = 1_000_000
NS_PER_S = 1_000_000_000
NS_PER_DAY = 86_400 * NS_PER_S
MAX_STREAMS_PER_CONNECTION = 200  # Binance USD-M limit per connection

LIQUIDATIONS_SPEC = dataset_spec("liquidations")


# --- stream kinds --------------------------------------------------------------------------


@dataclass(frozen=True)
class _Kind:
    name: str  # stream suffix after '@'
    dataset: str
    json_schema: pa.Schema  # what Arrow's JSON reader extracts from a combined-stream frame
    seq: str  # "contiguous" (+1 ids) or "increasing"


def _data(*fields: tuple[str, pa.DataType]) -> pa.Schema:
    return pa.schema([("stream", pa.string()), ("data", pa.struct(list(fields)))])


_S, _I = pa.string(), pa.int64()

KINDS: dict[str, _Kind] = {
    "aggTrade": _Kind(
        "aggTrade",
        "agg_trades",
        _data(
            ("s", _S), ("a", _I), ("p", _S), ("q", _S), ("f", _I), ("l", _I), ("T", _I),
            ("m", pa.bool_()),
        ),
        "contiguous",
    ),
    "trade": _Kind(
        "trade",
        "trades",
        _data(("s", _S), ("t", _I), ("p", _S), ("q", _S), ("T", _I), ("m", pa.bool_())),
        "contiguous",
    ),
    "bookTicker": _Kind(
        "bookTicker",
        "book_ticker",
        _data(("s", _S), ("u", _I), ("b", _S), ("B", _S), ("a", _S), ("A", _S), ("E", _I)),
        "increasing",
    ),
    "forceOrder": _Kind(
        "forceOrder",
        "liquidations",
        _data(
            ("E", _I),
            (
                "o",
                pa.struct(
                    [
                        ("s", _S), ("S", _S), ("o", _S), ("f", _S), ("q", _S), ("p", _S),
                        ("ap", _S), ("X", _S), ("l", _S), ("z", _S), ("T", _I),
                    ]
                ),
            ),
        ),
        "increasing",
    ),
}  # fmt: skip

DEFAULT_KINDS = ("aggTrade", "bookTicker", "forceOrder")


def spec_for(dataset: str) -> DatasetSpec:
    """The catalog's spec of ``dataset``."""
    return dataset_spec(dataset)


def write_partitioned(catalog: Catalog, venue: str, dataset: str, symbol: str, table: pa.Table):
    """Write ``table`` into the catalog's daily partitions (validated, merged, atomic)."""
    return catalog.write(venue, dataset, symbol, table)


def append_partitioned(
    catalog: Catalog, venue: str, dataset: str, symbol: str, table: pa.Table
) -> list[Path]:
    """Add ``table`` to the catalog's daily partitions as part files (validated, atomic)."""
    return catalog.append(venue, dataset, symbol, table)


def _partition_of(path: Path) -> str:
    """``YYYY-MM-DD`` of a partition file or of one of its parts."""
    parent = path.parent.name
    return parent[: -len(PARTS_SUFFIX)] if parent.endswith(PARTS_SUFFIX) else path.stem


# --- the frame scanner (numba) ---------------------------------------------------------------
#
# Binance sends compact JSON: {"stream":"btcusdt@bookTicker","data":{"e":"bookTicker",
# "u":4984035701909,"s":"BTCUSDT","b":"63959.90",...}}. The scanner accepts exactly that
# shape — an outer object with "stream" then "data", "data" a flat object whose values are
# strings without escapes, JSON numbers, true, false or null — and decodes the wanted keys
# in the same pass: integers (JSON integers), decimals (quoted or bare, converted exactly),
# booleans and the symbol (looked up in a hash table). Everything it accepts is valid JSON
# (RFC 8259). Anything else — whitespace between tokens, an escape, a nested value, a
# missing or repeated wanted key, an unknown symbol, another stream, a decimal it cannot
# convert exactly — gets a non-zero status and goes to Arrow's JSON reader, which decides
# (valid rows are kept, malformed ones counted). tests/test_collector.py checks it against
# json.loads + float() on recorded frames and on every truncation of some.

_C_SYMBOL, _C_INT, _C_FLOAT, _C_BOOL = 1, 2, 3, 4
# exact powers of ten (every 10**k, k <= 22, is a float64 without rounding)
_POW10 = np.array([10.0**k for k in range(23)])
_IPOW10 = IPOW10
# bytes that end a JSON string scan: 1 the closing quote, 2 a backslash or a control character
_STR_STOP = np.zeros(256, np.uint8)
_STR_STOP[:32] = 2
_STR_STOP[92] = 2
_STR_STOP[34] = 1
_PREFIX = np.frombuffer(b'{"stream":"', np.uint8).copy()
_MIDDLE = np.frombuffer(b',"data":{', np.uint8).copy()


@numba.njit(cache=True, inline="always")
def _fnv(buf, s, e):
    h = np.uint64(14695981039346656037)
    for k in range(s, e):
        h = (h ^ np.uint64(buf[k])) * np.uint64(1099511628211)
    return h


@numba.njit(cache=True, inline="always")
def _symbol_code(buf, s, e, table, sym_bytes, sym_lens):
    mask = table.size - 1
    j = np.int64(_fnv(buf, s, e) & np.uint64(mask))
    while table[j] >= 0:
        c = table[j]
        if sym_lens[c] == e - s:
            same = True
            for k in range(e - s):
                if sym_bytes[c, k] != buf[s + k]:
                    same = False
                    break
            if same:
                return c
        j = (j + 1) & mask
    return -1


_K0 = np.uint64(0x9E3779B97F4A7C15)  # odd multipliers (golden ratio, splitmix64)
_K1 = np.uint64(0xBF58476D1CE4E5B9)


@numba.njit(cache=True, inline="always")
def _symbol_words_hash(w0, w1, n, mask):
    return np.int64(((w0 * _K0) ^ (w1 * _K1) ^ np.uint64(n)) >> np.uint64(40)) & mask


@numba.njit(cache=True, inline="always")
def _symbol_code_fast(buf, s, e, table, sym_bytes, sym_lens, wtable, sym_w, lim):
    """:func:`_symbol_code` for a name of 1..16 bytes from two 8-byte loads: the first 8
    bytes (masked to the name) and the last 8 (for names over 8 bytes) are its hash key
    and, compared with the symbol's stored words (:func:`_symbol_words`), the whole
    equality test. Longer names, or names near the buffer's end, take the FNV table."""
    n = e - s
    if n < 1 or n > 16 or s + 8 > lim:
        return _symbol_code(buf, s, e, table, sym_bytes, sym_lens)
    w0 = load_u64(buf, s)
    w1 = np.uint64(0)
    if n < 8:
        w0 &= (np.uint64(1) << np.uint64(8 * n)) - np.uint64(1)
    elif n > 8:
        w1 = load_u64(buf, e - 8)
    mask = wtable.size - 1
    j = _symbol_words_hash(w0, w1, n, mask)
    while wtable[j] >= 0:
        c = wtable[j]
        if sym_lens[c] == n and sym_w[c, 0] == w0 and sym_w[c, 1] == w1:
            return c
        j = (j + 1) & mask
    return -1


@numba.njit(cache=True, inline="always")
def _string_end(buf, p, end):
    """``p`` just after an opening quote → index of the closing quote; -1 if the string
    has an escape or a control character or does not end."""
    while p < end:
        k = _STR_STOP[buf[p]]
        if k:
            return p if k == 1 else -1
        p += 1
    return -1


@numba.njit(cache=True, inline="always")
def _number_end(buf, p, end):
    """JSON number (RFC 8259 grammar) at ``p`` → index after it, or -1."""
    if p < end and buf[p] == 45:
        p += 1
    if p >= end:
        return -1
    c = buf[p]
    if c == 48:
        p += 1
    elif 49 <= c <= 57:
        while p < end and 48 <= buf[p] <= 57:
            p += 1
    else:
        return -1
    if p < end and buf[p] == 46:
        p += 1
        s = p
        while p < end and 48 <= buf[p] <= 57:
            p += 1
        if p == s:
            return -1
    if p < end and (buf[p] == 101 or buf[p] == 69):
        p += 1
        if p < end and (buf[p] == 43 or buf[p] == 45):
            p += 1
        s = p
        while p < end and 48 <= buf[p] <= 57:
            p += 1
        if p == s:
            return -1
    return p


@numba.njit(cache=True, inline="always")
def _number_end_fast(buf, p, end, lim):
    """:func:`_number_end` with an integer's digits 8 at a step (:func:`_digits`); a number
    with a fraction or exponent, no digit or a leading zero takes the byte-wise grammar."""
    c = buf[p]
    if not (c == 45 or 48 <= c <= 57):
        return -1
    d0 = p + 1 if c == 45 else p
    _, q, _ = _digits(buf, d0, end, lim)
    if q < end and (buf[q] == 46 or buf[q] == 101 or buf[q] == 69):
        return _number_end(buf, p, end)
    if q == d0 or (buf[d0] == 48 and q > d0 + 1):
        return _number_end(buf, p, end)
    return q


@numba.njit(cache=True, inline="always")
def _decimal(buf, s, e):
    """Exact float64 of the decimal text ``buf[s:e]`` (``-?digits(.digits)?``) by
    Clinger's fast path: mantissa m < 2**53 and k <= 22 decimals make m / 10**k a single
    correctly rounded division, equal to Python's float(text). (nan, False) otherwise."""
    p = s
    neg = p < e and buf[p] == 45
    if neg:
        p += 1
    m = np.int64(0)
    ndig = 0
    frac = -1
    if p >= e or not (48 <= buf[p] <= 57):
        return np.nan, False
    while p < e:
        d = buf[p]
        if 48 <= d <= 57:
            m = m * 10 + (d - 48)
            ndig += 1
            if frac >= 0:
                frac += 1
            if ndig > 18:
                return np.nan, False
        elif d == 46 and frac < 0:
            frac = 0
        else:
            return np.nan, False
        p += 1
    if frac == 0 or m >= 9007199254740992 or frac > 22:
        return np.nan, False
    x = np.float64(m)
    if frac > 0:
        x = x / _POW10[frac]
    return (-x if neg else x), True


@numba.njit(cache=True, inline="always")
def _quoted_decimal(buf, p, end):
    """``p`` just after an opening quote: a plain decimal ``-?digits(.digits)?`` right up
    to the closing quote → (exact float64, index of the quote); (nan, -1) otherwise (the
    caller then falls back to the general path). Same conversion as :func:`_decimal`."""
    neg = p < end and buf[p] == 45
    if neg:
        p += 1
    m = np.int64(0)
    s = p
    while p < end:  # integer digits
        d = np.int64(buf[p]) - 48
        if d < 0 or d > 9:
            break
        m = m * 10 + d
        p += 1
    ndig = p - s
    if ndig == 0:
        return np.nan, -1
    frac = 0
    if p < end and buf[p] == 46:
        p += 1
        s = p
        while p < end:  # fraction digits
            d = np.int64(buf[p]) - 48
            if d < 0 or d > 9:
                break
            m = m * 10 + d
            p += 1
        frac = p - s
        if frac == 0:
            return np.nan, -1
        ndig += frac
    if p >= end or buf[p] != 34 or ndig > 18 or m >= 9007199254740992 or frac > 22:
        return np.nan, -1
    x = np.float64(m)
    if frac > 0:
        x = x / _POW10[frac]
    return (-x if neg else x), p


_DOTS = np.uint64(0x2E2E2E2E2E2E2E2E)
_ONES = np.uint64(0x0101010101010101)
_TOPS = np.uint64(0x8080808080808080)


@numba.njit(cache=True, inline="always")
def _quoted_decimal_fast(buf, p, end, lim):
    """:func:`_quoted_decimal` for the common short case — ``digits.digits`` of at most 8
    characters, then the closing quote — from one 8-byte load: the dot found by the
    has-zero-byte trick, the dot squeezed out, the digits counted and parsed at once
    (:mod:`.swar`); the same m / 10**frac, so the same float. Anything else (a sign, no
    dot in the window, more digits, another character) takes :func:`_quoted_decimal`."""
    if p + 8 <= lim and p + 9 <= end:
        x = load_u64(buf, p)
        d = x ^ _DOTS
        dots = (d - _ONES) & ~d & _TOPS
        if dots:
            k = first_flag(dots)  # the dot's index; a fraction digit must be in the window
            if 1 <= k <= 6:
                low = x & ((np.uint64(1) << np.uint64(8 * k)) - np.uint64(1))
                w = low | ((x >> np.uint64(8 * (k + 1))) << np.uint64(8 * k))
                n = digit_run(w)  # integer digits, then fraction digits
                q = p + n + 1
                if n > k and buf[q] == 34:
                    return np.float64(parse_digits(w, n)) / _POW10[n - k], q
    return _quoted_decimal(buf, p, end)


@numba.njit(cache=True, inline="always")
def _integer(buf, p, end):
    """A JSON integer at ``p`` (no fraction or exponent, at most 18 digits, no leading
    zero) → (value, index after it); (0, -1) otherwise."""
    neg = buf[p] == 45
    if neg:
        p += 1
    s = p
    v = np.int64(0)
    while p < end:
        d = np.int64(buf[p]) - 48
        if d < 0 or d > 9:
            break
        v = v * 10 + d
        p += 1
    n = p - s
    if n == 0 or n > 18 or (n > 1 and buf[s] == 48):
        return np.int64(0), -1
    if p < end and (buf[p] == 46 or buf[p] == 101 or buf[p] == 69):
        return np.int64(0), -1
    return (-v if neg else v), p


@numba.njit(cache=True, inline="always")
def _string_end_fast(buf, p, end, lim):
    """:func:`_string_end`, 8 bytes a step while ``p + 8 <= lim`` (:mod:`.swar`)."""
    while p + 8 <= lim:
        m = stop_mask(load_u64(buf, p))
        if m:
            q = p + first_flag(m)
            if q >= end:
                return -1
            return q if buf[q] == 34 else -1
        p += 8
        if p >= end:
            return -1
    return _string_end(buf, p, end)


@numba.njit(cache=True, inline="always")
def _digits(buf, p, end, lim):
    """The run of ASCII digits at ``p`` (stopping at ``end``) → (value, index after it,
    count); the value is meaningful for at most 18 digits (callers reject longer runs)."""
    v = np.int64(0)
    n = np.int64(0)
    while p + 8 <= lim:
        x = load_u64(buf, p)
        k = digit_run(x)
        if k > end - p:
            k = end - p
        if k <= 0:
            return v, p, n
        v = v * _IPOW10[k] + parse_digits(x, k)
        n += k
        p += k
        if k < 8:
            return v, p, n
    while p < end:
        d = np.int64(buf[p]) - 48
        if d < 0 or d > 9:
            break
        v = v * 10 + d
        n += 1
        p += 1
    return v, p, n


@numba.njit(cache=True, inline="always")
def _integer_fast(buf, p, end, lim):
    """:func:`_integer` with the digits 8 at a time (:func:`_digits`)."""
    neg = buf[p] == 45
    if neg:
        p += 1
    s = p
    v, p, n = _digits(buf, p, end, lim)
    if n == 0 or n > 18 or (n > 1 and buf[s] == 48):
        return np.int64(0), -1
    if p < end and (buf[p] == 46 or buf[p] == 101 or buf[p] == 69):
        return np.int64(0), -1
    return (-v if neg else v), p


# Template fast path. Binance writes each stream's keys in one fixed order, so a frame is
# mostly constant text between its values. A template (built by :func:`_template` from the
# recorded shape in _WARM_FRAMES) is a list of segments: a literal (compared 8 bytes at a
# time) then one value slot. A frame that matches every literal and whose slots all decode
# is exactly a frame the general scanner accepts with status 0, with the same values (the
# slots call the same decoders); any mismatch sends the frame to the general path
# (:func:`_scan_flat`), so the template changes speed, never results. Each kind's template
# is unrolled into its own kernel (``_TEMPLATE_KERNELS``, generated by
# :mod:`perpdesk.live.scan_codegen`). Measured on the benchmark's bookTicker frames, one
# core: ~160 ns a frame unrolled, ~200 ns for a loop interpreting the template, ~260 ns for
# the general path with the same 8-byte kernels and ~310 ns for it byte by byte.
_T_END, _T_STREAM, _T_INT, _T_QFLOAT, _T_SYM, _T_NUM, _T_BOOL = 0, 1, 2, 3, 4, 5, 6


@numba.njit(cache=True, inline="always")
def _lit_byte(words, w0, j):
    return (words[w0 + (j >> 3)] >> np.uint64(8 * (j & 7))) & np.uint64(0xFF)


@numba.njit(cache=True, inline="always")
def _literal(buf, p, end, words, w0, n, lim):
    """Whether ``buf[p:p + n]`` (inside the frame) equals the literal packed in
    ``words[w0:]`` (little-endian, zero-padded)."""
    if p + n > end:
        return False
    k = 0
    while k < n:
        r = n - k
        if p + k + 8 <= lim:
            x = load_u64(buf, p + k)
            if r < 8:
                x &= (np.uint64(1) << np.uint64(8 * r)) - np.uint64(1)
            if x != words[w0 + (k >> 3)]:
                return False
        else:
            for j in range(min(r, 8)):
                if np.uint64(buf[p + k + j]) != _lit_byte(words, w0, k + j):
                    return False
        k += 8
    return True


@numba.njit(cache=True)
def _scan_flat(buf, offs, lut, conv, col, scale, need, suffix, table, sym_bytes, sym_lens,
               ints, floats, codes, status, lim, retry):  # fmt: skip
    """Decode frames ``buf[offs[i]:offs[i+1]]`` of one stream kind (see above).

    ``lut[byte]`` is the wanted field of the one-byte key ``byte`` (-1: not wanted);
    ``conv/col/scale`` say how field f is converted and where it goes (``ints[i, col]``,
    ``floats[i, col]``, ``codes[i]``); ``need`` is the bit mask of all wanted fields.
    ``status[i]``: 0 decoded; 1 not this exact shape; 2 missing/repeated/mistyped field;
    3 a decimal that needs the exact slow conversion; 4 unknown symbol; 5 another stream.
    ``lim``: bytes of ``buf`` readable by 8-byte loads (``buf.size``; 0 = byte by byte, the
    reference the tests compare against). ``retry``: only the frames whose status is not 0
    (those the template kernel did not decode).
    """
    npre, nmid, nsuf = _PREFIX.size, _MIDDLE.size, suffix.size
    for i in range(offs.size - 1):
        p, end = offs[i], offs[i + 1]
        if retry and status[i] == 0:
            continue  # decoded by the template pass
        st = 0
        if end - p < npre + nmid + 4:
            status[i] = 1
            continue
        for k in range(npre):
            if buf[p + k] != _PREFIX[k]:
                st = 1
                break
        if st:
            status[i] = st
            continue
        q = _string_end_fast(buf, p + npre, end, lim)
        if q < 0:
            status[i] = 1
            continue
        if q - (p + npre) < nsuf:
            st = 5
        else:
            for k in range(nsuf):
                if buf[q - nsuf + k] != suffix[k]:
                    st = 5
                    break
        p = q + 1
        if p + nmid > end:
            status[i] = 1
            continue
        for k in range(nmid):
            if buf[p + k] != _MIDDLE[k]:
                st = 1
                break
        if st == 1:
            status[i] = 1
            continue
        p += nmid
        seen = np.int64(0)
        if p < end and buf[p] == 125:  # empty data object
            p += 1
        else:
            while True:
                # "key":
                if p >= end or buf[p] != 34:
                    st = 1
                    break
                q = _string_end_fast(buf, p + 1, end, lim)
                if q < 0 or q + 1 >= end or buf[q + 1] != 58:
                    st = 1
                    break
                f = lut[buf[p + 1]] if q == p + 2 else -1
                p = q + 2
                if p >= end:
                    st = 1
                    break
                c = buf[p]
                if f >= 0:
                    bit = np.int64(1) << f
                    if seen & bit:
                        st = max(st, 2)  # repeated key: let Arrow decide
                    seen |= bit
                cf = conv[f] if f >= 0 and st == 0 else -1
                if c == 34 and cf == _C_FLOAT:  # fused: a quoted decimal, one pass
                    x, q = _quoted_decimal(buf, p + 1, end)
                    if q >= 0:
                        floats[i, col[f]] = x
                        p = q + 1
                        cf = -2
                elif cf == _C_INT and (c == 45 or 48 <= c <= 57):  # fused: a JSON integer
                    v, q = _integer_fast(buf, p, end, lim)
                    if q >= 0:
                        ints[i, col[f]] = v * scale[f]
                        p = q
                        cf = -2
                if cf == -2:
                    pass  # decoded above
                elif c == 34:  # string
                    q = _string_end_fast(buf, p + 1, end, lim)
                    if q < 0:
                        st = 1
                        break
                    if cf == _C_FLOAT:  # not a plain decimal: Arrow converts it
                        st = 3
                    elif cf == _C_SYMBOL:
                        code = _symbol_code(buf, p + 1, q, table, sym_bytes, sym_lens)
                        if code < 0:
                            st = 4
                        codes[i] = code
                    elif cf >= 0:
                        st = 2
                    p = q + 1
                elif c == 45 or 48 <= c <= 57:  # number
                    q = _number_end(buf, p, end)
                    if q < 0:
                        st = 1
                        break
                    if cf == _C_FLOAT:
                        x, ok = _decimal(buf, p, q)
                        if ok:
                            floats[i, col[f]] = x
                        else:
                            st = 3
                    elif cf >= 0:  # a fraction/exponent for an integer, or a number for a bool
                        st = 2
                    p = q
                elif c == 116 or c == 102 or c == 110:  # true / false / null
                    if c == 116:
                        n, val = 4, 1
                        ok = (
                            p + 4 <= end
                            and buf[p + 1] == 114
                            and buf[p + 2] == 117
                            and buf[p + 3] == 101
                        )
                    elif c == 102:
                        n, val = 5, 0
                        ok = (p + 5 <= end and buf[p + 1] == 97 and buf[p + 2] == 108
                              and buf[p + 3] == 115 and buf[p + 4] == 101)  # fmt: skip
                    else:
                        n, val = 4, -1
                        ok = (
                            p + 4 <= end
                            and buf[p + 1] == 117
                            and buf[p + 2] == 108
                            and buf[p + 3] == 108
                        )
                    if not ok:
                        st = 1
                        break
                    if f >= 0 and st == 0:
                        if conv[f] == _C_BOOL and val >= 0:
                            ints[i, col[f]] = val
                        else:
                            st = 2
                    p += n
                else:  # nested object/array or garbage
                    st = 1
                    break
                if p >= end:
                    st = 1
                    break
                if buf[p] == 44:
                    p += 1
                    continue
                if buf[p] == 125:
                    p += 1
                    break
                st = 1
                break
        if st != 1:
            if p + 1 != end or buf[p] != 125:
                st = 1
            elif st == 0 and seen != need:
                st = 2
        status[i] = st


@numba.njit(cache=True)
def _group_dest(codes, n_codes):
    """Stable counting sort by symbol code: (destination of each row, start of each
    code's run; ``starts[n_codes]`` = number of rows)."""
    starts = np.zeros(n_codes + 1, np.int64)
    for i in range(codes.size):
        starts[codes[i] + 1] += 1
    for k in range(n_codes):
        starts[k + 1] += starts[k]
    nxt = starts[:-1].copy()
    dest = np.empty(codes.size, np.int64)
    for i in range(codes.size):
        c = codes[i]
        dest[i] = nxt[c]
        nxt[c] += 1
    return dest, starts


@numba.njit(cache=True)
def _scatter_rows(ints, floats, recv, dest, out_i, out_f):
    """Row ``i`` of the row-major scan output (``ints[i]``, ``floats[i]``, ``recv[i]``) →
    column ``dest[i]`` of the field-major ``out_i`` / ``out_f`` (``recv`` is the last
    row of ``out_i``): the transpose and the grouping by symbol. Blocks of 2,048 rows,
    one field at a time: the block stays in cache and each field writes one stream per
    symbol (~18 ns a row against ~38 ns writing every field of a row at once, 20 symbols,
    300 k rows)."""
    ni = ints.shape[1]
    nf = floats.shape[1]
    for s in range(0, dest.size, 2048):
        e = min(dest.size, s + 2048)
        for j in range(ni):
            for i in range(s, e):
                out_i[j, dest[i]] = ints[i, j]
        for j in range(nf):
            for i in range(s, e):
                out_f[j, dest[i]] = floats[i, j]
        for i in range(s, e):
            out_i[ni, dest[i]] = recv[i]


@numba.njit(cache=True)
def _scatter(src, dest, out):
    """``out[dest[i]] = src[i]``: sequential reads, one sequential write stream per
    symbol (a gather by the sort order reads each cache line once per row it holds)."""
    for i in range(src.size):
        out[dest[i]] = src[i]


_SCAN_FIELDS: dict[str, tuple[tuple[str, int, str, int], ...]] = {
    # (key in "data", conversion, catalog column, scale); forceOrder (≤ 1/s/symbol, nested)
    # is decoded by Arrow only
    "aggTrade": (
        ("s", _C_SYMBOL, "", 1), ("T", _C_INT, "ts_ns", NS_PER_MS),
        ("a", _C_INT, "agg_trade_id", 1), ("p", _C_FLOAT, "price", 1),
        ("q", _C_FLOAT, "qty_base", 1), ("f", _C_INT, "first_trade_id", 1),
        ("l", _C_INT, "last_trade_id", 1), ("m", _C_BOOL, "is_buyer_maker", 1),
    ),
    "trade": (
        ("s", _C_SYMBOL, "", 1), ("T", _C_INT, "ts_ns", NS_PER_MS),
        ("t", _C_INT, "trade_id", 1), ("p", _C_FLOAT, "price", 1),
        ("q", _C_FLOAT, "qty_base", 1), ("m", _C_BOOL, "is_buyer_maker", 1),
    ),
    "bookTicker": (
        ("s", _C_SYMBOL, "", 1), ("E", _C_INT, "ts_ns", NS_PER_MS),
        ("u", _C_INT, "update_id", 1), ("b", _C_FLOAT, "bid_px", 1),
        ("B", _C_FLOAT, "bid_qty", 1), ("a", _C_FLOAT, "ask_px", 1),
        ("A", _C_FLOAT, "ask_qty", 1),
    ),
}  # fmt: skip


_WARM_FRAMES: dict[str, bytes] = {
    "aggTrade": b'{"stream":"btcusdt@aggTrade","data":{"e":"aggTrade","E":1721347202813,'
    b'"a":2253476312,"s":"BTCUSDT","p":"63960.00","q":"0.010","f":5158171045,'
    b'"l":5158171045,"T":1721347202812,"m":false}}',
    "trade": b'{"stream":"btcusdt@trade","data":{"e":"trade","E":1721347202813,'
    b'"T":1721347202812,"s":"BTCUSDT","t":5158171045,"p":"63960.00","q":"0.010",'
    b'"X":"MARKET","m":false}}',
    "bookTicker": b'{"stream":"btcusdt@bookTicker","data":{"e":"bookTicker",'
    b'"u":4984035701909,"s":"BTCUSDT","b":"63959.90","B":"20.327","a":"63960.00",'
    b'"A":"4.952","T":1721347202812,"E":1721347202813}}',
}
"""One frame per scanned kind, in the shape of the recorded Binance USD-M combined streams
(``shared/data/binance-ws/usdm``): what :meth:`TickCollector.warm_up` decodes to compile the
kernels."""


@dataclass(frozen=True)
class _ScanPlan:
    lut: np.ndarray
    conv: np.ndarray
    col: np.ndarray
    scale: np.ndarray
    need: int
    suffix: np.ndarray
    int_names: tuple[str, ...]
    float_names: tuple[str, ...]
    bool_names: tuple[str, ...]


def _template(kind: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The template of ``kind`` (see :func:`_scan_flat`) from its recorded frame shape
    in :data:`_WARM_FRAMES`: constant keys and constant unwanted values (``"e":"bookTicker"``)
    become literal text, every wanted value and every unwanted number a slot."""
    fields = _SCAN_FIELDS[kind]
    data = json.loads(_WARM_FRAMES[kind])["data"]
    slot = {_C_INT: _T_INT, _C_FLOAT: _T_QFLOAT, _C_SYMBOL: _T_SYM, _C_BOOL: _T_BOOL}
    wanted = {key: (f, conv) for f, (key, conv, _, _) in enumerate(fields)}
    segs: list[tuple[bytes, int, int]] = [(b'{"stream":"', _T_STREAM, -1)]
    lit = b',"data":{'
    for j, (key, val) in enumerate(data.items()):
        lit += (b"," if j else b"") + json.dumps(key).encode() + b":"
        if key in wanted:
            f, conv = wanted[key]
            quoted = isinstance(val, str)
            if quoted != (conv in (_C_FLOAT, _C_SYMBOL)):
                raise AssertionError(f"{kind}: sample value of {key!r} has another type")
            segs.append((lit + (b'"' if quoted else b""), slot[conv], f))
            lit = b""
        elif isinstance(val, (int, float)) and not isinstance(val, bool):
            segs.append((lit, _T_NUM, -1))
            lit = b""
        else:
            lit += json.dumps(val, separators=(",", ":")).encode()
    segs.append((lit + b"}}", _T_END, -1))
    if sorted(f for _, k, f in segs if f >= 0) != list(range(len(fields))):
        raise AssertionError(f"{kind}: the sample frame lacks a wanted key")
    words: list[int] = []
    woff, lens = [], []
    for text, _, _ in segs:
        woff.append(len(words))
        lens.append(len(text))
        padded = text + b"\0" * (-len(text) % 8)
        words += [int.from_bytes(padded[k : k + 8], "little") for k in range(0, len(padded), 8)]
    return (
        np.array(words, np.uint64),
        np.array(woff, np.int64),
        np.array(lens, np.int64),
        np.array([k for _, k, _ in segs], np.int64),
        np.array([f for _, _, f in segs], np.int64),
    )


def _scan_plan(kind: str) -> _ScanPlan:
    fields = _SCAN_FIELDS[kind]
    lut = np.full(256, -1, np.int64)
    ints: list[str] = []
    floats: list[str] = []
    bools: list[str] = []
    col = []
    for f, (key, conv, name, _) in enumerate(fields):
        lut[ord(key)] = f
        if conv == _C_FLOAT:
            col.append(len(floats))
            floats.append(name)
        elif conv in (_C_INT, _C_BOOL):
            col.append(len(ints))
            ints.append(name)
            if conv == _C_BOOL:
                bools.append(name)
        else:
            col.append(0)
    return _ScanPlan(
        lut,
        np.array([f[1] for f in fields], np.int64),
        np.array(col, np.int64),
        np.array([f[3] for f in fields], np.int64),
        (1 << len(fields)) - 1,
        np.frombuffer(f"@{kind}".encode(), np.uint8).copy(),
        tuple(ints),
        tuple(floats),
        tuple(bools),
    )


def _symbol_table(symbols: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Open-addressing hash table (FNV-1a) of the symbols' bytes for :func:`_symbol_code`."""
    width = max(len(s) for s in symbols)
    sym_bytes = np.zeros((len(symbols), width), np.uint8)
    for k, sym in enumerate(symbols):
        sym_bytes[k, : len(sym)] = np.frombuffer(sym.encode(), np.uint8)
    sym_lens = np.array([len(s) for s in symbols], np.int64)
    size = 1 << max(4, (4 * len(symbols) - 1).bit_length())
    table = np.full(size, -1, np.int64)
    for k in range(len(symbols)):
        j = int(_fnv(sym_bytes[k], 0, int(sym_lens[k]))) & (size - 1)
        while table[j] >= 0:
            j = (j + 1) & (size - 1)
        table[j] = k
    return table, sym_bytes, sym_lens


def _symbol_words(symbols: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(hash table, words) for :func:`_symbol_code_fast`: per symbol its first 8 bytes
    (zero-padded) and, over 8 bytes long, its last 8, little-endian; names over 16 bytes
    are left to the FNV table (:func:`_symbol_table`)."""
    words = np.zeros((len(symbols), 2), np.uint64)
    size = 1 << max(4, (4 * len(symbols) - 1).bit_length())
    wtable = np.full(size, -1, np.int64)
    for k, sym in enumerate(symbols):
        b = sym.encode()
        if len(b) > 16:
            continue
        w0 = int.from_bytes(b[:8], "little")
        w1 = int.from_bytes(b[-8:], "little") if len(b) > 8 else 0
        words[k] = (w0, w1)
        j = _symbol_words_hash(np.uint64(w0), np.uint64(w1), len(b), size - 1)
        while wtable[j] >= 0:
            j = (j + 1) & (size - 1)
        wtable[j] = k
    return wtable, words


# --- BEGIN GENERATED by perpdesk.live.scan_codegen (do not edit) ---
# fmt: off

_TPL_SUFFIX_AGGTRADE = np.array([0x6461725467676140, 0x65], np.uint64)
_TPL_WORDS_AGGTRADE = np.array(
    [0x6d6165727473227b, 0x223a22, 0x3a2261746164222c, 0x6761223a2265227b, 0x2c22656461725467, 0x3a224522, 0x3a2261222c, 0x223a2273222c, 0x223a2270222c, 0x223a2271222c, 0x3a2266222c, 0x3a226c222c, 0x3a2254222c, 0x3a226d222c, 0x7d7d],
    np.uint64,
)


@numba.njit(cache=True)
def _scan_tpl_aggtrade(buf, offs, table, sym_bytes, sym_lens, wtable, sym_w, ints, floats, codes,
                       status, lim):
    """The aggTrade template, unrolled: ``status[i]`` 0 when frame i matched and
    decoded, 1 when the general scanner must decide."""
    for i in range(offs.size - 1):
        p, end = offs[i], offs[i + 1]
        ok = False
        while True:  # one pass; break = off the template
            # literal '{"stream":"'
            if p + 11 > end:
                break
            if p + 16 <= lim:
                if load_u64(buf, p) != np.uint64(0x6d6165727473227b):
                    break
                if (load_u64(buf, p + 8) & np.uint64(0xffffff)) != np.uint64(0x223a22):
                    break
            elif not _literal(buf, p, end, _TPL_WORDS_AGGTRADE, 0, 11, 0):
                break
            p += 11
            if p >= end:
                break
            q = _string_end_fast(buf, p, end, lim)
            if q - p < 9:  # also q < 0
                break
            if not _literal(buf, q - 9, q, _TPL_SUFFIX_AGGTRADE, 0, 9, lim):
                break
            p = q + 1
            # literal ',"data":{"e":"aggTrade","E":'
            if p + 28 > end:
                break
            if p + 32 <= lim:
                if load_u64(buf, p) != np.uint64(0x3a2261746164222c):
                    break
                if load_u64(buf, p + 8) != np.uint64(0x6761223a2265227b):
                    break
                if load_u64(buf, p + 16) != np.uint64(0x2c22656461725467):
                    break
                if (load_u64(buf, p + 24) & np.uint64(0xffffffff)) != np.uint64(0x3a224522):
                    break
            elif not _literal(buf, p, end, _TPL_WORDS_AGGTRADE, 2, 28, 0):
                break
            p += 28
            if p >= end:
                break
            q = _number_end_fast(buf, p, end, lim)
            if q < 0:
                break
            p = q
            # literal ',"a":'
            if p + 5 > end:
                break
            if p + 8 <= lim:
                if (load_u64(buf, p) & np.uint64(0xffffffffff)) != np.uint64(0x3a2261222c):
                    break
            elif not _literal(buf, p, end, _TPL_WORDS_AGGTRADE, 6, 5, 0):
                break
            p += 5
            if p >= end:
                break
            v, q = _integer_fast(buf, p, end, lim)
            if q < 0:
                break
            ints[i, 1] = v
            p = q
            # literal ',"s":"'
            if p + 6 > end:
                break
            if p + 8 <= lim:
                if (load_u64(buf, p) & np.uint64(0xffffffffffff)) != np.uint64(0x223a2273222c):
                    break
            elif not _literal(buf, p, end, _TPL_WORDS_AGGTRADE, 7, 6, 0):
                break
            p += 6
            if p >= end:
                break
            q = _string_end_fast(buf, p, end, lim)
            if q < 0:
                break
            code = _symbol_code_fast(buf, p, q, table, sym_bytes, sym_lens, wtable, sym_w, lim)
            if code < 0:
                break
            codes[i] = code
            p = q + 1
            # literal ',"p":"'
            if p + 6 > end:
                break
            if p + 8 <= lim:
                if (load_u64(buf, p) & np.uint64(0xffffffffffff)) != np.uint64(0x223a2270222c):
                    break
            elif not _literal(buf, p, end, _TPL_WORDS_AGGTRADE, 8, 6, 0):
                break
            p += 6
            if p >= end:
                break
            x, q = _quoted_decimal_fast(buf, p, end, lim)
            if q < 0:
                break
            floats[i, 0] = x
            p = q + 1
            # literal ',"q":"'
            if p + 6 > end:
                break
            if p + 8 <= lim:
                if (load_u64(buf, p) & np.uint64(0xffffffffffff)) != np.uint64(0x223a2271222c):
                    break
            elif not _literal(buf, p, end, _TPL_WORDS_AGGTRADE, 9, 6, 0):
                break
            p += 6
            if p >= end:
                break
            x, q = _quoted_decimal_fast(buf, p, end, lim)
            if q < 0:
                break
            floats[i, 1] = x
            p = q + 1
            # literal ',"f":'
            if p + 5 > end:
                break
            if p + 8 <= lim:
                if (load_u64(buf, p) & np.uint64(0xffffffffff)) != np.uint64(0x3a2266222c):
                    break
            elif not _literal(buf, p, end, _TPL_WORDS_AGGTRADE, 10, 5, 0):
                break
            p += 5
            if p >= end:
                break
            v, q = _integer_fast(buf, p, end, lim)
            if q < 0:
                break
            ints[i, 2] = v
            p = q
            # literal ',"l":'
            if p + 5 > end:
                break
            if p + 8 <= lim:
                if (load_u64(buf, p) & np.uint64(0xffffffffff)) != np.uint64(0x3a226c222c):
                    break
            elif not _literal(buf, p, end, _TPL_WORDS_AGGTRADE, 11, 5, 0):
                break
            p += 5
            if p >= end:
                break
            v, q = _integer_fast(buf, p, end, lim)
            if q < 0:
                break
            ints[i, 3] = v
            p = q
            # literal ',"T":'
            if p + 5 > end:
                break
            if p + 8 <= lim:
                if (load_u64(buf, p) & np.uint64(0xffffffffff)) != np.uint64(0x3a2254222c):
                    break
            elif not _literal(buf, p, end, _TPL_WORDS_AGGTRADE, 12, 5, 0):
                break
            p += 5
            if p >= end:
                break
            v, q = _integer_fast(buf, p, end, lim)
            if q < 0:
                break
            ints[i, 0] = v * 1000000
            p = q
            # literal ',"m":'
            if p + 5 > end:
                break
            if p + 8 <= lim:
                if (load_u64(buf, p) & np.uint64(0xffffffffff)) != np.uint64(0x3a226d222c):
                    break
            elif not _literal(buf, p, end, _TPL_WORDS_AGGTRADE, 13, 5, 0):
                break
            p += 5
            if p >= end:
                break
            if p + 4 <= end and buf[p] == 116 and buf[p + 1] == 114 and buf[p + 2] == 117 and buf[p + 3] == 101:
                ints[i, 4] = 1
                p += 4
            elif p + 5 <= end and buf[p] == 102 and buf[p + 1] == 97 and buf[p + 2] == 108 and buf[p + 3] == 115 and buf[p + 4] == 101:
                ints[i, 4] = 0
                p += 5
            else:
                break
            # literal '}}'
            if p + 2 > end:
                break
            if p + 8 <= lim:
                if (load_u64(buf, p) & np.uint64(0xffff)) != np.uint64(0x7d7d):
                    break
            elif not _literal(buf, p, end, _TPL_WORDS_AGGTRADE, 14, 2, 0):
                break
            p += 2
            ok = p == end
            break
        status[i] = 0 if ok else 1


_TPL_SUFFIX_TRADE = np.array([0x656461727440], np.uint64)
_TPL_WORDS_TRADE = np.array(
    [0x6d6165727473227b, 0x223a22, 0x3a2261746164222c, 0x7274223a2265227b, 0x2245222c22656461, 0x3a, 0x3a2254222c, 0x223a2273222c, 0x3a2274222c, 0x223a2270222c, 0x223a2271222c, 0x414d223a2258222c, 0x6d222c2254454b52, 0x3a22, 0x7d7d],
    np.uint64,
)


@numba.njit(cache=True)
def _scan_tpl_trade(buf, offs, table, sym_bytes, sym_lens, wtable, sym_w, ints, floats, codes,
                    status, lim):
    """The trade template, unrolled: ``status[i]`` 0 when frame i matched and
    decoded, 1 when the general scanner must decide."""
    for i in range(offs.size - 1):
        p, end = offs[i], offs[i + 1]
        ok = False
        while True:  # one pass; break = off the template
            # literal '{"stream":"'
            if p + 11 > end:
                break
            if p + 16 <= lim:
                if load_u64(buf, p) != np.uint64(0x6d6165727473227b):
                    break
                if (load_u64(buf, p + 8) & np.uint64(0xffffff)) != np.uint64(0x223a22):
                    break
            elif not _literal(buf, p, end, _TPL_WORDS_TRADE, 0, 11, 0):
                break
            p += 11
            if p >= end:
                break
            q = _string_end_fast(buf, p, end, lim)
            if q - p < 6:  # also q < 0
                break
            if not _literal(buf, q - 6, q, _TPL_SUFFIX_TRADE, 0, 6, lim):
                break
            p = q + 1
            # literal ',"data":{"e":"trade","E":'
            if p + 25 > end:
                break
            if p + 32 <= lim:
                if load_u64(buf, p) != np.uint64(0x3a2261746164222c):
                    break
                if load_u64(buf, p + 8) != np.uint64(0x7274223a2265227b):
                    break
                if load_u64(buf, p + 16) != np.uint64(0x2245222c22656461):
                    break
                if (load_u64(buf, p + 24) & np.uint64(0xff)) != np.uint64(0x3a):
                    break
            elif not _literal(buf, p, end, _TPL_WORDS_TRADE, 2, 25, 0):
                break
            p += 25
            if p >= end:
                break
            q = _number_end_fast(buf, p, end, lim)
            if q < 0:
                break
            p = q
            # literal ',"T":'
            if p + 5 > end:
                break
            if p + 8 <= lim:
                if (load_u64(buf, p) & np.uint64(0xffffffffff)) != np.uint64(0x3a2254222c):
                    break
            elif not _literal(buf, p, end, _TPL_WORDS_TRADE, 6, 5, 0):
                break
            p += 5
            if p >= end:
                break
            v, q = _integer_fast(buf, p, end, lim)
            if q < 0:
                break
            ints[i, 0] = v * 1000000
            p = q
            # literal ',"s":"'
            if p + 6 > end:
                break
            if p + 8 <= lim:
                if (load_u64(buf, p) & np.uint64(0xffffffffffff)) != np.uint64(0x223a2273222c):
                    break
            elif not _literal(buf, p, end, _TPL_WORDS_TRADE, 7, 6, 0):
                break
            p += 6
            if p >= end:
                break
            q = _string_end_fast(buf, p, end, lim)
            if q < 0:
                break
            code = _symbol_code_fast(buf, p, q, table, sym_bytes, sym_lens, wtable, sym_w, lim)
            if code < 0:
                break
            codes[i] = code
            p = q + 1
            # literal ',"t":'
            if p + 5 > end:
                break
            if p + 8 <= lim:
                if (load_u64(buf, p) & np.uint64(0xffffffffff)) != np.uint64(0x3a2274222c):
                    break
            elif not _literal(buf, p, end, _TPL_WORDS_TRADE, 8, 5, 0):
                break
            p += 5
            if p >= end:
                break
            v, q = _integer_fast(buf, p, end, lim)
            if q < 0:
                break
            ints[i, 1] = v
            p = q
            # literal ',"p":"'
            if p + 6 > end:
                break
            if p + 8 <= lim:
                if (load_u64(buf, p) & np.uint64(0xffffffffffff)) != np.uint64(0x223a2270222c):
                    break
            elif not _literal(buf, p, end, _TPL_WORDS_TRADE, 9, 6, 0):
                break
            p += 6
            if p >= end:
                break
            x, q = _quoted_decimal_fast(buf, p, end, lim)
            if q < 0:
                break
            floats[i, 0] = x
            p = q + 1
            # literal ',"q":"'
            if p + 6 > end:
                break
            if p + 8 <= lim:
                if (load_u64(buf, p) & np.uint64(0xffffffffffff)) != np.uint64(0x223a2271222c):
                    break
            elif not _literal(buf, p, end, _TPL_WORDS_TRADE, 10, 6, 0):
                break
            p += 6
            if p >= end:
                break
            x, q = _quoted_decimal_fast(buf, p, end, lim)
            if q < 0:
                break
            floats[i, 1] = x
            p = q + 1
            # literal ',"X":"MARKET","m":'
            if p + 18 > end:
                break
            if p + 24 <= lim:
                if load_u64(buf, p) != np.uint64(0x414d223a2258222c):
                    break
                if load_u64(buf, p + 8) != np.uint64(0x6d222c2254454b52):
                    break
                if (load_u64(buf, p + 16) & np.uint64(0xffff)) != np.uint64(0x3a22):
                    break
            elif not _literal(buf, p, end, _TPL_WORDS_TRADE, 11, 18, 0):
                break
            p += 18
            if p >= end:
                break
            if p + 4 <= end and buf[p] == 116 and buf[p + 1] == 114 and buf[p + 2] == 117 and buf[p + 3] == 101:
                ints[i, 2] = 1
                p += 4
            elif p + 5 <= end and buf[p] == 102 and buf[p + 1] == 97 and buf[p + 2] == 108 and buf[p + 3] == 115 and buf[p + 4] == 101:
                ints[i, 2] = 0
                p += 5
            else:
                break
            # literal '}}'
            if p + 2 > end:
                break
            if p + 8 <= lim:
                if (load_u64(buf, p) & np.uint64(0xffff)) != np.uint64(0x7d7d):
                    break
            elif not _literal(buf, p, end, _TPL_WORDS_TRADE, 14, 2, 0):
                break
            p += 2
            ok = p == end
            break
        status[i] = 0 if ok else 1


_TPL_SUFFIX_BOOKTICKER = np.array([0x6369546b6f6f6240, 0x72656b], np.uint64)
_TPL_WORDS_BOOKTICKER = np.array(
    [0x6d6165727473227b, 0x223a22, 0x3a2261746164222c, 0x6f62223a2265227b, 0x72656b6369546b6f, 0x3a2275222c22, 0x223a2273222c, 0x223a2262222c, 0x223a2242222c, 0x223a2261222c, 0x223a2241222c, 0x3a2254222c, 0x3a2245222c, 0x7d7d],
    np.uint64,
)


@numba.njit(cache=True)
def _scan_tpl_bookticker(buf, offs, table, sym_bytes, sym_lens, wtable, sym_w, ints, floats, codes,
                         status, lim):
    """The bookTicker template, unrolled: ``status[i]`` 0 when frame i matched and
    decoded, 1 when the general scanner must decide."""
    for i in range(offs.size - 1):
        p, end = offs[i], offs[i + 1]
        ok = False
        while True:  # one pass; break = off the template
            # literal '{"stream":"'
            if p + 11 > end:
                break
            if p + 16 <= lim:
                if load_u64(buf, p) != np.uint64(0x6d6165727473227b):
                    break
                if (load_u64(buf, p + 8) & np.uint64(0xffffff)) != np.uint64(0x223a22):
                    break
            elif not _literal(buf, p, end, _TPL_WORDS_BOOKTICKER, 0, 11, 0):
                break
            p += 11
            if p >= end:
                break
            q = _string_end_fast(buf, p, end, lim)
            if q - p < 11:  # also q < 0
                break
            if not _literal(buf, q - 11, q, _TPL_SUFFIX_BOOKTICKER, 0, 11, lim):
                break
            p = q + 1
            # literal ',"data":{"e":"bookTicker","u":'
            if p + 30 > end:
                break
            if p + 32 <= lim:
                if load_u64(buf, p) != np.uint64(0x3a2261746164222c):
                    break
                if load_u64(buf, p + 8) != np.uint64(0x6f62223a2265227b):
                    break
                if load_u64(buf, p + 16) != np.uint64(0x72656b6369546b6f):
                    break
                if (load_u64(buf, p + 24) & np.uint64(0xffffffffffff)) != np.uint64(0x3a2275222c22):
                    break
            elif not _literal(buf, p, end, _TPL_WORDS_BOOKTICKER, 2, 30, 0):
                break
            p += 30
            if p >= end:
                break
            v, q = _integer_fast(buf, p, end, lim)
            if q < 0:
                break
            ints[i, 1] = v
            p = q
            # literal ',"s":"'
            if p + 6 > end:
                break
            if p + 8 <= lim:
                if (load_u64(buf, p) & np.uint64(0xffffffffffff)) != np.uint64(0x223a2273222c):
                    break
            elif not _literal(buf, p, end, _TPL_WORDS_BOOKTICKER, 6, 6, 0):
                break
            p += 6
            if p >= end:
                break
            q = _string_end_fast(buf, p, end, lim)
            if q < 0:
                break
            code = _symbol_code_fast(buf, p, q, table, sym_bytes, sym_lens, wtable, sym_w, lim)
            if code < 0:
                break
            codes[i] = code
            p = q + 1
            # literal ',"b":"'
            if p + 6 > end:
                break
            if p + 8 <= lim:
                if (load_u64(buf, p) & np.uint64(0xffffffffffff)) != np.uint64(0x223a2262222c):
                    break
            elif not _literal(buf, p, end, _TPL_WORDS_BOOKTICKER, 7, 6, 0):
                break
            p += 6
            if p >= end:
                break
            x, q = _quoted_decimal_fast(buf, p, end, lim)
            if q < 0:
                break
            floats[i, 0] = x
            p = q + 1
            # literal ',"B":"'
            if p + 6 > end:
                break
            if p + 8 <= lim:
                if (load_u64(buf, p) & np.uint64(0xffffffffffff)) != np.uint64(0x223a2242222c):
                    break
            elif not _literal(buf, p, end, _TPL_WORDS_BOOKTICKER, 8, 6, 0):
                break
            p += 6
            if p >= end:
                break
            x, q = _quoted_decimal_fast(buf, p, end, lim)
            if q < 0:
                break
            floats[i, 1] = x
            p = q + 1
            # literal ',"a":"'
            if p + 6 > end:
                break
            if p + 8 <= lim:
                if (load_u64(buf, p) & np.uint64(0xffffffffffff)) != np.uint64(0x223a2261222c):
                    break
            elif not _literal(buf, p, end, _TPL_WORDS_BOOKTICKER, 9, 6, 0):
                break
            p += 6
            if p >= end:
                break
            x, q = _quoted_decimal_fast(buf, p, end, lim)
            if q < 0:
                break
            floats[i, 2] = x
            p = q + 1
            # literal ',"A":"'
            if p + 6 > end:
                break
            if p + 8 <= lim:
                if (load_u64(buf, p) & np.uint64(0xffffffffffff)) != np.uint64(0x223a2241222c):
                    break
            elif not _literal(buf, p, end, _TPL_WORDS_BOOKTICKER, 10, 6, 0):
                break
            p += 6
            if p >= end:
                break
            x, q = _quoted_decimal_fast(buf, p, end, lim)
            if q < 0:
                break
            floats[i, 3] = x
            p = q + 1
            # literal ',"T":'
            if p + 5 > end:
                break
            if p + 8 <= lim:
                if (load_u64(buf, p) & np.uint64(0xffffffffff)) != np.uint64(0x3a2254222c):
                    break
            elif not _literal(buf, p, end, _TPL_WORDS_BOOKTICKER, 11, 5, 0):
                break
            p += 5
            if p >= end:
                break
            q = _number_end_fast(buf, p, end, lim)
            if q < 0:
                break
            p = q
            # literal ',"E":'
            if p + 5 > end:
                break
            if p + 8 <= lim:
                if (load_u64(buf, p) & np.uint64(0xffffffffff)) != np.uint64(0x3a2245222c):
                    break
            elif not _literal(buf, p, end, _TPL_WORDS_BOOKTICKER, 12, 5, 0):
                break
            p += 5
            if p >= end:
                break
            v, q = _integer_fast(buf, p, end, lim)
            if q < 0:
                break
            ints[i, 0] = v * 1000000
            p = q
            # literal '}}'
            if p + 2 > end:
                break
            if p + 8 <= lim:
                if (load_u64(buf, p) & np.uint64(0xffff)) != np.uint64(0x7d7d):
                    break
            elif not _literal(buf, p, end, _TPL_WORDS_BOOKTICKER, 13, 2, 0):
                break
            p += 2
            ok = p == end
            break
        status[i] = 0 if ok else 1


_TEMPLATE_KERNELS = {"aggTrade": _scan_tpl_aggtrade, "trade": _scan_tpl_trade, "bookTicker": _scan_tpl_bookticker}
# fmt: on
# --- END GENERATED ---

# --- statistics ------------------------------------------------------------------------------


@dataclass(frozen=True)
class GapEvent:
    """Ids ``first_missing_id..last_missing_id`` (inclusive) of ``kind`` for ``symbol``
    never arrived (confirmed one parse round after the jump was seen)."""

    kind: str
    symbol: str
    first_missing_id: int
    last_missing_id: int
    detected_recv_ns: int

    @property
    def n_missing(self) -> int:
        return self.last_missing_id - self.first_missing_id + 1


@dataclass
class CollectorStats:
    """Counters for the CLI status line and the dashboard. Message counts are frames read
    from the sockets; row counts are what reached the catalog."""

    started_ns: int = field(default_factory=time.time_ns)
    messages: int = 0  # frames received (all connections)
    parsed: int = 0  # frames parsed so far
    per_stream: Counter[str] = field(default_factory=Counter)  # "btcusdt@aggTrade" → rows
    rows_written: Counter[str] = field(default_factory=Counter)  # dataset → rows
    gaps: int = 0  # confirmed gaps (id jumps not filled within a parse round)
    missing_ids: int = 0  # ids inside confirmed gaps still missing
    duplicates: int = 0
    out_of_order: int = 0
    malformed: int = 0  # frames that are not valid JSON of the expected shape
    unexpected: int = 0  # valid frames of another stream / unknown symbol / control reply
    reconnects: int = 0
    connects: int = 0
    flushes: int = 0
    write_errors: int = 0
    rejected_rows: int = 0  # rows the catalog refused (written to .collector-rejected)
    last_message_recv_ns: int = 0
    gap_log: deque[GapEvent] = field(default_factory=lambda: deque(maxlen=1000))
    _rate_mark: tuple[int, int] = (0, 0)  # (ns, messages) of the previous rate reading
    _rate: float = 0.0

    def last_message_age_s(self, now_ns: int | None = None) -> float | None:
        """Seconds since the newest frame was received (None before the first)."""
        if not self.last_message_recv_ns:
            return None
        return ((now_ns or time.time_ns()) - self.last_message_recv_ns) / NS_PER_S

    def messages_per_s(self, now_ns: int | None = None) -> float:
        """Frames per second since the previous call (or since start on the first)."""
        now = now_ns or time.time_ns()
        t0, m0 = self._rate_mark if self._rate_mark[0] else (self.started_ns, 0)
        if now - t0 >= NS_PER_S // 2:
            self._rate = (self.messages - m0) * NS_PER_S / (now - t0)
            self._rate_mark = (now, self.messages)
        return self._rate

    def summary(self) -> dict[str, object]:
        """Plain dict of the counters (for JSON / the dashboard)."""
        return {
            "messages": self.messages,
            "parsed": self.parsed,
            "per_stream": dict(self.per_stream),
            "rows_written": dict(self.rows_written),
            "gaps": self.gaps,
            "missing_ids": self.missing_ids,
            "duplicates": self.duplicates,
            "out_of_order": self.out_of_order,
            "malformed": self.malformed,
            "unexpected": self.unexpected,
            "reconnects": self.reconnects,
            "connects": self.connects,
            "flushes": self.flushes,
            "write_errors": self.write_errors,
            "rejected_rows": self.rejected_rows,
            "last_message_age_s": self.last_message_age_s(),
        }


# --- per-symbol sequence state ---------------------------------------------------------------


_MAX_BAD_LOGS_PER_ROUND = 5
_RECENT = 4096  # accepted keys remembered per symbol to tell a repeat from a stale update


@dataclass
class _SeqState:
    last: int | None = None  # highest id (or u, or ts) accepted so far
    recent: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))  # last keys
    open_gaps: list[list[int]] = field(default_factory=list)  # [lo, hi, confirmed, round]


class _Conn:
    """One websocket connection: its kind, streams and receive buffer."""

    def __init__(self, kind: _Kind, symbols: Sequence[str]) -> None:
        self.kind = kind
        self.symbols = list(symbols)
        self.streams = [f"{s.lower()}@{kind.name}" for s in symbols]
        self.raw: list[bytes] = []
        self.recv = array("q")  # receive stamps, ns
        self.swapped = 0  # frames already taken out of the buffer

    @property
    def received(self) -> int:
        return self.swapped + len(self.raw)


# --- the collector ---------------------------------------------------------------------------


class TickCollector:
    """Collect Binance USD-M ticks for ``symbols`` into ``catalog`` under ``venue``.

    ``run()`` connects and collects until ``stop()`` (or ``duration_s``); ``feed()`` /
    ``process()`` / ``flush()`` are the socket-free processing path (used by the replay
    benchmark and by ``run``).

    ``kinds``: stream kinds (``aggTrade``, ``trade``, ``bookTicker``, ``forceOrder``), one
    connection per kind and ``streams_per_connection`` symbols. ``flush_seconds`` /
    ``flush_rows``: write at least this often / as soon as this many rows wait.
    ``parse_interval_s``: how often buffered frames are decoded and sequence-checked (a gap
    is confirmed ``confirm_rounds`` rounds after it opened). ``backoff_base_s`` /
    ``backoff_cap_s``: full-jitter reconnect delays. ``stall_timeout_s``: a connection
    silent that long is closed and reconnected. ``clock_ns``: wall clock in ns (flush
    timing, midnight). ``use_scanner=False`` decodes everything with Arrow (reference).
    """

    def __init__(
        self,
        symbols: Sequence[str],
        catalog: Catalog | str | Path,
        *,
        venue: str = "binance",
        ws_url: str = "wss://fstream.binance.com",
        kinds: Sequence[str] = DEFAULT_KINDS,
        flush_seconds: float = 60.0,
        flush_rows: int = 2_000_000,
        parse_interval_s: float = 1.0,
        streams_per_connection: int = MAX_STREAMS_PER_CONNECTION,
        backoff_base_s: float = 0.5,
        backoff_cap_s: float = 30.0,
        stall_timeout_s: float = 30.0,
        confirm_rounds: int = 1,
        clock_ns: Callable[[], int] = time.time_ns,
        use_scanner: bool = True,
        scan_chunk: int = 1 << 13,
    ) -> None:
        if not symbols:
            raise PerpdeskError("collector: no symbols given")
        bad = [k for k in kinds if k not in KINDS]
        if bad:
            raise PerpdeskError(
                f"collector: unknown stream kind(s) {', '.join(bad)} (known: {', '.join(KINDS)})"
            )
        if not 1 <= streams_per_connection <= MAX_STREAMS_PER_CONNECTION:
            raise PerpdeskError(
                f"collector: streams_per_connection {streams_per_connection} must be in "
                f"1..{MAX_STREAMS_PER_CONNECTION} (Binance limit per connection)"
            )
        self.symbols = [s.upper() for s in symbols]
        odd = [s for s in self.symbols if not s.isascii() or not s.replace("_", "").isalnum()]
        if odd:
            raise PerpdeskError(f"collector: bad symbol(s) {', '.join(odd)} (letters/digits only)")
        if len(set(kinds)) != len(kinds):
            raise PerpdeskError(f"collector: stream kinds repeat in {', '.join(kinds)}")
        if len(set(self.symbols)) != len(self.symbols):
            raise PerpdeskError(f"collector: duplicate symbols in {', '.join(self.symbols)}")
        self.catalog = catalog if isinstance(catalog, Catalog) else Catalog(catalog)
        self.venue = venue
        self.ws_url = ws_url.rstrip("/")
        self.kinds = [KINDS[k] for k in kinds]
        self.flush_seconds = flush_seconds
        self.flush_rows = flush_rows
        self.parse_interval_s = parse_interval_s
        self.backoff_base_s = backoff_base_s
        self.backoff_cap_s = backoff_cap_s
        self.stall_timeout_s = stall_timeout_s
        self.confirm_rounds = confirm_rounds
        self.clock_ns = clock_ns
        self.stats = CollectorStats(started_ns=clock_ns())
        self._symbol_index = pa.array(self.symbols, pa.string())
        self._sym_table = _symbol_table(self.symbols)
        self._sym_words = _symbol_words(self.symbols)
        self._plans = {k.name: _scan_plan(k.name) for k in self.kinds if k.name in _SCAN_FIELDS}
        self.use_scanner = use_scanner
        self.scan_chunk = scan_chunk
        self.conns: list[_Conn] = []
        for kind in self.kinds:
            for i in range(0, len(self.symbols), streams_per_connection):
                self.conns.append(_Conn(kind, self.symbols[i : i + streams_per_connection]))
        self._seq: dict[tuple[str, int], _SeqState] = {}
        self._pending: dict[tuple[str, str], list[pa.Table]] = {}
        self._pending_rows = 0
        self._round = 0
        self._scan_bufs: dict[str, tuple] = {}  # kind → scan output arrays, reused
        self._logged_bad = 0
        self._stopping: asyncio.Event | None = None  # created inside run()
        self._stop_requested = False
        self._writing = False
        self._last_flush_ns = clock_ns()
        self._flush_day = self._last_flush_ns // NS_PER_DAY
        self._touched: set[tuple[str, str, str]] = set()  # (dataset, symbol, YYYY-MM-DD)
        self._rollover = False  # a UTC midnight passed since the previous flush

    # -- socket-free processing path ----------------------------------------------------------
    def warm_up(self) -> float:
        """Compile (or load from numba's cache) the decoding kernels of this collector's kinds
        by running a scratch collector over one sample frame per kind; returns seconds
        spent. :meth:`run` calls it before opening any socket: on a fresh install the first
        compile takes seconds, and done on the event loop while connections are opening it
        stalls their handshakes and pings (seen as handshake timeouts and stall reconnects)."""
        t0 = time.perf_counter()
        kinds = [k.name for k in self.kinds if k.name in _WARM_FRAMES]
        if kinds and self.use_scanner:
            scratch = TickCollector(["BTCUSDT"], self.catalog, venue=self.venue, kinds=kinds)
            for conn in scratch.conns:
                scratch.feed(conn, _WARM_FRAMES[conn.kind.name], time.time_ns())
            scratch.process()
        return time.perf_counter() - t0

    def feed(self, conn: _Conn, raw: bytes, recv_ns: int) -> None:
        """Buffer one frame of ``conn`` received at ``recv_ns`` (what the socket loop does)."""
        conn.raw.append(raw)
        conn.recv.append(recv_ns)

    def process(self) -> int:
        """Parse and sequence-check every buffered frame; returns frames processed."""
        self.refresh_counts()
        self._round += 1
        self._logged_bad = 0
        done = 0
        for conn in self.conns:
            n = len(conn.raw)
            if not n:
                continue
            # decoded in place, chunk by chunk (each frame is touched while in cache), then
            # dropped; process() runs on the event loop, so no frame arrives meanwhile
            recv = np.frombuffer(conn.recv, dtype=np.int64, count=n).copy()
            try:
                self._process_batch(conn.kind, conn.raw, n, recv)
            finally:  # taken even if decoding fails, as a frame is never decoded twice
                del conn.raw[:n]
                del conn.recv[:n]
                conn.swapped += n
            done += n
        self._confirm_gaps(final=False)
        if self._logged_bad > _MAX_BAD_LOGS_PER_ROUND:
            log.warning("%d malformed frames this round (%d logged)", self._logged_bad,
                        _MAX_BAD_LOGS_PER_ROUND)  # fmt: skip
        self.stats.parsed += done
        return done

    def _parse(self, kind: _Kind, raw: list[bytes]) -> tuple[pa.Table | None, np.ndarray]:
        """Arrow-parse frames; returns (table of the good frames, their indices into raw)."""
        n = len(raw)
        joined = b"\n".join(raw)
        opts = pajson.ParseOptions(
            explicit_schema=kind.json_schema, unexpected_field_behavior="ignore"
        )
        if joined.count(b"\n") == n - 1:
            try:
                t = pajson.read_json(
                    pa.py_buffer(joined),
                    read_options=pajson.ReadOptions(
                        use_threads=False, block_size=max(1 << 20, len(joined) + 1)
                    ),
                    parse_options=opts,
                )
                if t.num_rows == n:
                    return t, np.arange(n)
            except pa.ArrowInvalid:
                pass
        if n == 1:
            self.stats.malformed += 1
            self._logged_bad += 1
            if self._logged_bad <= _MAX_BAD_LOGS_PER_ROUND:  # a flood must not flood the log
                log.warning("malformed %s frame dropped: %r", kind.name, raw[0][:200])
            return None, np.empty(0, dtype=np.int64)
        mid = n // 2
        ta, ia = self._parse(kind, raw[:mid])
        tb, ib = self._parse(kind, raw[mid:])
        parts = [t for t in (ta, tb) if t is not None]
        if not parts:
            return None, np.empty(0, dtype=np.int64)
        return pa.concat_tables(parts), np.concatenate([ia, ib + mid])

    def _process_batch(self, kind: _Kind, raw: list[bytes], n: int, recv: np.ndarray) -> None:
        """Decode ``raw[:n]`` (received at ``recv``) and queue the rows."""
        if kind.name in _SCAN_FIELDS and self.use_scanner:
            self._process_scan(kind, raw, n, recv)
            return
        cols, codes, idx = self._decode_arrow(kind, raw[:n])
        if idx.size:
            self._emit(kind, cols, codes, recv if idx.size == n else recv[idx])

    def _scan_buffers(
        self, kind: str, plan: _ScanPlan, n: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The scanner's output arrays for ``n`` frames: row-major (frame, field) ints and
        floats, symbol codes, status. Kept between batches and reused (they are copied
        out by :func:`_scatter_rows`): writing them afresh each round cost ~80 ns a
        frame in page faults on the benchmark VM (bench/bench_collector.py). They keep
        the size of the largest batch (~65 B a frame)."""
        bufs = self._scan_bufs.get(kind)
        if bufs is None or bufs[2].size < n:
            cap = max(n, self.scan_chunk)
            bufs = (
                np.empty((cap, len(plan.int_names)), np.int64),
                np.empty((cap, len(plan.float_names)), np.float64),
                np.empty(cap, np.int64),
                np.empty(cap, np.int8),
            )
            self._scan_bufs[kind] = bufs
        ints, floats, codes, status = bufs
        return ints[:n], floats[:n], codes[:n], status[:n]

    def _process_scan(self, kind: _Kind, raw: list[bytes], n: int, recv: np.ndarray) -> None:
        """Numba-scan frames ``raw[:n]`` (received at ``recv``) and queue the rows; frames
        the scanner refuses go through :meth:`_decode_arrow`.

        Frames are copied into one Arrow binary buffer (offsets + bytes in one C pass) in
        chunks of ``scan_chunk`` (8,192 frames, ~1.5 MB: a buffer that size is reused by
        the allocator rather than mapped afresh page by page, and the chunk's frames are
        still in cache when the scanner reads them; 16,384 cost ~15 ns a frame more) and decoded into row-major (frame, field) arrays (a
        field-major array put each frame's few writes megabytes apart: ~100 ns a frame of
        cache and TLB misses); :func:`_scatter_rows` then writes them field-major,
        grouped by symbol, in one pass."""
        plan = self._plans[kind.name]
        # every frame gets its status; a frame of status 0 has all its fields and its code
        ints, floats, codes, status = self._scan_buffers(kind.name, plan, n)
        table, sym_bytes, sym_lens = self._sym_table
        for s in range(0, n, self.scan_chunk):
            e = min(n, s + self.scan_chunk)
            _, o, d = pa.array(raw[s:e], pa.large_binary()).buffers()
            offs = np.frombuffer(o, np.int64)
            buf = np.frombuffer(d, np.uint8) if d is not None else np.zeros(0, np.uint8)
            out = (ints[s:e], floats[s:e], codes[s:e], status[s:e])
            _TEMPLATE_KERNELS[kind.name](buf, offs, table, sym_bytes, sym_lens,
                                         *self._sym_words, *out, buf.size)  # fmt: skip
            if out[3].any():  # frames off the template: the general scanner decides
                _scan_flat(buf, offs, plan.lut, plan.conv, plan.col, plan.scale, plan.need,
                           plan.suffix, table, sym_bytes, sym_lens, *out, buf.size,
                           True)  # fmt: skip
        slow = np.flatnonzero(status)
        if slow.size:  # Arrow decides on these frames; its good rows fill their places
            scols, scodes, sidx = self._decode_arrow(kind, [raw[int(i)] for i in slow])
            pos = slow[sidx]
            if pos.size:
                for j, name in enumerate(plan.int_names):
                    ints[pos, j] = scols[name]
                for j, name in enumerate(plan.float_names):
                    floats[pos, j] = scols[name]
                codes[pos] = scodes
            keep = np.ones(n, dtype=bool)
            keep[slow] = False
            keep[pos] = True
            if not keep.all():
                rows = np.flatnonzero(keep)
                ints, floats, codes, recv = ints[rows], floats[rows], codes[rows], recv[rows]
        m = codes.size
        if not m:
            return
        dest, starts = _group_dest(codes, len(self.symbols))
        out_i = np.empty((len(plan.int_names) + 1, m), np.int64)
        out_f = np.empty((len(plan.float_names), m), np.float64)
        _scatter_rows(ints, floats, recv, dest, out_i, out_f)
        grouped: dict = {name: out_i[j] for j, name in enumerate(plan.int_names)}
        grouped.update({name: out_f[j] for j, name in enumerate(plan.float_names)})
        grouped["ts_recv_ns"] = out_i[len(plan.int_names)]
        for name in plan.bool_names:
            grouped[name] = grouped[name].astype(bool)
        self._derive(kind, grouped)
        self._queue(kind, grouped, starts)

    @staticmethod
    def _derive(kind: _Kind, cols: dict) -> None:
        if kind.name == "trade":
            cols["quote_qty"] = cols["price"] * cols["qty_base"]

    def _decode_arrow(self, kind: _Kind, raw: list[bytes]) -> tuple[dict, np.ndarray, np.ndarray]:
        """Arrow-parse frames (the reference path, and the only one for forceOrder)."""
        table, idx = self._parse(kind, raw)
        if table is None:
            return {}, np.empty(0, np.int64), np.empty(0, np.int64)
        data = table.column("data").combine_chunks()
        stream = table.column("stream").combine_chunks()
        sym_col = data.field("o").field("s") if kind.name == "forceOrder" else data.field("s")
        code = pc.index_in(sym_col, value_set=self._symbol_index)
        ok = pc.and_(pc.fill_null(pc.ends_with(stream, "@" + kind.name), False), pc.is_valid(code))
        cols, required_ok = self._columns(kind, data)
        okn = ok.to_numpy(zero_copy_only=False)
        n_unexpected = int((~okn).sum())
        if n_unexpected:
            self.stats.unexpected += n_unexpected
            log.warning("%d %s frame(s) of another stream or symbol ignored", n_unexpected,
                        kind.name)  # fmt: skip
        good = okn & required_ok
        n_bad = int((okn & ~required_ok).sum())
        if n_bad:
            self.stats.malformed += n_bad
            log.warning("%d %s frame(s) with missing/invalid fields dropped", n_bad, kind.name)
        rows = np.flatnonzero(good)
        codes = code.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)[rows]
        take = pa.array(rows)
        cols = {
            k: (v[rows] if isinstance(v, np.ndarray) else v.take(take)) for k, v in cols.items()
        }
        return cols, codes, idx[rows]

    def _emit(self, kind: _Kind, cols: dict, codes: np.ndarray, recv: np.ndarray) -> None:
        """Sequence-check the decoded rows per symbol and queue them for the next flush."""
        schema = spec_for(kind.dataset).schema
        # a stable counting sort by symbol puts every symbol's rows together (arrival
        # order kept): one scatter per column
        dest, starts = _group_dest(codes, len(self.symbols))
        identity = int(np.count_nonzero(np.diff(starts))) == 1
        take = None
        grouped = {}
        for name in schema.names:
            c = recv if name == "ts_recv_ns" else cols[name]
            if identity:
                grouped[name] = c
            elif isinstance(c, np.ndarray):
                grouped[name] = np.empty_like(c)
                _scatter(c, dest, grouped[name])
            else:  # an Arrow column (strings of forceOrder)
                if take is None:
                    order = np.empty_like(dest)
                    _scatter(np.arange(dest.size), dest, order)
                    take = pa.array(order)
                grouped[name] = c.take(take)
        self._queue(kind, grouped, starts)

    def _queue(self, kind: _Kind, grouped: dict, starts: np.ndarray) -> None:
        """Sequence-check each symbol's run ``starts[k]:starts[k + 1]`` of the grouped
        columns and queue its kept rows (zero-copy Arrow views) for the next flush."""
        schema = spec_for(kind.dataset).schema
        seq = grouped[spec_for(kind.dataset).key]
        for sym_code in np.flatnonzero(np.diff(starts)).tolist():
            s, e = int(starts[sym_code]), int(starts[sym_code + 1])
            keep = self._sequence(kind, sym_code, seq[s:e])
            n_keep = int(keep.sum())
            if n_keep == 0:
                continue
            sym = self.symbols[sym_code]
            self.stats.per_stream[f"{sym.lower()}@{kind.name}"] += n_keep
            mask = None if n_keep == e - s else pa.array(keep)
            arrays = []
            for name in schema.names:
                c = grouped[name][s:e]
                c = pa.array(c) if isinstance(c, np.ndarray) else c
                arrays.append(c if mask is None else c.filter(mask))
            out = pa.Table.from_arrays(arrays, schema=schema)
            self._pending.setdefault((kind.dataset, sym), []).append(out)
            self._pending_rows += out.num_rows

    def _columns(self, kind: _Kind, data: pa.StructArray) -> tuple[dict, np.ndarray]:
        """Catalog columns (NumPy where numeric) and a mask of rows with every required
        field present and valid."""
        n = len(data)
        valid = np.ones(n, dtype=bool)

        def ints(arr: pa.Array, scale: int = 1) -> np.ndarray:
            nonlocal valid
            valid &= arr.is_valid().to_numpy(zero_copy_only=False)
            return arr.fill_null(0).to_numpy(zero_copy_only=False) * scale

        def floats(arr: pa.Array) -> np.ndarray:
            nonlocal valid
            try:
                f = pc.cast(arr, pa.float64())
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                f = pa.array([_float_or_none(x) for x in arr.to_pylist()], pa.float64())
            x = f.fill_null(np.nan).to_numpy(zero_copy_only=False)
            valid &= np.isfinite(x)
            return x

        def strs(arr: pa.Array) -> pa.Array:
            nonlocal valid
            valid &= arr.is_valid().to_numpy(zero_copy_only=False)
            return arr

        def bools(arr: pa.Array) -> np.ndarray:
            nonlocal valid
            valid &= arr.is_valid().to_numpy(zero_copy_only=False)
            return arr.fill_null(False).to_numpy(zero_copy_only=False)

        f = data.field
        if kind.name == "aggTrade":
            c = {
                "ts_ns": ints(f("T"), NS_PER_MS),
                "agg_trade_id": ints(f("a")),
                "price": floats(f("p")),
                "qty_base": floats(f("q")),
                "first_trade_id": ints(f("f")),
                "last_trade_id": ints(f("l")),
                "is_buyer_maker": bools(f("m")),
            }
        elif kind.name == "trade":
            c = {
                "ts_ns": ints(f("T"), NS_PER_MS),
                "trade_id": ints(f("t")),
                "price": floats(f("p")),
                "qty_base": floats(f("q")),
                "is_buyer_maker": bools(f("m")),
            }
        elif kind.name == "bookTicker":
            c = {
                "ts_ns": ints(f("E"), NS_PER_MS),
                "update_id": ints(f("u")),
                "bid_px": floats(f("b")),
                "bid_qty": floats(f("B")),
                "ask_px": floats(f("a")),
                "ask_qty": floats(f("A")),
            }
        else:  # forceOrder
            o = f("o")
            valid &= o.is_valid().to_numpy(zero_copy_only=False)
            g = o.field
            c = {
                "ts_ns": ints(g("T"), NS_PER_MS),
                "side": strs(g("S")),
                "order_type": strs(g("o")),
                "time_in_force": strs(g("f")),
                "price": floats(g("p")),
                "avg_price": floats(g("ap")),
                "qty_base": floats(g("q")),
                "last_filled_qty_base": floats(g("l")),
                "filled_qty_base": floats(g("z")),
                "status": strs(g("X")),
                "event_ts_ns": ints(f("E"), NS_PER_MS),
            }
        self._derive(kind, c)
        return c, valid

    def _sequence(self, kind: _Kind, sym_code: int, key: np.ndarray) -> np.ndarray:
        """Mask of rows to keep from one symbol's arrival-ordered keys; updates counters."""
        st = self._seq.setdefault((kind.name, sym_code), _SeqState())
        prev = st.last if st.last is not None else int(key[0]) - 1
        run = np.maximum.accumulate(np.concatenate([[prev], key]))
        before = run[:-1]
        adv = key > before
        st.last = int(run[-1])
        if kind.seq == "increasing":
            accepted = key[adv] if not adv.all() else key
            if not adv.all():
                late = key[~adv]
                seen = np.isin(late, np.concatenate([st.recent, accepted]))
                self.stats.duplicates += int(seen.sum())
                self.stats.out_of_order += int((~seen).sum())
            st.recent = np.concatenate([st.recent, accepted[-_RECENT:]])[-_RECENT:]
            return adv
        jump = adv & (key > before + 1)
        if not jump.any() and adv.all():
            return adv
        keep = adv.copy()
        sym = self.symbols[sym_code]
        for p in np.flatnonzero(jump | ~adv):
            k = int(key[p])
            if adv[p]:
                st.open_gaps.append([int(before[p]) + 1, k - 1, 0, self._round])
                continue
            hit = next((g for g in st.open_gaps if g[0] <= k <= g[1]), None)
            if hit is None:
                self.stats.duplicates += 1
                continue
            keep[p] = True
            self.stats.out_of_order += 1
            if hit[2]:
                self.stats.missing_ids -= 1
                log.info("%s %s: late id %d filled part of a gap", sym, kind.name, k)
            lo, hi, conf, rnd = hit
            st.open_gaps.remove(hit)
            if lo <= k - 1:
                st.open_gaps.append([lo, k - 1, conf, rnd])
            if k + 1 <= hi:
                st.open_gaps.append([k + 1, hi, conf, rnd])
        if len(st.open_gaps) > 10_000:  # bounded memory: forget the oldest gaps
            del st.open_gaps[: len(st.open_gaps) - 10_000]
        return keep

    def _confirm_gaps(self, final: bool) -> None:
        now = self.clock_ns()
        for (kind_name, code), st in self._seq.items():
            for g in st.open_gaps:
                if g[2] or (not final and self._round - g[3] < self.confirm_rounds):
                    continue
                g[2] = 1
                ev = GapEvent(kind_name, self.symbols[code], g[0], g[1], now)
                self.stats.gaps += 1
                self.stats.missing_ids += ev.n_missing
                self.stats.gap_log.append(ev)
                log.warning(
                    "%s %s: gap, ids %d..%d missing (%d)",
                    ev.symbol,
                    kind_name,
                    ev.first_missing_id,
                    ev.last_missing_id,
                    ev.n_missing,
                )

    @property
    def pending_rows(self) -> int:
        """Rows parsed and waiting for the next flush."""
        return self._pending_rows

    def flush(self) -> int:
        """Write every pending row to the catalog (one new part file per partition, atomic);
        returns rows written. Rows whose write failed with an OS error stay pending for
        the next flush. The first flush after a UTC midnight also compacts the partitions
        of earlier days."""
        pending = self._take_pending()
        written, failed = self._write(pending)
        self._requeue(failed)
        return written

    def _take_pending(self) -> dict[tuple[str, str], list[pa.Table]]:
        pending, self._pending, self._pending_rows = self._pending, {}, 0
        self._last_flush_ns = self.clock_ns()
        day = self._last_flush_ns // NS_PER_DAY
        self._rollover = self._rollover or day != self._flush_day
        self._flush_day = day
        return pending

    def compact(self, before_ns: int | None = None) -> int:
        """Fold the part files of the partitions this collector wrote — and any other
        partition of its datasets and symbols left with parts (an earlier run that
        crashed) — into their daily files (:meth:`Catalog.compact`, crash-safe);
        ``before_ns``: only partitions of days before that UTC instant. Returns the
        partitions compacted; a failure is logged and leaves that partition's parts."""
        day = None if before_ns is None else str(np.datetime64(before_ns // NS_PER_DAY, "D"))
        todo = set(self._touched)
        for kind in self.kinds:
            for sym in self.symbols:
                todo.update(
                    (kind.dataset, sym, p.stem)
                    for p in self.catalog.pending_partitions(self.venue, kind.dataset, sym)
                )
        done = 0
        for dataset, sym, part in sorted(todo):
            if day is not None and part >= day:
                continue
            try:
                self.catalog.compact(self.venue, dataset, sym, part)
            except (CatalogError, OSError) as exc:
                self.stats.write_errors += 1
                log.error("compacting %s %s %s failed (%s); its parts are kept",
                          dataset, sym, part, exc)  # fmt: skip
                continue
            self._touched.discard((dataset, sym, part))
            done += 1
        return done

    def _requeue(self, failed: dict[tuple[str, str], pa.Table]) -> None:
        for k, t in failed.items():
            self._pending.setdefault(k, []).insert(0, t)
            self._pending_rows += t.num_rows

    def _write(
        self, pending: dict[tuple[str, str], list[pa.Table]]
    ) -> tuple[int, dict[tuple[str, str], pa.Table]]:
        """Write ``pending``; returns (rows written, tables whose write failed)."""
        total = 0
        failed: dict[tuple[str, str], pa.Table] = {}
        for (dataset, sym), tables in pending.items():
            spec = spec_for(dataset)
            t = pa.concat_tables(tables)  # chunked: the Parquet writer takes the chunks
            key = t.column(spec.key).to_numpy()
            if key.size > 1 and not (key[1:] > key[:-1]).all():  # late rows were accepted
                t = t.take(pc.sort_indices(t, sort_keys=[(spec.key, "ascending")]))
            try:
                paths = append_partitioned(self.catalog, self.venue, dataset, sym, t)
            except CatalogError as exc:
                self.stats.rejected_rows += t.num_rows
                path = (
                    self.catalog.root / ".collector-rejected" / self.venue / dataset / sym
                ) / f"{self.clock_ns()}.parquet"
                log.error("catalog refused %d %s rows of %s (%s); kept in %s",
                          t.num_rows, dataset, sym, exc, path)  # fmt: skip
                atomic_write_parquet(t, path)
                continue
            except OSError as exc:
                self.stats.write_errors += 1
                log.error("writing %s %s failed (%s); %d rows kept for the next flush",
                          dataset, sym, exc, t.num_rows)  # fmt: skip
                failed[(dataset, sym)] = t
                continue
            self._touched.update((dataset, sym, _partition_of(p)) for p in paths)
            self.stats.rows_written[dataset] += t.num_rows
            total += t.num_rows
        self.stats.flushes += 1
        if self._rollover:  # first flush after midnight: yesterday's partitions are done
            self._rollover = False
            self.compact(before_ns=self._flush_day * NS_PER_DAY)
        return total, failed

    def flush_due(self, now_ns: int) -> bool:
        """Flush every ``flush_seconds``, at ``flush_rows`` pending rows and at UTC midnight."""
        return (
            now_ns - self._last_flush_ns >= self.flush_seconds * NS_PER_S
            or self._pending_rows >= self.flush_rows
            or now_ns // NS_PER_DAY != self._flush_day
        )

    # -- sockets ------------------------------------------------------------------------------
    def url_of(self, conn: _Conn) -> str:
        """Combined-stream URL of ``conn`` (``<ws_url>/stream?streams=a/b/c``)."""
        return f"{self.ws_url}/stream?streams={'/'.join(conn.streams)}"

    def backoff_s(self, attempt: int) -> float:
        """Full-jitter backoff delay for reconnect ``attempt`` (0-based), in seconds."""
        return random.uniform(0.0, min(self.backoff_cap_s, self.backoff_base_s * 2.0**attempt))

    async def _connection(self, conn: _Conn) -> None:
        from websockets.asyncio.client import connect
        from websockets.exceptions import InvalidHandshake, InvalidURI, WebSocketException

        url = self.url_of(conn)
        attempt = 0
        ever = False
        clock = time.time_ns
        while not self._stopping.is_set():
            try:
                async with connect(
                    url, max_size=1 << 22, open_timeout=10, close_timeout=2, compression=None
                ) as ws:
                    self.stats.connects += 1
                    if ever:
                        self.stats.reconnects += 1
                        log.info("reconnected %s", url[:120])
                    ever = True
                    watchdog = asyncio.create_task(self._watch(conn, ws))
                    keep, stamp, recv = conn.raw.append, conn.recv.append, ws.recv
                    try:
                        keep(await recv(decode=False))  # the hot loop: two appends a frame
                        stamp(clock())
                        attempt = 0
                        while True:
                            keep(await recv(decode=False))
                            stamp(clock())
                    finally:
                        watchdog.cancel()
            except asyncio.CancelledError:
                raise
            except InvalidURI as exc:
                raise PerpdeskError(f"collector: bad websocket URL {url[:120]}: {exc}") from None
            except (OSError, TimeoutError, InvalidHandshake, WebSocketException) as exc:
                if self._stopping.is_set():
                    break
                code = getattr(getattr(exc, "rcvd", None), "code", None)
                level = logging.INFO if code in (1000, 1001) else logging.WARNING
                log.log(level, "connection %s… closed: %s", conn.streams[0], exc)
            delay = self.backoff_s(attempt)
            attempt += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)

    async def _watch(self, conn: _Conn, ws) -> None:
        """Close ``ws`` when it delivers nothing for ``stall_timeout_s``."""
        last, since = conn.received, time.monotonic()
        while True:
            await asyncio.sleep(min(1.0, self.stall_timeout_s / 4))
            n = conn.received
            if n != last:
                last, since = n, time.monotonic()
            elif time.monotonic() - since >= self.stall_timeout_s:
                log.warning("connection %s… stalled %.1f s; reconnecting", conn.streams[0],
                            self.stall_timeout_s)  # fmt: skip
                await ws.close(code=4000, reason="stalled")
                return

    async def run(self, duration_s: float | None = None) -> CollectorStats:
        """Collect until :meth:`stop` or ``duration_s``; then parse and flush everything."""
        self._stopping = asyncio.Event()
        if self._stop_requested:
            self._stopping.set()
        self.warm_up()  # before any socket opens: a compile must not stall handshakes
        tasks = [asyncio.create_task(self._connection(c)) for c in self.conns]
        t_end = None if duration_s is None else time.monotonic() + duration_s
        try:
            while not self._stopping.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), self.parse_interval_s)
                for t in tasks:
                    if t.done() and t.exception() is not None:
                        raise t.exception()
                await self._tick()
                if t_end is not None and time.monotonic() >= t_end:
                    self._stopping.set()
        finally:
            self._stopping.set()
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            while self._writing:  # a flush started by _tick is still running
                await asyncio.sleep(0.01)
            self.process()
            self._confirm_gaps(final=True)
            await asyncio.to_thread(self.flush)
            await asyncio.to_thread(self.compact)
        return self.stats

    def refresh_counts(self) -> None:
        """Update ``stats.messages`` and the newest receive stamp from the socket buffers
        (cheap: no parsing; for status displays between parse rounds)."""
        self.stats.messages = sum(c.received for c in self.conns)
        last = [c.recv[-1] for c in self.conns if len(c.recv)]
        if last:
            self.stats.last_message_recv_ns = max(self.stats.last_message_recv_ns, *last)

    async def _tick(self) -> None:
        self.refresh_counts()
        self.process()
        if self._writing or not self.flush_due(self.clock_ns()):
            return
        # Parquet writing releases the GIL: the receive loops keep stamping frames meanwhile.
        # One write at a time, so two flushes never merge into the same partition at once.
        self._writing = True
        try:
            _, failed = await asyncio.to_thread(self._write, self._take_pending())
        finally:
            self._writing = False
        self._requeue(failed)

    def stop(self) -> None:
        """Ask :meth:`run` to finish (it then parses, flushes what is buffered and
        compacts the partitions it wrote)."""
        self._stop_requested = True
        if self._stopping is not None:
            self._stopping.set()


def _float_or_none(x: object) -> float | None:
    try:
        return float(x)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
