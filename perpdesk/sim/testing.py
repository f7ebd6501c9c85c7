"""Test helpers for anything that runs on the engine: the generic lookahead test.

:func:`assert_no_lookahead` runs a strategy twice — over a catalog, and over a copy of it
that ends at the K-th event — and asserts that everything the strategy decided (and the
venue did) before that event is identical. A strategy, feature or engine path that reads
data stamped at or after its decision time makes the two runs differ. The truncated copy is
a real catalog without the later rows (written with the catalog's own writer), so nothing
can reach them, not even by reading files directly.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq

from perpdesk.data.catalog import Catalog
from perpdesk.domain import Instrument
from perpdesk.sim.costs import Costs
from perpdesk.sim.engine import AccountConfig, EngineResult, run_backtest
from perpdesk.sim.fills import FillModel
from perpdesk.sim.replay import Replay, StreamSpec
from perpdesk.strategies.base import Strategy


def event_time_of(
    root: str | os.PathLike[str],
    streams: Sequence[StreamSpec],
    k: int,
    start_ns: int | None = None,
    end_ns: int | None = None,
) -> int:
    """Event time (ns) of the ``k``-th replayed event (0-based)."""
    seen = 0
    for ch in Replay(root, streams, start_ns, end_ns).chunks():
        if k < seen + len(ch):
            return int(ch.ts_ns[k - seen])
        seen += len(ch)
    raise ValueError(f"the replay has only {seen} events, no event {k}")


def truncate_catalog(
    root: str | os.PathLike[str], streams: Sequence[StreamSpec], cut_ns: int, dest: Path
) -> Path:
    """Copy the rows of ``streams`` whose **event time** is before ``cut_ns`` (a bar's
    close, other rows' ``ts_ns``) and the venues' instrument tables into a new catalog at
    ``dest``."""
    src = Catalog(root)
    out = Catalog(dest)
    for venue in sorted({s.venue for s in streams}):
        inst = src.root / venue / "instruments.parquet"
        if inst.is_file():
            (out.root / venue).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(inst, out.root / venue / "instruments.parquet")
    for s in streams:
        t = src.read(s.venue, s.dataset, s.symbol)
        t = t.filter(pc.less(t.column("ts_ns"), cut_ns - s.offset_ns))
        if t.num_rows:
            out.write(s.venue, s.dataset, s.symbol, t)
        else:  # keep the stream present (an empty partition) so the replay can open it
            part = src.partitions(s.venue, s.dataset, s.symbol)[0]
            target = out.root / s.venue / s.dataset / s.symbol / part.name
            target.parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(pq.read_table(part).slice(0, 0), target)
    return out.root


def _before(result: EngineResult, cut_ns: int) -> dict[str, list[dict]]:
    out = {}
    for name in ("orders", "fills", "rejections"):
        t = getattr(result, name)
        out[name] = t.filter(pc.less(t.column("ts_ns"), cut_ns)).to_pylist()
    return out


def assert_no_lookahead(
    strategy_factory: Callable[[Path], Strategy],
    root: str | os.PathLike[str],
    streams: Sequence[StreamSpec],
    instruments: Iterable[Instrument],
    account: AccountConfig,
    *,
    k_events: Sequence[int],
    workdir: str | os.PathLike[str],
    fill_model_factory: Callable[[], FillModel] | None = None,
    costs: Costs | None = None,
    start_ns: int | None = None,
    end_ns: int | None = None,
) -> None:
    """Assert that the decisions before the K-th event do not depend on later data.

    For every K in ``k_events``: cut = event time of the K-th event; run
    ``strategy_factory(catalog_root)`` (a fresh strategy; it receives the root of the
    catalog it runs on) over the full catalog and over a copy truncated at cut; the
    orders (decision time), fills and rejections stamped before cut must be identical.
    Raises ``AssertionError`` naming K, the table and the first differing row.
    """
    instruments = list(instruments)
    root = Path(root)

    def run(r: Path) -> EngineResult:
        fm = fill_model_factory() if fill_model_factory is not None else None
        return run_backtest(
            strategy_factory(r),
            r,
            instruments,
            account,
            fm,
            costs,
            streams=streams,
            start_ns=start_ns,
            end_ns=end_ns,
        )

    full = run(root)
    for k in k_events:
        cut = event_time_of(root, streams, k, start_ns, end_ns)
        part_root = truncate_catalog(root, streams, cut, Path(workdir) / f"cut-{k}")
        part = run(part_root)
        a, b = _before(full, cut), _before(part, cut)
        for name in a:
            if a[name] != b[name]:
                n = min(len(a[name]), len(b[name]))
                i = next((j for j in range(n) if a[name][j] != b[name][j]), n)
                got_a = a[name][i] if i < len(a[name]) else "<none>"
                got_b = b[name][i] if i < len(b[name]) else "<none>"
                raise AssertionError(
                    f"lookahead at K={k} (cut {cut}): {name} row {i} differs: "
                    f"with later data {got_a} vs without {got_b}"
                )
