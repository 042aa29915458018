"""Database drivers: is the one a URL names installed, and if not, which extra installs it.

The drivers are optional dependencies (``pip install 'shopimind-connector[postgres]'`` or
``[mysql]``); SQLite's ships with Python. :func:`require_driver` turns a missing or unknown one
into a :class:`~connector.errors.ConfigError` (exit code 2) that says what to install, before
SQLAlchemy would fail with a traceback.
"""

from __future__ import annotations

import sqlalchemy as sa

from connector.errors import ConfigError

# the driver each extra installs, by database
_EXTRAS = {
    "postgresql": ("postgres", "psycopg"),
    "mysql": ("mysql", "pymysql"),
    "mariadb": ("mysql", "pymysql"),
}


def require_driver(url: sa.URL, what: str) -> None:
    """Raise ConfigError unless the driver of ``url`` (``what``: "shop database", ...) imports."""
    shown = url.render_as_string(hide_password=True)
    try:
        dialect = url.get_dialect()
    except sa.exc.NoSuchModuleError:
        raise ConfigError(
            f"{what} {shown}: unknown database type {url.drivername!r}: use "
            "postgresql+psycopg://, mysql+pymysql:// or sqlite:///"
        ) from None
    try:
        dialect.import_dbapi()
    except ImportError as exc:
        backend = url.get_backend_name()
        extra, driver = _EXTRAS.get(backend, (None, None))
        missing = getattr(exc, "name", None) or dialect.driver
        if extra is None:
            advice = "install it into the connector's environment"
        elif dialect.driver == driver:
            advice = (
                f"install the connector with the [{extra}] extra "
                f"(pip install 'shopimind-connector[{extra}]')"
            )
        else:
            advice = (
                f"install it, or write {backend}+{driver}:// (the driver the [{extra}] extra "
                "installs)"
            )
        raise ConfigError(
            f"{what} {shown}: the database driver {missing!r} is not installed: {advice}"
        ) from None
