"""API keys: environment / .env only, masked everywhere; a known key fed through every path
(logs, ledger rows on SQLite and PostgreSQL, the snapshot, exception messages, the CLI)
must appear nowhere — the DB file and the snapshot are grepped byte by byte."""

from __future__ import annotations

import copy
import io
import json
import logging
import os
import pickle
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect, text
from typer.testing import CliRunner

import perpdesk.secrets as secrets_mod
from perpdesk.app.cli import app
from perpdesk.domain import Fill, Liquidity, Order, Side
from perpdesk.secrets import (
    ApiCredentials,
    RedactingFilter,
    Secret,
    SecretError,
    env_names,
    install_log_redaction,
    json_default,
    load_api_credentials,
    redact,
    register_env_secrets,
)
from perpdesk.store import Ledger, LedgerError, init_db, status_payload, write_snapshot
from tests.test_store import PG_BASE, drop_schema, pg_schema_url

KEY = "pdkTESTkey7f3a9c2e1b5d4f60a8e9"  # made up; never a real key
SECRET = "pdkTESTsecret0c4b8d2a6e1f9357"
T = 1_700_000_000_000_000_000


def test_env_names() -> None:
    assert env_names("binanceusdm") == (
        "PERPDESK_BINANCEUSDM_API_KEY",
        "PERPDESK_BINANCEUSDM_API_SECRET",
        "PERPDESK_BINANCEUSDM_API_PASSPHRASE",
    )
    assert env_names("okx-v5")[0] == "PERPDESK_OKX_V5_API_KEY"
    with pytest.raises(SecretError, match="no usable name"):
        env_names("--")


def test_secret_never_shows_its_value() -> None:
    s = Secret(KEY)
    shown = [repr(s), str(s), f"{s}", f"{s:>40}", "%s" % s, f"{s}", f"{s!r}"]  # noqa: UP031
    assert all(KEY not in x for x in shown) and str(s) == "***"
    assert json.dumps({"k": s}, default=json_default) == '{"k": "***"}'
    assert s.reveal() == KEY and s == Secret(KEY) and s != Secret(SECRET)
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(s)
    assert copy.deepcopy(s) is s
    with pytest.raises(AttributeError):
        s._value = "x"  # type: ignore[misc]
    creds = ApiCredentials("binanceusdm", Secret(KEY), Secret(SECRET))
    assert KEY not in repr(creds) and SECRET not in repr(creds)


def test_keys_come_from_env_then_dotenv(tmp_path: Path) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text(
        f"PERPDESK_BYBIT_API_KEY={KEY}\nPERPDESK_BYBIT_API_SECRET='{SECRET}'\n# comment\n"
    )
    c = load_api_credentials("bybit", environ={}, dotenv_path=dotenv)
    assert (c.api_key.reveal(), c.api_secret.reveal(), c.passphrase) == (KEY, SECRET, None)
    # the environment wins over .env
    c = load_api_credentials(
        "bybit", environ={"PERPDESK_BYBIT_API_KEY": "fromenvironment1"}, dotenv_path=dotenv
    )
    assert (c.api_key.reveal(), c.api_secret.reveal()) == ("fromenvironment1", SECRET)
    with pytest.raises(
        SecretError,
        match=r"^secrets: PERPDESK_OKX_API_KEY, PERPDESK_OKX_API_SECRET, "
        r"PERPDESK_OKX_API_PASSPHRASE not set in the environment or .*\.env$",
    ):
        load_api_credentials("okx", environ={}, dotenv_path=dotenv, require_passphrase=True)
    with pytest.raises(SecretError) as e:
        load_api_credentials(
            "bybit",
            environ={"PERPDESK_BYBIT_API_KEY": f" {KEY}x ", "PERPDESK_BYBIT_API_SECRET": SECRET},
            dotenv_path=None,
        )
    assert str(e.value) == "secrets: PERPDESK_BYBIT_API_KEY has leading or trailing whitespace"
    assert register_env_secrets({"PERPDESK_X_API_SECRET": "zzzregisteredzzz", "OTHER": "a"}, None)
    assert redact("a zzzregisteredzzz b") == "a *** b"


def _all_text_in_db(url: str) -> str:
    eng = create_engine(url)
    parts = []
    with eng.connect() as c:
        for table in inspect(c).get_table_names():
            parts += [repr(tuple(r)) for r in c.execute(text(f'SELECT * FROM "{table}"'))]
    eng.dispose()
    return "\n".join(parts)


def _feed_ledger(url: str, key: str) -> None:
    """Every free-text field of the ledger gets the key."""
    init_db(url)
    with Ledger(url) as led:
        led.record_transfer("dep", Decimal(1000), T, note=f"deposit with {key}")
        led.record_order(
            Order("c1", "binanceusdm", "BTCUSDT", Side.BUY, 0.01),
            layer="carry",
            mode="paper",
            note=f"signed with {key}",
        )
        fill = Fill(
            "c1", "binanceusdm", "BTCUSDT", Side.BUY, Decimal("0.01"), Decimal(40_000),
            Decimal("0.16"), Liquidity.TAKER, T,
        )  # fmt: skip
        led.record_fill(fill, "1")
        led.record_event("error", f"exchange said: bad key {key}", T, {"key": key, "n": 1})
        led.record_event("error", "as a Secret", T + 1, {"key": Secret(key)})
        led.set_layer("carry", False, T, reason=f"disabled ({key})")
        led.set_kill_switch(True, T, reason=key)
        with pytest.raises(LedgerError) as e:  # an error message that would carry it
            led.record_order(
                Order("c1", "binanceusdm", key, Side.BUY, 0.01), layer="carry", mode="paper"
            )
        assert key not in str(e.value) and "***" in str(e.value)


