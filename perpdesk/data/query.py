"""Fast reads of the Parquet catalog through DuckDB: a range query and SQL views.

:func:`query` returns the rows of some symbols of one dataset in ``[start_ns, end_ns)``
with a ``symbol`` column added, as an Arrow table, a pandas or a polars DataFrame.
:func:`connect` / :func:`sql` register every dataset of a venue as a DuckDB view
(``perp_bars_5m``, ``funding`` …, plus ``instruments``) so users can write SQL::

    from perpdesk.data.query import query, sql
    t = query("cat", "binance", "perp_bars_5m", symbols=["BTCUSDT"], start_ns=a, end_ns=b)
    sql("cat", "SELECT symbol, avg(funding_rate) FROM funding GROUP BY symbol")

Design decision: keep the catalog layout, prune files from the path
--------------------------------------------------------------------
The layout ``<venue>/<dataset>/<symbol>/<YYYY-MM|YYYY-MM-DD>.parquet`` is not Hive style
(``symbol=BTCUSDT``), so DuckDB cannot derive ``symbol`` or the period from the path by
itself. We keep the layout (the writer, the reader and the importers share it) and do the
pruning ourselves: the symbol directories and the period in each file name select the
files; DuckDB gets that explicit list per symbol, as one ``read_parquet`` per symbol in a
``UNION ALL`` with the symbol as a constant column, and the ``ts_ns`` bounds as a
``WHERE`` that DuckDB pushes into its Parquet reader (row-group min/max statistics skip
row groups, then the filter runs inside the scan). The same per-symbol ``UNION ALL``
backs the SQL views, so ``WHERE symbol = 'X'`` in a user's SQL folds the other branches
away without opening their files.

Measured with ``bench/bench_query.py`` (shared 2-core machine, warm page cache, ±50 %
between runs), one month × 5 symbols: on 50 symbols × a year of 5m bars (600 monthly
files) the explicit list and one ``read_parquet`` glob over the whole dataset (symbol
parsed from each row's file name, filtered on it) both take 0.01–0.04 s — with few files
DuckDB's footer statistics prune as well. On daily partitions (20 symbols × 366 days,
7,320 files) the explicit list takes 0.05 s and the glob 0.27–0.38 s: DuckDB must list
the tree and open every footer to apply statistics, a cost that grows with the number of
files, which is what tick datasets (one file per symbol-day) produce. The explicit list
also follows the catalog's own rules (only ``<period>.parquet``, never a ``.tmp`` left by
an interrupted write). Rewriting the catalog Hive-style would let DuckDB prune by path
too, but would change every writer, reader and importer for no gain over the list.

Append-only parts (:meth:`Catalog.append`, the tick collector) are part of the list: a
partition is its file plus its live parts (``<period>.parts/*.parquet`` not yet absorbed
by a compaction). The catalog keeps keys unique across them, but a late part can hold
keys below an earlier one, so a :func:`query` whose selection holds any part sorts by
``symbol, ts_ns`` and the dataset's key (the stored order of a compacted catalog).

Reads here trust the files (no per-row validation as in :meth:`Catalog.read`): a file
DuckDB cannot read, or whose columns do not match, is a :class:`CatalogError` naming the
dataset and DuckDB's reason; ``perpdesk data check`` (:mod:`perpdesk.data.check`) finds
and names bad files and rows.
"""

from __future__ import annotations

import importlib.util
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

import duckdb
import numpy as np
import pyarrow as pa

from perpdesk.data.catalog import PARTS_SUFFIX, Catalog, dataset_spec
from perpdesk.errors import CatalogError, PerpdeskError

Output = Literal["arrow", "pandas", "polars"]

_STEM_RE = {"month": re.compile(r"^\d{4}-\d{2}$"), "day": re.compile(r"^\d{4}-\d{2}-\d{2}$")}


