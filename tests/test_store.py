"""The ledger on SQLite and on the PostgreSQL server at 127.0.0.1:5432 (database ``test``).

Each PostgreSQL test gets its own schema (search_path in the URL) and drops it afterwards,
so pytest-xdist workers never share tables. PostgreSQL unreachable is a FAILURE, not a skip:
CI must start it (``pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start``).
"""

from __future__ import annotations

import json
import os
import random
import sqlite3
import threading
import uuid
from decimal import Decimal
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, select, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from perpdesk.app.cli import app
from perpdesk.domain import Fill, Liquidity, Order, OrderType, Side
from perpdesk.errors import PerpdeskError
from perpdesk.store import (
    Ledger,
    LedgerError,
    init_db,
    make_engine,
    read_snapshot,
    status_payload,
    write_snapshot,
)
from perpdesk.store.ledger import HEAD_REVISION
from perpdesk.store.models import Base, EventRow

D = Decimal
PG_BASE = os.environ.get(
    "PERPDESK_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
PG_START = "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start"
T = 1_700_000_000_000_000_000  # a ts_ns


def pg_schema_url() -> tuple[str, str]:
    schema = f"t_{uuid.uuid4().hex[:16]}"
    admin = create_engine(PG_BASE)
    try:
        with admin.begin() as c:
            c.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    except OperationalError as exc:
        pytest.fail(
            f"PostgreSQL not reachable at {PG_BASE} ({str(exc.orig).strip().splitlines()[0]}); "
            f"start it with: {PG_START}",
            pytrace=False,
        )
    finally:
        admin.dispose()
    return f"{PG_BASE}?options=-csearch_path%3D{schema}", schema


def drop_schema(schema: str) -> None:
    admin = create_engine(PG_BASE)
    with admin.begin() as c:
        c.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
    admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'ledger.sqlite'}"
        return
    u, schema = pg_schema_url()
    try:
        yield u
    finally:
        drop_schema(schema)


@pytest.fixture()
def ledger(url: str):
    init_db(url)
    with Ledger(url) as led:
        yield led


def mk_order(cid: str, symbol: str, side: Side, qty: float, venue: str = "binanceusdm") -> Order:
    return Order(cid, venue, symbol, side, qty, OrderType.MARKET, ts_ns=T)


def mk_fill(cid: str, symbol: str, side: Side, qty: str, price: str, fee: str, ts_ns: int) -> Fill:
    return Fill(cid, "binanceusdm", symbol, side, D(qty), D(price), D(fee), Liquidity.TAKER, ts_ns)


# ---------------------------------------------------------------- schema


def test_migrations_create_exactly_the_models(url: str) -> None:
    assert init_db(url) == HEAD_REVISION
    assert init_db(url) == HEAD_REVISION  # idempotent
    engine = make_engine(url)
    with engine.connect() as c:
        ctx = MigrationContext.configure(c, opts={"compare_type": True})
        assert compare_metadata(ctx, Base.metadata) == []
    engine.dispose()


def test_concurrent_init_db_migrates_once(url: str) -> None:
    results: list[str] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            results.append(init_db(url))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "writers deadlocked"
    assert not errors and results == [HEAD_REVISION] * 3


def test_sqlite_is_wal_and_money_is_text(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'l.sqlite'}"
    init_db(url)
    with Ledger(url) as led:
        led.record_transfer("dep-1", D("0.1"), T)
    con = sqlite3.connect(tmp_path / "l.sqlite")
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert con.execute("SELECT typeof(amount_usd), amount_usd FROM transfers").fetchone() == (
        "text",
        "0.1",
    )
    con.close()


