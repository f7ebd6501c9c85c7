"""The runner's fault behaviour on the paper venue (no live venue needed): cycle timeouts,
a failing second leg, safeguard rejects, the VPIN gate, funding per settlement, restart
reconciliation with deterministic ids; the watchdog; the run/audit commands.

Market: a hand-made flat book — perp bid 24,999.9 / ask 25,000.0, spot bid 25,000.00 /
ask 25,000.01, 10 BTC at each top — and trades at 25,000 of 0.1 BTC (2,500 USD) on the perp.
With the default config (bankroll 100,000 USD, carry allocation 50 %, 10 slots, perp
leverage 3) a slot is C = 5,000 USD and each leg X = C·3/4 = 3,750 USD, i.e.
3,750 / 25,000 = 0.15 BTC. Fees: Binance VIP0, perp taker 0.05 %, spot taker 0.10 %.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import json
import sqlite3
import sys
import time
from collections.abc import Iterable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from perpdesk.app.cli_run import live_allowed, run_app
from perpdesk.config import load_settings
from perpdesk.domain import BookTop, FundingSettlement, Order, Trade
from perpdesk.errors import PerpdeskError
from perpdesk.execution.protocol import OrderState
from perpdesk.live.runner import (
    CarrySignal,
    DurablePaperVenue,
    PairSpec,
    Runner,
    RunnerConfig,
    client_order_id,
    paper_instruments,
)
from perpdesk.live.watchdog import Watchdog
from perpdesk.risk.safeguards import Limits
from perpdesk.store import Ledger, init_db
from perpdesk.strategies.carry import CarryRules

D = Decimal
PAIRS = (PairSpec("BTCUSDT", "BTCUSDT.SPOT"),)
T0 = 1_700_000_000_000_000_000
MS = 1_000_000


class Signals:
    """A fixed annualised funding per cycle (list index = cycle; last value repeats)."""

    def __init__(self, ann_pct: list[float]) -> None:
        self.ann_pct = ann_pct

    async def signals(self, cycle: int) -> dict[str, CarrySignal]:
        return {"BTCUSDT": CarrySignal(self.ann_pct[min(cycle, len(self.ann_pct) - 1)], 1e9)}


def market(n_trades: int, t0: int = T0, toxic: bool = False) -> list[Any]:
    """Book tops, then ``n_trades`` perp trades of 0.1 at 25,000 (aggressor alternating, or
    always the buyer when ``toxic``) and a spot trade at 25,000."""
    ev: list[Any] = [
        BookTop("paper", "BTCUSDT", t0, 24999.9, 10.0, 25000.0, 10.0),
        BookTop("paper", "BTCUSDT.SPOT", t0, 25000.0, 10.0, 25000.01, 10.0),
        Trade("paper", "BTCUSDT.SPOT", t0, 25000.0, 0.01, False),
    ]
    for i in range(n_trades):
        maker = False if toxic else bool(i % 2)
        ev.append(Trade("paper", "BTCUSDT", t0 + (i + 1) * MS, 25000.0, 0.1, maker))
    return ev


def cfg(d: Path, **kw: Any) -> RunnerConfig:
    base: dict[str, Any] = dict(
        mode="paper",
        run_id="t",
        pairs=PAIRS,
        cycle_s=0.01,
        cycle_timeout_s=5.0,
        leg_fill_timeout_s=1.0,
        unwind_timeout_s=2.0,
        poll_s=0.005,
        vpin_bucket_usd=10_000.0,
        vpin_n_buckets=5,
        snapshot_path=d / "state.json",
    )
    base.update(kw)
    return RunnerConfig(**base)


class Setup:
    def __init__(
        self,
        d: Path,
        cash: str = "100000",
        leverage: dict[str, int] | None = None,
        pairs: tuple[PairSpec, ...] = PAIRS,
    ):
        self.d = d
        self.pairs = pairs
        self.url = f"sqlite:///{d / 'ledger.sqlite'}"
        if not (d / "ledger.sqlite").exists():
            init_db(self.url)
        self.cash = cash
        self.leverage = leverage

    async def venue(self, events: Iterable[Any] = ()) -> DurablePaperVenue:
        v = DurablePaperVenue(
            self.d / "paper.sqlite",
            paper_instruments("paper", self.pairs),
            self.cash,
            leverage=self.leverage,
        )
        await v.open()
        for ev in events:
            v.on_market(ev)
        v.flush()
        return v

    def events(self, kind: str | None = None) -> list[tuple[str, str, dict]]:
        con = sqlite3.connect(self.d / "ledger.sqlite")
        q = "SELECT kind, message, data FROM events"
        rows = con.execute(
            q + (" WHERE kind = ?" if kind else "") + " ORDER BY id", (kind,) if kind else ()
        ).fetchall()
        con.close()
        return [(k, m, json.loads(x)) for k, m, x in rows]

    def orders(self) -> dict[str, tuple[str, str, D, str]]:
        con = sqlite3.connect(self.d / "ledger.sqlite")
        rows = con.execute("SELECT client_order_id, symbol, side, qty_base, status FROM orders")
        out = {c: (s, side, D(q), st) for c, s, side, q, st in rows}
        con.close()
        return out

    def fills(self) -> list[tuple[str, str, D, D, D]]:
        con = sqlite3.connect(self.d / "ledger.sqlite")
        rows = con.execute(
            "SELECT client_order_id, side, qty_base, price, fee_usd FROM fills ORDER BY id"
        ).fetchall()
        con.close()
        return [(c, s, D(q), D(p), D(f)) for c, s, q, p, f in rows]

    def placed(self) -> list[str]:
        con = sqlite3.connect(self.d / "paper.sqlite")
        rows = con.execute("SELECT payload FROM journal WHERE kind = 'place' ORDER BY seq")
        out = [json.loads(p)["client_order_id"] for (p,) in rows]
        con.close()
        return out


def qty_by_symbol(ledger: Ledger) -> dict[str, D]:
    return {p.symbol: p.qty_base for p in ledger.status().positions if p.qty_base != 0}


# --------------------------------------------------------------------------- ids


def test_client_order_ids_are_deterministic_and_fit_binance() -> None:
    assert client_order_id("pd", 17, "BTCUSDT", "P") == "pd-17-P-BTCUSDT"
    assert client_order_id("pd", 17, "BTCUSDT", "P") == client_order_id("pd", 17, "BTCUSDT", "P")
    long = "1000SHIBUSDT.SPOT"
    h = hashlib.blake2b(long.encode(), digest_size=5).hexdigest()
    assert client_order_id("runner01", 123456, long, "UP0") == f"runner01-123456-UP0-{h}"
    with pytest.raises(PerpdeskError):
        RunnerConfig(run_id="x" * 30)


# --------------------------------------------------------------------------- trading


def test_enter_hold_exit_books_fills_funding_and_equity(tmp_path: Path) -> None:
    s = Setup(tmp_path)

    async def main() -> None:
        v = await s.venue(market(40))
        with Ledger(s.url) as led:
            r = Runner(cfg(tmp_path), v, led, Limits(), CarryRules(), Signals([30, 30, 30, 0]))
            await r.start()
            assert await r.run_cycle(1) == "ok"  # enter
            # settlement: rate 0.0001 at mark 25,000 on a -0.15 perp position
            v.on_market(FundingSettlement("paper", "BTCUSDT", T0 + 3_600 * 10**9, 1e-4, 8, 25000.0))
            assert await r.run_cycle(2) == "ok"  # hold, book the funding
            assert await r.run_cycle(3) == "ok"  # signal 0 % < 3 % exit
            await r.stop()
            assert qty_by_symbol(led) == {}
            fills = s.fills()
            assert fills == [
                (
                    "t-1-P-BTCUSDT",
                    "sell",
                    D("0.15"),
                    D("24999.9"),
                    D("1.8749925"),
                ),  # 3749.985 × 0.0005
                (
                    "t-1-S-BTCUSDT",
                    "buy",
                    D("0.15"),
                    D("25000.01"),
                    D("3.7500015"),
                ),  # 3750.0015 × 0.001
                ("t-3-P-BTCUSDT", "buy", D("0.15"), D("25000"), D("1.875")),  # 3750 × 0.0005
                ("t-3-S-BTCUSDT", "sell", D("0.15"), D("25000"), D("3.75")),  # 3750 × 0.001
            ]
            con = sqlite3.connect(tmp_path / "ledger.sqlite")
            fund = con.execute("SELECT symbol, layer, amount_usd FROM funding_payments").fetchall()
            con.close()
            assert fund == [("BTCUSDT", "carry", "0.375")]  # -(-0.15) × 25000 × 0.0001
            perp = D("0.15") * D("24999.9") - D("1.8749925") - D("0.15") * D("25000") - D("1.875")
            spot = -D("0.15") * D("25000.01") - D("3.7500015") + D("0.15") * D("25000") - D("3.75")
            expect = D(100_000) + perp + D("0.375") + spot
            assert led.status().equity_usd == expect == D("99989.108506")
            assert led.audit().ok
            snap = json.loads((tmp_path / "state.json").read_text())
            assert snap["cycle"] == 3 and D(snap["status"]["equity_usd"]) == D("99989.108506")
        await v.close()

    asyncio.run(main())


class Stalling:
    """A real paper venue whose ``place`` of ``symbol`` never returns the first ``n`` times
    (a stuck exchange call); everything else passes through."""

    def __init__(self, venue: DurablePaperVenue, symbol: str, n: int = 1) -> None:
        self._v, self.symbol, self.n = venue, symbol, n

    def __getattr__(self, name: str) -> Any:
        return getattr(self._v, name)

    @property
    def venue_id(self) -> str:
        return self._v.venue_id

    async def place(self, order: Order) -> OrderState:
        if order.symbol == self.symbol and self.n > 0:
            self.n -= 1
            await asyncio.sleep(3600)
        return await self._v.place(order)


def test_cycle_timeout_keeps_the_runner_up_and_the_next_cycle_repairs(tmp_path: Path) -> None:
    s = Setup(tmp_path)

    async def main() -> None:
        v = await s.venue(market(40))
        with Ledger(s.url) as led:
            c = cfg(tmp_path, cycle_timeout_s=0.3, leg_fill_timeout_s=30.0)
            r = Runner(c, Stalling(v, "BTCUSDT.SPOT"), led, Limits(), CarryRules(), Signals([30]))
            await r.run(max_cycles=3)
            assert r.cycles_run == 3 and r.timeouts == 1
            assert [e[2]["cycle"] for e in s.events("cycle_timeout")] == [1]
            assert [(e[2]["cycle"], e[2]["status"]) for e in s.events("cycle_end")] == [
                (1, "timeout"),
                (2, "ok"),
                (3, "ok"),
            ]
            o = s.orders()
            # cycle 1: the perp leg filled; the spot send hung and never reached the venue
            assert o["t-1-P-BTCUSDT"] == ("BTCUSDT", "sell", D("0.15"), "filled")
            assert o["t-1-S-BTCUSDT"][3] == "rejected"
            assert [e[2]["client_order_id"] for e in s.events("order_lost")] == ["t-1-S-BTCUSDT"]
            # cycle 2: the unhedged short perp is closed (reduce-only buy of 0.15)
            assert o["t-2-RP-BTCUSDT"] == ("BTCUSDT", "buy", D("0.15"), "filled")
            # cycle 3: a normal entry, both legs
            assert o["t-3-P-BTCUSDT"][3] == o["t-3-S-BTCUSDT"][3] == "filled"
            assert qty_by_symbol(led) == {"BTCUSDT": D("-0.15"), "BTCUSDT.SPOT": D("0.15")}
            assert "t-1-S-BTCUSDT" not in s.placed()
            assert led.audit().ok
        await v.close()

    asyncio.run(main())


def test_second_leg_failure_is_unwound_within_the_bound_and_alerted(tmp_path: Path) -> None:
    # 2,000 USD of paper cash at perp leverage 5: the short perp needs 3,750 / 5 = 750 USD of
    # margin and fills; the spot buy needs 3,750 USD of cash and is rejected by the venue.
    s = Setup(tmp_path, cash="2000", leverage={"BTCUSDT": 5})

    async def main() -> None:
        v = await s.venue(market(40))
        with Ledger(s.url) as led:
            r = Runner(cfg(tmp_path), v, led, Limits(), CarryRules(), Signals([30]))
            await r.start()
            assert await r.run_cycle(1) == "ok"
            await r.stop()
            o = s.orders()
            assert o["t-1-P-BTCUSDT"] == ("BTCUSDT", "sell", D("0.15"), "filled")
            assert o["t-1-S-BTCUSDT"][3] == "rejected"
            assert o["t-1-UP0-BTCUSDT"] == ("BTCUSDT", "buy", D("0.15"), "filled")
            assert [(f[0], f[1], f[2], f[3]) for f in s.fills()] == [
                ("t-1-P-BTCUSDT", "sell", D("0.15"), D("24999.9")),
                ("t-1-UP0-BTCUSDT", "buy", D("0.15"), D("25000")),
            ]
            alerts = s.events("pair_unwound")
            assert len(alerts) == 1
            a = alerts[0][2]
            assert a["cycle"] == 1 and a["attempts"] == 1
            assert {k: D(x) for k, x in a["first_fills"].items()} == {"P": D("0.15"), "S": 0}
            assert {k: D(x) for k, x in a["after"].items()} == {"P": 0, "S": 0}
            assert s.events("venue_reject")[0][2]["client_order_id"] == "t-1-S-BTCUSDT"
            assert qty_by_symbol(led) == {}
            assert led.audit().ok
        await v.close()

    asyncio.run(main())


def test_an_entry_over_the_position_cap_is_cut_to_it(tmp_path: Path) -> None:
    s = Setup(tmp_path)

    async def main() -> None:
        v = await s.venue(market(40))
        with Ledger(s.url) as led:
            # single position cap 2 % of 100,000 = 2,000 USD < the slot's 3,750 USD per leg:
            # qty = 2,000 / (25,000 × 1.002) = 0.07984… → 0.079 on the 0.001 lot (1,975 USD
            # per leg at 25,000, above the 1,000 USD minimum); nothing is refused
            lim = Limits(max_position_pct=D(2), min_position_pct=D(1))
            r = Runner(cfg(tmp_path), v, led, lim, CarryRules(), Signals([30]))
            await r.start()
            await r.run_cycle(1)
            await r.stop()
            assert s.events("safeguard_reject") == [] and s.events("entry_skipped") == []
            o = s.orders()
            assert o["t-1-P-BTCUSDT"] == ("BTCUSDT", "sell", D("0.079"), "filled")
            assert o["t-1-S-BTCUSDT"] == ("BTCUSDT.SPOT", "buy", D("0.079"), "filled")
            assert qty_by_symbol(led) == {"BTCUSDT": D("-0.079"), "BTCUSDT.SPOT": D("0.079")}
        await v.close()

    asyncio.run(main())


# four pairs on the same flat market; funding ranks ETH 40 % > SOL 35 % > XRP 30 % > BTC 25 %
SIZING_PAIRS = tuple(PairSpec(x, x + ".SPOT") for x in ("BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT"))
SIZING_ANN = {"BTCUSDT": 25.0, "ETHUSDT": 40.0, "SOLUSDT": 35.0, "XRPUSDT": 30.0}


class RankedSignals:
    async def signals(self, cycle: int) -> dict[str, CarrySignal]:
        return {k: CarrySignal(v, 1e9) for k, v in SIZING_ANN.items()}


def sizing_market() -> list[Any]:
    ev: list[Any] = []
    for p in SIZING_PAIRS:
        for e in market(40):
            ev.append(dataclasses.replace(e, symbol=e.symbol.replace("BTCUSDT", p.perp)))
    return sorted(ev, key=lambda e: e.ts_ns)


@pytest.mark.parametrize(
    ("max_deployed_pct", "expected_qty", "skipped"),
    [
        # bankroll 100,000, carry 50 %, 4 slots, leverage 3: C = 12,500 USD, each leg
        # X = 12,500 × 3/4 = 9,375 USD = 0.375 at 25,000 (a pair is 18,750 USD gross).
        # Caps 25 % / 50 % (= the carry allocation) / min 1 % = 25,000 / 50,000 / 1,000 USD;
        # a capped size uses prices raised by 20 bps: 25,000 × 1.002 = 25,050 per leg.
        # ETH: 0.375 (18,750 deployed); SOL: 0.375 (37,500); XRP: the 12,500 USD left buys
        # 12,500 / 50,100 = 0.2495… → 0.249 (6,225 USD per leg, 49,950 deployed); BTC: 50 USD
        # left → 0.000998… → 0: skipped.
        (50, {"ETHUSDT": "0.375", "SOLUSDT": "0.375", "XRPUSDT": "0.249"}, ["BTCUSDT"]),
        # deployed cap 39 % = 39,000 USD: ETH and SOL as above (37,500), then 1,500 USD left:
        # 1,500 / 50,100 = 0.0299… → 0.029, i.e. 725 USD per leg < the 1,000 USD minimum:
        # XRP and BTC are skipped
        (39, {"ETHUSDT": "0.375", "SOLUSDT": "0.375"}, ["XRPUSDT", "BTCUSDT"]),
    ],
)
def test_entries_are_sized_under_the_caps_best_funding_first(
    tmp_path: Path, max_deployed_pct: int, expected_qty: dict[str, str], skipped: list[str]
) -> None:
    s = Setup(tmp_path, pairs=SIZING_PAIRS)

    async def main() -> None:
        v = await s.venue(sizing_market())
        with Ledger(s.url) as led:
            c = cfg(tmp_path, pairs=SIZING_PAIRS)
            lim = Limits(max_deployed_pct=D(max_deployed_pct))
            r = Runner(c, v, led, lim, CarryRules(max_positions=4), RankedSignals())
            await r.start()
            assert await r.run_cycle(1) == "ok"
            await r.stop()
            plan = s.events("plan")[-1][2]["actions"]
            # best funding first
            assert [a["perp"] for a in plan] == list(expected_qty)
            assert {a["perp"]: a["qty_perp"] for a in plan} == expected_qty
            want: dict[str, D] = {}
            for perp, q in expected_qty.items():
                want[perp], want[perp + ".SPOT"] = -D(q), D(q)
            assert qty_by_symbol(led) == want
            assert s.events("safeguard_reject") == []  # nothing sent that the caps refuse
            skips = s.events("entry_skipped")
            assert [e[2]["perp"] for e in skips] == skipped
            assert all(e[2]["min_position_usd"] == "1000" for e in skips)
            assert "below the minimum position 1000 USD" in skips[0][1]
        await v.close()

    asyncio.run(main())


def test_one_slot_of_75_pct_gross_is_cut_to_the_50_pct_cap(tmp_path: Path) -> None:
    # one slot (max_positions 1): C = 50,000 USD, legs 37,500 USD each = 75 % of bankroll
    # gross; the caps allow 25,000 per symbol and 50,000 in all:
    # 25,000 / 25,050 = 0.99800… → 0.998 per leg (24,950 USD; 49,900 USD deployed)
    s = Setup(tmp_path)

    async def main() -> None:
        v = await s.venue(market(40))
        with Ledger(s.url) as led:
            r = Runner(cfg(tmp_path), v, led, Limits(), CarryRules(max_positions=1), Signals([30]))
            await r.start()
            await r.run_cycle(1)
            await r.stop()
            assert qty_by_symbol(led) == {"BTCUSDT": D("-0.998"), "BTCUSDT.SPOT": D("0.998")}
            assert s.events("safeguard_reject") == [] and s.events("entry_skipped") == []
        await v.close()

    asyncio.run(main())


def test_live_mode_without_enable_live_orders_sends_nothing(tmp_path: Path) -> None:
    s = Setup(tmp_path)

    async def main() -> None:
        v = await s.venue(market(40))
        with Ledger(s.url) as led:
            r = Runner(cfg(tmp_path, mode="live"), v, led, Limits(), CarryRules(), Signals([30]))
            await r.start()
            await r.run_cycle(1)
            await r.stop()
            assert {e[2]["rule"] for e in s.events("safeguard_reject")} == {"live_disabled"}
            assert s.placed() == [] and s.orders() == {}
        await v.close()

    asyncio.run(main())


def test_vpin_gate_blocks_entry_in_toxic_flow_and_exits_a_held_pair(tmp_path: Path) -> None:
    s = Setup(tmp_path)

    async def main() -> None:
        # every trade buyer-initiated: each 10,000 USD bucket is all buys, VPIN = 1.0 > 0.80
        v = await s.venue(market(40, toxic=True))
        with Ledger(s.url) as led:
            r = Runner(cfg(tmp_path), v, led, Limits(), CarryRules(), Signals([30]))
            await r.start()
            assert r.vpin("BTCUSDT") == 1.0
            await r.run_cycle(1)
            assert s.events("plan")[-1][2]["actions"] == [] and s.placed() == []
            # balanced flow (2 buys + 2 sells per bucket): VPIN 0 after 5 buckets → enter
            for ev in market(40, t0=T0 + 10**9)[2:]:
                v.on_market(ev)
            await asyncio.sleep(0)
            assert r.vpin("BTCUSDT") == 0.0
            await r.run_cycle(2)
            assert qty_by_symbol(led) == {"BTCUSDT": D("-0.15"), "BTCUSDT.SPOT": D("0.15")}
            # toxic again: VPIN 1.0 > 0.90 closes the pair although funding is still 30 %
            for ev in market(40, t0=T0 + 2 * 10**9, toxic=True)[2:]:
                v.on_market(ev)
            await asyncio.sleep(0)
            assert r.vpin("BTCUSDT") == 1.0
            await r.run_cycle(3)
            assert s.events("plan")[-1][2]["actions"][0]["kind"] == "exit"
            assert qty_by_symbol(led) == {}
            await r.stop()
        await v.close()

    asyncio.run(main())


def test_no_entry_before_vpin_is_warm(tmp_path: Path) -> None:
    s = Setup(tmp_path)

    async def main() -> None:
        v = await s.venue(market(12))  # 12 × 2,500 USD = 3 buckets of the 5 needed
        with Ledger(s.url) as led:
            r = Runner(cfg(tmp_path), v, led, Limits(), CarryRules(), Signals([30]))
            await r.start()
            await r.run_cycle(1)
            await r.stop()
            assert s.events("plan")[-1][2]["vpin"] == {"BTCUSDT": None}
            assert s.placed() == []
        await v.close()

    asyncio.run(main())


# --------------------------------------------------------------------------- restarts


class Crash(BaseException):
    """Stands for the process dying at this point (escapes every handler)."""


class CrashOnSpot:
    def __init__(self, venue: DurablePaperVenue) -> None:
        self._v = venue

    def __getattr__(self, name: str) -> Any:
        return getattr(self._v, name)

    @property
    def venue_id(self) -> str:
        return self._v.venue_id

    async def place(self, order: Order) -> OrderState:
        if order.symbol == "BTCUSDT.SPOT":
            raise Crash
        return await self._v.place(order)


def test_restart_mid_cycle_reuses_the_plan_and_ids_and_sends_nothing_twice(tmp_path: Path) -> None:
    s = Setup(tmp_path)

    async def first() -> None:
        v = await s.venue(market(40))
        with Ledger(s.url) as led:
            r = Runner(cfg(tmp_path), CrashOnSpot(v), led, Limits(), CarryRules(), Signals([30]))
            await r.start()
            with pytest.raises(Crash):
                await r.run_cycle(1)
        v.flush()  # what a killed process had committed (the journal commits per order)

    async def second() -> None:
        v = await s.venue()
        with Ledger(s.url) as led:
            r = Runner(cfg(tmp_path), v, led, Limits(), CarryRules(), Signals([0]))
            await r.start()
            assert r.cycle == 1 and r.resume_cycle == 1
            assert await r.run_cycle(1) == "ok"  # same plan (entry), although the signal is 0 now
            await r.stop()
            assert s.placed() == ["t-1-P-BTCUSDT", "t-1-S-BTCUSDT"]  # each once
            o = s.orders()
            assert {c: o[c][3] for c in o} == {"t-1-P-BTCUSDT": "filled", "t-1-S-BTCUSDT": "filled"}
            assert qty_by_symbol(led) == {"BTCUSDT": D("-0.15"), "BTCUSDT.SPOT": D("0.15")}
            assert s.events("pair_unwound") == []
        await v.close()

    asyncio.run(first())
    asyncio.run(second())


def test_reconcile_inserts_fills_the_ledger_lacks(tmp_path: Path) -> None:
    s = Setup(tmp_path)

    async def trade() -> None:
        v = await s.venue(market(40))
        with Ledger(s.url) as led:
            r = Runner(cfg(tmp_path), v, led, Limits(), CarryRules(), Signals([30]))
            await r.start()
            await r.run_cycle(1)
            await r.stop()
        await v.close()

    asyncio.run(trade())
    # the ledger is lost; a new one starts against the same venue
    (tmp_path / "ledger.sqlite").unlink()
    for p in tmp_path.glob("ledger.sqlite-*"):
        p.unlink()
    s2 = Setup(tmp_path)

    async def restart() -> None:
        v = await s2.venue()
        with Ledger(s2.url) as led:
            r = Runner(cfg(tmp_path), v, led, Limits(), CarryRules(), Signals([30]))
            await r.start()
            await r.stop()
            rec = s2.events("reconciled")[0][2]
            assert rec["fills_inserted"] == 2 and rec["mismatches"] == 0
            assert qty_by_symbol(led) == {"BTCUSDT": D("-0.15"), "BTCUSDT.SPOT": D("0.15")}
            assert len(s2.events("unknown_fill")) == 2
        await v.close()

    asyncio.run(restart())


# --------------------------------------------------------------------------- watchdog / CLI


def test_watchdog_restarts_a_dead_runner_and_kills_a_stale_one(tmp_path: Path) -> None:
    out = tmp_path / "starts.txt"
    cmd = [sys.executable, "-c", f"open({str(out)!r}, 'a').write('x')"]
    wd = Watchdog(cmd, restart_delay_s=0.01, max_restarts=2, poll_s=0.01, log_line=lambda _: None)
    assert wd.run() == 2
    assert out.read_text() == "xxx" and wd.exits == [0, 0, 0]

    hang = [sys.executable, "-c", "import time; time.sleep(60)"]
    wd = Watchdog(
        hang,
        snapshot_path=tmp_path / "never-written.json",
        stale_s=0.2,
        restart_delay_s=0.01,
        max_restarts=1,
        poll_s=0.02,
        log_line=lambda _: None,
    )
    t0 = time.monotonic()
    assert wd.run() == 1
    assert wd.exits == [-9, -9]  # SIGKILLed, both times
    assert time.monotonic() - t0 < 30


def test_run_live_is_refused_without_both_switches(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert "enable_live_orders is false" in (live_allowed(load_settings().risk) or "")
    s = load_settings(risk={"enable_live_orders": True})
    assert "not in risk.live_layers" in (live_allowed(s.risk) or "")
    s = load_settings(risk={"enable_live_orders": True, "live_layers": ["carry"]})
    assert live_allowed(s.risk) is None

    res = CliRunner().invoke(run_app, ["run", "--live"])
    assert isinstance(res.exception, PerpdeskError)
    assert "enable_live_orders is false" in str(res.exception)
    res = CliRunner().invoke(
        run_app, ["run", "--live"], env={"PERPDESK_RISK__ENABLE_LIVE_ORDERS": "true"}
    )
    assert "not in risk.live_layers" in str(res.exception)
    res = CliRunner().invoke(run_app, ["run", "--paper", "--live"])
    assert "exactly one of --paper or --live" in str(res.exception)


def test_audit_is_read_only_against_the_fake_exchange() -> None:
    from perpdesk.execution.ccxt_live import LiveVenue
    from perpdesk.live.runner import audit_venue
    from tests.fake_exchange import FakeBinanceUSDM

    key, secret = "audit-test-key-0123456789", "audit-test-secret-0123456789"
    env = {"PERPDESK_BINANCE_API_KEY": key, "PERPDESK_BINANCE_API_SECRET": secret}
    with FakeBinanceUSDM(int(time.time() * 1000), api_key=key, api_secret=secret) as fake:

        async def main() -> list[tuple[str, bool, str]]:
            v = LiveVenue.from_env(
                environ=env,
                dotenv_path=None,
                api_url=fake.url,
                ws_url=fake.ws_url,
                timeout_ms=2000,
                enable_rate_limit=False,
            )
            v.ex.timeout_on_exit = 0
            try:
                return await audit_venue(v)
            finally:
                await v.close()

        rows = asyncio.run(main())
        checks = {name: ok for name, ok, _ in rows}
        assert all(
            checks[c] for c in ("connect", "markets", "balances", "positions", "open orders")
        )
        detail = {name: d for name, _, d in rows}
        assert checks["permissions"], rows
        assert detail["permissions"] == (
            "enableReading=True, enableFutures=True, enableWithdrawals=False, ipRestrict=True"
        )
        # a key that can withdraw fails the row (a trading key should not withdraw)
        fake.api_restrictions["enableWithdrawals"] = True
        rows2 = asyncio.run(main())
        perm = [r for r in rows2 if r[0] == "permissions"]
        assert perm == [
            (
                "permissions",
                False,
                "enableReading=True, enableFutures=True, enableWithdrawals=True, "
                "ipRestrict=True (withdrawals enabled: use a key without them)",
            )
        ]
        assert not any(key in d or secret in d for _, _, d in rows + rows2)
        writes = [r for r in fake.requests if r.method in ("POST", "PUT", "DELETE")]
        assert [r.path for r in writes if "order" in r.path.lower()] == []
        assert "/sapi/v1/account/apiRestrictions" in {r.path for r in fake.requests}


def test_kill_switch_closes_held_pairs_and_opens_none(tmp_path: Path) -> None:
    s = Setup(tmp_path)

    async def main() -> None:
        v = await s.venue(market(40))
        with Ledger(s.url) as led:
            r = Runner(cfg(tmp_path), v, led, Limits(), CarryRules(), Signals([30]))
            await r.start()
            await r.run_cycle(1)
            assert qty_by_symbol(led) == {"BTCUSDT": D("-0.15"), "BTCUSDT.SPOT": D("0.15")}
            led.set_kill_switch(True, time.time_ns(), "test")
            await r.run_cycle(2)  # funding still 30 %: only the kill switch closes the pair
            await r.run_cycle(3)
            await r.stop()
            assert qty_by_symbol(led) == {}
            assert [a["kind"] for a in s.events("plan")[1][2]["actions"]] == ["exit"]
            assert s.events("plan")[2][2]["actions"] == []
            assert s.events("safeguard_reject") == []
        await v.close()

    asyncio.run(main())


def test_cli_run_paper_replays_a_real_capture(tmp_path: Path, monkeypatch) -> None:
    from tests.realdata import shared_file

    perp = shared_file("binance-ws/usdm/btcusdt_20230405.dat.gz")
    spot = shared_file("binance-ws/spot/btcusdt_20230405.dat.gz")
    monkeypatch.chdir(tmp_path)
    env = {"PERPDESK_PATHS__DATA_DIR": str(tmp_path / "data")}
    args = ["run", "--paper", "--replay", str(perp), "--replay-spot", str(spot)]
    args += ["--cycle-s", "0.05", "--max-cycles", "3", "--replay-rate", "20000"]
    res = CliRunner().invoke(run_app, args, env=env)
    assert res.exit_code == 0, res.output + repr(res.exception)
    assert "cycle 3: ok" in res.output
    snap = json.loads((tmp_path / "data" / "state.json").read_text())
    assert snap["mode"] == "paper" and snap["cycle"] == 3
    assert (tmp_path / "data" / "paper-pd.sqlite").is_file()


def _synthetic_capture(path: Path, *, spot: bool, seconds: int = 20) -> None:
    """A Binance capture (``<recv ns> <combined-stream JSON>`` lines) of BTCUSDT: a book top
    (29,999.9 / 30,000.1, 50 BTC a side) and a trade every 100 ms, and on the perp a
    markPrice@1s frame every second predicting 0.1 % per 8 h (109.5 % a year)."""
    t0 = 1_700_000_000_000  # ms
    lines = []
    for k in range(seconds * 10):
        ms = t0 + 100 * k
        book = {"u": 1000 + k, "s": "BTCUSDT", "b": "29999.9", "B": "50.0",
                "a": "30000.1", "A": "50.0"}  # fmt: skip
        if not spot:  # USD-M bookTicker carries the event and transaction times
            book.update(e="bookTicker", T=ms, E=ms)
        trade = {"e": "trade", "E": ms, "T": ms, "s": "BTCUSDT", "t": 5000 + k,
                 "p": "30000.0", "q": "0.5", "m": k % 2 == 0}  # fmt: skip
        frames = [("btcusdt@bookTicker", book), ("btcusdt@trade", trade)]
        if not spot and k % 10 == 0:
            mark = {"e": "markPriceUpdate", "E": ms, "s": "BTCUSDT", "p": "30000.00",
                    "P": "30000.00", "i": "30000.00", "r": "0.00100000",
                    "T": t0 + 8 * 3_600_000}  # fmt: skip
            frames.append(("btcusdt@markPrice@1s", mark))
        for stream, data in frames:
            lines.append(f"{ms * 1_000_000 + 1} " + json.dumps({"stream": stream, "data": data}))
    path.write_text("\n".join(lines) + "\n")


def test_cli_paper_replay_books_spot_buy_fees_in_the_coin_as_binance_does(
    tmp_path: Path, monkeypatch
) -> None:
    """A replayed Binance capture pays Binance's fees the way the exchange takes them: a spot
    buy's 0.1 % commission in BTC (``FeeModel.for_venue``), so the paper spot holding is
    what a live account would hold. Hand-computed: buying q BTC leaves q − 0.001 q."""
    perp, spot = tmp_path / "perp.txt", tmp_path / "spot.txt"
    _synthetic_capture(perp, spot=False)
    _synthetic_capture(spot, spot=True)
    monkeypatch.chdir(tmp_path)
    # VPIN buckets of two trades (one buy, one sell: VPIN 0), warm after 10
    env = {
        "PERPDESK_PATHS__DATA_DIR": str(tmp_path / "data"),
        "PERPDESK_RUNNER__VPIN_BUCKET_USD": "30000",
        "PERPDESK_RUNNER__VPIN_N_BUCKETS": "10",
    }
    args = ["run", "--paper", "--replay", str(perp), "--replay-spot", str(spot)]
    args += ["--cycle-s", "0.05", "--max-cycles", "12", "--replay-rate", "20000"]
    res = CliRunner().invoke(run_app, args, env=env)
    assert res.exit_code == 0, res.output + repr(res.exception)
    con = sqlite3.connect(tmp_path / "data" / "ledger.sqlite")
    fills = con.execute(
        "SELECT symbol, side, qty_base, price, fee_usd, fee_qty_base FROM fills"
    ).fetchall()
    con.close()
    buys = [f for f in fills if f[0] == "BTCUSDT.SPOT" and f[1] == "buy"]
    assert buys, fills
    for _, _, qty, price, fee_usd, fee_qty in buys:
        q, fq = Decimal(str(qty)), Decimal(str(fee_qty))
        assert fq == q * Decimal("0.001"), (q, fq)  # Binance spot VIP0, in the coin bought
        assert Decimal(str(fee_usd)) == fq * Decimal(str(price))
    with Ledger(f"sqlite:///{tmp_path / 'data' / 'ledger.sqlite'}") as led:
        held = qty_by_symbol(led).get("BTCUSDT.SPOT", Decimal(0))
    bought = sum(Decimal(str(b[2])) for b in buys)
    assert held == bought * Decimal("0.999")


class MovingSignals:
    """Funding 0 % (exit), and the market moves +4 % while the signals are being fetched —
    i.e. after the cycle valued the positions and before it sends the closes."""

    def __init__(self) -> None:
        self.runner: Runner | None = None

    async def signals(self, cycle: int) -> dict[str, CarrySignal]:
        assert self.runner is not None
        for sym in ("BTCUSDT", "BTCUSDT.SPOT"):
            self.runner.on_trade(Trade("paper", sym, T0 + 10**10, 26000.0, 0.001, False))
        return {"BTCUSDT": CarrySignal(0.0, 1e9)}


def test_closing_orders_are_checked_at_the_positions_mark_not_a_newer_price(
    tmp_path: Path,
) -> None:
    # At 26,000 a close of 0.15 would be 3,900 USD against a position valued 3,750 USD at
    # its mark (25,000): a reduce-only order larger than the position. Valued at the mark it
    # is exactly the position and passes.
    s = Setup(tmp_path)

    async def main() -> None:
        v = await s.venue(market(40))
        with Ledger(s.url) as led:
            r = Runner(cfg(tmp_path), v, led, Limits(), CarryRules(), Signals([30]))
            await r.start()
            await r.run_cycle(1)
            sig = MovingSignals()
            r.signals = sig
            sig.runner = r
            await r.run_cycle(2)
            await r.stop()
            assert s.events("safeguard_reject") == []
            assert qty_by_symbol(led) == {}
        await v.close()

    asyncio.run(main())


def test_cli_watchdog_supervises_the_command_after_the_double_dash(tmp_path: Path) -> None:
    out = tmp_path / "ran.txt"
    code = f"open({str(out)!r}, 'a').write('x')"
    args = ["watchdog", "--max-restarts", "1", "--restart-delay-s", "0.01"]
    res = CliRunner().invoke(run_app, [*args, "--", sys.executable, "-c", code])
    assert res.exit_code == 0, res.output + repr(res.exception)
    assert out.read_text() == "xx" and "1 restart(s)" in res.output


def test_paper_journal_coalesces_book_tops_and_replays_to_the_same_state(tmp_path: Path) -> None:
    """A long random mix of book tops (sometimes out of order), trades, marks announcing
    funding, market and limit orders and cancels: the venue reopened from its journal has the
    same fills, funding, positions, balances, quotes and clock, from fewer journal rows."""
    import random

    from perpdesk.domain import MarkPrice, OrderType, Side

    rng = random.Random(7)
    s = Setup(tmp_path, cash="1000000")

    async def main() -> None:
        v = await s.venue()
        t, n_ev, n_orders = T0, 0, 0
        px = {"BTCUSDT": 25000.0, "BTCUSDT.SPOT": 25000.0}
        for _i in range(3000):
            t += rng.randint(0, 3) * MS
            sym = rng.choice(list(px))
            px[sym] = round(px[sym] + rng.choice((-0.1, 0.0, 0.1)) * 10, 2)
            r = rng.random()
            if r < 0.6:  # a burst of book tops, the occasional one stamped 1 ms late
                ts = t - MS if rng.random() < 0.05 else t
                v.on_market(BookTop("paper", sym, ts, px[sym] - 0.1, 5.0, px[sym], 5.0))
            elif r < 0.85:
                v.on_market(Trade("paper", sym, t, px[sym], 0.05, rng.random() < 0.5))
            elif r < 0.9:
                nxt = (t // (200 * MS) + 1) * 200 * MS
                v.on_market(
                    MarkPrice("paper", "BTCUSDT", t, px["BTCUSDT"], px["BTCUSDT"], 1e-4, nxt)
                )
            else:
                n_ev -= 1  # an order, not a market event
                n_orders += 1
                side = rng.choice((Side.BUY, Side.SELL)) if sym == "BTCUSDT" else Side.BUY
                if rng.random() < 0.5:
                    o = Order(f"o{n_orders}", "paper", sym, side, 0.01)
                else:
                    off = -5.0 if side is Side.BUY else 5.0
                    o = Order(
                        f"o{n_orders}",
                        "paper",
                        sym,
                        side,
                        0.01,
                        OrderType.LIMIT,
                        price=px[sym] + off,
                    )
                await v.place(o)
                if n_orders > 3 and rng.random() < 0.3:
                    with contextlib.suppress(Exception):
                        await v.cancel(f"o{n_orders - 3}", sym)
            n_ev += 1
            if rng.random() < 0.02:
                v.flush()
        await v.close()
        before = (
            list(v.inner.fill_log),
            list(v.inner.funding),
            await v.inner.positions(),
            await v.inner.balances(),
            {k: (q.bid, q.ask, q.last_price) for k, q in v.inner._quotes.items()},
            v.inner.now_ns,
        )
        assert v.coalesced > 500 and len(before[0]) > 50 and len(before[1]) > 5
        con = sqlite3.connect(tmp_path / "paper.sqlite")
        (rows,) = con.execute("SELECT count(*) FROM journal WHERE kind = 'ev'").fetchone()
        con.close()
        assert rows == n_ev - v.coalesced  # one row per market event not folded away
        v2 = await s.venue()
        after = (
            list(v2.inner.fill_log),
            list(v2.inner.funding),
            await v2.inner.positions(),
            await v2.inner.balances(),
            {k: (q.bid, q.ask, q.last_price) for k, q in v2.inner._quotes.items()},
            v2.inner.now_ns,
        )
        await v2.close()
        assert after == before

    asyncio.run(main())


def test_runner_config_takes_the_runner_section(tmp_path: Path, monkeypatch) -> None:
    from perpdesk.live.runner import runner_config

    monkeypatch.chdir(tmp_path)
    s = load_settings(
        None,
        account={"bankroll_usd": 250_000},
        carry={"allocation_pct": 40, "perp_leverage": 2},
        runner={
            "symbols": ["ethusdt", "BTCUSDT"],
            "run_id": "r7",
            "cycle_s": 30,
            "cycle_timeout_s": 12.5,
            "leg_fill_timeout_s": 4,
            "unwind_timeout_s": 9,
            "vpin_entry_max": 0.7,
            "vpin_exit_min": 0.95,
            "vpin_bucket_usd": 25_000,
            "vpin_n_buckets": 20,
            "require_warm_vpin": False,
            "cap_price_buffer_bps": 5,
            "paper_balance_usd": 1234.5,
        },
    )
    c = runner_config(s, "paper", snapshot_path=tmp_path / "s.json")
    assert c.pairs == (PairSpec("ETHUSDT", "ETHUSDT.SPOT"), PairSpec("BTCUSDT", "BTCUSDT.SPOT"))
    assert (c.mode, c.run_id, c.cycle_s, c.cycle_timeout_s) == ("paper", "r7", 30.0, 12.5)
    assert (c.leg_fill_timeout_s, c.unwind_timeout_s) == (4.0, 9.0)
    assert (c.vpin_entry_max, c.vpin_exit_min, c.vpin_bucket_usd, c.vpin_n_buckets) == (
        0.7,
        0.95,
        25_000.0,
        20,
    )
    assert c.require_warm_vpin is False and c.snapshot_path == tmp_path / "s.json"
    assert (c.bankroll_usd, c.allocation_pct, c.perp_leverage) == (D(250000), D(40), D(2))
    assert (c.cap_price_buffer_bps, c.paper_cash_usd) == (D(5), D("1234.5"))
    # no paper balance configured: the paper wallet is the bankroll
    assert runner_config(load_settings(None), "live").paper_cash_usd is None


def test_daily_loss_trips_the_kill_switch_and_a_disabled_layer_opens_nothing(
    tmp_path: Path,
) -> None:
    """The day's loss reaching max_daily_loss_pct trips the (persistent) kill switch, which
    closes the pair in that cycle; with the switch off again but the carry layer disabled in
    the ledger, the runner plans no entry and the safeguards are never asked."""
    s = Setup(tmp_path)

    async def main() -> None:
        v = await s.venue(market(40))
        with Ledger(s.url) as led:
            r = Runner(cfg(tmp_path), v, led, Limits(), CarryRules(), Signals([30]))
            await r.start()
            await r.run_cycle(1)
            assert qty_by_symbol(led) == {"BTCUSDT": D("-0.15"), "BTCUSDT.SPOT": D("0.15")}
            st = led.status()
            # a loss cap just below what the entry's fees already cost today
            r.limits = dataclasses.replace(r.limits, max_daily_loss_pct=D("1e-9"))
            await r.run_cycle(2)
            assert led.kill_switch() is True
            assert qty_by_symbol(led) == {}
            assert [a["kind"] for a in s.events("plan")[1][2]["actions"]] == ["exit"]
            assert len(s.events("kill_switch")) == 1
            assert led.status().equity_usd < st.equity_usd  # the exit cost fees too
            led.set_kill_switch(False, time.time_ns(), "test")
            led.set_layer("carry", False, time.time_ns(), "test")
            r.limits = dataclasses.replace(r.limits, max_daily_loss_pct=D(5))
            await r.run_cycle(3)
            await r.stop()
            assert qty_by_symbol(led) == {}
            assert s.events("plan")[2][2]["actions"] == []
            assert s.events("safeguard_reject") == []
        await v.close()

    asyncio.run(main())
