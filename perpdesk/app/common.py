"""Shared pieces of the CLI: consoles, the --config option, date parsing."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.console import Console

from perpdesk.errors import PerpdeskError

console = Console()
err_console = Console(stderr=True)

ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        help="TOML settings file (default: $PERPDESK_CONFIG, else ./perpdesk.toml if present). "
        "PERPDESK_* environment variables override it, e.g. PERPDESK_CARRY__ENTRY_ANN_PCT=25.",
    ),
]


def parse_date_ns(text: str, option: str) -> int:
    """``YYYY-MM-DD`` or ``YYYY-MM-DDTHH:MM[:SS]`` (UTC) → ns since epoch."""
    try:
        return int(np.datetime64(text.rstrip("Z"), "ns").astype(np.int64))
    except ValueError:
        raise PerpdeskError(
            f"{option} {text!r}: not a date (use YYYY-MM-DD or YYYY-MM-DDTHH:MM, UTC)"
        ) from None