def test_unmigrated_missing_and_unreachable_databases(tmp_path: Path) -> None:
    with pytest.raises(LedgerError, match="no such database; run `perpdesk init-db`"):
        Ledger(f"sqlite:///{tmp_path / 'none.sqlite'}")
    sqlite3.connect(tmp_path / "empty.sqlite").close()
    with pytest.raises(LedgerError, match=f"schema at nothing, expected {HEAD_REVISION}"):
        Ledger(f"sqlite:///{tmp_path / 'empty.sqlite'}")
    bad = "postgresql+psycopg://postgres:hunter2pass@127.0.0.1:1/test"
    with pytest.raises(LedgerError) as e:
        init_db(bad)
    msg = str(e.value)
    assert "\n" not in msg and "hunter2pass" not in msg and "127.0.0.1:1" in msg
    with pytest.raises(LedgerError, match="not a database URL"):
        init_db("no url at all")


# ---------------------------------------------------------------- idempotent writes


def test_fill_recorded_twice_is_stored_once(ledger: Ledger) -> None:
    assert ledger.record_order(
        mk_order("c1", "BTCUSDT", Side.BUY, 0.5), layer="carry", mode="paper"
    )
    assert not ledger.record_order(
        mk_order("c1", "BTCUSDT", Side.BUY, 0.5), layer="carry", mode="paper"
    )
    f = mk_fill("c1", "BTCUSDT", Side.BUY, "0.3", "40000", "4.8", T + 1)
    assert ledger.record_fill(f, "t1") is True
    assert ledger.record_fill(f, "t1") is False
    assert ledger.record_fill(f, "t2") is True  # same numbers, another trade id: a new fill
    st = ledger.status()
    assert st.n_fills == 2
    assert [p.qty_base for p in st.positions] == [D("0.6")]
    with pytest.raises(
        LedgerError, match=r"fill binanceusdm/BTCUSDT/t1 already recorded with price"
    ):
        ledger.record_fill(mk_fill("c1", "BTCUSDT", Side.BUY, "0.3", "40001", "4.8", T + 1), "t1")
    with pytest.raises(LedgerError, match=r"order c1 already recorded with qty_base = 0\.5"):
        ledger.record_order(mk_order("c1", "BTCUSDT", Side.BUY, 0.7), layer="carry", mode="paper")
    with pytest.raises(LedgerError, match="order nope not recorded"):
        ledger.record_fill(mk_fill("nope", "BTCUSDT", Side.BUY, "1", "1", "0", T), "t9")
    assert ledger.status().n_fills == 2 and ledger.audit().ok


def test_a_fee_paid_in_the_base_asset_moves_the_quantity_and_counts_once(ledger: Ledger) -> None:
    """A spot buy of 0.1 BTC at 40,000 whose 0.1 % fee (0.0001 BTC = 4 USD) is taken in BTC
    holds 0.0999 BTC; its cash flow is −4,000 (the fee left as BTC, not USDT). Sold at
    41,000 with a 4.0959 USD fee: PnL = 0.0999 × 1,000 − 4 − 4.0959 = 91.8041."""
    ledger.record_transfer("d", D(10000), T)
    for cid, side, qty in (("b", Side.BUY, 0.1), ("s", Side.SELL, 0.0999)):
        ledger.record_order(mk_order(cid, "BTCUSDT.SPOT", side, qty), layer="carry", mode="live")
    buy = mk_fill("b", "BTCUSDT.SPOT", Side.BUY, "0.1", "40000", "4", T + 1)
    assert ledger.record_fill(buy, "1", fee_qty_base=D("0.0001")) is True
    assert ledger.record_fill(buy, "1", fee_qty_base=D("0.0001")) is False
    with pytest.raises(LedgerError, match="already recorded with fee_qty_base"):
        ledger.record_fill(buy, "1")
    (p,) = ledger.status().positions
    # entry cost 0.0999 × 40,000 = 3,996; equity = cash = 10,000 − 4 (the fee, once)
    assert (p.qty_base, p.entry_price, p.fees_usd) == (D("0.0999"), D(40000), D(4))
    assert p.pnl_usd == D(-4) and p.unrealised_pnl_usd == 0
    st = ledger.status()
    assert st.equity_usd == st.cash_usd == D(9996)
    sell = mk_fill("s", "BTCUSDT.SPOT", Side.SELL, "0.0999", "41000", "4.0959", T + 2)
    assert ledger.record_fill(sell, "2") is True
    st = ledger.status()
    assert st.equity_usd == st.cash_usd == D("10091.8041")
    assert [p.qty_base for p in st.positions] == [0]
    assert ledger.audit().ok


