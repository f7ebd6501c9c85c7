"""API keys: read only from the environment or a ``.env`` file, and never shown.

Variables, per venue (the venue id upper-cased, any character other than A–Z/0–9 → ``_``)::

    PERPDESK_<VENUE>_API_KEY          e.g. PERPDESK_BINANCEUSDM_API_KEY
    PERPDESK_<VENUE>_API_SECRET       e.g. PERPDESK_BINANCEUSDM_API_SECRET
    PERPDESK_<VENUE>_API_PASSPHRASE   optional (OKX)

The process environment wins over ``.env`` (default: ``./.env``; ``KEY=value`` lines as
python-dotenv reads them). Keys are never read from ``perpdesk.toml`` (the settings model
has no such keys and refuses unknown ones).

Every key value is wrapped in :class:`Secret` — ``repr``, ``str``, ``format``, JSON and
pickling never show it — and registered for redaction: :func:`redact` replaces each
registered value in any text with ``***``; :class:`RedactingFilter` does it to log records
(message, arguments, exception and stack text) and :func:`install_log_redaction` applies it to
every record the process creates. The ledger, the snapshot writer and the CLI pass their text
through :func:`redact`.
"""

from __future__ import annotations

import hmac
import logging
import os
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from perpdesk.errors import PerpdeskError

__all__ = [
    "MASK",
    "ApiCredentials",
    "RedactingFilter",
    "Secret",
    "SecretError",
    "env_names",
    "install_log_redaction",
    "json_default",
    "load_api_credentials",
    "redact",
    "register_env_secrets",
    "register_secret",
]

MASK = "***"


class SecretError(PerpdeskError):
    """A key is missing or malformed (the message names the variable, never the value)."""

    def __init__(self, message: str) -> None:
        super().__init__(redact(message))


class _Registry:
    """Secret values to redact, longest first (so a value containing another is masked whole)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: tuple[str, ...] = ()

    def add(self, value: str) -> None:
        if not value:
            return
        with self._lock:
            if value not in self._values:
                self._values = tuple(sorted({*self._values, value}, key=len, reverse=True))

    def redact(self, text: str) -> str:
        for v in self._values:
            if v in text:
                text = text.replace(v, MASK)
        return text


_REGISTRY = _Registry()


def register_secret(value: str) -> None:
    """Redact ``value`` from now on wherever :func:`redact` or the log filter runs."""
    _REGISTRY.add(value)


def redact(text: str) -> str:
    """``text`` with every registered secret value replaced by ``***``."""
    return _REGISTRY.redact(text if isinstance(text, str) else str(text))


class Secret:
    """A secret string. Shows as ``***`` everywhere; :meth:`reveal` gives the value (pass it
    straight to the exchange client, never into a message). Registers itself for redaction."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        if not isinstance(value, str):
            raise TypeError("Secret takes a str")
        object.__setattr__(self, "_value", value)
        register_secret(value)

    def reveal(self) -> str:
        """The secret value."""
        return self._value

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("Secret is immutable")

    def __repr__(self) -> str:
        return f"Secret('{MASK}')"

    def __str__(self) -> str:
        return MASK

    def __format__(self, spec: str) -> str:
        return format(MASK, spec)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(self._value.encode(), other._value.encode())

    def __hash__(self) -> int:
        return hash((Secret, len(self._value)))

    def __bool__(self) -> bool:
        return bool(self._value)

    def __reduce__(self) -> Any:
        raise TypeError("a Secret cannot be pickled")

    def __copy__(self) -> Secret:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> Secret:
        return self

    def __json__(self) -> str:
        """What JSON encoders that honour ``__json__`` (and :func:`json_default`) write."""
        return MASK


def json_default(obj: Any) -> Any:
    """``json.dumps(..., default=json_default)``: a :class:`Secret` becomes ``"***"``,
    ``Decimal`` and other objects their ``str`` (redacted)."""
    if isinstance(obj, Secret):
        return MASK
    return redact(str(obj))


@dataclass(frozen=True, slots=True)
class ApiCredentials:
    """One venue's keys (values masked in every representation)."""

    venue: str
    api_key: Secret
    api_secret: Secret
    passphrase: Secret | None = None


def env_names(venue: str) -> tuple[str, str, str]:
    """The variable names of ``venue``: (API_KEY, API_SECRET, API_PASSPHRASE)."""
    v = re.sub(r"[^A-Z0-9]", "_", venue.upper())
    if not v.strip("_"):
        raise SecretError(f"secrets: venue {venue!r} has no usable name")
    p = f"PERPDESK_{v}_API_"
    return p + "KEY", p + "SECRET", p + "PASSPHRASE"