def partition_bounds(path: Path, granularity: str) -> tuple[int, int]:
    """``[start, end)`` in ns UTC of the partition file ``path`` (stem ``YYYY-MM`` for
    ``month``, ``YYYY-MM-DD`` for ``day``); :class:`CatalogError` for any other name."""
    stem = path.stem
    if not _STEM_RE[granularity].match(stem):
        want = "YYYY-MM" if granularity == "month" else "YYYY-MM-DD"
        raise CatalogError(f"{path}: file name is not a {granularity} partition ({want}.parquet)")
    unit = "M" if granularity == "month" else "D"
    try:
        start = np.datetime64(stem, unit)
    except ValueError:
        raise CatalogError(f"{path}: file name {stem!r} is not a valid date") from None
    end = start + np.timedelta64(1, unit)
    return (
        int(start.astype("datetime64[ns]").astype(np.int64)),
        int(end.astype("datetime64[ns]").astype(np.int64)),
    )


def venues(root: str | Path) -> list[str]:
    """Venues of the catalog at ``root`` (:class:`CatalogError` if it is not a directory)."""
    return Catalog(root).venues()


def datasets(root: str | Path, venue: str) -> list[str]:
    """Dataset directories of ``venue`` (known to the catalog or not), sorted."""
    cat = Catalog(root)
    known = cat.venues()
    if venue not in known:
        raise CatalogError(
            f"{cat.root}: unknown venue '{venue}' (known: {', '.join(known) or 'none'})"
        )
    d = cat.root / venue
    return sorted(p.name for p in d.iterdir() if p.is_dir() and not p.name.startswith("."))


def _check_dataset(root: str | Path, venue: str, dataset: str) -> None:
    known = datasets(root, venue)
    if dataset not in known:
        raise CatalogError(
            f"{Path(root).expanduser() / venue}: unknown dataset '{dataset}' "
            f"(known: {', '.join(known) or 'none'})"
        )
    dataset_spec(dataset)  # a directory the catalog has no schema for is an error too


def select_files(
    root: str | Path,
    venue: str,
    dataset: str,
    symbols: Iterable[str] | None = None,
    start_ns: int | None = None,
    end_ns: int | None = None,
) -> dict[str, list[Path]]:
    """The partition files, per symbol (sorted), that can hold rows in
    ``[start_ns, end_ns)``, chosen from the path layout alone — each partition file
    followed by its live append-only parts, if any. Unknown venue, dataset or symbol is a
    :class:`CatalogError` listing the known ones."""
    _check_dataset(root, venue, dataset)
    spec = dataset_spec(dataset)
    cat = Catalog(root)
    known = cat.symbols(venue, dataset)
    if symbols is None:
        chosen = known
    else:
        chosen = list(dict.fromkeys(symbols))
        unknown = [s for s in chosen if s not in known]
        if unknown:
            shown = ", ".join(known[:30]) + (f" … ({len(known)} in all)" if len(known) > 30 else "")
            raise CatalogError(
                f"{cat.root / venue / dataset}: unknown symbol(s) {', '.join(unknown)} "
                f"(known: {shown or 'none'})"
            )
    out: dict[str, list[Path]] = {}
    for sym in chosen:
        files = []
        for path, live in cat.partition_files(venue, dataset, sym):
            lo, hi = partition_bounds(path, spec.partition)
            if (start_ns is not None and hi <= start_ns) or (end_ns is not None and lo >= end_ns):
                continue
            if path.exists():
                files.append(path)
            files.extend(live)
        out[sym] = files
    return out


def _lit(text: str) -> str:
    """A SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


def _ident(name: str) -> str:
    """A quoted SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


def is_part(path: Path) -> bool:
    """Whether ``path`` is an append-only part (inside a ``<period>.parts`` directory)."""
    return path.parent.name.endswith(PARTS_SUFFIX)