def test_a_ledger_at_0001_upgrades_with_fee_qty_base_zero(url: str) -> None:
    from alembic import command

    from perpdesk.store.ledger import alembic_config

    command.upgrade(alembic_config(url), "0001_initial")
    eng = make_engine(url)
    with eng.begin() as c:
        c.exec_driver_sql(
            "INSERT INTO fills (venue, symbol, trade_id, client_order_id, layer, side, "
            "qty_base, price, fee_usd, liquidity, ts_ns) VALUES ('binanceusdm', 'BTCUSDT', "
            f"'1', 'c', 'carry', 'buy', '0.5', '40000', '8', 'taker', {T})"
        )
    eng.dispose()
    assert init_db(url) == HEAD_REVISION
    with Ledger(url) as led:
        (row,) = led.fills()
        assert (row.qty_base, row.fee_qty_base) == (D("0.5"), 0)
        # the same trade reported again with a base-asset fee: the old row stands
        again = Fill(
            "c", "binanceusdm", "BTCUSDT", Side.BUY, D("0.5"), D(40000), D(8), Liquidity.TAKER, T
        )
        assert led.record_fill(again, "1", layer="carry", fee_qty_base=D("0.0002")) is False
        (row,) = led.fills()
        assert row.fee_qty_base == 0


def test_order_status_updates_ignore_stale_messages(ledger: Ledger) -> None:
    ledger.record_order(mk_order("c1", "BTCUSDT", Side.BUY, 1), layer="carry", mode="paper")
    ledger.record_order(mk_order("c2", "ETHUSDT", Side.SELL, 2), layer="carry", mode="paper")
    ledger.update_order("c1", "filled", T + 10, exchange_order_id="x1")
    ledger.update_order("c1", "open", T + 5)  # older message arrives late: ignored
    row = ledger.order("c1")
    assert row is not None
    assert (row.status, row.exchange_order_id, row.updated_ts_ns) == ("filled", "x1", T + 10)
    assert [o.client_order_id for o in ledger.open_orders()] == ["c2"]
    with pytest.raises(LedgerError, match="unknown status 'done'"):
        ledger.update_order("c2", "done", T)


def test_bad_amounts_are_refused_and_nothing_is_written(ledger: Ledger) -> None:
    ledger.record_order(mk_order("c1", "BTCUSDT", Side.BUY, 1), layer="carry", mode="paper")
    fee_19dp = "0.0000000000000000001"
    with pytest.raises(PerpdeskError, match="more than 18 decimal places"):
        ledger.record_fill(mk_fill("c1", "BTCUSDT", Side.BUY, "1", "100", fee_19dp, T), "t1")
    with pytest.raises(LedgerError, match="too large"):
        ledger.record_transfer("big", D("1e20"), T)
    st = ledger.status()
    assert (st.n_fills, st.positions, st.deposits_usd) == (0, (), 0)


def test_funding_once_per_position_per_settlement(ledger: Ledger) -> None:
    assert ledger.record_funding("binanceusdm", "BTCUSDT", "carry", T, D("1.25"))
    assert not ledger.record_funding("binanceusdm", "BTCUSDT", "carry", T, D("1.25"))
    assert ledger.record_funding("binanceusdm", "BTCUSDT", "grid", T, D("0.5"))
    with pytest.raises(LedgerError, match=r"already recorded with 1\.25"):
        ledger.record_funding("binanceusdm", "BTCUSDT", "carry", T, D("1.26"))
    assert ledger.status().equity_usd == D("1.75")
    assert ledger.audit().ok


# ---------------------------------------------------------------- accounting by hand


