"""The collector's frame scanner: the 8-byte kernels (perpdesk.live.swar) against plain Python,
and the production path (the generated template kernel, then the general scanner on the frames
off the template, 8-byte loads) against the byte-by-byte general scanner on recorded frames and
on tens of thousands of mutated ones. The byte-by-byte scanner is the reference: it is the
one ``test_collector.py`` checks against ``json.loads``."""

from __future__ import annotations

import json
import random

import numpy as np
import pyarrow as pa
import pytest

from perpdesk.live import collector as col
from perpdesk.live.swar import digit_run, first_flag, parse_digits, stop_mask
from tests.fake_ws import load_capture

BTC = "binance-ws/usdm/btcusdt_20240719.gz"
CRYPTOFEED = "exchange-responses/cryptofeed/BINANCE_FUTURES-1125a2.0"


def _word(bs: bytes) -> np.uint64:
    return np.uint64(int.from_bytes(bs, "little"))


def test_digit_run_and_parse_digits_equal_python() -> None:
    rng = random.Random(3)
    alphabet = b"0123456789" * 6 + b'./:"-eE,}\x00\x7f\xff '
    for _ in range(20_000):
        bs = bytes(rng.choice(alphabet) for _ in range(8))
        run = 0
        while run < 8 and 48 <= bs[run] <= 57:
            run += 1
        assert digit_run(_word(bs)) == run, bs
        if run:
            n = rng.randint(1, run)
            assert parse_digits(_word(bs), n) == int(bs[:n]), (bs, n)
    assert parse_digits(_word(b"99999999"), 8) == 99_999_999
    assert parse_digits(_word(b"00000001"), 8) == 1
    assert parse_digits(_word(b"7xxxxxxx"), 1) == 7


def test_stop_mask_finds_the_first_quote_backslash_or_control_byte() -> None:
    rng = random.Random(5)
    alphabet = b'abcXYZ019@_"\\\x00\x01\x1f\x20\x21\x7f\x80\xfe\xff'
    for _ in range(20_000):
        bs = bytes(rng.choice(alphabet) for _ in range(8))
        first = next((k for k, c in enumerate(bs) if c in (34, 92) or c < 32), None)
        m = stop_mask(_word(bs))
        if first is None:
            assert m == 0, bs
        else:
            assert m != 0 and first_flag(np.uint64(m)) == first, bs


# --------------------------------------------------------------------------- the scanner


def _scan(kind: str, frames: list[bytes], symbols: list[str], production: bool) -> tuple:
    plan = col._scan_plan(kind)
    table, sym_bytes, sym_lens = col._symbol_table(symbols)
    words = col._symbol_words(symbols)
    n = len(frames)
    ints = np.full((n, len(plan.int_names)), -7, np.int64)
    floats = np.full((n, len(plan.float_names)), -7.0)
    codes = np.full(n, -7, np.int64)
    status = np.full(n, -7, np.int8)
    _, o, d = pa.array(frames, pa.large_binary()).buffers()
    offs = np.frombuffer(o, np.int64)
    buf = np.frombuffer(d, np.uint8) if d is not None else np.zeros(0, np.uint8)
    out = (ints, floats, codes, status)
    if production:
        col._TEMPLATE_KERNELS[kind](buf, offs, table, sym_bytes, sym_lens, *words, *out, buf.size)
        tpl_hits = int((status == 0).sum())
        col._scan_flat(buf, offs, plan.lut, plan.conv, plan.col, plan.scale, plan.need,
                     plan.suffix, table, sym_bytes, sym_lens, *out, buf.size, True)  # fmt: skip
    else:
        tpl_hits = 0
        col._scan_flat(buf, offs, plan.lut, plan.conv, plan.col, plan.scale, plan.need,
                     plan.suffix, table, sym_bytes, sym_lens, *out, 0, False)  # fmt: skip
    return status, ints, floats, codes, tpl_hits


def _assert_same(kind: str, frames: list[bytes], symbols: list[str]) -> tuple[int, int]:
    """Production path == byte-by-byte reference; returns (decoded frames, template hits)."""
    s1, i1, f1, c1, hits = _scan(kind, frames, symbols, production=True)
    s0, i0, f0, c0, _ = _scan(kind, frames, symbols, production=False)
    bad = np.flatnonzero(s1 != s0)
    assert bad.size == 0, (kind, frames[bad[0]], s1[bad[0]], s0[bad[0]])
    ok = s0 == 0
    for a, b in ((i1, i0), (f1, f0), (c1, c0)):
        diff = np.flatnonzero(ok & ~(a == b).reshape(len(frames), -1).all(axis=1))
        assert diff.size == 0, (kind, frames[diff[0]], a[diff[0]], b[diff[0]])
    return int(ok.sum()), hits


