"""Catalog writer/reader: layout, atomic merge, and one-line errors on bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from perpdesk.config import load_settings
from perpdesk.data.catalog import Catalog
from perpdesk.errors import CatalogError
from perpdesk.research.carry_backtest import run_carry_backtest
from tests.helpers import DAY_NS, H_NS, T0, funding_table, write_symbol

SETTLE = [T0 + 8 * H_NS * k for k in range(1, 11)]
RATES = [0.001] * 10


def _settings():
    return load_settings(None, paths={"data_dir": "/x", "runs_dir": "/x"})


@pytest.fixture()
def cat(tmp_path: Path) -> Path:
    write_symbol(tmp_path, "AAAUSDT", SETTLE, RATES, 8, lambda t: 100.0, lambda t: 100.0)
    return tmp_path


def _funding_file(root: Path) -> Path:
    files = sorted((root / "test" / "funding" / "AAAUSDT").glob("*.parquet"))
    assert [f.name for f in files] == ["2024-01.parquet"]
    return files[0]


def test_layout_is_venue_dataset_symbol_partition(cat: Path) -> None:
    bars = sorted(p.name for p in (cat / "test" / "perp_bars_5m" / "AAAUSDT").glob("*.parquet"))
    assert bars == ["2023-12.parquet", "2024-01.parquet"]  # bars start a day before T0
    t = Catalog(cat).read("test", "perp_bars_5m", "AAAUSDT")
    # bars from T0 − 1 day to the last settlement + 1 h, 5 minutes apart
    assert t.num_rows == (SETTLE[-1] + H_NS - (T0 - DAY_NS)) // (300 * 10**9)
    assert Catalog(cat).read("test", "funding", "AAAUSDT", SETTLE[2], SETTLE[5]).num_rows == 3


def test_write_merges_identical_rows_and_rejects_conflicts(cat: Path) -> None:
    c = Catalog(cat)
    c.write("test", "funding", "AAAUSDT", funding_table(SETTLE[:3], RATES[:3], 8))
    assert c.read("test", "funding", "AAAUSDT").num_rows == 10
    with pytest.raises(CatalogError, match="already stored with a different funding_rate"):
        c.write("test", "funding", "AAAUSDT", funding_table(SETTLE[:1], [0.5], 8))
    assert c.read("test", "funding", "AAAUSDT").column("funding_rate").to_pylist() == RATES
    leftovers = [
        p for p in (cat / "test" / "funding" / "AAAUSDT").iterdir() if p.suffix != ".parquet"
    ]
    assert leftovers == []


def _rewrite(path: Path, table: pa.Table) -> None:
    pq.write_table(table, path)


def test_missing_column_names_file(cat: Path) -> None:
    f = _funding_file(cat)
    _rewrite(f, pq.read_table(f).drop_columns(["funding_rate"]))
    with pytest.raises(CatalogError) as e:
        run_carry_backtest(_settings(), cat)
    assert str(e.value) == f"{f}: missing column(s) funding_rate"


def test_nan_rate_names_file_and_row(cat: Path) -> None:
    f = _funding_file(cat)
    t = pq.read_table(f)
    rates = t.column("funding_rate").to_numpy().copy()
    rates[6] = np.nan
    _rewrite(f, t.set_column(1, "funding_rate", pa.array(rates)))
    with pytest.raises(CatalogError) as e:
        run_carry_backtest(_settings(), cat)
    assert str(e.value) == f"{f}: row 7: funding_rate is null/NaN"


def test_duplicate_timestamp_names_rows(cat: Path) -> None:
    f = _funding_file(cat)
    t = pq.read_table(f)
    ts = t.column("ts_ns").to_numpy().copy()
    ts[4] = ts[3]
    _rewrite(f, t.set_column(0, "ts_ns", pa.array(ts)))
    with pytest.raises(CatalogError, match=r"row 5: ts_ns 2024-01-02T08:00:00Z duplicates row 4"):
        run_carry_backtest(_settings(), cat)


def test_unsorted_timestamps_name_rows(cat: Path) -> None:
    f = _funding_file(cat)
    t = pq.read_table(f)
    idx = list(range(10))
    idx[2], idx[3] = 3, 2
    _rewrite(f, t.take(pa.array(idx)))
    with pytest.raises(CatalogError) as e:
        run_carry_backtest(_settings(), cat)
    msg = str(e.value)
    assert msg.startswith(
        f"{f}: row 4: ts_ns 2024-01-02T00:00:00Z is before row 3 (2024-01-02T08:00:00Z)"
    )
    assert "\n" not in msg


def test_unknown_symbol(cat: Path) -> None:
    with pytest.raises(CatalogError) as e:
        run_carry_backtest(_settings(), cat, symbols=["NOPEUSDT"])
    assert "unknown perp symbol 'NOPEUSDT'" in str(e.value)
    (cat / "test" / "instruments.parquet").unlink()
    with pytest.raises(CatalogError) as e:
        run_carry_backtest(_settings(), cat, symbols=["NOPEUSDT"])
    assert str(e.value) == f"{cat / 'test' / 'funding'}: unknown symbol 'NOPEUSDT' (known: AAAUSDT)"


def test_cross_file_order_checked(tmp_path: Path) -> None:
    c = Catalog(tmp_path)
    c.write("test", "funding", "AAAUSDT", funding_table(SETTLE, RATES, 8))
    # a February file whose row lies in January breaks the partition contract
    bad = tmp_path / "test" / "funding" / "AAAUSDT" / "2024-02.parquet"
    pq.write_table(funding_table(SETTLE[:1], RATES[:1], 8), bad)
    with pytest.raises(CatalogError, match="rows outside the partition's period 2024-02"):
        c.read("test", "funding", "AAAUSDT")


def test_no_venue_or_several(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="no such directory"):
        run_carry_backtest(_settings(), tmp_path / "missing")
    write_symbol(tmp_path, "AAAUSDT", SETTLE, RATES, 8, lambda t: 1.0, None, venue="v1")
    write_symbol(tmp_path, "AAAUSDT", SETTLE, RATES, 8, lambda t: 1.0, None, venue="v2")
    with pytest.raises(CatalogError, match="several venues have funding data"):
        run_carry_backtest(_settings(), tmp_path)
    bt = run_carry_backtest(_settings(), tmp_path, venue="v2")
    assert bt.rows[0]["entries"] == 1
    assert np.isnan(bt.rows[0]["price_pnl_bps"])  # no spot data: price PnL not reported


def test_failed_write_leaves_old_file_and_no_temp(tmp_path: Path) -> None:
    from perpdesk.files import atomic_write

    target = tmp_path / "x.txt"
    target.write_text("old")

    def half_then_fail(tmp: str) -> None:
        Path(tmp).write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, half_then_fail)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["x.txt"]


def test_merge_fills_missing_nullable_values(tmp_path: Path) -> None:
    c = Catalog(tmp_path)
    c.write("test", "funding", "AAAUSDT", funding_table(SETTLE[:4], RATES[:4], 8))  # no mark
    marks = [100.0, 101.0, 102.0, 103.0]
    c.write("test", "funding", "AAAUSDT", funding_table(SETTLE[2:6], RATES[2:6], 8, mark=marks))
    t = c.read("test", "funding", "AAAUSDT")
    m = t.column("mark_price").to_numpy(zero_copy_only=False)
    assert t.num_rows == 6
    assert np.isnan(m[:2]).all() and list(m[2:]) == marks
    # the known value stays when a later source lacks it
    c.write("test", "funding", "AAAUSDT", funding_table(SETTLE[2:3], RATES[2:3], 8))
    assert c.read("test", "funding", "AAAUSDT").column("mark_price").to_pylist()[2] == 100.0


def _trades(ids, ts, prices=None) -> pa.Table:
    n = len(ids)
    p = prices or [100.0] * n
    return pa.table(
        {
            "ts_ns": pa.array(ts, pa.int64()),
            "trade_id": pa.array(ids, pa.int64()),
            "price": pa.array(p, pa.float64()),
            "qty_base": pa.array([1.0] * n),
            "quote_qty": pa.array(p, pa.float64()),
            "is_buyer_maker": pa.array([False] * n),
            "ts_recv_ns": pa.array([None] * n, pa.int64()),
        }
    )


def test_tick_dataset_keys_on_trade_id(tmp_path: Path) -> None:
    c = Catalog(tmp_path)
    # three trades in one millisecond are fine; daily partitions
    c.write("test", "trades", "AAAUSDT", _trades([1, 2, 3], [T0, T0, T0 + 5]))
    c.write("test", "trades", "AAAUSDT", _trades([3, 4], [T0 + 5, T0 + DAY_NS]))
    names = sorted(p.name for p in (tmp_path / "test" / "trades" / "AAAUSDT").iterdir())
    assert names == ["2024-01-01.parquet", "2024-01-02.parquet"]
    assert c.read("test", "trades", "AAAUSDT").column("trade_id").to_pylist() == [1, 2, 3, 4]
    with pytest.raises(CatalogError, match="trade_id 3 already stored with a different price"):
        c.write("test", "trades", "AAAUSDT", _trades([3], [T0 + 5], [101.0]))
    with pytest.raises(CatalogError, match=r"row 2: trade_id 5 duplicates row 1"):
        c.write("test", "trades", "AAAUSDT", _trades([5, 5], [T0, T0]))
    with pytest.raises(CatalogError, match=r"row 2: ts_ns .* is before row 1 .*must not decrease"):
        c.write("test", "trades", "AAAUSDT", _trades([6, 7], [T0 + 9, T0 + 8]))


def test_true_null_in_float_column_names_file_and_row(cat: Path) -> None:
    # a real Arrow null (not NaN) in a required float column must be refused too
    f = _funding_file(cat)
    t = pq.read_table(f)
    rates = t.column("funding_rate").to_pylist()
    rates[4] = None
    _rewrite(f, t.set_column(1, "funding_rate", pa.array(rates, pa.float64())))
    with pytest.raises(CatalogError) as e:
        run_carry_backtest(_settings(), cat)
    assert str(e.value) == f"{f}: row 5: funding_rate is null/NaN"