def test_equity_cash_and_at_risk_by_hand(ledger: Ledger) -> None:
    led = ledger
    led.record_transfer("paper-bankroll", D(10_000), T)
    led.record_order(mk_order("b1", "BTCUSDT", Side.BUY, 0.5), layer="carry", mode="paper")
    # 0.3 @ 40,000 (fee 4 bps of 12,000 = 4.8) and 0.2 @ 40,100 (fee 4 bps of 8,020 = 3.208)
    led.record_fill(mk_fill("b1", "BTCUSDT", Side.BUY, "0.3", "40000", "4.8", T + 1), "101")
    led.record_fill(mk_fill("b1", "BTCUSDT", Side.BUY, "0.2", "40100", "3.208", T + 2), "102")
    # long 0.5 pays funding at rate 0.0001, mark 40,050: 0.5 × 40,050 × 0.0001 = 2.0025
    led.record_funding("binanceusdm", "BTCUSDT", "carry", T + 3, D("-2.0025"))
    assert led.set_mark("binanceusdm", "BTCUSDT", D(40_500), T + 4) == 1
    st = led.status()
    # cash flows: −12,000 − 4.8 − 8,020 − 3.208 − 2.0025 = −20,030.0105
    # equity = 10,000 − 20,030.0105 + 0.5 × 40,500 = 10,219.9895
    assert st.equity_usd == D("10219.9895")
    assert st.at_risk_usd == D(20_250)
    # entry cost 12,000 + 8,020 = 20,020 (avg 40,040); cash = 10,000 − 20,030.0105 + 20,020
    assert st.cash_usd == D("9989.9895")
    (p,) = st.positions
    assert (p.qty_base, p.entry_price, p.unrealised_pnl_usd) == (D("0.5"), D(40_040), D(230))

    # sell 0.2 @ 40,600 (fee 4 bps of 8,120 = 3.248): realised 0.2 × (40,600 − 40,040) = 112
    led.record_order(mk_order("s1", "BTCUSDT", Side.SELL, 0.2), layer="carry", mode="paper")
    led.record_fill(mk_fill("s1", "BTCUSDT", Side.SELL, "0.2", "40600", "3.248", T + 5), "103")
    # a short in another layer: sell 2 ETH @ 2,000 (fee 1.6), receives funding 0.4, mark 1,950
    led.record_order(mk_order("e1", "ETHUSDT", Side.SELL, 2), layer="cascade", mode="paper")
    led.record_fill(mk_fill("e1", "ETHUSDT", Side.SELL, "2", "2000", "1.6", T + 6), "201")
    led.record_funding("binanceusdm", "ETHUSDT", "cascade", T + 7, D("0.4"))
    led.set_mark("binanceusdm", "ETHUSDT", D(1_950), T + 8)
    led.set_mark("binanceusdm", "ETHUSDT", D(9_999), T + 7)  # older mark: ignored
    st = led.status()
    # BTC: 0.3 left, mark = last fill 40,600: cash −20,030.0105 + 8,120 − 3.248 = −11,913.2585,
    #      value 12,180 -> pnl 266.7415
    # ETH: cash 4,000 − 1.6 + 0.4 = 3,998.8, value −2 × 1,950 = −3,900 -> pnl 98.8
    assert st.equity_usd == D("10365.5415")  # 10,000 + 266.7415 + 98.8
    assert st.at_risk_usd == D(16_080)  # 12,180 + 3,900
    # cash = 10,000 + realised 112 − fees (4.8 + 3.208 + 3.248 + 1.6) − 2.0025 + 0.4
    assert st.cash_usd == D("10097.5415")
    btc, eth = st.positions
    assert (btc.qty_base, btc.entry_price, btc.mark_price) == (D("0.3"), D(40_040), D(40_600))
    assert (eth.qty_base, eth.entry_price, eth.unrealised_pnl_usd) == (D(-2), D(2_000), D(100))
    assert eth.funding_usd == D("0.4") and eth.fees_usd == D("1.6")

    # flip BTC: sell 0.5 @ 41,000 (no fee) -> short 0.2, entry restarts at 41,000
    led.record_order(mk_order("s2", "BTCUSDT", Side.SELL, 0.5), layer="carry", mode="paper")
    led.record_fill(mk_fill("s2", "BTCUSDT", Side.SELL, "0.5", "41000", "0", T + 9), "104")
    btc = led.status().positions[0]
    assert (btc.qty_base, btc.entry_price, btc.unrealised_pnl_usd) == (D("-0.2"), D(41_000), 0)
    rep = led.audit()
    assert rep.ok, rep
    # equity: cash flows −11,913.2585 + 20,500 = 8,586.7415; value −0.2 × 41,000 = −8,200
    assert rep.recomputed_equity_usd == D("10000") + D("386.7415") + D("98.8")

    assert led.record_equity_snapshot("paper", T + 10)
    assert not led.record_equity_snapshot("paper", T + 10)


