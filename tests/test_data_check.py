"""Catalog inventory and health check: a catalog with hand-placed defects, and the exact
issues (file, row, ts) they must produce; the CLI's exit codes; real freqtrade bars."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from perpdesk.data.catalog import Catalog, fmt_ts
from perpdesk.data.check import check, inventory
from perpdesk.domain import Instrument, InstrumentKind
from tests.helpers import BAR_NS, DAY_NS, H_NS, T0, bar_table, funding_table
from tests.realdata import feather_bars, shared_file

V = "test"
BARS = "perp_bars_5m"
JAN = "2024-01.parquet"


def _bars(n: int, drop: tuple[int, ...] = ()) -> pa.Table:
    """``n`` constant 100.0 bars from T0 (2024-01-01), 5 min apart, without rows ``drop``."""
    ts = np.delete(T0 + BAR_NS * np.arange(n, dtype=np.int64), list(drop))
    return bar_table(ts, np.full(ts.size, 100.0), 100_000.0)


def _raw_write(root: Path, symbol: str, table: pa.Table, name: str = JAN) -> Path:
    """Write a partition file directly with pyarrow, bypassing the catalog's validation."""
    path = root / V / BARS / symbol / name
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    return path


def _set(table: pa.Table, row: int, **values: float) -> pa.Table:
    for name, v in values.items():
        col = table.column(name).to_numpy().copy()
        col[row] = v
        table = table.set_column(table.schema.get_field_index(name), name, pa.array(col))
    return table


def _funding(ts: list[int], rates: list[float], intervals: list[int]) -> pa.Table:
    t = funding_table(ts, rates, 8)
    return t.set_column(2, "funding_interval_h", pa.array(intervals, pa.int32()))


