"""The live-state snapshot: one JSON file other processes (dashboard, watchdog) read.

Written atomically (temp file + rename, :func:`perpdesk.files.atomic_write_text`): a reader
sees the previous snapshot or the new one, never half of one. Amounts are written as
decimal strings (exact), times as integer ``ts_ns``. The text passes through
:func:`perpdesk.secrets.redact` and a :class:`~perpdesk.secrets.Secret` is written as ``***``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, is_dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from perpdesk.errors import PerpdeskError
from perpdesk.files import atomic_write_text
from perpdesk.secrets import MASK, Secret, redact
from perpdesk.store.ledger import LedgerStatus

__all__ = [
    "SNAPSHOT_VERSION",
    "default_snapshot_path",
    "read_snapshot",
    "status_payload",
    "write_snapshot",
]

SNAPSHOT_VERSION = 1


def _default(obj: Any) -> Any:
    if isinstance(obj, Secret):
        return MASK
    if isinstance(obj, Decimal):
        return format(obj, "f")
    if is_dataclass(obj) and not isinstance(obj, type):
        return asdict(obj)
    if isinstance(obj, Mapping):
        return dict(obj)
    if isinstance(obj, set | frozenset | tuple):
        return sorted(obj) if isinstance(obj, set | frozenset) else list(obj)
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"snapshot: cannot write a {type(obj).__name__}")


def default_snapshot_path(snapshot_path: str, data_dir: Path) -> Path:
    """``store.snapshot_path`` when set, else ``<paths.data_dir>/state.json``."""
    return Path(snapshot_path or Path(data_dir) / "state.json").expanduser()


def status_payload(status: LedgerStatus) -> dict[str, Any]:
    """A JSON-ready dict of a :class:`LedgerStatus` (Decimals as strings)."""
    return json.loads(json.dumps(asdict(status), default=_default))


def write_snapshot(path: Path, payload: Mapping[str, Any], ts_ns: int) -> None:
    """Write ``{"version", "ts_ns", **payload}`` to ``path`` atomically. Raises
    :class:`PerpdeskError` if a value cannot be written as JSON (nothing is written)."""
    body = {"version": SNAPSHOT_VERSION, "ts_ns": int(ts_ns), **payload}
    try:
        text = json.dumps(body, default=_default, sort_keys=True, indent=1, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise PerpdeskError(f"snapshot {path}: {redact(str(exc))}") from None
    atomic_write_text(redact(text) + "\n", Path(path))


def read_snapshot(path: Path) -> dict[str, Any]:
    """Read a snapshot; a missing or malformed file is a one-line :class:`PerpdeskError`."""
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PerpdeskError(f"snapshot {p}: no such file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise PerpdeskError(f"snapshot {p}: not valid JSON ({exc})") from None
    if not isinstance(data, dict) or data.get("version") != SNAPSHOT_VERSION:
        raise PerpdeskError(f"snapshot {p}: not a version {SNAPSHOT_VERSION} snapshot")
    return data
