"""Account booking throughput and the 1-million-event conservation check.

Runs the random simulation of ``tests/test_account.py`` (fills, funding settlements and
marks on two perps and a spot leg, with liquidations) for 1,000,000 events in each margin
setup and checks final equity against the test's independent ledger (exact ``Decimal``
equality). Prints two rates: the whole simulation (event generation, margin checks, the
ledger) and the account alone (the recorded account calls replayed on a fresh account).

    .venv/bin/python bench/bench_account.py [N_EVENTS]
"""

from __future__ import annotations

import sys
import time
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from perpdesk.sim.account import Account
from tests.test_account import BTC, ETH, INSTRUMENTS, run_random_simulation


def main(n_events: int = 1_000_000) -> None:
    for hedge_mode, margin_mode in ((False, "cross"), (True, "isolated")):
        mode = f"{'hedge' if hedge_mode else 'one-way'}/{margin_mode}"
        calls: list = []
        t0 = time.perf_counter()
        acc, led, n_liq = run_random_simulation(
            n_events, seed=11, hedge_mode=hedge_mode, margin_mode=margin_mode, record=calls
        )
        dt = time.perf_counter() - t0
        ok = acc.equity_usd == led.equity() and acc.fees_usd == led.fees
        ok = ok and acc.funding_usd == led.funding
        print(
            f"simulation {mode:16s} {n_events:>9,} events in {dt:6.2f} s = "
            f"{n_events / dt:>9,.0f} events/s; liquidation fills {n_liq}; "
            f"equity {acc.equity_usd:.2f} == independent ledger: {ok}"
        )
        if not ok:
            raise SystemExit(f"conservation broken: {acc.equity_usd} != {led.equity()}")
        fresh = Account(
            INSTRUMENTS,
            Decimal(1_000_000),
            hedge_mode=hedge_mode,
            margin_mode=margin_mode,
            leverage={BTC: 20, ETH: 10},
        )
        bound = [(getattr(fresh, name), args) for name, args in calls]
        t0 = time.perf_counter()
        for fn, args in bound:
            fn(*args)
        dt = time.perf_counter() - t0
        assert fresh.equity_usd == acc.equity_usd
        print(
            f"account    {mode:16s} {len(calls):>9,} calls  in {dt:6.2f} s = "
            f"{len(calls) / dt:>9,.0f} calls/s (apply_fill / settle_funding / update_mark)"
        )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000)
