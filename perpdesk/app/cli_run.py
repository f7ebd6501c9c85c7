"""``perpdesk run``, ``perpdesk watchdog``, ``perpdesk audit``: the live runtime."""

from __future__ import annotations

import typer

run_app = typer.Typer(help="Run the trading runtime.")
