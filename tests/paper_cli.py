"""Helpers of the tests that run ``perpdesk run --paper`` as a subprocess (tests/test_paper_live.py
against the Binance fake, tests/test_paper_live_multi.py against the Bybit and OKX fakes):
a config file, the CLI process without any ``PERPDESK_*`` key in its environment, read-only
ledger queries and polling with the runner's stderr on failure."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any


def write_config(d: Path, **runner: Any) -> Path:
    """``d/perpdesk.toml``: data under ``d/data``, fast ``[runner]`` settings for tests
    (``runner`` overrides or adds keys)."""
    keys = {
        "symbols": ["BTCUSDT"],
        "cycle_s": 0.3,
        "cycle_timeout_s": 5.0,
        "leg_fill_timeout_s": 1.0,
        "unwind_timeout_s": 2.0,
        "poll_s": 0.01,
        "vpin_bucket_usd": 10_000.0,
        "vpin_n_buckets": 3,
        "paper_flush_s": 0.05,
        **runner,
    }
    lines = ["[paths]", f"data_dir = {json.dumps(str(d / 'data'))}", "[runner]"]
    lines += [f"{k} = {json.dumps(v)}" for k, v in keys.items()]
    p = d / "perpdesk.toml"
    p.write_text("\n".join(lines) + "\n")
    return p


def spawn_cli(d: Path, args: Sequence[str]) -> subprocess.Popen[str]:
    """``python -m perpdesk.app.cli *args`` in ``d``, with no ``PERPDESK_*`` variable (no key)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PERPDESK_")}
    env["PYTHONUNBUFFERED"] = "1"
    return subprocess.Popen(
        [sys.executable, "-m", "perpdesk.app.cli", *args],
        cwd=d,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def query(d: Path, sql: str) -> list[tuple[Any, ...]]:
    """Rows of ``sql`` on the run's SQLite ledger (none while it does not exist yet)."""
    db = d / "data" / "ledger.sqlite"
    if not db.exists():
        return []
    con = sqlite3.connect(db)
    try:
        return con.execute(sql).fetchall()
    except sqlite3.OperationalError:  # tables not created yet
        return []
    finally:
        con.close()


def wait_for(cond: Callable[[], bool], p: subprocess.Popen[str], timeout_s: float = 60.0) -> None:
    """Poll ``cond`` until true; fail with the runner's stderr if it exits, kill it on timeout."""
    end = time.monotonic() + timeout_s
    while not cond():
        if p.poll() is not None:
            raise AssertionError(f"runner exited {p.returncode}: {p.stderr.read()[-2000:]}")  # type: ignore[union-attr]
        if time.monotonic() > end:
            p.kill()
            raise AssertionError("condition not reached")
        time.sleep(0.05)
