"""Eight bytes at a time: SWAR ("SIMD within a register") kernels for the collector's frame
scanner (:mod:`perpdesk.live.collector`), numba-compiled.

The scanner reads Binance's compact JSON one byte at a time; most of its time went to the
digit loops (a bookTicker frame carries ~66 digits, each a serial multiply-add) and the
string scans. These kernels load 8 bytes at once (one unaligned little-endian load, byte
``k`` of the word = ``buf[p + k]``) and:

* :func:`digit_run` — how many of the 8 bytes, from the first, are ASCII digits
  (per-byte nibble tests, no carry between bytes);
* :func:`parse_digits` — the value of ``n`` ≤ 8 leading digit bytes in three
  multiply-add-mask steps (pairs, quads, octets): D. Lemire, "Fast numerical parsing of
  8 digits" (simdjson's ``parse_eight_digits_unrolled``, 2018-2020);
* :func:`stop_mask` — the first byte that is a quote, a backslash or a control character
  (< 0x20): the "has zero byte" / "has less than" tricks of Sean Anderson's *Bit
  Twiddling Hacks* (exact for the lowest flagged byte, which is the only one used).

Each caller passes ``lim`` (bytes readable from ``buf``: an 8-byte load at ``p`` needs
``p + 8 <= lim``); within the last 7 bytes it finishes byte by byte, so the results never
depend on bytes past a frame's ``end`` and equal the byte-wise reference exactly
(``tests/test_collector_scan.py`` compares both paths on fuzzed frames).

Numba caches the collector's kernels keyed by ``collector.py``'s own timestamp, and these
functions are inlined into them: after editing this module, touch ``collector.py`` (or
delete its ``__pycache__/*.nbi``) so the kernels are compiled again.
"""

from __future__ import annotations

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.cpython.unsafe.numbers import trailing_zeros
from numba.extending import intrinsic

__all__ = ["IPOW10", "digit_run", "first_flag", "load_u64", "parse_digits", "stop_mask"]

IPOW10 = np.array([10**k for k in range(19)], np.int64)
"""10**k as int64, k = 0..18."""

_LOW = np.uint64(0x0F0F0F0F0F0F0F0F)
_HIGH_NIBBLES = np.uint64(0xF0F0F0F0F0F0F0F0)
_THREES = np.uint64(0x3030303030303030)
_SIXES = np.uint64(0x0606060606060606)
_ONES = np.uint64(0x0101010101010101)
_TOPS = np.uint64(0x8080808080808080)
_QUOTES = np.uint64(0x2222222222222222)
_BACKSLASHES = np.uint64(0x5C5C5C5C5C5C5C5C)
_SPACES = np.uint64(0x2020202020202020)
_BYTES02 = np.uint64(0x00FF00FF00FF00FF)
_WORDS02 = np.uint64(0x0000FFFF0000FFFF)
_LOW32 = np.uint64(0xFFFFFFFF)


@intrinsic
def load_u64(typingctx, arr, idx):  # type: ignore[no-untyped-def]
    """Little-endian uint64 of ``arr[idx:idx + 8]`` (a 1-D uint8 array): one unaligned
    load. No bounds check: the caller guarantees ``idx + 8 <= arr.size``."""
    if not (isinstance(arr, types.Array) and arr.dtype == types.uint8 and arr.ndim == 1):
        return None
    if not isinstance(idx, types.Integer):
        return None
    sig = types.uint64(arr, idx)

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        ary = context.make_array(signature.args[0])(context, builder, args[0])
        i = context.cast(builder, args[1], signature.args[1], types.intp)
        ptr = builder.bitcast(builder.gep(ary.data, [i]), ir.IntType(64).as_pointer())
        return builder.load(ptr, align=1)

    return sig, codegen


@numba.njit(cache=True, inline="always")
def digit_run(x):  # type: ignore[no-untyped-def]
    """Leading ASCII-digit bytes of the word ``x`` (first byte lowest), 0..8. A byte is a
    digit when its high nibble is 3 and its low nibble + 6 stays below 16."""
    bad = ((x & _HIGH_NIBBLES) ^ _THREES) | (((x & _LOW) + _SIXES) & _HIGH_NIBBLES)
    if bad == 0:
        return 8
    return np.int64(trailing_zeros(bad)) >> 3


@numba.njit(cache=True, inline="always")
def parse_digits(x, n):  # type: ignore[no-untyped-def]
    """Value of the first ``n`` (1..8) bytes of ``x``, all ASCII digits (first byte the most
    significant): shifted to the top of the word so the low bytes act as leading zeros,
    then pairs → quads → octets (Lemire)."""
    if n < 8:
        x = x << np.uint64(8 * (8 - n))
    x = x & _LOW
    x = (x * np.uint64(10) + (x >> np.uint64(8))) & _BYTES02
    x = (x * np.uint64(100) + (x >> np.uint64(16))) & _WORDS02
    x = (x * np.uint64(10000) + (x >> np.uint64(32))) & _LOW32
    return np.int64(x)


@numba.njit(cache=True, inline="always")
def stop_mask(x):  # type: ignore[no-untyped-def]
    """Non-zero when a byte of ``x`` is ``"``, ``\\`` or below 0x20; the lowest set bit is
    bit 7 of the first such byte (higher bits may be spurious: only the lowest is used)."""
    q = x ^ _QUOTES
    b = x ^ _BACKSLASHES
    m = ((q - _ONES) & ~q) | ((b - _ONES) & ~b) | ((x - _SPACES) & ~x)
    return m & _TOPS


@numba.njit(cache=True, inline="always")
def first_flag(m):  # type: ignore[no-untyped-def]
    """Byte index (0..7) of the lowest flagged byte of a non-zero :func:`stop_mask`."""
    return np.int64(trailing_zeros(m)) >> 3
