"""Domain value types and the annualisation rule."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from perpdesk.domain import Bar, FundingSettlement, Instrument, InstrumentKind, annualise_rate


def test_annualise_rate_by_interval() -> None:
    # 0.01 % per settlement: 3×365 = 1095, 6×365 = 2190, 24×365 = 8760 settlements a year
    assert annualise_rate(0.0001, 8) == pytest.approx(10.95)
    assert annualise_rate(0.0001, 4) == pytest.approx(21.9)
    assert annualise_rate(0.0001, 1) == pytest.approx(87.6)
    np.testing.assert_allclose(
        annualise_rate(np.array([0.0002, -0.0001]), np.array([8, 1])), [21.9, -87.6]
    )


def test_instrument_rules() -> None:
    perp = Instrument(
        "binance", "BTCUSDT", InstrumentKind.PERP, "BTC", "USDT", 0.1, 0.001, 8, 0.003, -0.003
    )
    assert perp.settlements_per_year == 1095
    with pytest.raises(dataclasses.FrozenInstanceError):
        perp.symbol = "ETHUSDT"  # type: ignore[misc]
    with pytest.raises(ValueError, match="funding_interval_h=3"):
        Instrument("binance", "X", InstrumentKind.PERP, "X", "USDT", 0.1, 1, 3)
    with pytest.raises(ValueError, match="tick_size and lot_size"):
        Instrument("binance", "X", InstrumentKind.SPOT, "X", "USDT", 0, 1)
    with pytest.raises(ValueError, match="floor above"):
        Instrument("binance", "X", InstrumentKind.PERP, "X", "USDT", 0.1, 1, 8, 0.001, 0.002)
    spot = Instrument("binance", "BTCUSDT", InstrumentKind.SPOT, "BTC", "USDT", 0.01, 1e-5)
    with pytest.raises(ValueError, match="pays no funding"):
        _ = spot.settlements_per_year


def test_events_are_slotted_and_know_when_final() -> None:
    bar = Bar("binance", "BTCUSDT", 1_700_000_000_000_000_000, 300, 1, 2, 0.5, 1.5, 10, 15, 7)
    assert bar.close_ts_ns == 1_700_000_000_000_000_000 + 300 * 10**9
    assert not hasattr(bar, "__dict__")
    f = FundingSettlement("binance", "BTCUSDT", 0, 0.0001, 8, 42_000.0)
    assert not hasattr(f, "__dict__") and f.funding_interval_h == 8
