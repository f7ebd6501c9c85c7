"""The scanner and the funding-history downloader on Bybit and OKX, through the same ccxt
calls as on Binance, against the loopback fakes of tests/fake_venues.py (real aiohttp
servers on 127.0.0.1 fed with the recorded responses in ../shared/data).

Expected numbers are written out from the recorded payloads (quoted in the comments) or
read from the source files here, independently of the code under test."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from perpdesk.data.catalog import Catalog
from perpdesk.data.sources.ccxt_download import CcxtDownloader, DownloadError, parse_datasets
from perpdesk.live.scanner import scan
from perpdesk.strategies.carry import CarryRules
from tests.fake_venues import FakeBybit, FakeOKX
from tests.realdata import shared_file

NOW_MS = 1_786_310_820_000  # just after the Bybit capture (2026-08-09T21:27Z)
NS_PER_MS = 1_000_000
H_MS = 3_600_000
YEAR_H = 365 * 24


def ms(date: str) -> int:
    return int(np.datetime64(date, "ms").astype(np.int64))


def client(exchange: str, fake: FakeBybit | FakeOKX, root: Path) -> CcxtDownloader:
    return CcxtDownloader(
        exchange,
        Catalog(root),
        api_url=fake.url,
        timeout_ms=2000,
        exchange_config={"rateLimit": 1},
        clock_ms=lambda: NOW_MS,
    )


def multivenue_funding(venue: str, coin: str) -> tuple[list[int], list[float]]:
    """(settlement times ms, rates) of the real history in multivenue/funding_rates.parquet."""
    t = pq.read_table(
        shared_file("multivenue/funding_rates.parquet"),
        filters=[("venue", "=", venue), ("coin", "=", coin)],
    )
    t_ms = t.column("timestamp").cast("int64").to_numpy() // 1000  # µs → ms
    order = np.argsort(t_ms, kind="stable")
    return t_ms[order].tolist(), t.column("funding_rate").to_numpy()[order].tolist()


def read_funding(root: Path, venue: str, symbol: str) -> tuple[list[int], list[float], list[int]]:
    t = Catalog(root).read(venue, "funding", symbol)
    return (
        t.column("ts_ns").to_pylist(),
        t.column("funding_rate").to_pylist(),
        t.column("funding_interval_h").to_pylist(),
    )


@pytest.fixture()
def bybit():  # type: ignore[no-untyped-def]
    with FakeBybit(now_ms=NOW_MS) as f:
        yield f


@pytest.fixture()
def okx():  # type: ignore[no-untyped-def]
    with FakeOKX(now_ms=NOW_MS) as f:
        yield f


# -- scanner ------------------------------------------------------------------------------------
def test_bybit_scan_table(bybit: FakeBybit, tmp_path: Path) -> None:
    # the recorded instruments give each symbol's interval in minutes: BTC, ETH, SOL, DOGE
    # 480 (8 h) and ACEUSDT 60 (1 h); ACEUSDT has no recorded ticker, so one is synthesized
    # here from the SOLUSDT snapshot with a rate of 0.0001 (only the rate and the symbol)
    assert bybit.instrument("BTCUSDT")["fundingInterval"] == 480
    assert bybit.instrument("ACEUSDT")["fundingInterval"] == 60
    bybit.tickers["ACEUSDT"] = {
        **bybit.tickers["SOLUSDT"],
        "symbol": "ACEUSDT",
        "fundingRate": "0.0001",
    }
    rules = CarryRules(
        entry_ann_pct=5.0, exit_ann_pct=3.0, min_quote_volume_24h_usd=50e6, max_positions=10
    )
    _, rows = scan([client("bybit", bybit, tmp_path)], rules)
    by = {r.symbol: r for r in rows}
    # ranked by annualised funding; BTC and DOGE tie at 10.95 % (name order)
    assert [r.symbol for r in rows] == ["ACEUSDT", "BTCUSDT", "DOGEUSDT", "ETHUSDT", "SOLUSDT"]
    assert {r.venue for r in rows} == {"bybit"} and by["BTCUSDT"].unified == "BTC/USDT:USDT"
    assert [r.funding_interval_h for r in rows] == [1, 8, 8, 8, 8]
    # rate × (365 × 24 / interval_h) × 100, rates of the snapshots
    assert by["ACEUSDT"].ann_pct == pytest.approx(0.0001 * YEAR_H / 1 * 100)  # 87.6 %
    assert by["BTCUSDT"].ann_pct == pytest.approx(0.0001 * YEAR_H / 8 * 100)  # 10.95 %
    assert by["DOGEUSDT"].ann_pct == pytest.approx(10.95)
    assert by["ETHUSDT"].ann_pct == pytest.approx(0.00004617 * 1095 * 100)  # 5.055615 %
    assert by["SOLUSDT"].ann_pct == pytest.approx(0.00000876 * 1095 * 100)  # 0.959 %
    # 24h quote volume = turnover24h
    assert by["BTCUSDT"].quote_volume_24h_usd == pytest.approx(1142118412.9021)
    assert by["DOGEUSDT"].quote_volume_24h_usd == pytest.approx(36155543.3714)
    assert by["ETHUSDT"].quote_volume_24h_usd == pytest.approx(512937803.5941)
    # basis from markPrice / indexPrice
    assert by["BTCUSDT"].basis_bps == pytest.approx((65117.44 / 65137.76 - 1) * 1e4)  # −3.12
    assert by["ETHUSDT"].basis_bps == pytest.approx((1922.43 / 1923.16 - 1) * 1e4)
    # OI: openInterest (BTC) × mark = the snapshot's own openInterestValue 3,899,996,265.01
    assert by["BTCUSDT"].open_interest_usd == pytest.approx(59891.732 * 65117.44)
    assert by["BTCUSDT"].open_interest_usd == pytest.approx(3899996265.01, abs=0.01)
    assert by["BTCUSDT"].next_funding_ts_ns == 1786320000000 * NS_PER_MS
    # decisions: DOGE is under 50 M volume, SOL under 5 %
    assert [r.symbol for r in rows if r.candidate] == ["ACEUSDT", "BTCUSDT", "ETHUSDT"]
    assert by["DOGEUSDT"].note == "24h volume too low" and by["SOLUSDT"].note == "funding ≤ 5%"
    # only the perpetuals were loaded, and the funding came from the linear tickers
    cats = {r.query["category"] for r in bybit.requests_to("/v5/market/instruments-info")}
    assert cats == {"linear"}
    assert {r.query["category"] for r in bybit.requests_to("/v5/market/tickers")} == {"linear"}


def test_okx_scan_table(okx: FakeOKX, tmp_path: Path) -> None:
    rules = CarryRules(
        entry_ann_pct=5.0, exit_ann_pct=3.0, min_quote_volume_24h_usd=1e5, max_positions=10
    )
    oi = {  # the real OKX snapshot the fake serves as oiUsd
        r["coin"]: r["oi_usd"]
        for r in pq.read_table(shared_file("multivenue/open_interest.parquet")).to_pylist()
        if r["venue"] == "okx"
    }
    _, rows = scan([client("okx", okx, tmp_path)], rules)
    by = {r.symbol: r for r in rows}
    # engine names, not OKX ids; the inverse UNI-USD-SWAP of the tickers is not a row
    assert [r.symbol for r in rows] == ["HYPEUSDT", "ETHUSDT", "BTCUSDT"]
    assert by["HYPEUSDT"].unified == "HYPE/USDT:USDT"
    # interval = nextFundingTime − fundingTime: 1744619149506 − 1744590349506 = 8 h for
    # BTC (recorded), 4 h for the synthesized HYPE item
    assert [r.funding_interval_h for r in rows] == [4, 8, 8]
    assert by["HYPEUSDT"].ann_pct == pytest.approx(0.0002 * YEAR_H / 4 * 100)  # 43.8 %
    assert by["ETHUSDT"].ann_pct == pytest.approx(0.00025 * YEAR_H / 8 * 100)  # 27.375 %
    assert by["BTCUSDT"].ann_pct == pytest.approx(0.0001 * YEAR_H / 8 * 100)  # 10.95 %
    assert by["BTCUSDT"].next_funding_ts_ns == 1744590349506 * NS_PER_MS
    # basis: recorded markPx 84660.1 (2025-04-14) over recorded idxPx 103895 (2025-05-11)
    assert by["BTCUSDT"].basis_bps == pytest.approx((84660.1 / 103895 - 1) * 1e4)
    assert by["HYPEUSDT"].basis_bps == pytest.approx((12.5 / 12.55 - 1) * 1e4)
    # quote volume: vol24h 2222 contracts × ctVal 0.01 BTC × last 9999.99
    assert by["BTCUSDT"].quote_volume_24h_usd == pytest.approx(2222 * 0.01 * 9999.99)
    assert math.isnan(by["HYPEUSDT"].quote_volume_24h_usd)  # no ticker served
    assert by["BTCUSDT"].open_interest_usd == pytest.approx(oi["BTC"])
    assert by["HYPEUSDT"].open_interest_usd == pytest.approx(oi["HYPE"])
    assert [r.symbol for r in rows if r.candidate] == ["BTCUSDT"]
    assert by["HYPEUSDT"].note == "24h volume too low"
    # index by quote currency, mark prices and tickers of the swaps, one request each
    assert [r.query for r in okx.requests_to("/api/v5/market/index-tickers")] == [
        {"quoteCcy": "USDT"}
    ]
    assert [r.query for r in okx.requests_to("/api/v5/market/tickers")] == [{"instType": "SWAP"}]
    assert [r.query for r in okx.requests_to("/api/v5/public/instruments")] == [
        {"instType": "SWAP"}
    ]


def test_symbols_in_any_form(okx: FakeOKX, tmp_path: Path) -> None:
    rules = CarryRules(
        entry_ann_pct=5.0, exit_ann_pct=3.0, min_quote_volume_24h_usd=1.0, max_positions=3
    )
    _, rows = scan(
        [client("okx", okx, tmp_path)], rules, ["BTCUSDT", "HYPE-USDT-SWAP", "ETH/USDT:USDT"]
    )
    assert sorted(r.symbol for r in rows) == ["BTCUSDT", "ETHUSDT", "HYPEUSDT"]


# -- funding history ------------------------------------------------------------------------------
def test_bybit_recorded_funding_payload_lands_in_the_catalog(
    bybit: FakeBybit, tmp_path: Path
) -> None:
    # http_get_funding_history.json: BTCUSDT 0.0001 at 1709884800000 (2024-03-08 08:00),
    # 0.00015 at 1709856000000 (2024-03-08 00:00), newest first
    lo, hi = ms("2024-03-07"), ms("2024-03-09")
    res = client("bybit", bybit, tmp_path).download(
        parse_datasets("funding"), ["BTCUSDT"], lo * NS_PER_MS, hi * NS_PER_MS
    )
    ts, rate, interval = read_funding(tmp_path, "bybit", "BTCUSDT")
    assert ts == [1709856000000 * NS_PER_MS, 1709884800000 * NS_PER_MS]
    assert rate == [0.00015, 0.0001] and interval == [8, 8]
    assert (res[0].fetched_rows, res[0].new_rows) == (2, 2)
    # one window [lo, hi − 1]; then the window up to the oldest row found, which is empty
    q = [r.query for r in bybit.requests_to("/v5/market/funding/history")]
    assert [(x["startTime"], x["endTime"]) for x in q] == [
        (str(lo), str(hi - 1)),
        (str(lo), str(1709856000000 - 1)),
    ]
    assert all(x["category"] == "linear" and x["limit"] == "200" for x in q)


def test_bybit_funding_history_pages_backward_and_resumes(bybit: FakeBybit, tmp_path: Path) -> None:
    t_ms, rates = multivenue_funding("bybit", "BTC")  # real, 2025-03-08 → 2026-03-07, 8 h
    assert len(t_ms) == 1092
    bybit.set_funding("BTCUSDT", [(t, repr(r)) for t, r in zip(t_ms, rates, strict=True)])
    lo, mid, hi = ms("2025-03-01"), ms("2025-09-01"), ms("2026-04-01")
    dl = client("bybit", bybit, tmp_path)
    res_first = dl.download(parse_datasets("funding"), ["BTCUSDT"], mid * NS_PER_MS, hi * NS_PER_MS)
    newer = [t for t in t_ms if t >= mid]
    # the newest 200 of the window first; the rest of the window after its newest row is
    # checked empty once (guard against an exchange answering the oldest rows); then the
    # 200 before the oldest of each page
    q = [r.query for r in bybit.requests_to("/v5/market/funding/history")]
    assert int(q[0]["endTime"]) == hi - 1
    assert (int(q[1]["startTime"]), int(q[1]["endTime"])) == (newer[-1] + 1, hi - 1)
    q = [q[0], *q[2:]]
    assert [int(x["endTime"]) for x in q[1:]] == [newer[-200 * k] - 1 for k in range(1, len(q))]
    # 563 rows: 200 + 200 + 163; the oldest is at the window's start, nothing left to ask
    assert len(newer) == 563 and newer[0] == mid and len(q) == 3
    assert res_first[0].requests == 4
    # resume over the whole range: only the head before the stored rows is fetched
    bybit.requests.clear()
    res = client("bybit", bybit, tmp_path).download(
        parse_datasets("funding"), ["BTCUSDT"], lo * NS_PER_MS, hi * NS_PER_MS
    )
    assert res[0].new_rows == len(t_ms) - len(newer)
    for r in bybit.requests_to("/v5/market/funding/history"):  # nothing inside the stored range
        assert int(r.query["endTime"]) < newer[0] or int(r.query["startTime"]) > newer[-1]
    ts, got, interval = read_funding(tmp_path, "bybit", "BTCUSDT")
    assert ts == [t * NS_PER_MS for t in t_ms]
    assert got == rates
    assert set(interval) == {8}


def test_okx_recorded_funding_payload_lands_in_the_catalog(okx: FakeOKX, tmp_path: Path) -> None:
    # http_get_funding_rate_history.json, BTC-USDT-SWAP: fundingTime 1704067200000
    # (2024-01-01 00:00) realizedRate 0.00015 (fundingRate 0.0001515032), 1704038400000
    # (2023-12-31 16:00) realizedRate −0.00002; the settled rate is realizedRate
    lo, hi = ms("2023-12-31"), ms("2024-01-02")
    res = client("okx", okx, tmp_path).download(
        parse_datasets("funding"), ["BTCUSDT"], lo * NS_PER_MS, hi * NS_PER_MS
    )
    assert res[0].symbol == "BTCUSDT"
    ts, rate, interval = read_funding(tmp_path, "okx", "BTCUSDT")
    assert ts == [1704038400000 * NS_PER_MS, 1704067200000 * NS_PER_MS]
    assert rate == [-0.00002, 0.00015] and interval == [8, 8]
    # OKX cursors: before = since − 1 (newer than), after = the window's end (older than)
    q = [r.query for r in okx.requests_to("/api/v5/public/funding-rate-history")]
    assert q[0] == {
        "instId": "BTC-USDT-SWAP",
        "before": str(lo - 1),
        "after": str(hi),
        "limit": "100",
    }
    assert q[1]["after"] == str(1704038400000) and len(q) == 2


def test_okx_4h_funding_history_pages_backward(okx: FakeOKX, tmp_path: Path) -> None:
    t_ms, rates = multivenue_funding("okx", "HYPE")  # real, 2025-12-03 → 2026-03-07, 4 h
    assert len(t_ms) == 565 and set(np.diff(t_ms)) == {4 * H_MS}
    okx.set_funding("HYPE-USDT-SWAP", [(t, repr(r)) for t, r in zip(t_ms, rates, strict=True)])
    res = client("okx", okx, tmp_path).download(
        parse_datasets("funding"), ["HYPEUSDT"], ms("2025-12-01") * NS_PER_MS
    )
    ts, got, interval = read_funding(tmp_path, "okx", "HYPEUSDT")
    assert ts == [t * NS_PER_MS for t in t_ms] and got == rates
    assert set(interval) == {4}  # from the settlement spacing, page borders included
    assert okx.requests_to("/api/v5/public/funding-rate") == []  # not needed
    q = okx.requests_to("/api/v5/public/funding-rate-history")
    # 5 × 100 + 65, the guard after the first full page, then an empty answer
    assert len(q) == 8 and res[0].requests == 8
    assert q[1].query["before"] == str(t_ms[-1]) and q[1].query["after"] == str(NOW_MS)
    # each page ends before the oldest settlement of the one before
    assert [int(r.query["after"]) for r in q[2:]] == [t_ms[-100 * k] for k in range(1, 6)] + [
        t_ms[0]
    ]


def test_an_exchange_answering_the_oldest_rows_is_refused(bybit: FakeBybit, tmp_path: Path) -> None:
    t_ms, rates = multivenue_funding("bybit", "ETH")
    bybit.set_funding("ETHUSDT", [(t, repr(r)) for t, r in zip(t_ms, rates, strict=True)])
    bybit.oldest_rows_first = True
    with pytest.raises(DownloadError, match="answered the oldest rows of the window"):
        client("bybit", bybit, tmp_path).download(
            parse_datasets("funding"), ["ETHUSDT"], ms("2025-03-01") * NS_PER_MS
        )


def test_lone_settlement_takes_the_interval_the_venue_states(
    bybit: FakeBybit, okx: FakeOKX, tmp_path: Path
) -> None:
    # one settlement in the window: no spacing to read the interval from, so the venue's
    # stated interval is used — set here to 4 h, unlike the recorded 8 h, to tell them
    # apart. Bybit: the instrument's fundingInterval (minutes); OKX: fetch_funding_rate's
    # nextFundingTime − fundingTime
    bybit.instrument("BTCUSDT")["fundingInterval"] = 240
    lo, hi = ms("2024-03-08T04:00"), ms("2024-03-09")
    client("bybit", bybit, tmp_path).download(
        parse_datasets("funding"), ["BTCUSDT"], lo * NS_PER_MS, hi * NS_PER_MS
    )
    assert read_funding(tmp_path, "bybit", "BTCUSDT") == (
        [1709884800000 * NS_PER_MS],
        [0.0001],
        [4],
    )
    okx.funding_now["BTC-USDT-SWAP"]["nextFundingTime"] = str(1744590349506 + 4 * H_MS)
    lo, hi = ms("2023-12-31T20:00"), ms("2024-01-02")
    client("okx", okx, tmp_path).download(
        parse_datasets("funding"), ["BTC-USDT-SWAP"], lo * NS_PER_MS, hi * NS_PER_MS
    )
    assert read_funding(tmp_path, "okx", "BTCUSDT") == ([1704067200000 * NS_PER_MS], [0.00015], [4])
    assert [r.query for r in okx.requests_to("/api/v5/public/funding-rate")] == [
        {"instId": "BTC-USDT-SWAP"}
    ]


def test_engine_symbols_and_api_urls() -> None:
    from perpdesk.app.cli_scan import parse_api_urls
    from perpdesk.data.sources.ccxt_download import engine_symbol
    from perpdesk.errors import PerpdeskError

    assert engine_symbol({"id": "BTC-USDT-SWAP", "swap": True}) == "BTCUSDT"
    assert engine_symbol({"id": "BTC-USD-SWAP", "swap": True}) == "BTCUSD"
    assert engine_symbol({"id": "BTCUSDT", "swap": True}) == "BTCUSDT"
    assert engine_symbol({"id": "BTC-USDT", "swap": False, "spot": True}) == "BTC-USDT"
    assert parse_api_urls("http://h:1", ["bybit", "okx"]) == {
        "bybit": "http://h:1",
        "okx": "http://h:1",
    }
    assert parse_api_urls("okx=http://h:2", ["bybit", "okx"]) == {
        "bybit": None,
        "okx": "http://h:2",
    }
    with pytest.raises(PerpdeskError, match="expected id=url"):
        parse_api_urls("kraken=http://h:3,okx=http://h:2", ["bybit", "okx"])


# -- CLI ------------------------------------------------------------------------------------------
def perpdesk(*args: str, tmp_path: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PERPDESK_")}
    env.update(COLUMNS="220", PERPDESK_PATHS__DATA_DIR=str(tmp_path))
    return subprocess.run(
        [sys.executable, "-m", "perpdesk.app.cli", *args],
        cwd=Path(__file__).resolve().parents[1],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_scan_two_venues(bybit: FakeBybit, okx: FakeOKX, tmp_path: Path) -> None:
    urls = f"bybit={bybit.url},okx={okx.url}"
    r = perpdesk("scan", "--exchanges", "bybit,okx", "--api-url", urls, tmp_path=tmp_path)
    assert r.returncode == 0, r.stderr
    lines = [" ".join(x.split()) for x in r.stdout.splitlines()]
    # 4 Bybit + 3 OKX perps; OKX HYPE 43.8 %, Bybit BTC 10.95 % with basis −3.1 bps
    assert any("of 7 perps" in x for x in lines)
    assert any(x.startswith("│ okx │ HYPEUSDT │ 0.0200 │ 4 │ 43.8 │") for x in lines)
    assert any(
        x.startswith("│ bybit │ BTCUSDT │ 0.0100 │ 8 │ 10.9 │ -3.1 │ 1,142.1 │") for x in lines
    )


def test_live_symbol_map_names_okx_markets_like_the_scanner() -> None:
    """The live venue's symbol map and the scanner use one name per market (the runner keys
    scanner signals by it): OKX BTC-USDT-SWAP ↔ BTCUSDT, BTC-USDT spot ↔ BTCUSDT.SPOT."""
    from perpdesk.execution.ccxt_live import SymbolMap

    markets = {
        "BTC/USDT:USDT": {"id": "BTC-USDT-SWAP", "swap": True, "linear": True},
        "BTC/USD:BTC": {"id": "BTC-USD-SWAP", "swap": True, "linear": False},
        "BTC/USDT": {"id": "BTC-USDT", "spot": True},
    }
    perp, spot = SymbolMap(markets), SymbolMap(markets, spot=True)
    assert perp.to_unified == {"BTCUSDT": "BTC/USDT:USDT"}
    assert perp.engine("BTC/USDT:USDT") == "BTCUSDT"
    assert spot.to_unified == {"BTCUSDT.SPOT": "BTC/USDT"}
    binance = SymbolMap({"BTC/USDT:USDT": {"id": "BTCUSDT", "swap": True, "linear": True}})
    assert binance.unified("BTCUSDT") == "BTC/USDT:USDT"