def test_audit_catches_a_position_out_of_step(ledger: Ledger, url: str) -> None:
    ledger.record_order(mk_order("b1", "BTCUSDT", Side.BUY, 1), layer="carry", mode="paper")
    ledger.record_fill(mk_fill("b1", "BTCUSDT", Side.BUY, "1", "100", "0.1", T), "1")
    assert ledger.audit().ok
    with ledger.engine.begin() as c:  # a lost update, simulated by hand
        c.execute(text("UPDATE positions SET qty_base = '2'"))
    rep = ledger.audit()
    assert not rep.ok
    assert rep.mismatches == ("binanceusdm/BTCUSDT/carry: qty 2 in positions, 1 from fills",)


def test_concurrent_writers_store_each_fill_once(url: str) -> None:
    init_db(url)
    fills = [
        mk_fill(
            "b1",
            "BTCUSDT",
            Side.BUY if i % 3 else Side.SELL,
            "0.01",
            str(40_000 + i),
            "0.02",
            T + i,
        )
        for i in range(40)
    ]
    with Ledger(url) as led:
        led.record_order(mk_order("b1", "BTCUSDT", Side.BUY, 1), layer="carry", mode="paper")
    inserted: list[int] = []
    errors: list[BaseException] = []

    def worker(seed: int) -> None:
        order = list(range(len(fills)))
        random.Random(seed).shuffle(order)
        try:
            with Ledger(url) as led:
                inserted.append(sum(led.record_fill(fills[i], f"tr{i}") for i in order))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(s,)) for s in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "writers deadlocked"
    assert not errors, errors
    assert sum(inserted) == 40
    with Ledger(url) as led:
        st = led.status()
        assert st.n_fills == 40
        # 26 buys and 14 sells of 0.01 (i % 3 == 0 for i in 0, 3, …, 39 → 14 sells)
        assert st.positions[0].qty_base == D("0.12")
        assert led.audit().ok


def test_switches_and_layers_survive_reopening(url: str) -> None:
    init_db(url)
    with Ledger(url) as led:
        assert led.kill_switch() is False
        led.set_kill_switch(True, T, "daily loss")
        led.set_layer("carry", True, T)
        led.set_layer("grid", False, T, "off by operator")
        led.set_layer("grid", True, T + 1)
        led.record_event("halt", "daily loss reached", T, {"pnl_usd": D("-5000")}, "halt-1")
        assert not led.record_event("halt", "again", T, None, "halt-1")
    with Ledger(url) as led:
        st = led.status()
        assert st.kill_switch is True and dict(st.layers) == {"carry": True, "grid": True}
        led.set_kill_switch(False, T + 2)
        assert led.kill_switch() is False
        with led.engine.connect() as c:
            assert c.execute(text("SELECT kind, message, data FROM events")).all() == [
                ("halt", "daily loss reached", '{"pnl_usd":"-5000"}')
            ]


# ---------------------------------------------------------------- snapshot and CLI


