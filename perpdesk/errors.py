"""The project's error types. The CLI prints their message as one line, no traceback."""


class PerpdeskError(Exception):
    """Base of every error perpdesk reports to a user: its message is one line that names
    the file/row/key and the problem."""


class ConfigError(PerpdeskError):
    """A configuration value breaks a rule (names the key, the value and the rule)."""


class CatalogError(PerpdeskError):
    """Catalog data is missing or malformed (names the file, the row and the problem)."""