@pytest.fixture(scope="module")
def dirty(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One defect family per symbol (positions are 0-based table rows below; issues count
    file rows from 1)."""
    root = tmp_path_factory.mktemp("dirty")
    cat = Catalog(root)
    # AAA: 576 bars (two days) without rows 200-202 → one hole of 3 bars, file row 201
    cat.write(V, BARS, "AAAUSDT", _bars(576, drop=(200, 201, 202)))
    # BBB: row 100 repeated right after itself → file row 102 duplicates row 101
    t = _bars(288)
    _raw_write(root, "BBBUSDT", pa.concat_tables([t.slice(0, 101), t.slice(100)]))
    # CCC: rows 50 and 51 swapped → file row 52 (ts of bar 50) is below row 51
    t = _bars(288)
    idx = np.arange(288)
    idx[[50, 51]] = [51, 50]
    _raw_write(root, "CCCUSDT", t.take(pa.array(idx)))
    # DDD: bar 150 high 99 < low 100 (so open and close, 100, lie outside [low, high]);
    # bar 250 volume_quote −5 (negative, and below the taker-buy 50,000);
    # bar 300 a tenfold print 1000 → rows 301 and 302 break the robust price rules
    t = _bars(400)
    t = _set(t, 150, high=99.0)
    t = _set(t, 250, volume_quote=-5.0)
    t = _set(t, 300, open=1000.0, high=1000.0, low=1000.0, close=1000.0)
    _raw_write(root, "DDDUSDT", t)
    # EEE funding, 8h, cap ±0.03: settlement 5 missing (gap, file row 5);
    # settlement 8 rate 0.04 > cap (row 7); settlement 9 rate −0.2 < floor and absurd (row 8)
    settle = [T0 + 8 * H_NS * k for k in range(1, 11)]
    rates = [0.0001] * 10
    rates[7], rates[8] = 0.04, -0.2
    keep = [k for k in range(10) if k != 4]
    cat.write(
        V,
        "funding",
        "EEEUSDT",
        _funding([settle[k] for k in keep], [rates[k] for k in keep], [8] * 9),
    )
    # FFF funding: 8h settlements, then 4h after a change that lands 8h after the last 8h
    # one, then back to 8h: no gap anywhere
    ts = [T0 + 8 * H_NS * k for k in range(1, 5)]
    ts += [ts[-1] + 8 * H_NS + 4 * H_NS * k for k in range(4)]
    ts += [ts[-1] + 8 * H_NS * k for k in range(1, 3)]
    cat.write(V, "funding", "FFFUSDT", _funding(ts, [0.0001] * 10, [8] * 4 + [4] * 4 + [8] * 2))
    # GGG: a good December file, a January file without volume_base, an unreadable
    # February file and a temp file left by an interrupted write
    cat.write(
        V, BARS, "GGGUSDT", bar_table(T0 - DAY_NS + BAR_NS * np.arange(10), np.full(10, 5.0), 1.0)
    )
    _raw_write(root, "GGGUSDT", _bars(20).drop_columns(["volume_base"]))
    _raw_write(root, "GGGUSDT", _bars(1), "2024-02.parquet").write_bytes(b"PAR1 broken")
    (root / V / BARS / "GGGUSDT" / ".2024-01.parquet.x1y2.tmp").write_bytes(b"")
    cat.write_instruments(
        V,
        [
            Instrument(
                V, f"{c * 3}USDT", InstrumentKind.PERP, c * 3, "USDT", 0.01, 0.001, 8, 0.03, -0.03
            )
            for c in "ABCDEFG"
        ],
    )
    return root


def _ts(bar: int) -> int:
    return T0 + BAR_NS * bar


def test_check_finds_exactly_the_injected_defects(dirty: Path) -> None:
    issues = check(dirty)
    got = {(i.kind, i.file, i.row, i.ts_ns) for i in issues}
    f = f"{V}/{BARS}"
    settle5 = T0 + 8 * H_NS * 5
    want = {
        ("gap", f"{f}/AAAUSDT/{JAN}", 201, _ts(200)),
        ("duplicate", f"{f}/BBBUSDT/{JAN}", 102, _ts(100)),
        ("out_of_order", f"{f}/CCCUSDT/{JAN}", 52, _ts(50)),
        ("outlier", f"{f}/DDDUSDT/{JAN}", 151, _ts(150)),
        ("outlier", f"{f}/DDDUSDT/{JAN}", 251, _ts(250)),
        ("outlier", f"{f}/DDDUSDT/{JAN}", 301, _ts(300)),
        ("outlier", f"{f}/DDDUSDT/{JAN}", 302, _ts(301)),
        ("gap", f"{V}/funding/EEEUSDT/{JAN}", 5, settle5),
        ("outlier", f"{V}/funding/EEEUSDT/{JAN}", 7, T0 + 8 * H_NS * 8),
        ("outlier", f"{V}/funding/EEEUSDT/{JAN}", 8, T0 + 8 * H_NS * 9),
        ("schema", f"{f}/GGGUSDT/{JAN}", None, None),
        ("unreadable", f"{f}/GGGUSDT/2024-02.parquet", None, None),
        ("stray", f"{f}/GGGUSDT/.2024-01.parquet.x1y2.tmp", None, None),
    }
    assert got == want
    assert len(issues) == len(want)
    by = {(i.kind, i.file.split("/")[2], i.row): i.message for i in issues}
    assert by[("gap", "AAAUSDT", 201)] == (
        f"3 missing bar(s) between {fmt_ts(_ts(199))} and {fmt_ts(_ts(203))}"
    )
    assert by[("duplicate", "BBBUSDT", 102)].endswith("repeats row 101 (identical row)")
    assert "is below row 51" in by[("out_of_order", "CCCUSDT", 52)]
    assert by[("outlier", "DDDUSDT", 151)] == (
        "high 99 < low 100; open 100 outside [low 100, high 99]; "
        "close 100 outside [low 100, high 99]"
    )
    assert "negative volume_quote -5" in by[("outlier", "DDDUSDT", 251)]
    # ln(1000 / 100) = 2.3026 over the floored robust sd 1e-4 → 23,026 sd
    assert by[("outlier", "DDDUSDT", 301)] == (
        "open +900.00 % from the previous close (23025.9 robust sd > 8); "
        "close +900.00 % from the previous close (23025.9 robust sd > 200)"
    )
    assert "-90.00 %" in by[("outlier", "DDDUSDT", 302)]
    assert by[("gap", "EEEUSDT", 5)].startswith("1 missing settlement(s)")
    assert "above the instrument's cap 0.03" in by[("outlier", "EEEUSDT", 7)]
    eee8 = by[("outlier", "EEEUSDT", 8)]
    assert "below the instrument's floor -0.03" in eee8 and "absurd" in eee8
    assert by[("schema", "GGGUSDT", None)] == "missing column(s) volume_base"


def test_check_selection_and_clean_series(dirty: Path) -> None:
    assert check(dirty, dataset="funding", symbols=["FFFUSDT"]) == []
    kinds = [i.kind for i in check(dirty, venue=V, dataset=BARS, symbols=["DDDUSDT"])]
    assert kinds == ["outlier"] * 4
    # a looser jump rule keeps the discontinuity (open vs last close) on rows 301/302
    msgs = [i.message for i in check(dirty, symbols=["DDDUSDT"], jump_k=1e9)]
    assert "robust sd > 200" not in " ".join(msgs) and len(msgs) == 4


def test_inventory_counts(dirty: Path) -> None:
    inv = {(r.dataset, r.symbol): r for r in inventory(dirty)}
    aaa = inv[(BARS, "AAAUSDT")]
    assert (aaa.rows, aaa.files, aaa.bad_files) == (573, 1, 0)
    assert (aaa.first_ts_ns, aaa.last_ts_ns) == (_ts(0), _ts(575))
    assert (aaa.missing, aaa.gap_runs, aaa.max_gap_ns) == (3, 1, 4 * BAR_NS)
    # the duplicate counts as a stored row, but not as a distinct timestamp
    assert (inv[(BARS, "BBBUSDT")].rows, inv[(BARS, "BBBUSDT")].missing) == (289, 0)
    eee = inv[("funding", "EEEUSDT")]
    assert (eee.rows, eee.missing, eee.gap_runs) == (9, 1, 1)
    fff = inv[("funding", "FFFUSDT")]
    assert (fff.rows, fff.missing, fff.max_gap_ns) == (10, 0, 8 * H_NS)
    # GGG: Dec (10 rows) readable for ts; Jan lacks a column ts does not need; Feb broken
    ggg = inv[(BARS, "GGGUSDT")]
    assert (ggg.rows, ggg.files, ggg.bad_files) == (10 + 20, 3, 1)
    # Dec's last bar T0 − 1 day + 45 min, Jan's first T0: 24 h − 45 min = 279 bars apart
    assert (ggg.missing, ggg.gap_runs) == (278, 1)


def test_inventory_of_ticks_reports_max_spacing(tmp_path: Path) -> None:
    s = 1_000_000_000
    ts = [T0, T0, T0 + 1 * s, T0 + 5 * s, T0 + 6 * s]
    trades = pa.table(
        {
            "ts_ns": pa.array(ts, pa.int64()),
            "trade_id": pa.array([1, 2, 3, 4, 5], pa.int64()),
            "price": [10.0] * 5,
            "qty_base": [1.0] * 5,
            "quote_qty": [10.0] * 5,
            "is_buyer_maker": [True, False, True, False, True],
            "ts_recv_ns": pa.array([None] * 5, pa.int64()),
        }
    )
    Catalog(tmp_path).write(V, "trades", "AAAUSDT", trades)
    (r,) = inventory(tmp_path)
    assert (r.rows, r.missing, r.gap_runs, r.max_gap_ns) == (5, None, None, 4 * s)
    assert check(tmp_path) == []


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PERPDESK_")}
    env["COLUMNS"] = "250"
    return subprocess.run(
        [sys.executable, "-m", "perpdesk.app.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_ls_and_check(dirty: Path, tmp_path: Path) -> None:
    r = _cli("data", "ls", "--catalog", str(dirty), "--dataset", BARS, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "AAAUSDT" in r.stdout and "573" in r.stdout and "3 missing in 1 hole(s)" in r.stdout
    r = _cli("data", "check", "--catalog", str(dirty), cwd=tmp_path)
    assert r.returncode == 1, r.stderr
    assert "13 issue(s)" in r.stdout and "CCCUSDT/2024-01.parquet" in r.stdout
    assert "duplicate 1, gap 2, out_of_order 1, outlier 6, schema 1, stray 1, unreadable 1" in (
        r.stdout
    )
    r = _cli("data", "check", "--catalog", str(dirty), "--symbols", "FFFUSDT", cwd=tmp_path)
    assert (r.returncode, r.stdout.strip()) == (0, f"catalog {dirty}: no issues")
    r = _cli("data", "ls", "--catalog", str(dirty), "--venue", "x", cwd=tmp_path)
    assert r.returncode == 2
    assert r.stderr.strip() == f"error: {dirty}: unknown venue 'x' (known: test)"


def test_real_binance_bars_imported_then_ls_and_check(tmp_path: Path) -> None:
    """Real Binance BTCUSDT 1h perp bars (2023-01 → 2024-05, freqtrade feather) imported
    with the freqtrade importer: ls counts them (expectations from the test-side reader),
    finds no hole, and check is clean at the default rules."""
    from perpdesk.data.sources.freqtrade import read_freqtrade_bars

    name = "BTC_USDT_USDT-1h-futures.feather"
    raw = feather_bars(name)["ts_ns"]  # skips when the shared data is absent
    sym, dataset, table = read_freqtrade_bars(shared_file(f"bars/{name}"))
    Catalog(tmp_path).write("binance", dataset, sym, table)
    (r,) = inventory(tmp_path)
    assert (r.dataset, r.symbol, r.rows) == ("perp_bars_1h", "BTCUSDT", raw.size)
    assert (r.first_ts_ns, r.last_ts_ns) == (int(raw[0]), int(raw[-1]))
    assert r.files == 17  # 2023-01 … 2024-05
    # hourly bars: expected count from first to last, minus what is stored
    assert r.missing == (raw[-1] - raw[0]) // H_NS + 1 - raw.size == 0
    assert check(tmp_path) == []


def test_partition_names_nulls_and_listing_cap(tmp_path: Path) -> None:
    _raw_write(tmp_path, "AAAUSDT", _bars(5), "2024-13.parquet")  # no 13th month
    _raw_write(tmp_path, "BBBUSDT", _bars(288), "2024-02.parquet")  # January rows
    ccc = _set(_bars(288), 9, close=float("nan"))
    vq = ccc.column("volume_quote").to_pylist()
    vq[19] = None  # a true null, not a NaN
    _raw_write(tmp_path, "CCCUSDT", ccc.set_column(6, "volume_quote", pa.array(vq, pa.float64())))
    t = _bars(300)
    for k in range(100, 125):  # 25 bad rows: MAX_LISTED (20) listed + one summary
        t = _set(t, k, volume_base=-1.0)
    _raw_write(tmp_path, "DDDUSDT", t)
    got = [(i.kind, i.file.split("/")[2], i.row, i.ts_ns) for i in check(tmp_path)]
    assert got == [
        ("partition", "AAAUSDT", None, None),
        ("partition", "BBBUSDT", 1, T0),
        ("null", "CCCUSDT", 10, _ts(9)),
        ("null", "CCCUSDT", 20, _ts(19)),
        ("outlier", "DDDUSDT", None, None),
        *[("outlier", "DDDUSDT", k + 1, _ts(k)) for k in range(100, 120)],
    ]
    msgs = [i.message for i in check(tmp_path)]
    assert msgs[0] == "file name '2024-13' is not a valid date"
    assert msgs[1] == "288 row(s) outside the file's period (first: 2024-01-01T00:00:00Z)"
    assert msgs[2] == "close is null/NaN"
    assert msgs[3] == "volume_quote is null/NaN"
    assert msgs[4] == "5 more outlier issue(s) in this file not listed"


def test_check_and_ls_see_append_parts(tmp_path: Path) -> None:
    """A late part (keys below an earlier part's) is no ordering issue; a part holding a
    stored key with another price is reported as a conflicting duplicate in that part."""

    def trades(ids: list[int], price: float = 10.0) -> pa.Table:
        k = np.asarray(ids, np.int64)
        ts = T0 + k * 1_000_000
        return pa.table({"ts_ns": ts, "trade_id": k, "price": price + 0 * k,
                         "qty_base": 1.0 + 0 * k, "quote_qty": price + 0 * k,
                         "is_buyer_maker": k % 2 == 0, "ts_recv_ns": ts})  # fmt: skip

    c = Catalog(tmp_path)
    for ids in ([1, 2, 6], [7, 8], [3, 4, 5, 9]):
        c.append(V, "trades", "AAAUSDT", trades(ids))
    (info,) = inventory(tmp_path)
    assert (info.rows, info.files, info.first_ts_ns, info.last_ts_ns) == (
        9, 3, T0 + 1_000_000, T0 + 9_000_000,
    )  # fmt: skip
    assert check(tmp_path) == []
    parts = tmp_path / V / "trades" / "AAAUSDT" / "2024-01-01.parts"
    bad = parts / "9-bad.parquet"  # written behind the catalog's back
    pq.write_table(trades([4], price=11.0), bad)
    (issue,) = check(tmp_path)
    assert (issue.kind, issue.file, issue.row) == (
        "duplicate", f"{V}/trades/AAAUSDT/2024-01-01.parts/9-bad.parquet", 1,
    )  # fmt: skip
    assert "trade_id 4 repeats row 2 of" in issue.message
    assert "(conflicting values)" in issue.message
    with pytest.raises(Exception, match="trade_id 4 already stored with a different price"):
        c.read(V, "trades", "AAAUSDT")
