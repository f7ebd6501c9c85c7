"""The ccxt history downloader against a real HTTP server on 127.0.0.1 that replays real
Binance USDⓈ-M data (tests/fake_exchange.py): pagination, faults, resume, CLI.

Expected rows are read from the source files here, independently of the downloader."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from perpdesk.data.catalog import Catalog
from perpdesk.data.sources.ccxt_download import (
    CcxtDownloader,
    DownloadError,
    RetryPolicy,
    parse_datasets,
)
from tests.fake_exchange import (
    INTERVAL_MS,
    FakeBinanceUSDM,
    Fault,
    binance_kline_rows,
    path_of,
)
from tests.realdata import feather_bars, shared_file

NS_PER_MS = 1_000_000
H_MS = 3_600_000
FUNDING = "/fapi/v1/fundingRate"
KLINES = "/fapi/v1/klines"
OI_HIST = "/futures/data/openInterestHist"
NOW_MS = 1_767_100_000_000  # 2025-12-30T13:06:40Z, after the last settlement in the file


def ms(date: str) -> int:
    return int(np.datetime64(date, "ms").astype(np.int64))


def funding_records(coin: str) -> list[dict]:
    """The saved Binance fundingRate history: {coin, funding_rate (str), time (ms)}."""
    path = shared_file(f"funding/binance_{coin}_funding_rates.json")
    return json.loads(path.read_text())


def expected_funding(coin: str, lo_ms: int, hi_ms: int) -> tuple[np.ndarray, np.ndarray]:
    """(ts_ns rounded to the whole second, rate) of settlements with lo <= raw time < hi."""
    recs = [r for r in funding_records(coin) if lo_ms <= r["time"] < hi_ms]
    ts = np.array([round(r["time"] / 1000) * 1_000_000_000 for r in recs], dtype=np.int64)
    return ts, np.array([float(r["funding_rate"]) for r in recs])


class SleepRecorder:
    """Injected instead of time.sleep: records the waits, sleeps not at all."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


@pytest.fixture()
def fake():
    with FakeBinanceUSDM(now_ms=NOW_MS) as f:
        for coin in ("BTC", "ETH"):
            recs = funding_records(coin)
            f.set_funding(
                f"{coin}USDT", [r["time"] for r in recs], [r["funding_rate"] for r in recs]
            )
        yield f


def downloader(
    fake: FakeBinanceUSDM, root: Path, sleep: SleepRecorder | None = None, **kw
) -> CcxtDownloader:
    retry = RetryPolicy(
        max_attempts=kw.pop("max_attempts", 8),
        base_delay_s=0.001,
        max_delay_s=0.01,
        sleep=sleep or SleepRecorder(),
    )
    return CcxtDownloader(
        "binanceusdm",
        Catalog(root),
        api_url=fake.url,
        retry=retry,
        timeout_ms=500,
        exchange_config={"rateLimit": 1, **kw.pop("exchange_config", {})},
        clock_ms=lambda: fake.now_ms,
        **kw,
    )


