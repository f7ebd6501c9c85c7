"""Tests of the synthetic market generator (perpdesk.data.synthetic).

Every number is recomputed here from the catalog as read back through ``Catalog.read`` —
never from the generator's internals. The stylised-fact bands are the ones documented
in the module docstring of ``perpdesk.data.synthetic`` (measured on the default spec).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view

from perpdesk.data.catalog import Catalog
from perpdesk.data.synthetic import (
    COMPLETE_MARKER,
    SyntheticSpec,
    SyntheticSummary,
    build_cached,
    generate_market,
)
from perpdesk.domain import InstrumentKind, annualise_rate

NS_PER_H = 3_600 * 1_000_000_000
BAR_NS = 300 * 1_000_000_000
SPEC = SyntheticSpec(seed=7, n_symbols=16, days=365)


@dataclass
class Sym:
    """One symbol's data as read back from the catalog."""

    symbol: str
    cls: str
    interval_h: int
    cap: float | None
    floor: float | None
    perp: dict[str, np.ndarray]
    spot: dict[str, np.ndarray]
    funding: dict[str, np.ndarray]
    oi: dict[str, np.ndarray]
    ann: np.ndarray = field(init=False)  # funding annualised, percent

    def __post_init__(self) -> None:
        self.ann = annualise_rate(self.funding["funding_rate"], self.interval_h)

    @property
    def baseline(self) -> float:
        return 0.0001 * self.interval_h / 8


def _cols(table) -> dict[str, np.ndarray]:
    return {name: table.column(name).to_numpy() for name in table.column_names}


def _load(root: Path, spec: SyntheticSpec, summary: SyntheticSummary) -> dict[str, Sym]:
    cat = Catalog(root)
    inst = cat.instruments(spec.venue)
    out = {}
    for s in summary.symbols:
        perp_inst = inst[(s.symbol, InstrumentKind.PERP)]
        out[s.symbol] = Sym(
            symbol=s.symbol,
            cls=s.cls,
            interval_h=perp_inst.funding_interval_h,
            cap=perp_inst.funding_cap,
            floor=perp_inst.funding_floor,
            perp=_cols(cat.read(spec.venue, "perp_bars_5m", s.symbol)),
            spot=_cols(cat.read(spec.venue, "spot_bars_5m", s.symbol)),
            funding=_cols(cat.read(spec.venue, "funding", s.symbol)),
            oi=_cols(cat.read(spec.venue, "open_interest", s.symbol)),
        )
    return out


@pytest.fixture(scope="module")
def market(tmp_path_factory) -> tuple[Path, SyntheticSummary, dict[str, Sym]]:
    root = tmp_path_factory.mktemp("synth_market")
    summary = generate_market(SPEC, root)
    return root, summary, _load(root, SPEC, summary)


def _of(data: dict[str, Sym], *classes: str) -> list[Sym]:
    return [s for s in data.values() if s.cls in classes]


def _frac(syms: list[Sym], pred) -> float:
    hits = sum(int(np.count_nonzero(pred(s))) for s in syms)
    return hits / sum(s.ann.size for s in syms)


def _majors_index(data: dict[str, Sym]) -> np.ndarray:
    """Hourly equal-weighted log-price of the majors (spot close of each hour's last bar)."""
    logs = [np.log(s.spot["close"][11::12]) for s in _of(data, "major")]
    return np.mean(logs, axis=0)


def _crash_episodes(index: np.ndarray) -> list[tuple[int, int]]:
    """(first, last) hour of each distinct drop of > 10 % from the 24h running high;
    flagged hours less than 24h apart belong to the same episode."""
    padded = np.concatenate([np.full(24, -np.inf), index])
    high24 = sliding_window_view(padded, 25).max(axis=1)
    hours = np.flatnonzero(index - high24 < np.log(0.9))
    episodes: list[list[int]] = []
    for h in hours:
        if episodes and h - episodes[-1][1] <= 24:
            episodes[-1][1] = int(h)
        else:
            episodes.append([int(h), int(h)])
    return [(a, b) for a, b in episodes]


