"""The carry scanner against the loopback fake Binance USD-M server, fed with the recorded
premiumIndex / ticker / openInterest responses (relabelled per symbol)."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import pytest

from perpdesk.data.catalog import Catalog
from perpdesk.data.sources.ccxt_download import CcxtDownloader
from perpdesk.live.scanner import scan
from perpdesk.strategies.carry import CarryRules
from tests.fake_exchange import FakeBinanceUSDM, recorded

NOW_MS = 1_597_370_495_002  # the recorded premiumIndex's own time


@pytest.fixture()
def fake():  # type: ignore[no-untyped-def]
    prem = recorded("premium_index")  # BTCUSDT: lastFundingRate 0.00038246, mark 11793.63…
    tick = recorded("ticker_24hr")
    with FakeBinanceUSDM(now_ms=NOW_MS) as f:
        f.set_json(
            "/fapi/v1/premiumIndex",
            [
                prem,
                {
                    **prem,
                    "symbol": "ETHUSDT",
                    "lastFundingRate": "0.00010000",
                    "markPrice": "400.50",
                    "indexPrice": "400.00",
                },
            ],
        )
        f.set_json(
            "/fapi/v1/ticker/24hr",
            [
                {**tick, "symbol": "BTCUSDT", "quoteVolume": "5000000000"},
                {**tick, "symbol": "ETHUSDT", "quoteVolume": "2000000000"},
            ],
        )
        # ETHUSDT settles every 4 h; BTCUSDT is not listed → Binance default 8 h
        f.set_json(
            "/fapi/v1/fundingInfo",
            [
                {
                    "symbol": "ETHUSDT",
                    "adjustedFundingRateCap": "0.02",
                    "adjustedFundingRateFloor": "-0.02",
                    "fundingIntervalHours": 4,
                    "disclaimer": False,
                }
            ],
        )
        yield f


def _client(f: FakeBinanceUSDM, tmp_path) -> CcxtDownloader:  # type: ignore[no-untyped-def]
    return CcxtDownloader(
        "binanceusdm",
        Catalog(tmp_path),
        api_url=f.url,
        exchange_config={"rateLimit": 1},
        clock_ms=lambda: NOW_MS,
    )


def test_scan_ranks_and_annualises_by_each_interval(fake, tmp_path) -> None:  # type: ignore[no-untyped-def]
    rules = CarryRules(
        entry_ann_pct=20.0, exit_ann_pct=3.0, min_quote_volume_24h_usd=10e6, max_positions=1
    )
    _, rows = scan([_client(fake, tmp_path)], rules)
    assert [r.symbol for r in rows] == ["BTCUSDT", "ETHUSDT"]
    btc, eth = rows
    # BTC: 0.00038246 × 3 × 365 × 100 = 41.879 % (8 h); ETH: 0.0001 × 6 × 365 × 100 = 21.9 % (4 h)
    assert btc.funding_interval_h == 8 and eth.funding_interval_h == 4
    assert btc.ann_pct == pytest.approx(41.87937, rel=1e-6)
    assert eth.ann_pct == pytest.approx(21.9, rel=1e-9)
    # basis: 11793.63104562 / 11781.80495970 − 1 = 10.0376 bps; ETH 400.5/400 − 1 = 12.5 bps
    assert btc.basis_bps == pytest.approx((11793.63104562 / 11781.80495970 - 1) * 1e4)
    assert eth.basis_bps == pytest.approx(12.5)
    # one slot: only the best enters
    assert btc.candidate and not eth.candidate and eth.note == "beyond the 1 best"
    # OI: recorded 10659.509 contracts × mark
    assert btc.open_interest_usd == pytest.approx(10659.509 * 11793.63104562)
    assert eth.open_interest_usd == pytest.approx(10659.509 * 400.50)


def test_scan_volume_and_threshold_notes(fake, tmp_path) -> None:  # type: ignore[no-untyped-def]
    rules = CarryRules(
        entry_ann_pct=30.0, exit_ann_pct=3.0, min_quote_volume_24h_usd=6e9, max_positions=5
    )
    _, rows = scan([_client(fake, tmp_path)], rules, oi_top=0)
    by = {r.symbol: r for r in rows}
    assert by["BTCUSDT"].note == "24h volume too low" and not by["BTCUSDT"].candidate
    assert by["ETHUSDT"].note == "funding ≤ 30%"
    assert all(math.isnan(r.open_interest_usd) for r in rows)


def test_scan_cli_once(fake, tmp_path) -> None:  # type: ignore[no-untyped-def]
    env = {
        **os.environ,
        "PERPDESK_PATHS__DATA_DIR": str(tmp_path),
        "PERPDESK_CARRY__MAX_POSITIONS": "1",
        "COLUMNS": "200",
    }
    out = subprocess.run(
        [sys.executable, "-m", "perpdesk.app.cli", "scan", "--api-url", fake.url],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    assert "1 candidates of 2 perps" in out.stdout
    assert "41.9" in out.stdout and "21.9" in out.stdout and "enter" in out.stdout
