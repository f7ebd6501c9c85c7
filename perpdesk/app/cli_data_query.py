"""``perpdesk data ls`` and ``perpdesk data check``: what the catalog holds, and its health."""

from __future__ import annotations

from perpdesk.app.cli_data import data_app  # noqa: F401