# --------------------------------------------------------------------------------------
# Spec
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field_name", "value"),
    [
        ("n_symbols", 0),
        ("n_symbols", 41),
        ("n_symbols", 2.5),
        ("days", 1),
        ("days", True),
        ("seed", -1),
        ("seed", "7"),
        ("start", "2024-13-01"),
        ("start", "01/01/2024"),
        ("start", "1960-01-01"),
        ("venue", ""),
        ("venue", "Synth/x"),
    ],
)
def test_bad_spec_raises_value_error_naming_the_field(field_name, value):
    with pytest.raises(ValueError, match=rf"SyntheticSpec\.{field_name}=") as info:
        SyntheticSpec(**{field_name: value})
    assert "\n" not in str(info.value)
    assert repr(value) in str(info.value)


def test_content_hash_is_short_stable_and_field_sensitive():
    h = SyntheticSpec().content_hash()
    assert h == SyntheticSpec().content_hash()
    assert len(h) == 16 and all(c in "0123456789abcdef" for c in h)
    others = {
        SyntheticSpec(seed=8).content_hash(),
        SyntheticSpec(n_symbols=15).content_hash(),
        SyntheticSpec(days=364).content_hash(),
        SyntheticSpec(start="2024-01-02").content_hash(),
        SyntheticSpec(venue="synth2").content_hash(),
    }
    assert h not in others and len(others) == 5


# --------------------------------------------------------------------------------------
# Determinism and horizon independence (small markets)
# --------------------------------------------------------------------------------------


def _arrays(root: Path, spec: SyntheticSpec) -> dict[tuple[str, str, str], bytes]:
    cat = Catalog(root)
    out = {}
    for sym in cat.symbols(spec.venue, "funding"):
        for ds in ("perp_bars_5m", "spot_bars_5m", "funding", "open_interest"):
            t = cat.read(spec.venue, ds, sym)
            for col in t.column_names:
                out[(sym, ds, col)] = t.column(col).to_numpy().tobytes()
    return out


def test_same_seed_is_byte_identical_and_other_seed_differs(tmp_path):
    spec = SyntheticSpec(seed=11, n_symbols=6, days=3)
    other = SyntheticSpec(seed=12, n_symbols=6, days=3)
    for name, sp in (("a", spec), ("b", spec), ("c", other)):
        generate_market(sp, tmp_path / name)
    a, b, c = (_arrays(tmp_path / name, spec) for name in "abc")
    assert len(a) == 6 * (8 + 8 + 4 + 3)
    assert a == b
    assert c.keys() == a.keys()
    for key in a:
        if key[2] in ("ts_ns", "funding_interval_h"):
            assert a[key] == c[key]
        elif key[2] != "funding_rate":  # majors' funding can sit at the baseline in both
            assert a[key] != c[key], key
    assert [a[k] for k in a if k[2] == "funding_rate"] != [
        c[k] for k in a if k[2] == "funding_rate"
    ]


def test_shorter_horizon_is_a_prefix_of_a_longer_one(tmp_path):
    """Nothing at time t depends on data after t: 2 days == the first 2 days of 3."""
    short, long_ = SyntheticSpec(n_symbols=6, days=2), SyntheticSpec(n_symbols=6, days=3)
    generate_market(short, tmp_path / "s")
    generate_market(long_, tmp_path / "l")
    cs, cl = Catalog(tmp_path / "s"), Catalog(tmp_path / "l")
    end = short.end_ns
    for sym in cs.symbols("synth", "funding"):
        for ds in ("perp_bars_5m", "spot_bars_5m", "funding", "open_interest"):
            a = cs.read("synth", ds, sym)
            upto = end + 1 if ds == "funding" else end  # the last settlement is at `end`
            b = cl.read("synth", ds, sym, end_ns=upto)
            assert a.num_rows > 0 and a.equals(b), (sym, ds)


# --------------------------------------------------------------------------------------
# Structure
# --------------------------------------------------------------------------------------


