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


# --- append-only parts and their compaction -------------------------------------------------

MIN_NS = 60 * 10**9


def _tick_rows(ids) -> pa.Table:
    """Trades with ids ``ids`` (sorted here): one a minute from T0 (2024-01-01), so
    1,440 ids make a day; price and side derived from the id."""
    k = np.asarray(sorted(ids), np.int64)
    ts = T0 + k * MIN_NS
    price = 100.0 + (k % 7)
    return pa.table(
        {
            "ts_ns": ts,
            "trade_id": k,
            "price": price,
            "qty_base": np.full(k.size, 0.5),
            "quote_qty": price * 0.5,
            "is_buyer_maker": k % 2 == 0,
            "ts_recv_ns": ts + 1234,
        }
    )


def _append_batches(c: Catalog, n_batches: int = 40, seed: int = 7) -> dict[int, dict]:
    """``n_batches`` appends over ids 1..100·n_batches (2.8 days): each batch withholds
    some ids and delivers ids withheld earlier (late rows), and repeats a few stored rows
    identically. Returns the slow reference: id → row, every row ever appended."""
    rng = np.random.default_rng(seed)
    held: list[int] = []
    ref: dict[int, dict] = {}
    for b in range(n_batches):
        ids = list(range(1 + 100 * b, 101 + 100 * b))
        withhold = set(rng.choice(ids, 6, replace=False).tolist())
        late = [h for h in held if rng.random() < 0.5]
        held = [h for h in held if h not in late] + sorted(withhold)
        again = rng.choice(sorted(ref), 4, replace=False).tolist() if ref else []
        send = sorted((set(ids) - withhold) | set(late) | set(again))
        t = _tick_rows(send)
        c.append("test", "trades", "AAAUSDT", t)
        for r in t.to_pylist():
            ref[r["trade_id"]] = r
    c.append("test", "trades", "AAAUSDT", _tick_rows(held))  # the last withheld ids
    for r in _tick_rows(held).to_pylist():
        ref[r["trade_id"]] = r
    return ref


def _assert_equals_reference(root: Path, ref: dict[int, dict]) -> None:
    from perpdesk.data.check import check, inventory
    from perpdesk.data.query import query

    rows = [ref[k] for k in sorted(ref)]  # deduped by key, sorted
    got = Catalog(root).read("test", "trades", "AAAUSDT")
    assert got.to_pylist() == rows
    q = query(root, "test", "trades", ["AAAUSDT"])
    assert q.drop_columns(["symbol"]).to_pylist() == rows
    # a range inside the second day, bounds by hand: ids 1440..2879 are 2024-01-02
    day2 = query(root, "test", "trades", start_ns=T0 + DAY_NS, end_ns=T0 + 2 * DAY_NS)
    assert day2.column("trade_id").to_pylist() == [k for k in sorted(ref) if 1440 <= k < 2880]
    issues = [i for i in check(root) if not i.message.startswith("temporary file")]
    assert issues == []
    (info,) = inventory(root, dataset="trades")
    assert info.rows == len(rows)


