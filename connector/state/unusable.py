"""State database errors that no retry can cure, told apart from passing ones.

A damaged SQLite file, one the connector's user may not open, a server that refuses the login
or has no such database: retrying (or systemd restarting the service) cannot help, so these
become :class:`~connector.errors.StateUnusableError` (exit code 2) with what to do, while a
locked file or a server that is away stay retriable ``StateError``. Used by the state store and
by the instance lock, whichever touches the database first.
"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa

from connector.errors import StateUnusableError
from connector.files import user_name

# MariaDB/MySQL: access denied (to the database, for the user, by auth plugin), unknown database
_MYSQL_REFUSED = {1044, 1045, 1049, 1698}
# PostgreSQL's login failures (psycopg gives no SQLSTATE for them: the server's message)
_PG_REFUSED = ("password authentication failed", "does not exist", "no pg_hba.conf entry")


def unusable(url: sa.URL, exc: BaseException) -> StateUnusableError | None:
    """The StateUnusableError ``exc`` amounts to, or None when a retry may succeed."""
    orig = getattr(exc, "orig", None) or exc
    text = (str(orig).strip().splitlines() or [""])[0]
    low = text.lower()
    if url.get_backend_name() == "sqlite":
        path = url.database or ""
        if "file is not a database" in low or "malformed" in low:
            return StateUnusableError(
                f"state database {path} is damaged or is not a connector state database "
                f"({low}): restore it from a backup, or move it aside and run "
                "`shopimind-connector db upgrade` to start an empty one (every mapping then "
                "sends all its rows again)"
            )
        if "unable to open database file" in low or "readonly database" in low:
            return StateUnusableError(
                f"state database {path} cannot be opened for reading and writing ({low}): "
                f"the user running the connector ({user_name()}) needs read and write access to "
                f"the file and to its folder {Path(path).parent}"
            )
        return None
    code = orig.args[0] if getattr(orig, "args", None) else None
    mysql = url.get_backend_name() in ("mysql", "mariadb") and code in _MYSQL_REFUSED
    pg = url.get_backend_name() == "postgresql" and any(m in low for m in _PG_REFUSED)
    if not (mysql or pg):
        return None
    if url.password:
        text = text.replace(str(url.password), "***")
    shown = url.render_as_string(hide_password=True)
    return StateUnusableError(
        f"state database {shown} refuses the connector ({text[:300]}): check the user, its "
        "password and the database name in state.url, and that the database exists and this "
        "user may use it"
    )