def assert_funding(root: Path, symbol: str, ts: np.ndarray, rate: np.ndarray) -> None:
    t = Catalog(root).read("binance", "funding", symbol)
    got = t.column("ts_ns").to_numpy()
    np.testing.assert_array_equal(got, ts)
    np.testing.assert_array_equal(t.column("funding_rate").to_numpy(), rate)
    assert np.unique(got).size == got.size  # no duplicates
    assert set(np.diff(got) // (H_MS * NS_PER_MS)) == {8}  # no gaps: every 8 h
    assert set(t.column("funding_interval_h").to_pylist()) == {8}


# -- funding ----------------------------------------------------------------------------------
def test_full_funding_history_paginates_1000_at_a_time(fake, tmp_path: Path) -> None:
    res = downloader(fake, tmp_path).download(parse_datasets("funding"), ["BTCUSDT"], 0)
    ts, rate = expected_funding("BTC", 0, NOW_MS)
    assert ts.size == 4377  # 2022-01-01 00:00 → 2025-12-29 16:00, every 8 h
    assert_funding(tmp_path, "BTCUSDT", ts, rate)
    assert (res[0].fetched_rows, res[0].new_rows) == (4377, 4377)
    # 5 pages of <= 1000 (1000×4 + 377), then one empty answer ends the range
    starts = [r.int_param("startTime") for r in fake.requests_to(FUNDING)]
    raw = [r["time"] for r in funding_records("BTC")]
    assert starts == [0, raw[999] + 1, raw[1999] + 1, raw[2999] + 1, raw[3999] + 1, raw[-1] + 1]
    assert all(r.int_param("limit") == 1000 for r in fake.requests_to(FUNDING))


def test_transient_faults_are_retried_and_rows_complete(fake, tmp_path: Path) -> None:
    sleep = SleepRecorder()
    fake.inject(
        FUNDING,
        Fault.rate_limited(7),  # 429, Retry-After: 7 s
        Fault.server_error(503),
        Fault.delay(0.8),  # longer than the 0.5 s client timeout
        Fault.truncated(),  # 200 with half a JSON body
        Fault.banned(3),  # 418, Retry-After: 3 s
    )
    lo, hi = ms("2023-01-01"), ms("2023-12-01")
    dl = downloader(fake, tmp_path, sleep)
    dl.download(parse_datasets("funding"), ["BTCUSDT"], lo * NS_PER_MS, hi * NS_PER_MS)
    ts, rate = expected_funding("BTC", lo, hi)
    assert ts.size == 334 * 3  # 334 days × 3 settlements
    assert_funding(tmp_path, "BTCUSDT", ts, rate)
    served = [r.fault for r in fake.requests_to(FUNDING)]
    # 5 faults, then 2 pages (1000 + 2 rows) and the empty answer that ends the range
    assert served == ["status", "status", "delay", "truncated", "status", None, None, None]
    # one wait per fault; after a 429/418 at least Retry-After, else the tiny backoff
    assert len(sleep.waits) == 5
    assert sleep.waits[0] >= 7 and sleep.waits[4] >= 3
    assert all(w <= 0.01 for w in sleep.waits[1:4])


def test_gives_up_after_max_attempts_with_one_line_error(fake, tmp_path: Path) -> None:
    fake.inject(FUNDING, *[Fault.server_error(502)] * 3)
    dl = downloader(fake, tmp_path, max_attempts=3)
    with pytest.raises(DownloadError) as err:
        dl.download(parse_datasets("funding"), ["BTCUSDT"], ms("2023-01-01") * NS_PER_MS)
    msg = str(err.value)
    assert "\n" not in msg and "BTCUSDT" in msg and "funding" in msg
    assert "gave up after 3 attempts" in msg and "ExchangeNotAvailable" in msg
    assert Catalog(tmp_path).symbols("binance", "funding") == []


def test_non_transient_error_fails_at_once_and_keeps_earlier_pages(fake, tmp_path: Path) -> None:
    sleep = SleepRecorder()
    lo = ms("2022-01-01")
    root2 = tmp_path / "two"
    dl = downloader(fake, root2, sleep)
    # page 1 is served; page 2 is refused with Binance's invalid-key error (no retry)
    fake.inject(FUNDING, Fault.delay(0))  # page 1: answered normally
    fake.inject(
        FUNDING, Fault.binance_error(401, -2015, "Invalid API-key, IP, or permissions for action.")
    )
    with pytest.raises(DownloadError) as err:
        dl.download(parse_datasets("funding"), ["BTCUSDT"], lo * NS_PER_MS)
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith("binanceusdm BTCUSDT funding: AuthenticationError")
    assert len(fake.requests_to(FUNDING)) == 2 and sleep.waits == []
    # exactly the first page (1000 settlements) is stored, nothing of the refused one
    ts, rate = expected_funding("BTC", lo, funding_records("BTC")[999]["time"] + 1)
    assert ts.size == 1000
    assert_funding(root2, "BTCUSDT", ts, rate)


def test_unknown_symbol_is_a_clean_error_and_writes_nothing(fake, tmp_path: Path) -> None:
    dl = downloader(fake, tmp_path)
    with pytest.raises(DownloadError, match=r"^binanceusdm XYZUSDT: unknown symbol"):
        dl.download(parse_datasets("funding"), ["XYZUSDT"], ms("2024-01-01") * NS_PER_MS)
    assert not (tmp_path / "binance").exists()
    assert fake.requests_to(FUNDING) == []


def test_resume_fetches_only_what_is_missing(fake, tmp_path: Path) -> None:
    held_lo, held_hi = ms("2023-01-01"), ms("2023-07-01")
    dl = downloader(fake, tmp_path)
    dl.download(parse_datasets("funding"), ["ETHUSDT"], held_lo * NS_PER_MS, held_hi * NS_PER_MS)
    held_ts, _ = expected_funding("ETH", held_lo, held_hi)
    assert held_ts.size == 181 * 3  # Jan..Jun 2023: 181 days
    fake.requests.clear()

    lo, hi = ms("2022-06-01"), ms("2024-01-01")
    res = downloader(fake, tmp_path).download(
        parse_datasets("funding"), ["ETHUSDT"], lo * NS_PER_MS, hi * NS_PER_MS
    )
    ts, rate = expected_funding("ETH", lo, hi)
    assert_funding(tmp_path, "ETHUSDT", ts, rate)
    assert res[0].new_rows == ts.size - held_ts.size == (579 - 181) * 3  # 214 + 365 days
    # the requests cover only [since, first held) and (last held, until)
    first_held_ms, last_held_ms = held_ts[0] // NS_PER_MS, held_ts[-1] // NS_PER_MS
    reqs = fake.requests_to(FUNDING)
    windows = [(r.int_param("startTime"), r.int_param("endTime")) for r in reqs]
    head = [w for w in windows if w[1] == first_held_ms - 500]  # up to the first held one
    tail = [w for w in windows if w[1] == hi - 1]
    assert len(head) + len(tail) == len(windows)
    assert head[0][0] == lo  # the head starts at --since
    assert tail[0][0] == last_held_ms + 500  # the tail starts after the last held one
    for start, end in windows:
        assert end < first_held_ms or start > last_held_ms
    # a third run over the same range only asks for the 8 h after the last settlement
    # (2023-12-31 16:00, the next one at 2024-01-01 00:00 is past --until) and adds nothing
    fake.requests.clear()
    res = downloader(fake, tmp_path).download(
        parse_datasets("funding"), ["ETHUSDT"], lo * NS_PER_MS, hi * NS_PER_MS
    )
    assert res[0].new_rows == 0
    last_ms = ms("2023-12-31T16:00")
    assert [
        (r.int_param("startTime"), r.int_param("endTime")) for r in fake.requests_to(FUNDING)
    ] == [(last_ms + 500, hi - 1)]


# -- OHLCV ------------------------------------------------------------------------------------
def serve_bars(
    fake: FakeBinanceUSDM, symbol: str, coin: str, lo: int, hi: int, tf: str = "15m"
) -> dict:
    bars = feather_bars(f"{coin}_USDT_USDT-{tf}-futures.feather")
    ts_ms = bars["ts_ns"] // NS_PER_MS
    keep = (ts_ms >= lo) & (ts_ms < hi)
    cols = {k: v[keep] for k, v in bars.items()}
    fake.set_klines(
        symbol,
        tf,
        binance_kline_rows(
            ts_ms[keep],
            INTERVAL_MS[tf],
            cols["open"],
            cols["high"],
            cols["low"],
            cols["close"],
            cols["volume"],
        ),
    )
    return cols


def test_ohlcv_pages_and_matches_the_feather_file(fake, tmp_path: Path) -> None:
    src = serve_bars(fake, "BTCUSDT", "BTC", ms("2023-12-01"), ms("2024-03-01"))
    lo, hi = ms("2024-01-01"), ms("2024-02-01")
    dl = downloader(fake, tmp_path)
    res = dl.download(parse_datasets("ohlcv:15m"), ["BTCUSDT"], lo * NS_PER_MS, hi * NS_PER_MS)
    t = Catalog(tmp_path).read("binance", "perp_bars_15m", "BTCUSDT")
    keep = (src["ts_ns"] >= lo * NS_PER_MS) & (src["ts_ns"] < hi * NS_PER_MS)
    assert keep.sum() == 31 * 96 == t.num_rows == res[0].new_rows
    np.testing.assert_array_equal(t.column("ts_ns").to_numpy(), src["ts_ns"][keep])
    assert set(np.diff(t.column("ts_ns").to_numpy())) == {900 * 10**9}  # no gaps, no dups
    for col, name in [("open", "open"), ("high", "high"), ("low", "low"), ("close", "close")]:
        np.testing.assert_array_equal(t.column(col).to_numpy(), src[name][keep])
    np.testing.assert_array_equal(t.column("volume_base").to_numpy(), src["volume"][keep])
    # Binance kline field 7 (quote volume) as the fake built it: volume × (o+h+l+c)/4
    o, h, lw, c, v = (src[k][keep] for k in ("open", "high", "low", "close", "volume"))
    np.testing.assert_array_equal(t.column("volume_quote").to_numpy(), v * (o + h + lw + c) / 4)
    # 2976 bars at ccxt's 1000 per request: 3 pages, each from 1 ms after the last bar
    # of the one before (bar k opens at lo + k × 15 min), then an empty answer
    starts = [r.int_param("startTime") for r in fake.requests_to(KLINES)]
    assert starts == [lo, lo + 999 * 900_000 + 1, lo + 1999 * 900_000 + 1, lo + 2975 * 900_000 + 1]


def test_ohlcv_never_stores_the_bar_still_open(fake, tmp_path: Path) -> None:
    serve_bars(fake, "BTCUSDT", "BTC", ms("2024-01-01"), ms("2024-02-01"))
    fake.now_ms = ms("2024-01-15T00:07")  # the 00:00 bar is open until 00:15
    dl = downloader(fake, tmp_path)
    dl.download(parse_datasets("ohlcv:15m"), ["BTCUSDT"], ms("2024-01-14") * NS_PER_MS)
    ts = Catalog(tmp_path).read("binance", "perp_bars_15m", "BTCUSDT").column("ts_ns")
    assert len(ts) == 96  # the whole of Jan 14 and nothing of Jan 15
    assert ts[-1].as_py() == ms("2024-01-14T23:45") * NS_PER_MS
    # a later run picks the bar up once it has closed
    fake.now_ms = ms("2024-01-15T00:15")
    fake.requests.clear()
    downloader(fake, tmp_path).download(
        parse_datasets("ohlcv:15m"), ["BTCUSDT"], ms("2024-01-14") * NS_PER_MS
    )
    ts = Catalog(tmp_path).read("binance", "perp_bars_15m", "BTCUSDT").column("ts_ns")
    assert len(ts) == 97 and ts[-1].as_py() == ms("2024-01-15") * NS_PER_MS
    assert fake.requests_to(KLINES)[0].int_param("startTime") == ms("2024-01-14T23:45") + 1


# -- open interest ------------------------------------------------------------------------------
def test_open_interest_respects_the_30_day_lookback(fake, tmp_path: Path) -> None:
    rec = json.loads(path_of("open_interest_historical").read_text())  # two 5m rows, 2020-03-02
    t_ms = [int(r["timestamp"]) for r in rec]
    fake.set_open_interest(
        "BTCUSDT",
        "5m",
        t_ms,
        [r["sumOpenInterest"] for r in rec],
        [r["sumOpenInterestValue"] for r in rec],
    )
    fake.now_ms = t_ms[-1] + 6 * H_MS
    dl = downloader(fake, tmp_path)
    res = dl.download(parse_datasets("open_interest:5m"), ["BTCUSDT"], ms("2020-01-01") * 10**6)
    t = Catalog(tmp_path).read("binance", "open_interest", "BTCUSDT")
    assert t.column("ts_ns").to_pylist() == [x * NS_PER_MS for x in t_ms]
    assert t.column("open_interest_base").to_pylist() == [20403.637, 20401.367]
    assert t.column("open_interest_usd").to_pylist() == [150570784.07809979, 149940752.14464448]
    assert "last 30 days" in res[0].notes[0]
    reqs = fake.requests_to(OI_HIST)
    floor = fake.now_ms - 30 * 24 * H_MS
    assert all(r.int_param("startTime") >= floor for r in reqs)
    # windows of at most 500 periods of 5 min (Binance's openInterestHist maximum)
    spans = [r.int_param("endTime") - r.int_param("startTime") + 1 for r in reqs]
    assert max(spans) == 500 * 300_000
    assert all(r.query["period"] == "5m" and r.int_param("limit") == 500 for r in reqs)


# -- snapshots ---------------------------------------------------------------------------------
def test_tickers_funding_snapshot_and_leverage_tiers(fake, tmp_path: Path) -> None:
    fake.set_json(
        "/fapi/v1/fundingInfo",
        [
            {
                "symbol": "ETHUSDT",
                "adjustedFundingRateCap": "0.02000000",
                "adjustedFundingRateFloor": "-0.02000000",
                "fundingIntervalHours": 4,
                "disclaimer": False,
            }
        ],
    )
    brackets = [
        {
            "symbol": "BTCUSDT",
            "brackets": [
                {
                    "bracket": 1,
                    "initialLeverage": 125,
                    "notionalCap": 50000,
                    "notionalFloor": 0,
                    "maintMarginRatio": 0.004,
                    "cum": 0.0,
                },
                {
                    "bracket": 2,
                    "initialLeverage": 100,
                    "notionalCap": 600000,
                    "notionalFloor": 50000,
                    "maintMarginRatio": 0.005,
                    "cum": 50.0,  # = 50000 × (0.005 − 0.004)
                },
            ],
        }
    ]
    fake.set_json("/fapi/v1/leverageBracket", brackets)
    dl = downloader(fake, tmp_path, exchange_config={"apiKey": "k", "secret": "s"})

    ticker = json.loads(path_of("ticker_24hr").read_text())
    (t,) = dl.tickers_24h(["BTCUSDT"])
    assert (t.symbol, t.ts_ns) == ("BTCUSDT", ticker["closeTime"] * NS_PER_MS)
    assert (t.last_px, t.open_px, t.high_px, t.low_px) == (4.000002, 99.0, 100.0, 0.1)
    assert (t.volume_base, t.volume_quote, t.change_pct) == (8913.3, 15.3, -95.96)

    prem = json.loads(path_of("premium_index").read_text())
    snaps = {s.symbol: s for s in dl.funding_snapshot()}
    assert set(snaps) == {"BTCUSDT", "ETHUSDT"}
    btc, eth = snaps["BTCUSDT"], snaps["ETHUSDT"]
    assert btc.funding_rate == float(prem["lastFundingRate"]) == 0.00038246
    assert btc.mark_px == 11793.63104562 and btc.index_px == 11781.8049597
    assert btc.next_funding_ts_ns == prem["nextFundingTime"] * NS_PER_MS
    assert (btc.funding_interval_h, btc.interval_source) == (8, "default")
    assert (eth.funding_interval_h, eth.interval_source) == (4, "exchange")

    tiers = dl.leverage_tiers(["BTCUSDT"])["BTCUSDT"]
    assert [(x.tier, x.min_notional_usd, x.max_notional_usd) for x in tiers] == [
        (1, 0.0, 50000.0),
        (2, 50000.0, 600000.0),
    ]
    assert [(x.maint_margin_rate, x.max_leverage, x.maint_amount_usd) for x in tiers] == [
        (0.004, 125.0, 0.0),
        (0.005, 100.0, 50.0),
    ]
    (req,) = fake.requests_to("/fapi/v1/leverageBracket")
    assert "signature" in req.query  # a signed call, as Binance requires


def test_parse_datasets_errors() -> None:
    assert [d.catalog_dataset for d in parse_datasets("funding, ohlcv:5m,open_interest")] == [
        "funding",
        "perp_bars_5m",
        "open_interest",
    ]
    for bad, why in [
        ("ohlcv", "needs a timeframe"),
        ("trades", "unknown dataset"),
        ("ohlcv:5x", "not like 5m"),
        ("", "nothing to download"),
    ]:
        with pytest.raises(DownloadError, match=why):
            parse_datasets(bad)


# -- CLI ----------------------------------------------------------------------------------------
def perpdesk(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PERPDESK_")}
    env["COLUMNS"] = "200"
    return subprocess.run(
        [sys.executable, "-m", "perpdesk.app.cli", *args],
        cwd=Path(__file__).resolve().parents[1],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_download_against_the_fake_exchange(fake, tmp_path: Path) -> None:
    for sym, coin in (("BTCUSDT", "BTC"), ("ETHUSDT", "ETH")):
        serve_bars(fake, sym, coin, ms("2024-01-01"), ms("2024-02-01"), "1h")
    cat = tmp_path / "cat"
    args = ["data", "download", "--exchange", "binanceusdm", "--datasets", "funding,ohlcv:1h"]
    args += ["--since", "2024-01-01", "--until", "2024-02-01", "--catalog", str(cat)]
    args += ["--symbols", "BTCUSDT,XYZUSDT,ETHUSDT", "--api-url", fake.url]
    r = perpdesk(*args, cwd=tmp_path)
    # the unknown symbol: exit 2 and one line on stderr, after the others were downloaded
    assert r.returncode == 2
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: binanceusdm XYZUSDT: unknown symbol")
    assert not (cat / "binance" / "funding" / "XYZUSDT").exists()
    lines = [" ".join(line.split()) for line in r.stdout.splitlines()]
    # January 2024: 31 days × 3 settlements, 31 days × 24 hourly bars
    for sym in ("BTCUSDT", "ETHUSDT"):
        assert any(
            f"funding │ {sym} │ 93 │ 93 │ 2024-01-01T00:00:00Z → 2024-01-31T16:00:00Z" in ln
            for ln in lines
        )
        assert any(
            f"ohlcv:1h │ {sym} │ 744 │ 744 │ 2024-01-01T00:00:00Z → 2024-01-31T23:00:00Z" in ln
            for ln in lines
        )
        assert Catalog(cat).read("binance", "funding", sym).num_rows == 93
        assert Catalog(cat).read("binance", "perp_bars_1h", sym).num_rows == 744