def test_snapshot_is_atomic_exact_and_validated(ledger: Ledger, tmp_path: Path) -> None:
    ledger.record_transfer("dep", D("1234.5678"), T)
    path = tmp_path / "state" / "live.json"
    write_snapshot(path, {"status": status_payload(ledger.status()), "mode": "paper"}, T)
    data = read_snapshot(path)
    assert data["ts_ns"] == T and data["mode"] == "paper"
    assert data["status"]["equity_usd"] == "1234.5678"
    assert [p.name for p in path.parent.iterdir()] == ["live.json"]  # no temp file left
    with pytest.raises(PerpdeskError, match="cannot write a object"):
        write_snapshot(path, {"bad": object()}, T + 1)
    assert read_snapshot(path)["ts_ns"] == T  # the old snapshot is intact
    path.write_text("{not json")
    with pytest.raises(PerpdeskError, match=r"live.json: not valid JSON"):
        read_snapshot(path)
    path.write_text(json.dumps({"version": 99}))
    with pytest.raises(PerpdeskError, match="not a version 1 snapshot"):
        read_snapshot(path)


def test_cli_init_db_and_status(url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for k in list(os.environ):
        if k.startswith("PERPDESK_") and k != "PERPDESK_TEST_PG_URL":
            monkeypatch.delenv(k)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COLUMNS", "200")
    runner = CliRunner()
    r = runner.invoke(app, ["init-db", "--url", url])
    assert r.exit_code == 0, r.output
    assert "ledger ready" in r.output and HEAD_REVISION in r.output
    with Ledger(url) as led:
        led.record_transfer("dep", D(10_000), T)
        led.record_order(mk_order("b1", "BTCUSDT", Side.BUY, 0.5), layer="carry", mode="paper")
        led.record_fill(mk_fill("b1", "BTCUSDT", Side.BUY, "0.5", "40000", "8", T + 1), "1")
        led.set_mark("binanceusdm", "BTCUSDT", D(40_100), T + 2)
    r = runner.invoke(app, ["status", "--url", url])
    assert r.exit_code == 0, r.output
    out = r.output
    # equity 10,000 − 20,000 − 8 + 0.5 × 40,100 = 10,042; cash 10,000 − 8 = 9,992
    assert "10,042.00" in out and "9,992.00" in out and "20,050.00" in out
    assert "BTCUSDT" in out and "carry" in out and "50,000.00" in out  # carry cap 50 % of 100k


def test_cli_kill_switch_and_layers(
    url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`perpdesk kill-switch on|off` and `perpdesk layer enable|disable NAME` write the ledger
    (the runner reads both every cycle); bad words and unknown layers get one clear line."""
    for k in list(os.environ):
        if k.startswith("PERPDESK_") and k != "PERPDESK_TEST_PG_URL":
            monkeypatch.delenv(k)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COLUMNS", "200")
    runner = CliRunner()
    assert runner.invoke(app, ["init-db", "--url", url]).exit_code == 0
    r = runner.invoke(app, ["kill-switch", "on", "--reason", "exchange incident", "--url", url])
    assert r.exit_code == 0, r.output
    with Ledger(url) as led:
        assert led.kill_switch() is True
    r = runner.invoke(app, ["status", "--url", url])
    assert "ON (halted)" in r.output
    r = runner.invoke(app, ["kill-switch", "off", "--url", url])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["layer", "disable", "grid", "--url", url])
    assert r.exit_code == 0, r.output
    with Ledger(url) as led:
        assert led.kill_switch() is False
        assert led.layers() == {"grid": False}
        with Session(led.engine) as s:
            kinds = list(s.scalars(select(EventRow.kind)))
    assert kinds.count("KILL_SWITCH") == 2 and kinds.count("LAYER") == 1
    r = runner.invoke(app, ["kill-switch", "maybe", "--url", url])
    assert r.exit_code != 0 and "say on or off" in str(r.exception)
    r = runner.invoke(app, ["layer", "disable", "nosuch", "--url", url])
    msg = str(r.exception)
    assert r.exit_code != 0 and "unknown" in msg and "carry" in msg and "\n" not in msg
    with Ledger(url) as led:  # the refused commands wrote nothing
        assert led.layers() == {"grid": False} and led.kill_switch() is False
