"""Importers that normalise third-party market-data files to the catalog schemas.

- :mod:`~perpdesk.data.sources.binance_archive`: data.binance.vision CSV/zip files;
- :mod:`~perpdesk.data.sources.binance_ws`: raw websocket captures (``<recv ts> <json>``);
- :mod:`~perpdesk.data.sources.freqtrade`: freqtrade futures data folders;
- :mod:`~perpdesk.data.sources.funding`: funding histories (Binance REST JSON and website
  CSV, Hyperliquid, multi-venue Parquet).
"""

from perpdesk.data.sources.binance_archive import (
    import_archive_files,
    read_archive_file,
    read_archive_metrics,
)
from perpdesk.data.sources.binance_ws import import_capture, read_capture
from perpdesk.data.sources.freqtrade import (
    freqtrade_symbol,
    import_freqtrade_dir,
    read_freqtrade_bars,
    read_freqtrade_funding,
)
from perpdesk.data.sources.funding import (
    read_binance_funding_json,
    read_binance_funding_web_csv,
    read_hyperliquid_funding_json,
    read_multivenue_funding,
    write_funding,
)

__all__ = [
    "freqtrade_symbol",
    "import_archive_files",
    "import_capture",
    "import_freqtrade_dir",
    "read_archive_file",
    "read_archive_metrics",
    "read_binance_funding_json",
    "read_binance_funding_web_csv",
    "read_capture",
    "read_freqtrade_bars",
    "read_freqtrade_funding",
    "read_hyperliquid_funding_json",
    "read_multivenue_funding",
    "write_funding",
]