def test_many_appends_read_back_equal_a_slow_reference(tmp_path: Path) -> None:
    c = Catalog(tmp_path)
    ref = _append_batches(c)
    assert len(ref) == 4000  # ids 1..4000, every one delivered once or more
    d = tmp_path / "test" / "trades" / "AAAUSDT"
    # the first append to each day wrote its file; later ones parts
    assert sorted(p.name for p in d.iterdir()) == [
        "2024-01-01.parquet", "2024-01-01.parts", "2024-01-02.parquet", "2024-01-02.parts",
        "2024-01-03.parquet", "2024-01-03.parts",
    ]  # fmt: skip
    _assert_equals_reference(tmp_path, ref)
    # a stored id with a different price is refused; nothing of that call is written
    n_parts = len(list((d / "2024-01-02.parts").iterdir()))
    bad = _tick_rows([2000, 4001]).set_column(2, "price", pa.array([1.0, 1.0]))
    with pytest.raises(CatalogError, match=r"trade_id 2000 already stored with a different price"):
        c.append("test", "trades", "AAAUSDT", bad.slice(0, 1))
    assert len(list((d / "2024-01-02.parts").iterdir())) == n_parts
    # a row whose ts_ns would go backwards against stored rows is refused too
    back = _tick_rows([4002]).set_column(0, "ts_ns", pa.array([T0], pa.int64()))
    with pytest.raises(CatalogError, match="ts_ns must not decrease"):
        c.append("test", "trades", "AAAUSDT", back)
    assert sorted(x.name for x in c.compact("test", "trades", "AAAUSDT")) == [
        "2024-01-01.parquet", "2024-01-02.parquet", "2024-01-03.parquet",
    ]  # fmt: skip
    assert sorted(p.name for p in d.iterdir()) == [
        "2024-01-01.parquet", "2024-01-02.parquet", "2024-01-03.parquet",
    ]  # fmt: skip
    _assert_equals_reference(tmp_path, ref)
    assert c.compact("test", "trades", "AAAUSDT") == []  # nothing left to do
    # Catalog.write over a partition that has parts folds them in as well
    c.append("test", "trades", "AAAUSDT", _tick_rows([4001, 4002]))
    c.write("test", "trades", "AAAUSDT", _tick_rows([4003]))
    ref.update({r["trade_id"]: r for r in _tick_rows([4001, 4002, 4003]).to_pylist()})
    assert not (d / "2024-01-03.parts").exists()
    _assert_equals_reference(tmp_path, ref)


_CRASH = """
import os, sys
import perpdesk.data.catalog as cm
step, nth, seen = sys.argv[2], int(sys.argv[3]), [0]
def hook(s, daily):
    if s == step:
        seen[0] += 1
        if seen[0] == nth:
            os._exit(17)  # no cleanup at all, like SIGKILL
cm._compact_hook = hook
cm.Catalog(sys.argv[1]).compact("test", "trades", "AAAUSDT")
"""


@pytest.mark.parametrize(
    ("step", "nth"), [("written", 2), ("renamed", 2), ("removed", 3)]
)  # the 2nd partition's temp file complete / renamed / its 2nd part deleted
def test_compaction_killed_at_each_step_loses_and_doubles_nothing(
    tmp_path: Path, step: str, nth: int
) -> None:
    import subprocess
    import sys

    c = Catalog(tmp_path)
    ref = _append_batches(c, n_batches=20)  # 2001 ids: two days with parts
    r = subprocess.run([sys.executable, "-c", _CRASH, str(tmp_path), step, str(nth)], timeout=120)
    assert r.returncode == 17  # died at that step
    _assert_equals_reference(tmp_path, ref)
    c.append("test", "trades", "AAAUSDT", _tick_rows([2002, 2003]))  # collecting goes on
    ref.update({x["trade_id"]: x for x in _tick_rows([2002, 2003]).to_pylist()})
    _assert_equals_reference(tmp_path, ref)
    Catalog(tmp_path).compact("test", "trades", "AAAUSDT")
    _assert_equals_reference(tmp_path, ref)
    d = tmp_path / "test" / "trades" / "AAAUSDT"
    assert not list(d.glob("*.parts"))


@pytest.mark.parametrize("step", ["read", "written", "renamed", "removed"])
def test_compaction_raising_at_each_step_leaves_readable_data(
    tmp_path: Path, monkeypatch, step: str
) -> None:
    import perpdesk.data.catalog as cm

    class InjectedError(Exception):
        pass

    def hook(s: str, daily: Path) -> None:
        if s == step:
            raise InjectedError(step)

    c = Catalog(tmp_path)
    ref = _append_batches(c, n_batches=12)
    monkeypatch.setattr(cm, "_compact_hook", hook)
    with pytest.raises(InjectedError):
        c.compact("test", "trades", "AAAUSDT")
    _assert_equals_reference(tmp_path, ref)
    monkeypatch.setattr(cm, "_compact_hook", None)
    c.compact("test", "trades", "AAAUSDT")
    _assert_equals_reference(tmp_path, ref)
    d = tmp_path / "test" / "trades" / "AAAUSDT"
    assert sorted(p.name for p in d.iterdir()) == ["2024-01-01.parquet"]


