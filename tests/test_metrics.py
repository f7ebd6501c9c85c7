"""Metrics against hand-computed values (arithmetic in the comments)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from perpdesk.research import metrics as m

DAY = 86_400 * 1_000_000_000


def test_cagr_two_years_doubling() -> None:
    # 100 → 121 over 730 days = 2 years: (1.21)^(1/2) − 1 = 0.1 → 10 %
    ts = np.array([0, 730 * DAY])
    assert m.cagr_pct(np.array([100.0, 121.0]), ts) == pytest.approx(10.0, rel=1e-12)


def test_cagr_wiped_out() -> None:
    assert m.cagr_pct(np.array([100.0, 0.0]), np.array([0, DAY])) == -100.0


def test_sortino_by_hand() -> None:
    # equity 100, 110, 99, 108.9 → r = 0.1, −0.1, 0.1
    # mean r = 0.1/3; downside dev = sqrt((0 + 0.01 + 0)/3) = 0.057735…
    # ratio per period = 0.033333/0.057735 = 0.57735; × sqrt(365) = 11.0303…
    e = np.array([100.0, 110.0, 99.0, 108.9])
    expect = (0.1 / 3) / math.sqrt(0.01 / 3) * math.sqrt(365)
    assert m.sortino(e, 365.0) == pytest.approx(expect, rel=1e-9)
    assert expect == pytest.approx(11.0303, rel=1e-4)


def test_sortino_without_downside_is_nan() -> None:
    assert math.isnan(m.sortino(np.array([1.0, 2.0, 3.0]), 365.0))


def test_drawdown_duration_and_calmar() -> None:
    # daily samples: 100, 90, 95, 100, 80, 120
    # spell 1: peak at day 0, back at 100 on day 3 → 3 days
    # spell 2: peak at day 3, 80 on day 4, new high day 5 → 2 days. Longest 3 days.
    e = np.array([100.0, 90.0, 95.0, 100.0, 80.0, 120.0])
    ts = np.arange(6) * DAY
    assert m.max_drawdown_duration_ns(e, ts) == 3 * DAY
    # max DD = 1 − 80/100 = 20 %; CAGR over 5 days: 1.2^(365/5) − 1
    cagr = (1.2 ** (365 / 5) - 1) * 100
    assert m.calmar(e, ts) == pytest.approx(cagr / 20.0, rel=1e-9)


def test_drawdown_duration_open_at_end() -> None:
    # peak day 1 (110), never recovered by day 4 → 3 days
    e = np.array([100.0, 110.0, 105.0, 100.0, 109.0])
    assert m.max_drawdown_duration_ns(e, np.arange(5) * DAY) == 3 * DAY
    assert m.max_drawdown_duration_ns(np.array([1.0, 2.0, 3.0]), np.arange(3) * DAY) == 0


def test_trade_stats() -> None:
    pnl = np.array([10.0, -5.0, 20.0, -15.0, 0.0])
    # wins: 10 and 20 → 2 of 5 = 40 %; gross profit 30, gross loss 20 → 1.5
    assert m.win_rate_pct(pnl) == pytest.approx(40.0)
    assert m.profit_factor(pnl) == pytest.approx(1.5)
    assert m.profit_factor(np.array([1.0])) == math.inf
    assert math.isnan(m.profit_factor(np.array([])))


def test_exposure_and_turnover() -> None:
    assert m.exposure_pct(np.array([0.0, 5.0, 5.0, 0.0])) == pytest.approx(50.0)
    # traded 2,000 over half a year on mean equity 1,000 → 2 / 0.5 = 4 per year
    ts = np.array([0, 365 * DAY // 2])
    assert m.turnover_per_year(2000.0, np.array([900.0, 1100.0]), ts) == pytest.approx(4.0)


def test_summarize_keys_and_frequency() -> None:
    ts = np.arange(4) * 8 * 3600 * 1_000_000_000  # 8h grid → 1095 periods a year
    e = np.array([100.0, 110.0, 99.0, 108.9])
    s = m.summarize(ts, e, trade_pnl_usd=np.array([1.0, -1.0]))
    assert s["sharpe"] == pytest.approx(m.sharpe(e, 1095.0))
    assert s["sortino"] == pytest.approx((0.1 / 3) / math.sqrt(0.01 / 3) * math.sqrt(1095))
    assert s["win_rate_pct"] == 50.0 and s["trades"] == 2.0
    assert math.isnan(s["exposure_pct"])


def test_run_report_html(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from perpdesk.research.report import write_run_report

    ts = np.arange(3) * DAY
    e = np.array([100.0, 90.0, 120.0])
    mets = m.summarize(ts, e)
    rows = [
        {
            "strategy_id": "grid",
            "symbol": "BTCUSDT",
            "price_pnl_usd": 25.0,
            "funding_usd": -1.5,
            "fees_usd": 3.25,
            "slippage_usd": 0.0,
        }
    ]
    p = write_run_report(
        tmp_path / "r.html",
        "Grid <test>",
        "intro & more",
        ts,
        e,
        mets,
        rows,
        counts={"circuit breaker triggers": 2},
    )
    page = p.read_text()
    assert "Grid &lt;test&gt;" in page and "intro &amp; more" in page
    assert "<td>20.00</td>" in page  # total return (120/100 − 1) = 20 %
    assert "<td>10.00</td>" in page  # max drawdown 1 − 90/100 = 10 %
    assert "<td>3.25</td>" in page and "circuit breaker triggers" in page
