"""Fee schedules per venue (perpdesk.sim.costs.FeeModel.for_venue), against the published
regular-user rates written out by hand."""

from __future__ import annotations

from decimal import Decimal

import pytest

from perpdesk.domain import InstrumentKind, Liquidity, Side
from perpdesk.errors import ConfigError
from perpdesk.sim.costs import FeeModel


def test_fee_model_for_venue_regular_user_schedules() -> None:
    """Rates as fractions: Binance VIP0 2 / 5 bp perp, 10 / 10 bp spot; Bybit non-VIP 2 / 5.5 bp
    perp, 10 / 10 bp spot; OKX Lv1 2 / 5 bp perp, 8 / 10 bp spot (maker / taker)."""
    want = {
        "binanceusdm": ("0.0002", "0.0005", "0.001", "0.001"),
        "bybit": ("0.0002", "0.00055", "0.001", "0.001"),
        "okx": ("0.0002", "0.0005", "0.0008", "0.001"),
    }
    for venue, (pm, pt, sm, st) in want.items():
        m = FeeModel.for_venue(venue)
        assert (m.perp.maker_rate, m.perp.taker_rate) == (Decimal(pm), Decimal(pt)), venue
        assert (m.spot.maker_rate, m.spot.taker_rate) == (Decimal(sm), Decimal(st)), venue
        assert m.spot_buy_fee_in_base is True, venue  # a spot buy pays in the coin bought
    assert FeeModel.for_venue("binance").spot_buy_fee_in_base is True
    with pytest.raises(ValueError, match="kraken"):
        FeeModel.for_venue("kraken")


def test_a_spot_buy_commission_in_the_base_asset() -> None:
    """``qty × rate`` in base units for a spot BUY only, exact: OKX spot maker 0.08 %,
    taker 0.10 %."""
    okx = FeeModel.for_venue("okx")
    spot, perp = InstrumentKind.SPOT, InstrumentKind.PERP
    q = Decimal("0.075")
    # 0.075 × 0.001 = 0.000075; 0.075 × 0.0008 = 0.00006
    assert okx.base_fee_qty("BTCUSDT.SPOT", spot, Side.BUY, q, Liquidity.TAKER) == Decimal(
        "0.000075"
    )
    assert okx.base_fee_qty("BTCUSDT.SPOT", spot, Side.BUY, q, Liquidity.MAKER) == Decimal(
        "0.00006"
    )
    # a sale's commission stays in USDT, a perp's too; the default model (backtests) and
    # FeeModel.binance() keep every fee in USD
    assert okx.base_fee_qty("BTCUSDT.SPOT", spot, Side.SELL, q, Liquidity.TAKER) == 0
    assert okx.base_fee_qty("BTCUSDT", perp, Side.BUY, q, Liquidity.TAKER) == 0
    for m in (FeeModel(), FeeModel.binance(), FeeModel.zero()):
        assert m.spot_buy_fee_in_base is False
        assert m.base_fee_qty("BTCUSDT.SPOT", spot, Side.BUY, q, Liquidity.TAKER) == 0
    # from config
    assert FeeModel.from_dict({"spot_buy_fee_in_base": True}).spot_buy_fee_in_base is True
    assert FeeModel.from_dict({}).spot_buy_fee_in_base is False
    with pytest.raises(ConfigError, match="spot_buy_fee_in_base"):
        FeeModel.from_dict({"spot_buy_fee_in_base": "yes"})
