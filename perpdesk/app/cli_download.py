"""``perpdesk data download``: fetch exchange history through ccxt into the catalog."""

from __future__ import annotations

from perpdesk.app.cli_data import data_app  # noqa: F401
