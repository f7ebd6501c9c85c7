"""Live-runtime commands: ``perpdesk collect`` (and later ``scan``, ``run``)."""

from __future__ import annotations

import typer

live_app = typer.Typer(help="Live runtime commands.")
