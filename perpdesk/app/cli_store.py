"""Ledger commands: ``perpdesk init-db``, ``perpdesk status``."""

from __future__ import annotations

import typer

store_app = typer.Typer(help="Ledger commands.")
