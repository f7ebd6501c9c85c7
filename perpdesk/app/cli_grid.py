"""``perpdesk backtest grid``: the volatility-adaptive grid on the event engine."""

from __future__ import annotations

from perpdesk.app.cli_backtest import backtest_app  # noqa: F401