def test_cli_data_compact_folds_the_collectors_parts(tmp_path: Path) -> None:
    """`perpdesk data compact` leaves one daily file per partition holding every row once."""
    from typer.testing import CliRunner

    from perpdesk.app.cli import app

    c = Catalog(tmp_path)
    c.append("test", "trades", "AAAUSDT", _trades([1, 2], [T0, T0 + 1]))
    for k in range(3):  # three later flushes: part files next to the first daily file
        c.append("test", "trades", "AAAUSDT", _trades([3 + k], [T0 + 2 + k]))
    d = tmp_path / "test" / "trades" / "AAAUSDT"
    assert c.pending_partitions("test", "trades", "AAAUSDT")
    before = c.read("test", "trades", "AAAUSDT").column("trade_id").to_pylist()
    r = CliRunner().invoke(app, ["data", "compact", "--catalog", str(tmp_path)])
    assert r.exit_code == 0, r.output
    assert "1 partition(s) compacted" in " ".join(r.output.split())
    assert sorted(p.name for p in d.iterdir()) == ["2024-01-01.parquet"]
    assert before == [1, 2, 3, 4, 5]
    assert c.read("test", "trades", "AAAUSDT").column("trade_id").to_pylist() == before
    r = CliRunner().invoke(app, ["data", "compact", "--catalog", str(tmp_path)])
    assert "0 partition(s) compacted" in " ".join(r.output.split())


def test_parts_are_written_required_and_read_back_in_the_dataset_schema(tmp_path: Path) -> None:
    """A daily file written by ``write`` (nullable columns) and parts written by ``append``
    (columns without nulls as Parquet REQUIRED): reads and DuckDB queries see one table in
    the dataset's schema; a column holding nulls stays OPTIONAL in its part."""
    from perpdesk.data.catalog import dataset_spec
    from perpdesk.data.query import query

    c = Catalog(tmp_path)
    c.write("test", "trades", "AAAUSDT", _tick_rows(range(1, 11)))
    c.append("test", "trades", "AAAUSDT", _tick_rows(range(11, 16)))
    late = _tick_rows(range(16, 19))
    late = late.set_column(6, "ts_recv_ns", pa.array([None, 5, None], pa.int64()))
    c.append("test", "trades", "AAAUSDT", late)
    parts = sorted((tmp_path / "test" / "trades" / "AAAUSDT" / "2024-01-01.parts").iterdir())
    assert len(parts) == 2
    kinds = [
        {f.name: f.max_definition_level for f in pq.ParquetFile(p).schema} for p in parts
    ]
    assert kinds[0] == {n: 0 for n in kinds[0]}  # 0 = REQUIRED
    assert kinds[1]["ts_recv_ns"] == 1 and kinds[1]["price"] == 0
    got = c.read("test", "trades", "AAAUSDT")
    assert got.schema == dataset_spec("trades").schema
    assert got.column("trade_id").to_pylist() == list(range(1, 19))
    assert got.column("ts_recv_ns").to_pylist()[-3:] == [None, 5, None]
    q = query(tmp_path, "test", "trades", ["AAAUSDT"], columns=["trade_id", "ts_recv_ns"])
    assert q.column("trade_id").to_pylist() == list(range(1, 19))
    assert q.column("ts_recv_ns").to_pylist()[-3:] == [None, 5, None]
    c.compact("test", "trades", "AAAUSDT")
    assert c.read("test", "trades", "AAAUSDT").equals(got)
