"""Download throughput: 15m BTC bars (real, from shared data) through ccxt from the loopback
fake Binance server, paginated. Run from the repo root: ``.venv/bin/python bench/bench_download.py``."""

import sys
import tempfile
import time

sys.path.insert(0, ".")
from perpdesk.data.catalog import Catalog
from perpdesk.data.sources.ccxt_download import CcxtDownloader, parse_datasets
from tests.fake_exchange import INTERVAL_MS, FakeBinanceUSDM, binance_kline_rows
from tests.realdata import feather_bars

b = feather_bars("BTC_USDT_USDT-15m-futures.feather")
ts_ms = b["ts_ns"] // 1_000_000
with FakeBinanceUSDM(now_ms=int(ts_ms[-1]) + 10**8) as fake:
    fake.set_klines(
        "BTCUSDT",
        "15m",
        binance_kline_rows(
            ts_ms, INTERVAL_MS["15m"], b["open"], b["high"], b["low"], b["close"], b["volume"]
        ),
    )
    dl = CcxtDownloader(
        "binanceusdm",
        Catalog(tempfile.mkdtemp()),
        api_url=fake.url,
        exchange_config={"rateLimit": 1},
        clock_ms=lambda: fake.now_ms,
    )
    t = time.perf_counter()
    r = dl.download(parse_datasets("ohlcv:15m"), ["BTCUSDT"], int(b["ts_ns"][0]))
    dt = time.perf_counter() - t
    print(
        f"ohlcv:15m {r[0].new_rows} rows, {r[0].requests} requests in {dt:.2f} s: {r[0].new_rows / dt:,.0f} rows/s (loopback, ccxt throttle 1 ms)"
    )
