"""Importers that normalise third-party market-data files to the catalog schemas."""

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
    "import_freqtrade_dir",
    "read_binance_funding_json",
    "read_binance_funding_web_csv",
    "read_freqtrade_bars",
    "read_freqtrade_funding",
    "read_hyperliquid_funding_json",
    "read_multivenue_funding",
    "write_funding",
]