@pytest.fixture(scope="module")
def recorded() -> dict[str, list[bytes]]:
    by_kind: dict[str, list[bytes]] = {"trade": [], "bookTicker": [], "aggTrade": []}
    for _, t in load_capture(BTC, limit=4000) + load_capture(CRYPTOFEED):
        k = json.loads(t)["stream"].split("@")[1]
        if k in by_kind:
            by_kind[k].append(t.encode())
    return by_kind


def _symbols(frames: list[bytes]) -> list[str]:
    return [*sorted({json.loads(f)["data"]["s"] for f in frames}), *_EXTRA_SYMBOLS]


# names of every length class of the 8-byte symbol lookup (≤ 8, 9..16, > 16 bytes), in the
# table, and near misses that are not
_EXTRA_SYMBOLS = ["ETHUSDT", "1000PEPEUSDT", "A", "ABCDEFGH", "ABCDEFGHIJKLMNOP",
                  "ABCDEFGHIJKLMNOPQ", "LONGNAMEWITHMORETHAN16USDT"]  # fmt: skip
_ABSENT_SYMBOLS = ["B", "ABCDEFGHI", "ABCDEFGHIJKLMNOQ", "ABCDEFGHIJKLMNOPR", "BTCUSD", ""]


def test_recorded_frames_take_the_template_and_decode_as_json_says(recorded) -> None:
    for kind, frames in recorded.items():
        assert frames, kind
        symbols = _symbols(frames)
        decoded, hits = _assert_same(kind, frames, symbols)
        assert decoded == len(frames), kind
        assert hits == len(frames), (kind, hits, len(frames))  # the fast path is exercised
        _, ints, floats, codes, _ = _scan(kind, frames, symbols, production=True)
        plan = col._scan_plan(kind)
        fields = {name: (key, scale) for key, _, name, scale in col._SCAN_FIELDS[kind]}
        for r, raw in enumerate(frames[:500]):  # an independent decode of each value
            d = json.loads(raw)["data"]
            assert symbols[codes[r]] == d["s"]
            for j, name in enumerate(plan.int_names):
                key, scale = fields[name]
                assert ints[r, j] == int(d[key]) * scale, (kind, name)
            for j, name in enumerate(plan.float_names):
                assert floats[r, j] == float(d[fields[name][0]]), (kind, name)


_INTERESTING = b'0123456789.-+eE"\\ ,:{}[]tfnul\x00\x1f\x7f\xff'


def _mutate(rng: random.Random, raw: bytes) -> bytes:
    try:
        return _mutate_once(rng, raw, rng.randrange(13))
    except (ValueError, KeyError, TypeError, IndexError, AttributeError):  # not JSON any more
        return _mutate_once(rng, raw, 0)