def _union_sql(files_by_symbol: dict[str, list[Path]], columns: list[str]) -> str | None:
    """``SELECT '<sym>' AS symbol, <columns> FROM read_parquet([...]) UNION ALL …`` over the
    symbols that have files; None when none has."""
    cols = ", ".join(_ident(c) for c in columns)
    parts = [
        f"SELECT {_lit(sym)} AS symbol, {cols} FROM read_parquet("
        f"[{', '.join(_lit(str(p)) for p in files)}])"
        for sym, files in files_by_symbol.items()
        if files
    ]
    return "\nUNION ALL\n".join(parts) if parts else None


def _convert(table: pa.Table, as_: Output) -> Any:
    if as_ == "arrow":
        return table
    if as_ == "pandas":
        return table.to_pandas()
    if as_ == "polars":
        if importlib.util.find_spec("polars") is None:
            raise PerpdeskError(
                "as_='polars' needs the polars package (not installed); use 'arrow' or 'pandas'"
            )
        import polars

        return polars.from_arrow(table)
    raise PerpdeskError(f"as_={as_!r}: unknown output (use 'arrow', 'pandas' or 'polars')")


_DB: tuple[int, duckdb.DuckDBPyConnection] | None = None


def _cursor() -> duckdb.DuckDBPyConnection:
    """A cursor on one in-memory DuckDB database per process: opening a database costs
    ~12 ms, a cursor µs; each call gets its own cursor, so threads may query at once."""
    global _DB
    if _DB is None or _DB[0] != os.getpid():  # a forked child opens its own
        _DB = (os.getpid(), duckdb.connect())
    return _DB[1].cursor()


def _run(con: duckdb.DuckDBPyConnection, text: str, where: str) -> pa.Table:
    try:
        return con.sql(text).to_arrow_table()
    except duckdb.Error as exc:
        reason = " ".join(str(exc).split())
        raise CatalogError(
            f"{where}: query failed ({reason}); `perpdesk data check` names bad files"
        ) from None


def _range_sql(
    root: str | Path,
    venue: str,
    dataset: str,
    symbols: Iterable[str] | None,
    start_ns: int | None,
    end_ns: int | None,
    cols: list[str],
) -> str | None:
    """The SQL behind :func:`query` (None when no file can hold a row of the range)."""
    files = dict(sorted(select_files(root, venue, dataset, symbols, start_ns, end_ns).items()))
    key = dataset_spec(dataset).key
    parts = any(is_part(p) for fs in files.values() for p in fs)
    union = _union_sql(files, [*cols, key] if parts and key not in cols else cols)
    if union is None:
        return None
    conds = []
    if start_ns is not None:
        conds.append(f"ts_ns >= {int(start_ns)}")
    if end_ns is not None:
        conds.append(f"ts_ns < {int(end_ns)}")
    where = f"WHERE {' AND '.join(conds)}" if conds else ""
    if parts:  # a late part may hold keys below an earlier part's: restore the key order
        out = ", ".join(["symbol", *(_ident(c) for c in cols)])
        order = ", ".join(dict.fromkeys(["symbol", "ts_ns", _ident(key)]))
        return f"SELECT {out} FROM ({union}) {where} ORDER BY {order}"
    # No ORDER BY: DuckDB guarantees that read_parquet over a file list, UNION ALL and
    # WHERE keep row order ("Order Preservation", DuckDB SQL dialect docs), so rows come
    # symbol by symbol (sorted) and file by file as stored; sorting 5 M rows cost 0.5 s.
    return f"SELECT * FROM ({union}) {where}"


