"""Importers that normalise third-party market-data files to the catalog schemas.

- :mod:`~perpdesk.data.sources.binance_archive`: data.binance.vision CSV/zip files;
- :mod:`~perpdesk.data.sources.binance_ws`: raw websocket captures (``<recv ts> <json>``);
- :mod:`~perpdesk.data.sources.freqtrade`: freqtrade futures data folders;
- :mod:`~perpdesk.data.sources.funding`: funding histories (Binance REST JSON and website
  CSV, Hyperliquid, multi-venue Parquet).

:func:`import_paths` (behind ``perpdesk data import``) routes any mix of these inputs to
the right reader, validates **every** input before it writes anything, and then writes
(see its docstring for the all-or-nothing and quarantine rules).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

from perpdesk.data.catalog import Catalog, dataset_spec, validate_table
from perpdesk.data.sources.binance_archive import (
    BOOK_DEPTH_SCHEMA,
    QUARANTINE_FILE,
    check_importable,
    import_archive_files,
    parse_archive_file,
    parse_archive_name,
    read_archive_file,
    read_archive_metrics,
    write_quarantine,
)
from perpdesk.data.sources.binance_ws import capture_writes, import_capture, read_capture
from perpdesk.data.sources.freqtrade import (
    FILE_RE as FREQTRADE_FILE_RE,
)
from perpdesk.data.sources.freqtrade import (
    freqtrade_symbol,
    import_freqtrade_dir,
    read_freqtrade_bars,
    read_freqtrade_dir,
    read_freqtrade_file,
    read_freqtrade_funding,
)
from perpdesk.data.sources.funding import (
    read_binance_funding_json,
    read_binance_funding_web_csv,
    read_hyperliquid_funding_json,
    read_multivenue_funding,
    write_funding,
)
from perpdesk.errors import CatalogError

PathLike = str | os.PathLike[str]

INPUT_KINDS = ("freqtrade-dir", "freqtrade", "archive", "capture", "funding-json", "funding-csv")


@dataclass
class InputFile:
    """One input read and validated, not yet written: what it becomes in the catalog and
    the rows it set aside (``(row or line, reason, raw text)``; quarantine mode only)."""

    source: str  # the file (``file[member]`` for a zip)
    kind: str  # one of INPUT_KINDS
    writes: list[tuple[str, str, str, pa.Table]]  # (venue, dataset, symbol, table)
    quarantined: list[tuple[int, str, str]] = field(default_factory=list)


@dataclass
class ImportReport:
    """What :func:`import_paths` read (and, once committed, wrote)."""

    inputs: list[InputFile] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, reason)
    notes: list[str] = field(default_factory=list)
    quarantine_file: Path | None = None
    written: list[Path] = field(default_factory=list)

    @property
    def rows_imported(self) -> int:
        return sum(t.num_rows for i in self.inputs for *_, t in i.writes)

    @property
    def rows_quarantined(self) -> int:
        return sum(len(i.quarantined) for i in self.inputs)


def classify_input(path: PathLike, kind: str | None = None) -> str:
    """Which importer reads ``path`` (one of :data:`INPUT_KINDS`).

    A folder is a freqtrade data folder; ``<PAIR>-<tf>-<futures|mark|funding_rate>``
    feather/json.gz files are freqtrade files; Binance archive names
    (``BTCUSDT-aggTrades-2024-01-01.zip``, ``BTCUSDT-5m-2024-01.csv``…) and any ``.zip``
    — or any file when an archive ``kind`` is given — are archive files; other ``.gz``
    files (``*.dat.gz``) are websocket captures; other ``.json`` files are Binance
    fundingRate JSON and other ``.csv`` files the website's funding export.
    """
    p = Path(path)
    if p.is_dir():
        return "freqtrade-dir"
    if not p.is_file():
        raise CatalogError(f"{p}: no such file or directory")
    if FREQTRADE_FILE_RE.match(p.name):
        return "freqtrade"
    if kind is not None or p.suffix.lower() == ".zip":
        return "archive"
    if p.suffix.lower() == ".csv":
        try:
            parse_archive_name(p)
            return "archive"
        except CatalogError:
            return "funding-csv"
    if p.suffix.lower() == ".gz":
        return "capture"
    if p.suffix.lower() == ".json":
        return "funding-json"
    raise CatalogError(
        f"{p}: unknown format (expected a freqtrade folder or file, a Binance archive "
        ".zip/.csv, a websocket capture .gz, a funding .json or a website funding .csv)"
    )


def read_inputs(
    paths: Iterable[PathLike],
    *,
    venue: str = "binance",
    symbol: str | None = None,
    kind: str | None = None,
    market: str | None = None,
    quarantine: bool = False,
) -> ImportReport:
    """Read and validate every input (nothing is written). Without ``quarantine`` the
    first bad row of any input raises :class:`CatalogError` naming the file, the row and
    the reason; with it, bad rows are collected per input. ``symbol`` names the symbol of
    funding JSON/CSV files (required for them); ``kind`` and ``market`` apply to archive
    files (see :func:`parse_archive_name`)."""
    report = ImportReport()
    for raw_path in paths:
        p = Path(raw_path)
        what = classify_input(p, kind)
        q: list[tuple[int, str, str]] | None = [] if quarantine else None
        if what == "freqtrade-dir":
            files, summary = read_freqtrade_dir(p, quarantine=quarantine)
            report.skipped += [(str(p / n), r) for n, r in summary.skipped]
            report.notes += summary.notes
            for f in files:
                report.inputs.append(
                    InputFile(
                        str(f.path),
                        "freqtrade",
                        [(venue, f.dataset, f.symbol, f.table)],
                        f.quarantined,
                    )
                )
        elif what == "freqtrade":
            f = read_freqtrade_file(p, quarantine=q)
            report.inputs.append(
                InputFile(str(p), what, [(venue, f.dataset, f.symbol, f.table)], f.quarantined)
            )
        elif what == "archive":
            a = parse_archive_file(p, kind, market)
            check_importable(a.dataset, a.where)
            if a.bad_rows and not quarantine:
                row, reason, _ = a.bad_rows[0]
                more = len(a.bad_rows) - 1
                extra = f" (and {more} more bad row{'s' * (more > 1)})" if more else ""
                raise CatalogError(f"{a.where}: row {row}: {reason}{extra}")
            writes = [(venue, a.dataset, a.symbol, a.table)] if a.table.num_rows else []
            report.inputs.append(InputFile(a.where, what, writes, list(a.bad_rows)))
        elif what == "capture":
            cap = read_capture(p, quarantine=q)
            report.inputs.append(InputFile(str(p), what, capture_writes(cap, venue), q or []))
        else:
            if symbol is None:
                raise CatalogError(f"{p}: pass --symbol for JSON/CSV funding files")
            if what == "funding-json":
                t = read_binance_funding_json(p, symbol, quarantine=q)
            else:
                t = read_binance_funding_web_csv(p, quarantine=q)
            report.inputs.append(InputFile(str(p), what, [(venue, "funding", symbol, t)], q or []))
    return report


def _merge(old: pa.Table, new: pa.Table, dataset: str, where: str) -> pa.Table:
    """Merge two tables of one dataset/symbol with the catalog's own rules (identical
    rows dedupe, a known nullable value fills a missing one, conflicts raise)."""
    # Catalog._merge is the catalog's own merge rule; a public twin would be cleaner
    return Catalog._merge(old, new, dataset_spec(dataset), Path(where))


def commit(report: ImportReport, catalog: Catalog, quarantine_dir: PathLike | None) -> None:
    """Write what :func:`read_inputs` read. First, with nothing written yet: the tables of
    each venue/dataset/symbol are merged together and with the rows the catalog already
    holds in their time range, so a conflict (same key, different values) anywhere
    fails before the first write. Then the quarantine file, then the catalog partitions
    (each atomic)."""
    groups: dict[tuple[str, str, str], pa.Table] = {}
    for inp in report.inputs:
        for v, ds, sym, t in inp.writes:
            k = (v, ds, sym)
            where = f"{v}/{ds}/{sym} ({inp.source})"
            t = validate_table(t, dataset_spec(ds), where)
            groups[k] = _merge(groups[k], t, ds, where) if k in groups else t
    for (v, ds, sym), t in groups.items():
        if not catalog.partitions(v, ds, sym) or t.num_rows == 0:
            continue
        ts = t.column("ts_ns").to_numpy()
        old = catalog.read(v, ds, sym, int(ts.min()), int(ts.max()) + 1)
        _merge(old, t, ds, f"{catalog.root / v / ds / sym}")
    entries = [
        (i.source, r, reason, raw) for i in report.inputs for r, reason, raw in i.quarantined
    ]
    if quarantine_dir is not None and entries:
        report.quarantine_file = write_quarantine(quarantine_dir, entries)
    for (v, ds, sym), t in groups.items():
        report.written += catalog.write(v, ds, sym, t)


def import_paths(
    paths: Iterable[PathLike],
    catalog: Catalog,
    *,
    venue: str = "binance",
    symbol: str | None = None,
    kind: str | None = None,
    market: str | None = None,
    quarantine_dir: PathLike | None = None,
) -> ImportReport:
    """Import any mix of inputs (see :func:`classify_input`) into ``catalog``.

    All inputs are read and validated before anything is written (:func:`read_inputs`,
    then :func:`commit`). Without ``quarantine_dir`` any bad row fails the whole import
    with one :class:`CatalogError` line (file, row, reason) and nothing is written; with
    it, bad rows are appended to ``<quarantine_dir>/quarantine.csv``
    (``file,row,reason,raw_line``) and the good rows are imported. Re-importing the same
    inputs changes nothing.
    """
    report = read_inputs(
        paths,
        venue=venue,
        symbol=symbol,
        kind=kind,
        market=market,
        quarantine=quarantine_dir is not None,
    )
    commit(report, catalog, quarantine_dir)
    return report


__all__ = [
    "BOOK_DEPTH_SCHEMA",
    "INPUT_KINDS",
    "QUARANTINE_FILE",
    "ImportReport",
    "InputFile",
    "classify_input",
    "commit",
    "freqtrade_symbol",
    "import_archive_files",
    "import_capture",
    "import_freqtrade_dir",
    "import_paths",
    "read_archive_file",
    "read_archive_metrics",
    "read_binance_funding_json",
    "read_binance_funding_web_csv",
    "read_capture",
    "read_freqtrade_bars",
    "read_freqtrade_funding",
    "read_hyperliquid_funding_json",
    "read_inputs",
    "read_multivenue_funding",
    "write_funding",
]