def _mutate_once(rng: random.Random, raw: bytes, op: int) -> bytes:
    b = bytearray(raw)
    p = rng.randrange(len(b))
    if op == 0:
        b[p] = rng.choice(_INTERESTING)
    elif op == 1:
        del b[p]
    elif op == 2:
        b.insert(p, rng.choice(_INTERESTING))
    elif op == 3:
        return bytes(b[:p])
    elif op == 4:  # a digit run grown, e.g. to 18-21 digits or with leading zeros
        digits = [k for k, c in enumerate(b) if 48 <= c <= 57]
        k = rng.choice(digits)
        b[k:k] = rng.choice([b"0", b"00", b"9" * rng.randint(1, 12), b"1" * 10])
    elif op == 5:  # key order shuffled (valid JSON, off the template)
        msg = json.loads(raw)
        items = list(msg["data"].items())
        rng.shuffle(items)
        msg["data"] = dict(items)
        return json.dumps(msg, separators=(",", ":")).encode()
    elif op == 6:  # a value of another JSON type
        msg = json.loads(raw)
        key = rng.choice(list(msg["data"]))
        v = msg["data"][key]
        msg["data"][key] = rng.choice(
            [str(v), 1.5, -3, True, False, None, "1e5", "-0.5", "12345678901234567890", "",
             "٣", 10**19, "0000.10", "5.", ".5", "-", "1.000000000000000000001"]
        )  # fmt: skip
        return json.dumps(msg, separators=(",", ":"), ensure_ascii=rng.random() < 0.5).encode()
    elif op == 7:  # a repeated key
        msg = json.loads(raw)
        key = rng.choice(list(msg["data"]))
        text = json.dumps(msg, separators=(",", ":"))
        extra = json.dumps({key: msg["data"][key]}, separators=(",", ":"))[1:-1]
        return text.replace('"data":{', '"data":{' + extra + ",", 1).encode()
    elif op == 8:  # another stream / symbol
        return raw.replace(b"@", b"x@", 1) if rng.random() < 0.5 else raw.replace(b"USDT", b"USDC")
    elif op == 9:  # a chunk duplicated
        q = rng.randrange(p, len(b))
        b[q:q] = b[p:q]
    elif op == 12:  # another symbol name, known or not
        msg = json.loads(raw)
        msg["data"]["s"] = rng.choice(_EXTRA_SYMBOLS + _ABSENT_SYMBOLS)
        return json.dumps(msg, separators=(",", ":")).encode()
    elif op == 10:  # an escape inside a string
        quotes = [k for k, c in enumerate(b) if c == 34]
        k = rng.choice(quotes)
        b[k + 1 : k + 1] = rng.choice([b"\\u0041", b"\\\\", b'\\"', b"\\n"])
    else:  # whitespace between tokens
        seps = [k for k, c in enumerate(b) if c in (44, 58)]
        k = rng.choice(seps)
        b[k + 1 : k + 1] = rng.choice([b" ", b"\n", b"\t"])
    return bytes(b)


@pytest.mark.parametrize("kind", ["trade", "bookTicker", "aggTrade"])
def test_mutated_frames_get_the_reference_status_and_values(recorded, kind: str) -> None:
    rng = random.Random(11 + len(kind))
    src = recorded[kind]
    symbols = _symbols(src)
    frames = []
    for _ in range(6_000):
        raw = rng.choice(src)
        for _ in range(rng.choice([1, 1, 1, 2, 3])):
            if raw:
                raw = _mutate(rng, raw)
        frames.append(raw)
    frames += src[:200]
    decoded, hits = _assert_same(kind, frames, symbols)
    assert 0 < hits <= decoded < len(frames)  # both outcomes occur
    # every frame alone in its buffer: each read near the buffer's end goes byte by byte
    for raw in frames[:1500]:
        _assert_same(kind, [raw], symbols)
    # and in batches of random sizes (frames at every distance from the end)
    k = 0
    while k < len(frames):
        m = rng.randint(1, 9)
        _assert_same(kind, frames[k : k + m], symbols)
        k += m


def test_the_generated_template_kernels_are_up_to_date() -> None:
    """collector.py holds exactly what the generator renders from _SCAN_FIELDS and
    _WARM_FRAMES today (regenerate: ``python -m perpdesk.live.scan_codegen``)."""
    from pathlib import Path

    from perpdesk.live.scan_codegen import BEGIN, END, render

    text = Path(col.__file__).read_text()
    region = text[text.index(BEGIN) : text.index(END) + len(END)]
    assert region == render()
    for kind in col._SCAN_FIELDS:
        assert col._TEMPLATE_KERNELS[kind] is getattr(col, f"_scan_tpl_{kind.lower()}")


def test_short_decimals_from_one_load_equal_the_byte_wise_conversion() -> None:
    import numba

    @numba.njit
    def both(buf, end, lim):  # type: ignore[no-untyped-def]
        return col._quoted_decimal_fast(buf, 0, end, lim), col._quoted_decimal(buf, 0, end)

    texts = ["2899990.5", "1.2", "0.010", "63959.90", "1234567.8", "12345.678", "123456.78",
             "1.234567", "-1.5", "1.", ".5", "1.2.3", "00.5", "1e5", "7", "12345678.9",
             "9.9999999", "3.14x", "1234567.", "0.0000001"]  # fmt: skip
    for text in texts:
        for pad in (b"", b'"', b'","B":"20.5"}}'):
            raw = text.encode() + pad
            buf = np.frombuffer(raw, np.uint8)
            for lim in (0, buf.size):
                (x1, q1), (x0, q0) = both(buf, buf.size, lim)
                assert q1 == q0, (text, pad, lim)
                if q0 >= 0:
                    assert x1 == x0 == float(text), (text, pad, lim)