def test_a_known_key_appears_nowhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for k in list(os.environ):
        if k.startswith("PERPDESK_") and k != "PERPDESK_TEST_PG_URL":
            monkeypatch.delenv(k)
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text(
        f"PERPDESK_BINANCEUSDM_API_KEY={KEY}\nPERPDESK_BINANCEUSDM_API_SECRET={SECRET}\n"
    )
    creds = load_api_credentials("binanceusdm")  # from ./.env
    key = creds.api_key.reveal()
    assert key == KEY

    # 1. logs: message, %-args, exception text, through a filtered handler and through the
    #    process-wide record factory (a handler with no filter of its own)
    log = logging.getLogger("perpdesk.test_secrets")
    log.setLevel(logging.DEBUG)
    log.propagate = False
    filtered, unfiltered = io.StringIO(), io.StringIO()
    h1 = logging.StreamHandler(filtered)
    h1.addFilter(RedactingFilter())
    h2 = logging.StreamHandler(unfiltered)
    log.addHandler(h1)
    old_factory = logging.getLogRecordFactory()
    try:
        log.warning("placing order with key %s and %r", key, creds)
        log.info(f"f-string {key}")
        try:
            raise RuntimeError(f"HTTP 401 for apiKey={key}")
        except RuntimeError:
            log.exception("call failed")
        install_log_redaction()
        install_log_redaction()  # idempotent
        log.addHandler(h2)
        log.removeHandler(h1)
        log.error("again %s", key, stack_info=True)
        try:
            raise ValueError(SECRET)
        except ValueError:
            log.exception("secret in exception")
    finally:
        logging.setLogRecordFactory(old_factory)
        monkeypatch.setattr(secrets_mod, "_installed", False)
        log.removeHandler(h1)
        log.removeHandler(h2)
    logs = filtered.getvalue() + unfiltered.getvalue()
    assert "HTTP 401 for apiKey=***" in logs and "again ***" in logs
    assert "ValueError: ***" in logs

    # 2. ledger rows: SQLite (grep the file and its WAL) and PostgreSQL (every row)
    db = tmp_path / "ledger.sqlite"
    sqlite_url = f"sqlite:///{db}"
    _feed_ledger(sqlite_url, key)
    pg_url, schema = pg_schema_url()
    try:
        _feed_ledger(pg_url, key)
        pg_rows = _all_text_in_db(pg_url)
    finally:
        drop_schema(schema)
    assert "deposit with ***" in pg_rows
    db_bytes = b"".join(p.read_bytes() for p in tmp_path.glob("ledger.sqlite*"))
    assert b"deposit with ***" in db_bytes or "deposit with ***" in _all_text_in_db(sqlite_url)

    # 3. the snapshot: a Secret, the credentials, the raw key in a string
    snap = tmp_path / "state.json"
    with Ledger(sqlite_url) as led:
        payload = {"status": status_payload(led.status()), "creds": creds, "note": f"k={key}"}
    write_snapshot(snap, payload, T)
    snap_bytes = snap.read_bytes()

    # 4. exception messages: a DB URL with the key as password, a bad .env
    with pytest.raises(LedgerError) as e1:
        init_db(f"postgresql+psycopg://postgres:{key}@127.0.0.1:1/test")
    with pytest.raises(SecretError) as e2:
        load_api_credentials("binanceusdm", environ={"PERPDESK_BINANCEUSDM_API_KEY": key + " "})
    errors = f"{e1.value}\n{e2.value}\n{e1.value!r}"

    # 5. CLI status, with the key in the environment and as the PostgreSQL password
    #    (trust auth ignores it), and the ledger's texts holding it
    monkeypatch.setenv("PERPDESK_BINANCEUSDM_API_KEY", key)
    monkeypatch.setenv("COLUMNS", "250")
    runner = CliRunner()
    r1 = runner.invoke(app, ["status", "--url", sqlite_url])
    pg_url, schema = pg_schema_url()
    try:
        pw_url = pg_url.replace("postgres@", f"postgres:{key}@")
        assert PG_BASE.startswith("postgresql+psycopg://postgres@")
        r2 = runner.invoke(app, ["init-db", "--url", pw_url])
        r3 = runner.invoke(app, ["status", "--url", pw_url])
    finally:
        drop_schema(schema)
    for r in (r1, r2, r3):
        assert r.exit_code == 0, r.output
    cli = r1.output + r2.output + r3.output
    assert "postgres:***@" in cli and "ON (halted)" in r1.output

    for where, blob in [
        ("logs", logs),
        ("postgresql rows", pg_rows),
        ("snapshot", snap_bytes.decode()),
        ("errors", errors),
        ("cli", cli),
    ]:
        assert key not in blob and SECRET not in blob, where
    assert key.encode() not in db_bytes and SECRET.encode() not in db_bytes
    assert b'"creds"' in snap_bytes and b"***" in snap_bytes
