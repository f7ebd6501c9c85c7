"""The CLI as a user runs it: a real subprocess, real files, exit codes and one-line errors."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.helpers import H_NS, T0, write_symbol

RATES = [0.0001, 0.001, 0.002, 0.0015, 0.00002, 0.001, 0.003, 0.0001, -0.0005, 0.002]
SETTLE = [T0 + 8 * H_NS * k for k in range(1, 11)]


def perpdesk(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    e = {k: v for k, v in os.environ.items() if not k.startswith("PERPDESK_")}
    e.update({"COLUMNS": "200", "PERPDESK_PATHS__RUNS_DIR": str(cwd / "runs")})
    e.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "perpdesk.app.cli", *args],
        cwd=cwd,
        env=e,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture()
def catalog(tmp_path: Path) -> Path:
    root = tmp_path / "cat"
    write_symbol(root, "AAAUSDT", SETTLE, RATES, 8, lambda t: 100.0, lambda t: 100.0)
    return root


def test_backtest_carry_writes_outputs(tmp_path: Path, catalog: Path) -> None:
    out = tmp_path / "out"
    r = perpdesk("backtest", "carry", "--data", str(catalog), "--out", str(out), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "AAAUSDT" in r.stdout and "PORTFOLIO" in r.stdout
    trades = pq.read_table(out / "trades.parquet").to_pylist()
    # constant prices: same decisions as the hand example, 2 round trips
    assert [(t["entry_ts_ns"], t["exit_ts_ns"]) for t in trades] == [
        (SETTLE[2], SETTLE[5]),
        (SETTLE[6], SETTLE[9]),
    ]
    assert len(pq.read_table(out / "equity.parquet")) == 11
    html = (out / "report.html").read_text()
    assert "plotly" in html and "AAAUSDT" in html and "entry 20%" in html
    for name in ("report.html", "trades.parquet", "equity.parquet", "summary.parquet"):
        assert str(out / name) in r.stdout.replace("\n", "")


def test_start_end_and_symbols_options(tmp_path: Path, catalog: Path) -> None:
    out = tmp_path / "o"
    r = perpdesk(
        "backtest", "carry", "--data", str(catalog), "--start", "2024-01-02T00:00", "--end", "2024-01-03",
        "--symbols", "AAAUSDT", "--out", str(out), cwd=tmp_path,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    eq = pq.read_table(out / "equity.parquet")
    assert len(eq) == 1 + 3  # settlements at 00:00, 08:00, 16:00 on Jan 2


@pytest.mark.parametrize(
    ("args", "env", "expected"),
    [
        (
            [],
            {"PERPDESK_CARRY__ENTRY_ANN_PCT": "1"},
            "carry.entry_ann_pct = 1.0: must be above carry.exit_ann_pct (3.0)",
        ),
        (
            [],
            {"PERPDESK_CARRY__ALLOCATION_PCT": "-3"},
            "carry.allocation_pct = '-3': input should be greater than or equal to 0",
        ),
        (["--symbols", "ZZZUSDT"], {}, "unknown perp symbol 'ZZZUSDT'"),
        (["--start", "yesterday"], {}, "--start 'yesterday': not a date"),
        (["--start", "2024-02-01", "--end", "2024-01-01"], {}, "must be after --start"),
    ],
)
def test_bad_input_is_one_line_exit_2(tmp_path: Path, catalog: Path, args, env, expected) -> None:
    r = perpdesk("backtest", "carry", "--data", str(catalog), *args, cwd=tmp_path, env=env)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], r.stderr
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "runs").exists()


def test_unknown_config_key_in_file(tmp_path: Path, catalog: Path) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[carry]\nentry = 30\n")
    r = perpdesk("backtest", "carry", "--data", str(catalog), "--config", str(cfg), cwd=tmp_path)
    assert r.returncode == 2
    assert r.stderr.strip().startswith(
        f"error: config error in {cfg}: carry.entry = 30: unknown key"
    )


def test_missing_column_via_cli(tmp_path: Path, catalog: Path) -> None:
    f = next((catalog / "test" / "perp_bars_5m" / "AAAUSDT").glob("2024-01.parquet"))
    pq.write_table(pq.read_table(f).drop_columns(["close"]), f)
    r = perpdesk("backtest", "carry", "--data", str(catalog), cwd=tmp_path)
    assert r.returncode == 2
    assert r.stderr.strip() == f"error: {f}: missing column(s) close"


@pytest.mark.parametrize(
    "cmd", [["--help"], ["demo", "--help"], ["backtest", "--help"], ["backtest", "carry", "--help"]]
)
def test_help_explains_every_option(tmp_path: Path, cmd: list[str]) -> None:
    r = perpdesk(*cmd, cwd=tmp_path)
    assert r.returncode == 0
    if cmd == ["backtest", "carry", "--help"]:
        for opt in ("--data", "--venue", "--symbols", "--start", "--end", "--config", "--out"):
            assert opt in r.stdout
        assert "Catalog root directory" in r.stdout


def test_demo_builds_once_then_reuses(tmp_path: Path) -> None:
    env = {
        "PERPDESK_DEMO__N_SYMBOLS": "6",
        "PERPDESK_DEMO__DAYS": "20",
        "PERPDESK_PATHS__DATA_DIR": str(tmp_path / "data"),
    }
    r = perpdesk("demo", cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("USDT") >= 6 and "PORTFOLIO" in r.stdout
    built = list((tmp_path / "data" / "synthetic").iterdir())
    assert len(built) == 1 and (built[0] / "_COMPLETE").is_file()
    marker = (built[0] / "_COMPLETE").stat()
    runs = list((tmp_path / "runs").iterdir())
    assert len(runs) == 1 and (runs[0] / "report.html").is_file()
    trades = pq.read_table(runs[0] / "trades.parquet")
    summary = pq.read_table(runs[0] / "summary.parquet").to_pylist()
    assert len(summary) == 7 and summary[-1]["symbol"] == "PORTFOLIO"
    assert summary[-1]["entries"] > 0
    assert summary[-1]["entries"] == sum(r["entries"] for r in summary[:-1]) == trades.num_rows
    r2 = perpdesk("demo", cwd=tmp_path, env=env)
    assert r2.returncode == 0, r2.stderr
    assert (built[0] / "_COMPLETE").stat().st_mtime_ns == marker.st_mtime_ns  # reused, not rebuilt
    assert r2.stdout.split("catalog:")[1].split()[0] == str(built[0])


def test_data_import_folder_and_json(tmp_path: Path) -> None:
    from tests.realdata import SHARED_DATA

    bars, js = SHARED_DATA / "bars", SHARED_DATA / "funding" / "binance_BTC_funding_rates.json"
    if not bars.is_dir() or not js.is_file():
        pytest.skip("real data not available")
    cat = tmp_path / "cat"
    r = perpdesk(
        "data", "import", str(js), "--symbol", "BTCUSDT", "--catalog", str(cat), cwd=tmp_path
    )
    assert r.returncode == 0, r.stderr
    r = perpdesk("data", "import", str(bars), "--catalog", str(cat), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    from perpdesk.data.catalog import Catalog

    f = Catalog(cat).read("binance", "funding", "BTCUSDT")
    # the REST history (4,377 settlements, 2022-01 → 2025-12) contains every freqtrade
    # settlement (2023-01 → 2024-05): the union adds no rows, and freqtrade's mark prices
    # fill the JSON's missing ones on exactly those 1,498 settlements
    assert f.num_rows == 4377
    assert (
        f.column("mark_price").null_count
        + sum(1 for v in f.column("mark_price").to_pylist() if v is not None and v != v)
        == 4377 - 1498
    )
    assert Catalog(cat).read("binance", "perp_bars_15m", "ETHUSDT").num_rows == 47967
    r = perpdesk("data", "import", str(js), "--catalog", str(cat), cwd=tmp_path)
    assert r.returncode == 2 and "pass --symbol" in r.stderr


def _archive_inputs(tmp_path: Path) -> tuple[Path, Path, Path, int, int]:
    """A 1m klines CSV and an aggTrades zip in Binance archive layout, built from real
    BTCUSDT ticks (see tests/test_sources_binance_archive.py), the zip's 3rd row with a
    negative quantity; and a funding JSON whose 2nd record has a non-numeric rate."""
    import json

    import numpy as np

    from tests.realdata import ws_trades
    from tests.test_sources_binance_archive import (
        AGG_HDR,
        _agg_lines,
        _agg_rows,
        _kline_lines,
        _kline_rows,
        _write,
    )

    t = {k: v[:400] for k, v in ws_trades().items()}
    t["id"] = np.arange(7_000_000_001, 7_000_000_401, dtype=np.int64)
    klines = _write(tmp_path / "in" / "BTCUSDT-1m-2024-07-19.csv", _kline_lines(_kline_rows(t)))
    agg = _agg_lines(_agg_rows(t))
    agg[2] = agg[2].replace(",", ",-", 2).replace(",-", ",", 1)  # quantity → negative
    assert ",-" in agg[2]
    zp = _write(tmp_path / "in" / "BTCUSDT-aggTrades-2024-07-19.zip", agg, AGG_HDR, zipped=True)
    recs = [{"coin": "BTC", "funding_rate": "0.0001", "time": 1704067200000 + k * 28_800_000}
            for k in range(4)]  # fmt: skip
    recs[1]["funding_rate"] = "n/a"
    js = tmp_path / "in" / "funding.json"
    js.write_text(json.dumps(recs))
    return klines, zp, js, len(_kline_rows(t)), len(agg)


def test_data_import_archive_capture_funding_all_or_nothing(tmp_path: Path) -> None:
    from perpdesk.data.catalog import Catalog
    from tests.realdata import shared_file

    cap = shared_file("binance-ws/usdm/btcusdt_20230404.dat.gz")
    klines, zp, js, n_bars, n_agg = _archive_inputs(tmp_path)
    cat = tmp_path / "cat"
    args = [str(klines), str(cap), str(zp), str(js), "--symbol", "BTCUSDT", "--catalog", str(cat)]
    # strict: the first bad row (zip row 3) fails everything; the good files are not written
    r = perpdesk("data", "import", *args, cwd=tmp_path)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0] == (
        f"error: {zp}[BTCUSDT-aggTrades-2024-07-19.csv]: row 3: quantity is negative"
    )
    assert not cat.exists() or not list(cat.rglob("*.parquet"))
    # quarantine: bad rows set aside with their reason, the rest imported
    q = tmp_path / "q"
    r = perpdesk("data", "import", *args, "--quarantine", str(q), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    c = Catalog(cat)
    assert c.read("binance", "perp_bars_1m", "BTCUSDT").num_rows == n_bars
    agg = c.read("binance", "agg_trades", "BTCUSDT")
    assert agg.num_rows == n_agg - 1 and 902 not in agg["agg_trade_id"].to_pylist()
    # the capture's counts (see tests/test_sources_binance_ws.py COUNTS)
    assert c.read("binance", "trades", "BTCUSDT").num_rows == 2197
    assert c.read("binance", "book_ticker", "BTCUSDT").num_rows == 6765
    assert c.read("binance", "mark_price", "BTCUSDT").num_rows == 99
    f = c.read("binance", "funding", "BTCUSDT")
    assert f["funding_rate"].to_pylist() == [0.0001] * 3
    rows = (q / "quarantine.csv").read_text().splitlines()
    assert rows[0] == "file,row,reason,raw_line"
    assert rows[1].startswith(f"{zp}[BTCUSDT-aggTrades-2024-07-19.csv],3,quantity is negative,")
    assert rows[2].startswith(f"{js},2,funding_rate 'n/a' is not a number,")
    out = r.stdout
    assert "quarantined 2 row(s)" in out and "total" in out
    total = next(ln for ln in out.splitlines() if "total" in ln)
    n_all = n_bars + n_agg - 1 + 2197 + 6765 + 99 + 3
    assert f"{n_all:,}" in total and total.rstrip(" │").endswith("2")
    # an archive kind given on the command line: the same klines as mark-price bars
    r = perpdesk("data", "import", str(klines), "--kind", "markPriceKlines", "--catalog",
                 str(cat), cwd=tmp_path)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert c.read("binance", "mark_bars_1m", "BTCUSDT").num_rows == n_bars


# --------------------------------------------------------------------------- perpdesk run


@pytest.mark.parametrize(
    ("toml", "args", "expected"),
    [
        (
            "[runner]\ncycle_s = 0\n",
            [],
            "runner.cycle_s = 0: input should be greater than 0",
        ),
        # a flag is checked as the key it overrides
        ("", ["--run-id", "much-too-long"], "runner.run_id = 'much-too-long': must be 1–8"),
        # without --paper/--live, runner.mode decides; live still needs the risk switches
        ('[runner]\nmode = "live"\n', [], "--live refused: risk.enable_live_orders is false"),
    ],
)
def test_run_reads_the_runner_section_and_bad_values_are_one_line(
    tmp_path: Path, toml: str, args: list[str], expected: str
) -> None:
    cfg = tmp_path / "run.toml"
    cfg.write_text(toml)
    r = perpdesk("run", "--config", str(cfg), *args, cwd=tmp_path)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], r.stderr
    assert "Traceback" not in r.stderr


def test_run_paper_takes_runner_settings_and_flags_override_them(tmp_path: Path) -> None:
    from tests.realdata import shared_file

    perp = shared_file("binance-ws/usdm/btcusdt_20230405.dat.gz")
    spot = shared_file("binance-ws/spot/btcusdt_20230405.dat.gz")
    data = tmp_path / "data"
    cfg = tmp_path / "run.toml"
    cfg.write_text(
        f'[paths]\ndata_dir = "{data}"\n'
        '[runner]\nrun_id = "fromcfg"\ncycle_s = 0.05\nsymbols = ["btcusdt"]\n'
        "paper_balance_usd = 20000\n"
    )
    # no --paper/--live: runner.mode ("paper") decides; --run-id overrides the config's key
    args = ["run", "--config", str(cfg), "--replay", str(perp), "--replay-spot", str(spot)]
    args += ["--max-cycles", "2", "--replay-rate", "20000", "--run-id", "flag1"]
    r = perpdesk(*args, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "cycle 2: ok" in r.stdout
    snap = json.loads((data / "state.json").read_text())
    assert snap["run_id"] == "flag1" and snap["mode"] == "paper"
    assert (data / "paper-flag1.sqlite").is_file() and not (data / "paper-fromcfg.sqlite").exists()
    # the paper wallet of the config is what the ledger was funded with
    assert Decimal(snap["status"]["equity_usd"]) == Decimal(20000)
    # the config's symbols (upper-cased) are the pairs traded: the plan shows their VPIN
    con = sqlite3.connect(data / "ledger.sqlite")
    plans = [json.loads(d) for (d,) in con.execute("SELECT data FROM events WHERE kind = 'plan'")]
    con.close()
    assert [sorted(p["vpin"]) for p in plans] == [["BTCUSDT"], ["BTCUSDT"]]
