"""Logging in to WRDS's PostgreSQL server with psycopg2 alone, by the ``wrds`` client's rules.

`WrdsSource` needs one thing from a login: a psycopg2 connection in autocommit mode. The
``wrds`` client gives it through ``wrds.Connection``, which imports pandas and SQLAlchemy
(about half a second and 120 MB before the first row) and, unless told otherwise, reads the list
of every library the account may use. A sync of one table needs none of that, so `login` opens
the connection itself, with exactly the arguments ``wrds.Connection`` hands to libpq:

* host ``wrds_hostname``, else ``PGHOST``, else `WRDS_POSTGRES_HOST`; port ``wrds_port`` (else
  `WRDS_POSTGRES_PORT`, never ``PGPORT``); database ``wrds_dbname`` (else `WRDS_POSTGRES_DB`);
* user and password only when given (``wrds_username``, ``wrds_password``): otherwise libpq
  takes ``PGUSER`` (else the login name) and ``PGPASSWORD`` or the ``~/.pgpass`` line;
* ``wrds_connect_args`` as libpq keywords (they override the above, ``host`` included), by
  default `WRDS_CONNECT_ARGS` (``sslmode=require`` and an application name), plus a
  ``connect_timeout`` of `CONNECT_TIMEOUT_S` unless they set one;
* autocommit, as ``wrds.Connection``'s ``isolation_level="AUTOCOMMIT"``.

Unlike ``wrds.Connection()`` it never retries WRDS's default host after a failure and never
prompts (libpq has no prompt): a refused login is a `SourceAuthError` at once. The constants are
kept here only; ``tests/sources/test_wrds_login.py`` checks them against the installed client.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final

import attrs

from wrdsvault._version import __version__
from wrdsvault.errors import SourceAuthError, SourceError, SourceUnavailableError

if TYPE_CHECKING:
    import psycopg2.extensions

_NAME: Final = "wrds"
#: WRDS's PostgreSQL server, as the ``wrds`` client names it (``wrds.sql.WRDS_POSTGRES_*``).
WRDS_POSTGRES_HOST: Final = "wrds-pgdata.wharton.upenn.edu"
WRDS_POSTGRES_PORT: Final = 9737
WRDS_POSTGRES_DB: Final = "wrds"
#: The libpq arguments the client sends by default (``wrds.sql.WRDS_CONNECT_ARGS``): TLS
#: required, and an application name in the client's format that names wrdsvault, not ``wrds``.
WRDS_CONNECT_ARGS: Final[Mapping[str, Any]] = MappingProxyType(
    {"sslmode": "require", "application_name": f"{sys.platform} python {__version__}/wrdsvault"}
)
#: libpq's ``connect_timeout`` unless ``wrds_connect_args`` sets one: time enough to approve a
#: Duo push, short enough that an unattended sync fails instead of hanging.
CONNECT_TIMEOUT_S: Final = 90
#: The keyword arguments of ``wrds.Connection`` that `WrdsSource` and `connect` pass through.
CONNECT_KEYS: Final = (
    "wrds_username",
    "wrds_password",
    "wrds_hostname",
    "wrds_port",
    "wrds_dbname",
    "wrds_connect_args",
)
_AUTH_HINTS: Final = (
    "password authentication failed",
    "no password supplied",
    "authentication failed",
    "pg_hba.conf",
    "duo",
    "is not permitted to log in",
)
_PGPASS_HINT: Final = (
    "Check the WRDS username (wrds_username= or PGUSER) and the password in ~/.pgpass (a line "
    "'wrds-pgdata.wharton.upenn.edu:9737:wrds:<username>:<password>', mode 0600), and approve "
    "the Duo push on your phone"
)


def first_line(exc: BaseException) -> str:
    """The first two non-empty lines of an error (of the driver's, if SQLAlchemy wrapped it)."""
    text = str(getattr(exc, "orig", None) or exc).strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return " ".join(lines[:2]) if lines else type(exc).__name__


def secrets(kwargs: Mapping[str, Any]) -> list[str]:
    """The passwords among connection arguments (``wrds_password``, a ``password`` connect arg)."""
    args = kwargs.get("wrds_connect_args") or {}
    found = [
        kwargs.get("wrds_password"),
        args.get("password") if isinstance(args, Mapping) else None,
    ]
    return [str(s) for s in found if s]


def scrub(text: str, hidden: Sequence[str]) -> str:
    """``text`` with each of ``hidden`` replaced by ``***``."""
    for secret in hidden:
        text = text.replace(secret, "***")
    return text


def check_connect_kwargs(kwargs: Mapping[str, Any]) -> None:
    """Refuse keyword arguments ``wrds.Connection`` would not take (a typo is not ignored)."""
    unknown = sorted(set(kwargs) - set(CONNECT_KEYS))
    if unknown:
        msg = f"unexpected connection arguments {unknown}; accepted: {list(CONNECT_KEYS)}"
        raise TypeError(msg)


@attrs.frozen
class LoginParams:
    """Where and as whom to log in, resolved once from the ``wrds_*`` arguments."""

    user: str | None
    password: str | None = attrs.field(repr=False)
    host: str
    port: int
    dbname: str
    connect_args: Mapping[str, Any] = attrs.field(repr=False)
    hidden: tuple[str, ...] = attrs.field(repr=False)

    @classmethod
    def resolve(cls, kwargs: Mapping[str, Any]) -> LoginParams:
        """Apply the client's defaults (``PGHOST`` is read now) to ``wrds_*`` arguments."""
        check_connect_kwargs(kwargs)
        connect_args = dict(kwargs.get("wrds_connect_args", WRDS_CONNECT_ARGS))
        # An unreachable host or a Duo push nobody approves must not hold a scheduled sync
        # (and the vault's writer lock) indefinitely: libpq gives up after this many seconds.
        connect_args.setdefault("connect_timeout", CONNECT_TIMEOUT_S)
        return cls(
            user=kwargs.get("wrds_username") or None,
            password=kwargs.get("wrds_password") or None,
            host=kwargs.get("wrds_hostname", os.environ.get("PGHOST", WRDS_POSTGRES_HOST)),
            port=int(kwargs.get("wrds_port", WRDS_POSTGRES_PORT)),
            dbname=kwargs.get("wrds_dbname", WRDS_POSTGRES_DB),
            connect_args=MappingProxyType(connect_args),
            hidden=tuple(secrets(kwargs)),
        )

    @property
    def where(self) -> str:
        """``user@host:port/dbname`` for messages (never the password)."""
        host = self.connect_args.get("host", self.host)
        return f"{self.user or '(default user)'}@{host}:{self.port}/{self.dbname}"

    def libpq_kwargs(self) -> dict[str, Any]:
        """The keyword arguments for ``psycopg2.connect`` (what SQLAlchemy would pass it)."""
        out: dict[str, Any] = {"host": self.host, "port": self.port, "dbname": self.dbname}
        if self.user:
            out["user"] = self.user
        if self.password:
            out["password"] = self.password
        return out | dict(self.connect_args)


def login(params: LoginParams) -> psycopg2.extensions.connection:
    """Log in once: a psycopg2 connection in autocommit mode, or a classified `SourceError`.

    Raises:
        SourceAuthError: WRDS refused the login (check ``~/.pgpass``, approve Duo).
        SourceUnavailableError: WRDS could not be reached (``retryable=True``).
        SourceError: no such database.
    """
    import psycopg2

    try:
        conn: psycopg2.extensions.connection = psycopg2.connect(**params.libpq_kwargs())
    except psycopg2.Error as exc:
        raise login_error(exc, params.where, params.hidden) from exc
    conn.autocommit = True
    return conn


def login_error(exc: BaseException, where: str, hidden: Sequence[str]) -> SourceError:
    """The `SourceError` for a failed login (the driver's text, the passwords scrubbed)."""
    text = scrub(first_line(exc), hidden)
    low = text.lower()
    if any(hint in low for hint in _AUTH_HINTS) or ("role" in low and "does not exist" in low):
        return SourceAuthError(
            source=_NAME, reason=f"WRDS refused the login {where}: {text}. {_PGPASS_HINT}"
        )
    if "database" in low and "does not exist" in low:
        return SourceError(
            source=_NAME,
            reason=f"no such database at {where}: {text}. Check wrds_dbname (WRDS's is 'wrds')",
        )
    return SourceUnavailableError(
        source=_NAME,
        reason=f"cannot reach WRDS at {where}: {text}. Check the network (VPN, firewall for "
        "port 9737) and run the sync again",
    )


def display_url(params: LoginParams) -> Any:
    """A SQLAlchemy URL naming the server (no password): what ``engine.url`` shows."""
    import sqlalchemy as sa

    return sa.engine.URL.create(
        "postgresql+psycopg2",
        username=params.user,
        host=params.connect_args.get("host", params.host),
        port=params.port,
        database=params.dbname,
    )
