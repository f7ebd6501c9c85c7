"""`perpdesk audit --exchange bybit|okx`: the read-only check of both legs of the carry (the
perp venue and the spot client of the same unified account) against the loopback fakes of
tests/fake_venues.py, the CLI run as a real subprocess with the keys in its environment and
the hidden ``--api-url`` flag pointing both legs at the fake (one host serves both).

Key permissions: Bybit ``GET /v5/user/query-api`` is the recorded answer
(``other-venues/bybit/http_get_user_query_api.json``: ContractTrade Order+Position, Spot
SpotTrade, Derivatives DerivativesTrade, Wallet AccountTransfer+SubMemberTransfer, IPs
18.181.170.164, 13.212.45.47, 13.212.45.48, readOnly 1) with the fields a test changes; OKX
``GET /api/v5/account/config`` is synthesized from the documented fields (``perm``,
``ip``, ``acctLv``, ``posMode``). Balances: the fakes' wallet of 10,000 USDT plus a deposit
of 0.25 BTC (one unified account: both legs see both coins; the spot leg's "positions" are
its base-asset holdings, so BTC is 1 open). Market counts are worked out from the fakes'
served instrument lists (module docstring of tests/fake_venues.py): Bybit's capture holds
800 linear instruments of which 760 are ``LinearPerpetual`` (40 dated futures) and 557 spot
pairs; OKX's 166 swaps are 126 USDT-margined + 40 coin-margined, plus the synthesized
HYPE-USDT-SWAP = 127 linear, and 518 spot pairs.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.fake_venues import FakeBybit, FakeOKX

NOW_MS = 1_786_310_820_000
KEY, SECRET, PHRASE = "audit-key-7f3a9c2e51", "audit-secret-0b8d64e2a7", "audit-phrase-5c19e"
PERPDESK = str(Path(__file__).resolve().parents[1] / ".venv" / "bin" / "perpdesk")
CHECKS = ["connect", "markets", "balances", "positions", "open orders", "permissions"]
BYBIT_IPS = "18.181.170.164,13.212.45.47,13.212.45.48"  # the recorded key's ips


def make(venue: str) -> FakeBybit | FakeOKX:
    if venue == "bybit":
        return FakeBybit(NOW_MS, api_key=KEY, api_secret=SECRET)
    return FakeOKX(NOW_MS, api_key=KEY, api_secret=SECRET, passphrase=PHRASE)


def markets(fake: FakeBybit | FakeOKX) -> tuple[int, int]:
    """(perps, spot pairs) the fake serves, counted from its lists: Bybit's perpetuals
    (``contractType`` LinearPerpetual, trading) and spot pairs; OKX's USDT-margined linear
    swaps and spot pairs that are live."""
    if isinstance(fake, FakeBybit):
        lin = fake.instruments["linear"]["result"]["list"]
        perps = [x for x in lin if x["contractType"] == "LinearPerpetual"]
        spot = fake.instruments["spot"]["result"]["list"]
        return (
            len([x for x in perps if x["status"] == "Trading"]),
            len([x for x in spot if x["status"] == "Trading"]),
        )
    sw = fake.instruments["SWAP"]["data"]
    sp = fake.instruments["SPOT"]["data"]
    return (
        len([x for x in sw if x["ctType"] == "linear" and x["state"] == "live"]),
        len([x for x in sp if x["state"] == "live"]),
    )


def audit(
    venue: str, fake: FakeBybit | FakeOKX, cwd: Path
) -> tuple[int, dict[str, tuple[str, str]], str]:
    """Run ``perpdesk audit --exchange <venue>`` against ``fake``; (exit code, rows by check
    name → (ok, detail), stdout + stderr)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PERPDESK_")}
    name = venue.upper()
    env.update(
        {
            f"PERPDESK_{name}_API_KEY": KEY,
            f"PERPDESK_{name}_API_SECRET": SECRET,
            "COLUMNS": "400",  # one line per table row
            "NO_COLOR": "1",
        }
    )
    if venue == "okx":
        env["PERPDESK_OKX_API_PASSPHRASE"] = PHRASE
    res = subprocess.run(
        [PERPDESK, "audit", "--exchange", venue, "--api-url", fake.url],
        cwd=cwd,  # no .env there
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    rows: dict[str, tuple[str, str]] = {}
    for line in res.stdout.splitlines():
        cells = [c.strip() for c in line.strip().strip("│").split("│")]
        if line.startswith("│") and len(cells) == 3:
            rows[cells[0]] = (cells[1], cells[2])
    return res.returncode, rows, res.stdout + res.stderr


def assert_read_only_and_no_keys(fake: FakeBybit | FakeOKX, out: str) -> None:
    methods = {r.method for r in fake.requests}
    assert methods == {"GET"}, methods  # nothing placed, cancelled or changed; no websocket
    assert not [r.path for r in fake.requests if "create" in r.path or "cancel" in r.path]
    for secret in (KEY, SECRET, PHRASE):
        assert secret not in out


def expected_rows(
    venue: str, fake: FakeBybit | FakeOKX, permissions: tuple[str, str]
) -> dict[str, tuple[str, str]]:
    perps, spots = markets(fake)
    usdt = "USDT 10000" if venue == "bybit" else "USDT 10000.0"
    btc = "BTC 0.25"
    rows: dict[str, tuple[str, str]] = {}
    for leg, n, held in (("perp", perps, 0), ("spot", spots, 1)):
        rows[f"{leg}: connect"] = ("ok", "markets loaded")
        rows[f"{leg}: markets"] = ("ok", f"{n} instruments")
        rows[f"{leg}: balances"] = ("ok", f"{btc}, {usdt}")
        rows[f"{leg}: positions"] = ("ok", f"{held} open")
        rows[f"{leg}: open orders"] = ("ok", "0 open")
        rows[f"{leg}: permissions"] = permissions
    return rows


def test_market_counts_worked_out_by_hand() -> None:
    """The reference counts of the module docstring, from the fakes' lists."""
    with make("bybit") as b, make("okx") as o:
        assert markets(b) == (760, 557)
        assert markets(o) == (127, 518)


@pytest.mark.parametrize("venue", ["bybit", "okx"])
def test_trade_only_key_passes_every_row_of_both_legs(venue: str, tmp_path: Path) -> None:
    with make(venue) as fake:
        fake.deposit("BTC", "0.25")
        fake.set_key_permissions(read_only=False, withdraw=False)
        code, rows, out = audit(venue, fake, tmp_path)
        assert code == 0, out
        if venue == "bybit":
            perm = (
                "readOnly=0, ContractTrade=Order+Position, Spot=SpotTrade, "
                "Derivatives=DerivativesTrade, Wallet=AccountTransfer+SubMemberTransfer, "
                f"withdraw=False, ipRestrict={BYBIT_IPS}"
            )
        else:
            perm = (
                "perm=read_only+trade, withdraw=False, ipRestrict=none, acctLv=2, posMode=net_mode"
            )
        assert rows == expected_rows(venue, fake, ("ok", perm))
        assert [k.split(": ")[1] for k in rows] == CHECKS * 2  # perp rows, then spot rows
        assert_read_only_and_no_keys(fake, out)
        perm_path = "/v5/user/query-api" if venue == "bybit" else "/api/v5/account/config"
        assert len(fake.requests_to(perm_path)) >= 2  # once per leg (ccxt reads Bybit's too)


@pytest.mark.parametrize("venue", ["bybit", "okx"])
def test_withdraw_enabled_key_fails_the_permission_rows(venue: str, tmp_path: Path) -> None:
    with make(venue) as fake:
        fake.deposit("BTC", "0.25")
        if venue == "bybit":  # no IP bound: Bybit reports ["*"] and an expiry
            fake.set_key_permissions(
                read_only=False,
                withdraw=True,
                ips=["*"],
                expired_at="2027-02-21T03:20:45Z",
                deadline_day=90,
            )
            perm = (
                "readOnly=0, ContractTrade=Order+Position, Spot=SpotTrade, "
                "Derivatives=DerivativesTrade, "
                "Wallet=AccountTransfer+SubMemberTransfer+Withdraw, withdraw=True, "
                "ipRestrict=none, expiredAt=2027-02-21T03:20:45Z (90 d) "
                "(withdrawals enabled: use a key without them)"
            )
        else:
            fake.set_key_permissions(withdraw=True, ips=["203.0.113.7", "198.51.100.2"])
            fake.engine.hedge = True
            perm = (
                "perm=read_only+trade+withdraw, withdraw=True, "
                "ipRestrict=203.0.113.7,198.51.100.2, acctLv=2, posMode=long_short_mode "
                "(withdrawals enabled: use a key without them)"
            )
        code, rows, out = audit(venue, fake, tmp_path)
        assert code == 1, out
        assert rows == expected_rows(venue, fake, ("FAIL", perm))
        assert_read_only_and_no_keys(fake, out)


@pytest.mark.parametrize("venue", ["bybit", "okx"])
def test_read_only_key_fails_the_permission_rows(venue: str, tmp_path: Path) -> None:
    with make(venue) as fake:
        fake.deposit("BTC", "0.25")
        fake.set_key_permissions(read_only=True, withdraw=False)
        if venue == "bybit":  # the recorded key as it is: readOnly 1
            perm = (
                "readOnly=1, ContractTrade=Order+Position, Spot=SpotTrade, "
                "Derivatives=DerivativesTrade, Wallet=AccountTransfer+SubMemberTransfer, "
                f"withdraw=False, ipRestrict={BYBIT_IPS} (read-only key: it cannot trade)"
            )
        else:
            perm = (
                "perm=read_only, withdraw=False, ipRestrict=none, acctLv=2, "
                "posMode=net_mode (read-only key: it cannot trade)"
            )
        code, rows, out = audit(venue, fake, tmp_path)
        assert code == 1, out
        assert rows == expected_rows(venue, fake, ("FAIL", perm))
        assert_read_only_and_no_keys(fake, out)