def query(
    root: str | Path,
    venue: str,
    dataset: str,
    symbols: Iterable[str] | None = None,
    start_ns: int | None = None,
    end_ns: int | None = None,
    columns: list[str] | None = None,
    as_: Output = "arrow",
) -> Any:
    """Rows of ``dataset`` on ``venue`` for ``symbols`` (default: all) with
    ``start_ns <= ts_ns < end_ns`` (ns UTC, half-open; None = unbounded), ordered by
    symbol, then as stored (``ts_ns`` ascending in a valid catalog), as
    ``symbol, ts_ns, <columns>`` (default: every column of the
    dataset's schema). ``as_`` picks an Arrow table, a pandas or a polars DataFrame.

    Only the partition files whose period meets the range are opened, and the ``ts_ns``
    bounds reach DuckDB's Parquet reader (see the module docstring). Errors name the
    unknown venue / dataset / symbol / column and list the known ones.
    """
    if as_ not in ("arrow", "pandas", "polars"):
        raise PerpdeskError(f"as_={as_!r}: unknown output (use 'arrow', 'pandas' or 'polars')")
    if start_ns is not None and end_ns is not None and end_ns < start_ns:
        raise PerpdeskError(f"end_ns {end_ns} is before start_ns {start_ns}")
    spec = dataset_spec(dataset)
    if columns is None:
        cols = list(spec.schema.names)
    else:
        unknown = [c for c in columns if c not in spec.schema.names]
        if unknown:
            raise CatalogError(
                f"dataset '{dataset}' has no column(s) {', '.join(unknown)} "
                f"(columns: {', '.join(spec.schema.names)})"
            )
        cols = ["ts_ns", *dict.fromkeys(c for c in columns if c != "ts_ns")]
    out_schema = pa.schema([pa.field("symbol", pa.string()), *(spec.schema.field(c) for c in cols)])
    text = _range_sql(root, venue, dataset, symbols, start_ns, end_ns, cols)
    if text is None:
        return _convert(out_schema.empty_table(), as_)
    with _cursor() as con:
        table = _run(con, text, f"{venue}/{dataset}")
    return _convert(table.cast(out_schema), as_)


def connect(root: str | Path, venue: str | None = None) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with one view per dataset of every venue, as
    ``"<venue>".<dataset>`` (and ``"<venue>".instruments``), each ``symbol, <columns>``
    over that dataset's files. The views of ``venue`` (default: the only venue, if there
    is one) are also reachable unqualified (``SELECT … FROM perp_bars_5m``). The file list
    is taken now: reconnect to see partitions written later."""
    cat = Catalog(root)
    all_venues = cat.venues()
    if venue is not None and venue not in all_venues:
        raise CatalogError(
            f"{cat.root}: unknown venue '{venue}' (known: {', '.join(all_venues) or 'none'})"
        )
    default = venue if venue is not None else (all_venues[0] if len(all_venues) == 1 else None)
    con = duckdb.connect()
    for v in all_venues:
        con.execute(f"CREATE SCHEMA {_ident(v)}")
        schemas = [_ident(v)] + (["main"] if v == default else [])
        inst = cat.root / v / "instruments.parquet"
        if inst.is_file():
            for s in schemas:
                con.execute(
                    f"CREATE VIEW {s}.instruments AS SELECT * FROM read_parquet({_lit(str(inst))})"
                )
        for ds in datasets(root, v):
            try:
                spec = dataset_spec(ds)
            except CatalogError:
                continue  # not a catalog dataset: `data check` reports it
            union = _union_sql(select_files(root, v, ds), list(spec.schema.names))
            if union is None:
                continue
            for s in schemas:
                con.execute(f"CREATE VIEW {s}.{_ident(ds)} AS {union}")
    return con


def sql(root: str | Path, text: str, venue: str | None = None, as_: Output = "arrow") -> Any:
    """Run the SQL ``text`` against the views of :func:`connect` and return the result as
    an Arrow table (or pandas / polars with ``as_``). Errors are one-line
    :class:`CatalogError` s carrying DuckDB's message."""
    if as_ not in ("arrow", "pandas", "polars"):
        raise PerpdeskError(f"as_={as_!r}: unknown output (use 'arrow', 'pandas' or 'polars')")
    with connect(root, venue) as con:
        return _convert(_run(con, text, f"{Path(root).expanduser()}: SQL"), as_)


__all__ = [
    "connect",
    "datasets",
    "is_part",
    "partition_bounds",
    "query",
    "select_files",
    "sql",
    "venues",
]
