"""Fee schedules per venue (perpdesk.sim.costs.FeeModel.for_venue), against the published
regular-user rates written out by hand."""

from __future__ import annotations

from decimal import Decimal

import pytest

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
    with pytest.raises(ValueError, match="kraken"):
        FeeModel.for_venue("kraken")