def test_summary_and_instruments(market):
    root, summary, data = market
    inst = Catalog(root).instruments("synth")
    assert len(inst) == 2 * SPEC.n_symbols
    assert [s.symbol for s in summary.symbols][:4] == ["BTCUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT"]
    assert {s.cls for s in summary.symbols} == {"major", "alt", "meme"}
    for s in summary.symbols:
        perp, spot = inst[(s.symbol, InstrumentKind.PERP)], inst[(s.symbol, InstrumentKind.SPOT)]
        assert perp.funding_interval_h == s.funding_interval_h
        assert perp.funding_cap is not None and perp.funding_floor is not None
        assert perp.funding_floor < 0 < perp.funding_cap
        assert spot.funding_interval_h == 0 and spot.funding_cap is None
        assert spot.funding_floor is None
        # ticks are fine relative to price, lots worth $1..$1000
        p0 = data[s.symbol].spot["open"][0]
        assert 1e-7 < perp.tick_size / p0 < 1e-4
        assert 1 <= perp.lot_size * p0 <= 1000
    rows = summary.rows_by_dataset()
    assert rows["instruments"] == 2 * SPEC.n_symbols
    assert rows["perp_bars_5m"] == rows["spot_bars_5m"] == SPEC.n_symbols * SPEC.days * 288
    assert rows["open_interest"] == SPEC.n_symbols * SPEC.days * 24
    assert rows["funding"] == sum(SPEC.days * 24 // s.interval_h for s in data.values())
    assert summary.total_rows == sum(rows.values())


def test_intervals_8h_4h_1h_present_and_majors_on_8h(market):
    _, _, data = market
    assert {s.interval_h for s in data.values()} == {1, 4, 8}
    assert {s.interval_h for s in _of(data, "major")} == {8}
    assert 1 in {s.interval_h for s in _of(data, "meme")}
    assert 4 in {s.interval_h for s in _of(data, "alt")}


@pytest.mark.parametrize("n", [1, 2, 5, 6, 8])
def test_small_universes_keep_an_8h_major_and_the_interval_mix(tmp_path, n):
    summary = generate_market(SyntheticSpec(n_symbols=n, days=2), tmp_path)
    assert summary.symbols[0].cls == "major" and summary.symbols[0].funding_interval_h == 8
    intervals = {s.funding_interval_h for s in summary.symbols}
    if n >= 6:
        assert intervals == {1, 4, 8}
        assert any(s.cls == "meme" and s.funding_interval_h == 1 for s in summary.symbols)


def test_timestamps(market):
    _, _, data = market
    start = SPEC.start_ns
    bars_ts = start + np.arange(SPEC.days * 288, dtype=np.int64) * BAR_NS
    oi_ts = start + np.arange(SPEC.days * 24, dtype=np.int64) * NS_PER_H
    for s in data.values():
        assert np.array_equal(s.perp["ts_ns"], bars_ts)
        assert np.array_equal(s.spot["ts_ns"], bars_ts)
        assert np.array_equal(s.oi["ts_ns"], oi_ts)
        ts = s.funding["ts_ns"]
        step = s.interval_h * NS_PER_H
        assert np.all(np.diff(ts) > 0)
        assert ts[0] == start + step, s.symbol  # first settlement one interval in
        assert np.all(ts % step == 0)  # multiples of the interval from 00:00 UTC
        assert np.all(np.diff(ts) == step)
        assert ts[-1] == SPEC.end_ns
        assert np.all(s.funding["funding_interval_h"] == s.interval_h)


def test_ohlc_and_volume_consistency(market):
    _, _, data = market
    for s in data.values():
        for bars in (s.perp, s.spot):
            o, h, lo, c = bars["open"], bars["high"], bars["low"], bars["close"]
            assert np.all(lo > 0)
            assert np.all(lo <= np.minimum(o, c)) and np.all(h >= np.maximum(o, c))
            assert np.all(h > lo)  # a 5-minute bar always trades a range
            assert np.array_equal(o[1:], c[:-1])  # open == previous close
            vq, vb, tb = bars["volume_quote"], bars["volume_base"], bars["taker_buy_volume_quote"]
            assert np.all(vq > 0) and np.all(vb > 0)
            assert np.all(tb >= 0) and np.all(tb <= vq)
            vwap = vq / vb
            assert np.all(vwap >= lo * (1 - 1e-9)) and np.all(vwap <= h * (1 + 1e-9))
            # taker-buy share leans with the bar's direction
            share = tb / vq
            up, down = c > o, c < o
            assert share[up].mean() > 0.55 > 0.45 > share[down].mean()
        # mark price is the perp price at settlement = the open of the bar starting then
        pos = (s.funding["ts_ns"][:-1] - SPEC.start_ns) // BAR_NS
        assert np.array_equal(s.funding["mark_price"][:-1], s.perp["open"][pos])


# --------------------------------------------------------------------------------------
# Funding: Binance formula, clamp, stylised facts
# --------------------------------------------------------------------------------------


def _bar_premium(s: Sym) -> np.ndarray:
    """Time-weighted (1, 2, … n) mean of perp/spot − 1 at bar closes in [t − h, t)."""
    basis = s.perp["close"] / s.spot["close"] - 1
    per = s.interval_h * 12
    w = np.arange(1, per + 1)
    return (basis.reshape(-1, per) * w).sum(axis=1) / w.sum()


def test_funding_follows_the_binance_formula_from_the_bars(market):
    """rate = prem + clamp(base − prem, ±0.05 %) with prem estimated from the read-back 5m bars."""
    _, _, data = market
    checked_far = 0
    for s in data.values():
        rate, base = s.funding["funding_rate"], s.baseline
        prem = _bar_premium(s)
        assert np.all(rate <= s.cap) and np.all(rate >= s.floor)
        inside = np.abs(prem - base) < 0.0004  # well inside the ±0.05 % dead band
        assert inside.sum() > 0.1 * rate.size
        assert np.all(rate[inside] == base), s.symbol
        far = prem - base > 0.001  # well above the band: rate ≈ prem − 0.05 %
        far &= prem - 0.0005 < s.cap
        if far.any():
            est = prem[far] - 0.0005
            assert np.max(np.abs(rate[far] - est) / est) < 0.15, s.symbol
            checked_far += int(far.sum())
        assert np.all(rate[prem - base > 0.0007] > base)
        assert np.all(rate[prem - base < -0.0007] < base)
    assert checked_far > 500


def test_majors_sit_at_the_baseline(market):
    _, _, data = market
    majors = _of(data, "major")
    at_base = sum(int(np.sum(s.funding["funding_rate"] == s.baseline)) for s in majors)
    share = at_base / sum(s.ann.size for s in majors)
    assert share >= 0.6, share  # measured 0.89
    assert _frac(majors, lambda s: s.ann > 20) < 0.02
    assert _frac(majors, lambda s: s.funding["funding_rate"] < 0) < 0.2  # measured 0.06
    for s in majors:
        assert s.cap <= 0.0003 * s.interval_h / 8 + 1e-15  # tight cap, 3 × baseline


def test_alt_and_meme_funding_stylised_facts(market):
    _, _, data = market
    alts, memes = _of(data, "alt"), _of(data, "meme")
    assert len(alts) >= 4 and len(memes) >= 4
    hot_alts = _frac(alts, lambda s: s.ann > 20)
    hot_memes = _frac(memes, lambda s: s.ann > 20)
    assert 0.08 <= hot_alts <= 0.40, hot_alts  # measured 0.18
    assert 0.12 <= hot_memes <= 0.50, hot_memes  # measured 0.25
    neg = _frac(alts + memes, lambda s: s.funding["funding_rate"] < 0)
    assert 0.04 <= neg <= 0.25, neg  # measured 0.13
    for s in alts + memes:
        r = s.funding["funding_rate"]
        ac1 = np.corrcoef(r[:-1], r[1:])[0, 1]
        assert ac1 > 0.6, (s.symbol, ac1)  # measured min 0.93
        assert s.ann.min() < -20, s.symbol  # every alt/meme has negative stretches
    assert max(s.ann.max() for s in memes) > 200
    assert max(s.ann.max() for s in alts) > 100
    # hype decays over days: the longest run above 100 % ann. lasts more than a day
    longest = 0
    for s in memes:
        hot = np.concatenate([[0], (s.ann > 100).astype(np.int8), [0]])
        edges = np.flatnonzero(np.diff(hot))
        runs_h = (edges[1::2] - edges[::2]) * s.interval_h
        longest = max(longest, int(runs_h.max(initial=0)))
    assert longest > 24


def test_basis_has_the_sign_of_funding(market):
    _, _, data = market
    for s in data.values():
        rate = s.funding["funding_rate"]
        basis = _bar_premium(s)
        assert np.corrcoef(basis, rate)[0, 1] > 0.3, s.symbol
        # perp over spot when funding is above baseline, under it when negative
        hot, negative = rate > s.baseline, rate < 0
        assert not hot.any() or basis[hot].mean() > 0, s.symbol
        assert not negative.any() or basis[negative].mean() < 0, s.symbol


# --------------------------------------------------------------------------------------
# Prices, crashes, volume, open interest
# --------------------------------------------------------------------------------------


def test_market_crashes_a_few_times_a_year(market):
    _, _, data = market
    index = _majors_index(data)
    episodes = _crash_episodes(index)
    per_year = len(episodes) / (SPEC.days / 365)
    assert 2 <= per_year <= 9, per_year  # measured 6
    # crashes are market-wide: alts and memes fall too, and funding turns down
    others = _of(data, "alt", "meme")
    for a, b in episodes:
        lo = max(0, a - 24)
        drops = [
            np.log(s.spot["close"][b * 12 + 11] / s.spot["close"][lo * 12 + 11]) for s in others
        ]
        assert np.median(drops) < -0.05
    # realised vol of the majors' index: crypto-like, 35–90 % annualised
    vol = np.std(np.diff(index)) * np.sqrt(24 * 365)
    assert 0.35 < vol < 0.9, vol


def test_funding_and_open_interest_fall_in_crashes(market):
    _, _, data = market
    index = _majors_index(data)
    episodes = _crash_episodes(index)
    oi_total = np.sum([s.oi["open_interest_usd"] for s in data.values()], axis=0)

    def depth(episode: tuple[int, int]) -> float:
        a, b = episode
        return float(index[a : b + 1].min() - index[max(0, a - 24) : b + 1].max())

    a, b = min(episodes, key=depth)
    b = a + int(np.argmin(index[a : b + 1]))  # the trough
    assert oi_total[b] < 0.9 * oi_total[max(0, a - 24)]
    # funding in the 2 days after the worst crash vs the 2 days before, all symbols
    t_a, t_b = SPEC.start_ns + a * NS_PER_H, SPEC.start_ns + b * NS_PER_H
    before, after = [], []
    for s in _of(data, "alt", "meme"):
        ts = s.funding["ts_ns"]
        before.append(s.ann[(ts > t_a - 48 * NS_PER_H) & (ts <= t_a)].mean())
        after.append(s.ann[(ts > t_b) & (ts <= t_b + 48 * NS_PER_H)].mean())
    assert np.median(after) < np.median(before) - 10


def test_open_interest_rises_with_hype(market):
    _, _, data = market
    corrs, ratios = [], []
    for s in _of(data, "alt", "meme"):
        pos = (s.funding["ts_ns"] - SPEC.start_ns) // NS_PER_H - 1  # last snapshot before
        oi = s.oi["open_interest_usd"][pos]
        corrs.append(np.corrcoef(oi, s.funding["funding_rate"])[0, 1])
        hype = s.ann > 100
        if hype.sum() >= 5:
            ratios.append(oi[hype].mean() / np.median(oi))
        # open interest in USD is the base amount at the perp price of the hour
        usd = s.oi["open_interest_base"] * s.perp["open"][::12]
        assert np.all(s.oi["open_interest_usd"] > 0)
        assert np.median(np.abs(usd / s.oi["open_interest_usd"] - 1)) < 0.01
    assert np.median(corrs) > 0.2, corrs  # measured 0.62
    assert len(ratios) >= 4 and np.median(ratios) > 1.2, ratios  # measured 1.7


def test_volume_tiers_and_seasonality(market):
    _, _, data = market
    daily = {
        s.symbol: np.median(s.perp["volume_quote"].reshape(-1, 288).sum(axis=1))
        for s in data.values()
    }
    under = [k for k, v in daily.items() if v < 10e6]
    assert 2 <= len(under) < len(daily), daily
    assert daily["BTCUSDT"] > 2e9 and daily["BTCUSDT"] == max(daily.values())
    assert all(v > 10e6 for s in _of(data, "major") for v in [daily[s.symbol]])
    for s in data.values():
        spot_daily = np.median(s.spot["volume_quote"].reshape(-1, 288).sum(axis=1))
        assert spot_daily < daily[s.symbol]
    # intraday cycle: the US afternoon is busier than the Asian night, for every symbol
    for s in data.values():
        by_hour = s.perp["volume_quote"].reshape(-1, 24, 12).sum(axis=(0, 2))
        assert by_hour[13:18].mean() > 1.3 * by_hour[0:5].mean(), s.symbol


def test_alts_and_memes_are_more_volatile_than_majors(market):
    _, _, data = market

    def vol(s: Sym) -> float:
        r = np.diff(np.log(s.spot["close"][11::12]))
        return float(np.std(r) * np.sqrt(24 * 365))

    majors = np.median([vol(s) for s in _of(data, "major")])
    alts = np.median([vol(s) for s in _of(data, "alt")])
    memes = np.median([vol(s) for s in _of(data, "meme")])
    assert 0.3 < majors < alts < memes < 3.0, (majors, alts, memes)


# --------------------------------------------------------------------------------------
# build_cached
# --------------------------------------------------------------------------------------

TINY = SyntheticSpec(seed=3, n_symbols=2, days=2)


def test_build_cached_builds_once_then_reuses(tmp_path):
    calls: list[tuple[int, int, str]] = []
    root = build_cached(TINY, tmp_path, progress=lambda *a: calls.append(a))
    assert root == tmp_path / "synthetic" / TINY.content_hash()
    assert (root / COMPLETE_MARKER).is_file()
    assert json.loads((root / COMPLETE_MARKER).read_text())["seed"] == TINY.seed
    assert calls == [(1, 2, "BTCUSDT"), (2, 2, "ETHUSDT")]
    inst = root / "synth" / "instruments.parquet"
    before = os.stat(inst)
    again = build_cached(TINY, tmp_path, progress=lambda *a: calls.append(a))
    after = os.stat(inst)
    assert again == root
    assert len(calls) == 2  # nothing regenerated
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    # no temporary build directories are left behind
    assert sorted(p.name for p in (tmp_path / "synthetic").iterdir()) == [root.name]
    assert Catalog(root).read("synth", "funding", "BTCUSDT").num_rows == 6


def test_build_cached_ignores_a_directory_without_the_marker(tmp_path):
    final = tmp_path / "synthetic" / TINY.content_hash()
    (final / "synth").mkdir(parents=True)
    (final / "junk.txt").write_text("half a build")
    calls = []
    root = build_cached(TINY, tmp_path, progress=lambda *a: calls.append(a))
    assert root == final and len(calls) == 2
    assert (root / COMPLETE_MARKER).is_file()
    assert not (root / "junk.txt").exists()
    assert Catalog(root).read("synth", "perp_bars_5m", "ETHUSDT").num_rows == 2 * 288
    assert sorted(p.name for p in (tmp_path / "synthetic").iterdir()) == [root.name]


def test_build_cached_yields_to_a_concurrent_winner(tmp_path):
    final = tmp_path / "synthetic" / TINY.content_hash()

    def rival_finishes_first(done: int, total: int, symbol: str) -> None:
        if done == total:  # another process publishes while we are still building
            final.mkdir(parents=True)
            (final / "winner.txt").write_text("theirs")
            (final / COMPLETE_MARKER).write_text("{}")

    root = build_cached(TINY, tmp_path, progress=rival_finishes_first)
    assert root == final
    assert (root / "winner.txt").read_text() == "theirs"
    assert not (root / "synth").exists()  # ours was discarded, theirs kept intact
    assert sorted(p.name for p in (tmp_path / "synthetic").iterdir()) == [root.name]


def test_failed_build_leaves_nothing_that_looks_complete(tmp_path):
    def boom(done: int, total: int, symbol: str) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build_cached(TINY, tmp_path, progress=boom)
    assert not (tmp_path / "synthetic" / TINY.content_hash()).exists()
    assert list((tmp_path / "synthetic").iterdir()) == []