def _dotenv(path: Path) -> dict[str, str]:
    if not path.is_file():
        return {}
    from dotenv import dotenv_values

    try:
        values = dotenv_values(path)
    except (OSError, UnicodeDecodeError) as exc:
        raise SecretError(f"secrets: {path}: cannot read ({type(exc).__name__})") from None
    return {k: v for k, v in values.items() if v is not None}


def load_api_credentials(
    venue: str,
    *,
    environ: Mapping[str, str] | None = None,
    dotenv_path: str | os.PathLike[str] | None = ".env",
    require_passphrase: bool = False,
) -> ApiCredentials:
    """Read ``venue``'s keys from ``environ`` (default ``os.environ``), else from the
    ``dotenv_path`` file. Raises :class:`SecretError` naming the missing variable(s)."""
    env = os.environ if environ is None else environ
    file_vals = _dotenv(Path(dotenv_path)) if dotenv_path is not None else {}
    names = env_names(venue)
    got: list[str | None] = []
    for name in names:
        val = env.get(name)
        if val is None or val == "":
            val = file_vals.get(name) or None
        if val is not None and val != val.strip():
            register_secret(val)
            raise SecretError(f"secrets: {name} has leading or trailing whitespace")
        got.append(val)
    key, secret, phrase = got
    missing = [n for n, v in zip(names[:2], (key, secret), strict=True) if not v]
    if require_passphrase and not phrase:
        missing.append(names[2])
    for v in got:
        if v:
            register_secret(v)
    if missing:
        where = (
            f"the environment or {dotenv_path}" if dotenv_path is not None else "the environment"
        )
        raise SecretError(f"secrets: {', '.join(missing)} not set in {where}")
    assert key is not None and secret is not None
    return ApiCredentials(
        venue=venue,
        api_key=Secret(key),
        api_secret=Secret(secret),
        passphrase=Secret(phrase) if phrase else None,
    )


_ENV_KEY = re.compile(r"^PERPDESK_[A-Z0-9_]+_API_(KEY|SECRET|PASSPHRASE)$")


def register_env_secrets(
    environ: Mapping[str, str] | None = None, dotenv_path: str | os.PathLike[str] | None = ".env"
) -> int:
    """Register for redaction every ``PERPDESK_*_API_KEY/SECRET/PASSPHRASE`` value found in
    the environment and the ``.env`` file, whether or not a venue is used (the CLI calls it
    first). Returns how many values were registered."""
    env = os.environ if environ is None else environ
    found = [v for k, v in env.items() if _ENV_KEY.match(k) and v]
    if dotenv_path is not None:
        found += [v for k, v in _dotenv(Path(dotenv_path)).items() if _ENV_KEY.match(k) and v]
    for v in found:
        register_secret(v)
    return len(found)


class RedactingFilter(logging.Filter):
    """A logging filter that rewrites a record's message (with its arguments merged), its
    exception text and its stack text with every registered secret masked. Attach it to a
    handler (covers every logger that reaches that handler) or use
    :func:`install_log_redaction`."""

    def filter(self, record: logging.LogRecord) -> bool:
        _redact_record(record)
        return True


def _redact_record(record: logging.LogRecord) -> None:
    if getattr(record, "_perpdesk_redacted", False):
        return
    try:
        msg = record.getMessage()
    except Exception:  # a bad format string: keep both parts, redacted
        msg = f"{record.msg} {record.args}"
    record.msg = redact(msg)
    record.args = None
    if record.exc_info and not record.exc_text:
        record.exc_text = logging.Formatter().formatException(record.exc_info)
    if record.exc_text:
        record.exc_text = redact(record.exc_text)
        # Formatters use exc_text when set; drop the live exception so none re-renders it.
        record.exc_info = None
    if record.stack_info:
        record.stack_info = redact(record.stack_info)
    record._perpdesk_redacted = True


_factory_lock = threading.Lock()
_installed = False


def install_log_redaction() -> None:
    """Redact every log record the process creates from now on (wraps the record factory,
    so it covers loggers and handlers added later). Idempotent."""
    global _installed
    with _factory_lock:
        if _installed:
            return
        base = logging.getLogRecordFactory()

        def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
            record = base(*args, **kwargs)
            _redact_record(record)
            return record

        logging.setLogRecordFactory(factory)
        _installed = True
