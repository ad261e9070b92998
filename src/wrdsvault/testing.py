"""An offline WRDS replica: a local PostgreSQL laid out like WRDS, for tests and users' CI.

`WrdsReplica` loads the tables of a source (normally `SampleSource`) into a throwaway PostgreSQL
server started from the ``pgserver`` wheel, laid out the way WRDS lays out its database
(docs/wrds.md, "What wrdsvault relies on about WRDS"):

* the rows live in *product* schemas (``crsp_a_stock``, ``crsp_a_ccm``, ``comp_na_daily_all``,
  ``ff_all``), in tables whose columns carry the declared WRDS types of the source's profile
  (``numeric(11,5)``, ``varchar(8)``, ``double precision`` ...);
* users query *friendly* schemas (``crsp``, ``comp``, ``ff``) holding ``CREATE VIEW ... AS SELECT *
  FROM <product>.<table>``, with the table comment (``"... (Updated 2025-02-08)"``) and column
  comments on the views, as on WRDS;
* a login role ``wrdsuser`` (password `REPLICA_PASSWORD`) has ``USAGE``/``SELECT`` on all of them,
  but not on the schemas ``secret`` and ``secret_prod`` (a library the user is not subscribed to);
  only the superuser ``postgres`` logs in without a password;
* ``ANALYZE`` runs after loading, so planner row estimates (``wrds.get_row_count``) are right.

The real ``wrds`` client connects to it (over the server's Unix socket, so no network and no SSL)::

    from wrdsvault.sources import SampleSource
    from wrdsvault.testing import WrdsReplica

    with WrdsReplica.start(tmp_dir, source=SampleSource(years=range(2021, 2024))) as rep:
        db = rep.connection()                 # a wrds.Connection
        wh = Warehouse(vault_dir, source=rep.source())
        wh.sync("crsp.msf")
        rep.execute("COMMENT ON VIEW crsp.msf IS 'Monthly Stock - Securities (Updated 2026-02-08)'")

One server can host many replicas (one database each): start a `ReplicaServer` once and pass it as
``server=`` (the test suite starts one per session; starting a server takes a few seconds).

`set_disk_usage` makes a `Warehouse` see its file system as full as a test says (for the disk
watermarks), without filling a disk.

The replica needs the test extra: ``pip install 'wrdsvault[test]'`` (``pgserver``). Run as root,
pgserver creates a system user ``pgserver`` to run PostgreSQL and opens the permissions of the
data directory's parent folders to it.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import secrets
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import pyarrow as pa
import pyarrow.csv as pacsv

from wrdsvault.datasets import BUILTIN_SPECS, DatasetSpec, validate_dataset
from wrdsvault.sources.base import COMMENT_KEY, SOURCE_TYPE_KEY

if TYPE_CHECKING:
    import psycopg2.extensions
    import wrds

    from wrdsvault.sources.base import Source
    from wrdsvault.sources.wrds import WrdsSource
    from wrdsvault.warehouse import Warehouse

__all__ = [
    "REPLICA_PASSWORD",
    "REPLICA_USER",
    "DiskUsage",
    "ReplicaServer",
    "WrdsReplica",
    "product_schema",
    "set_disk_usage",
]

#: The non-superuser login role every replica grants its libraries to (like a WRDS account).
REPLICA_USER: Final = "wrdsuser"
#: Its password. The replica is a local throwaway server: this is not a secret.
REPLICA_PASSWORD: Final = "wrdsvault-replica"  # noqa: S105 - a test fixture's known password
#: The superuser (trusted on the Unix socket, no password).
SUPERUSER: Final = "postgres"

#: Product schema of each friendly library (docs/wrds.md); other libraries get ``<lib>_all``.
_PRODUCTS: Final = {"crsp": "crsp_a_stock", "comp": "comp_na_daily_all", "ff": "ff_all"}
_PRODUCT_OF_TABLE: Final = {
    "crsp.ccmxpf_lnkhist": "crsp_a_ccm",
    "crsp.ccmxpf_linktable": "crsp_a_ccm",
}
#: A library the replica user is not subscribed to (no USAGE on either schema).
_UNSUBSCRIBED_LIBRARY: Final = "secret"
_UNSUBSCRIBED_PRODUCT: Final = "secret_prod"
#: Column comments as WRDS shows them for a few well-known columns, for a source that gives no
#: label (field metadata ``COMMENT_KEY``); others get the upper-cased name.
_COLUMN_LABELS: Final = {
    "permno": "PERMNO",
    "permco": "PERMCO",
    "gvkey": "Global Company Key",
    "datadate": "Data Date",
    "date": "Date of Observation",
    "cusip": "CUSIP Header",
    "prc": "Price or Bid/Ask Average",
    "ret": "Returns",
    "shrout": "Shares Outstanding",
    "at": "Assets - Total",
}
#: What a declared type may look like before it goes into CREATE TABLE.
_DECLARED_RE: Final = re.compile(r"^[a-z][a-z ]{1,40}(\(\d{1,4}(,\d{1,4})?\))?[a-z ]{0,20}$")
_DB_NAME_RE: Final = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
_COPY_CHUNK: Final = 1 << 20


#: ``vault folder -> (total_bytes, free_bytes)``: how full a file system is, as `set_disk_usage`
#: takes it (free means free to this user, as ``statvfs``'s ``f_bavail``).
DiskUsage = Callable[[str], tuple[int, int]]


def set_disk_usage(warehouse: Warehouse, usage: DiskUsage) -> None:
    """Make ``warehouse`` see its file system as ``usage`` reports it, instead of measuring it.

    For tests of the disk watermarks (80% warns, 90% is critical, 95% refuses; docs/integrity.md)
    and of the "twice the expected bytes free" check. It affects `Warehouse.disk`,
    `Warehouse.status` and the check before each sync; a disk that really fills up mid-write
    still raises `DiskSpaceError` from the write itself.
    """
    warehouse._guard.usage = usage


def product_schema(dataset: str) -> str:
    """Return the schema holding ``dataset``'s rows (``crsp.msf`` -> ``crsp_a_stock``)."""
    validate_dataset(dataset)
    library = dataset.split(".", 1)[0]
    return _PRODUCT_OF_TABLE.get(dataset) or _PRODUCTS.get(library) or f"{library}_all"


def _import_pgserver() -> Any:
    try:
        with warnings.catch_warnings():
            # pgserver asks platformdirs for a runtime dir at import; without XDG_RUNTIME_DIR
            # (containers, CI) platformdirs warns and falls back to /tmp/runtime-<uid>, which is
            # what we want.
            warnings.filterwarnings(
                "ignore", message="XDG_RUNTIME_DIR is not set", category=UserWarning
            )
            import pgserver
    except ImportError as exc:  # pragma: no cover - depends on the installed extras
        msg = "the WRDS replica needs the test extra (pgserver): pip install 'wrdsvault[test]'"
        raise ImportError(msg) from exc
    return pgserver


def _ident(name: str) -> str:
    """Quote an identifier we produced or validated ourselves (lower case, digits, '_')."""
    if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", name):
        msg = f"not a plain identifier: {name!r}"
        raise ValueError(msg)
    return f'"{name}"'


def _declared_type(field: pa.Field[Any]) -> str:
    """The PostgreSQL type to declare for a field: its ``source_type``, else one from Arrow."""
    meta = field.metadata or {}
    raw = meta.get(SOURCE_TYPE_KEY)
    if raw is not None:
        declared = raw.decode()
        if not _DECLARED_RE.fullmatch(declared):
            msg = f"column {field.name!r}: refusing declared type {declared!r}"
            raise ValueError(msg)
        return declared
    typ = field.type
    simple = {
        pa.int16(): "smallint",
        pa.int32(): "integer",
        pa.int64(): "bigint",
        pa.float32(): "real",
        pa.float64(): "double precision",
        pa.string(): "text",
        pa.large_string(): "text",
        pa.date32(): "date",
        pa.bool_(): "boolean",
    }
    if typ in simple:
        return simple[typ]
    if pa.types.is_decimal(typ):
        return f"numeric({typ.precision},{typ.scale})"
    if pa.types.is_timestamp(typ):
        return "timestamp with time zone" if typ.tz else "timestamp without time zone"
    if pa.types.is_time(typ):
        return "time without time zone"
    msg = f"column {field.name!r}: no PostgreSQL type for Arrow {typ}"
    raise ValueError(msg)


class _CsvStream(io.RawIOBase):
    """A readable file of CSV (no header) rendered batch by batch, for ``COPY ... FROM STDIN``."""

    def __init__(self, batches: Iterable[pa.RecordBatch]) -> None:
        super().__init__()
        self._batches = iter(batches)
        self._buf = bytearray()
        self._options = pacsv.WriteOptions(include_header=False)

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        want = _COPY_CHUNK if size is None or size < 0 else size
        while len(self._buf) < want:
            batch = next(self._batches, None)
            if batch is None:
                break
            sink = io.BytesIO()
            # Strings are always quoted and NULL is an unquoted empty field, so COPY ... CSV
            # keeps '' and NULL apart; floats are written shortest-round-trip.
            pacsv.write_csv(batch, sink, self._options)
            self._buf += sink.getbuffer()
        out = bytes(self._buf[:want])
        del self._buf[:want]
        return out


class ReplicaServer:
    """One throwaway PostgreSQL server (from the ``pgserver`` wheel) that hosts replicas.

    Listens only on a Unix socket in its data directory. `stop` stops it and deletes the data.

    Attributes:
        directory: the folder holding the server's data directory.
        socket_dir: the folder of its Unix socket (pass as ``wrds_connect_args={"host": ...}``).
        port: the port number in the socket's name (``.s.PGSQL.<port>``).
    """

    def __init__(self, server: Any, directory: Path, *, temporary: bool = False) -> None:
        self._server = server
        self.directory = directory
        self._temporary = temporary
        info = server.get_postmaster_info()
        self.socket_dir = str(info.socket_dir)
        self.port = int(info.port)
        self.log_path = Path(server.log)

    @classmethod
    def start(cls, directory: str | os.PathLike[str] | None = None) -> ReplicaServer:
        """Start a server with its data in ``directory/pgdata``.

        Args:
            directory: a folder for the server (created); default: a new temporary folder,
                removed by `stop`. Run as root, PostgreSQL runs as the user ``pgserver``, which
                must be able to enter every parent folder: pgserver opens them (``o+rx``), but
                pytest resets ``/tmp/pytest-of-root`` to 0700 whenever a session starts, so do
                not put the server under pytest's ``tmp_path`` there.

        Raises:
            ImportError: pgserver is not installed (``pip install 'wrdsvault[test]'``).
            RuntimeError: the server did not start; the message includes its log.
        """
        pgserver = _import_pgserver()
        temporary = directory is None
        folder = Path(tempfile.mkdtemp(prefix="wrdsvault-pg-") if directory is None else directory)
        folder = folder.absolute()
        folder.mkdir(parents=True, exist_ok=True)
        pgdata = folder / "pgdata"
        try:
            server = pgserver.get_server(pgdata, cleanup_mode="delete")
        except Exception as exc:
            log = pgdata / "log"
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else "(no log)"
            if temporary:
                shutil.rmtree(folder, ignore_errors=True)
            msg = f"pgserver could not start PostgreSQL in {pgdata}: {exc!r}; log: {tail}"
            raise RuntimeError(msg) from exc
        self = cls(server, folder, temporary=temporary)
        try:
            self._configure(pgdata)
        except BaseException:
            self.stop()
            raise
        return self

    def _configure(self, pgdata: Path) -> None:
        # Passwords for everyone but the superuser, so that authentication can fail for real.
        (pgdata / "pg_hba.conf").write_text(
            f"local all {SUPERUSER} trust\nlocal all all scram-sha-256\n"
        )
        with contextlib.closing(self.connect("postgres")) as con, con.cursor() as cur:
            # A disposable server: durability buys nothing and slows loading.
            for setting in ("fsync", "synchronous_commit", "full_page_writes"):
                cur.execute(f"ALTER SYSTEM SET {setting} = off")
            cur.execute("SELECT pg_reload_conf()")
            cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (REPLICA_USER,))
            if cur.fetchone() is None:
                cur.execute(
                    f"CREATE ROLE {_ident(REPLICA_USER)} LOGIN PASSWORD %s", (REPLICA_PASSWORD,)
                )

    def dsn(self, dbname: str = "postgres", *, user: str = SUPERUSER) -> str:
        """Return a libpq connection string (for ``psycopg2.connect``) to one database."""
        return f"host={self.socket_dir} port={self.port} dbname={dbname} user={user}"

    def connect(self, dbname: str = "postgres") -> psycopg2.extensions.connection:
        """Open an autocommit psycopg2 connection as the superuser."""
        import psycopg2

        con = psycopg2.connect(self.dsn(dbname))
        con.autocommit = True
        return con

    def create_database(self, name: str) -> None:
        """Create an empty database ``name`` the replica user may connect to."""
        if not _DB_NAME_RE.fullmatch(name):
            msg = f"invalid database name {name!r}"
            raise ValueError(msg)
        with contextlib.closing(self.connect()) as con, con.cursor() as cur:
            cur.execute(f"CREATE DATABASE {_ident(name)}")
            cur.execute(f"GRANT CONNECT ON DATABASE {_ident(name)} TO {_ident(REPLICA_USER)}")

    def drop_database(self, name: str) -> None:
        """Drop a database, disconnecting its sessions first. Missing is fine."""
        if not _DB_NAME_RE.fullmatch(name):
            msg = f"invalid database name {name!r}"
            raise ValueError(msg)
        with contextlib.closing(self.connect()) as con, con.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS {_ident(name)} WITH (FORCE)")

    def stop(self) -> None:
        """Stop the server and delete its data directory. Idempotent."""
        server, self._server = self._server, None
        if server is not None:
            server.cleanup()
            if self._temporary:
                shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> ReplicaServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class WrdsReplica:
    """One WRDS-shaped database on a `ReplicaServer`. Create it with `start`.

    Attributes:
        server: the server it lives on.
        dbname: its database name.
        datasets: the datasets loaded, in load order.
        dsn: a libpq connection string for the superuser (``psycopg2.connect(rep.dsn)``).
    """

    def __init__(
        self, server: ReplicaServer, dbname: str, datasets: Sequence[str], *, owns_server: bool
    ) -> None:
        self.server = server
        self.dbname = dbname
        self.datasets = tuple(datasets)
        self._owns_server = owns_server
        self._admin: psycopg2.extensions.connection | None = None
        self._connections: list[wrds.Connection] = []

    @classmethod
    def start(
        cls,
        directory: str | os.PathLike[str] | None = None,
        *,
        source: Source,
        datasets: Iterable[str] | None = None,
        profile: str | None = None,
        server: ReplicaServer | None = None,
        dbname: str | None = None,
        specs: dict[str, DatasetSpec] | None = None,
    ) -> WrdsReplica:
        """Load ``datasets`` from ``source`` into a new WRDS-shaped database.

        Args:
            directory: where to start a new server (see `ReplicaServer.start`; default: a
                temporary folder); unused with ``server``.
            source: where the rows, declared types and table comments come from.
            datasets: which datasets (default: all of ``source.datasets``).
            profile: a `SampleSource` type profile (``"2025"`` or ``"sas"``) to load instead of
                the source's own.
            server: a running server to create the database on (default: start one; it stops
                when the replica closes).
            dbname: the database name (default ``wrds`` on a new server, a unique name on a
                shared one).
            specs: specs for datasets without a built-in one (name -> spec).

        Raises:
            ImportError: pgserver is not installed (``pip install 'wrdsvault[test]'``).
        """
        if profile is not None and getattr(source, "profile", None) != profile:
            import attrs

            from wrdsvault.sources.sample import SampleSource

            if not isinstance(source, SampleSource):
                msg = f"profile= needs a source with type profiles (SampleSource), not {source!r}"
                raise TypeError(msg)
            source = attrs.evolve(source, profile=profile)
        if datasets is None and not hasattr(source, "datasets"):
            msg = "pass datasets=: the source does not list the datasets it serves"
            raise TypeError(msg)
        names = list(getattr(source, "datasets", ()) if datasets is None else datasets)
        owns = server is None
        if server is None:
            server = ReplicaServer.start(directory)
        if dbname is None:
            dbname = "wrds" if owns else f"wrds_{secrets.token_hex(6)}"
        try:
            server.create_database(dbname)
        except BaseException:
            if owns:
                server.stop()
            raise
        self = cls(server, dbname, names, owns_server=owns)
        try:
            self._build(source, names, specs or {})
        except BaseException:
            self.close()
            raise
        return self

    # -- building ---------------------------------------------------------------------------

    def _build(self, source: Source, names: Sequence[str], specs: dict[str, DatasetSpec]) -> None:
        user = _ident(REPLICA_USER)
        schemas: set[str] = set()
        with self._cursor() as cur:
            for name in names:
                spec = specs.get(name) or BUILTIN_SPECS.get(name) or DatasetSpec(name=name)
                schemas.update(self._load(cur, source, spec))
            cur.execute(f"CREATE SCHEMA {_ident(_UNSUBSCRIBED_PRODUCT)}")
            cur.execute(f"CREATE SCHEMA {_ident(_UNSUBSCRIBED_LIBRARY)}")
            cur.execute(f"CREATE TABLE {_ident(_UNSUBSCRIBED_PRODUCT)}.t (x integer, d date)")
            cur.execute(
                f"INSERT INTO {_ident(_UNSUBSCRIBED_PRODUCT)}.t VALUES (1, '2020-01-02'), (2, NULL)"
            )
            cur.execute(
                f"CREATE VIEW {_ident(_UNSUBSCRIBED_LIBRARY)}.t AS SELECT * FROM "
                f"{_ident(_UNSUBSCRIBED_PRODUCT)}.t"
            )
            cur.execute(
                f"COMMENT ON VIEW {_ident(_UNSUBSCRIBED_LIBRARY)}.t IS "
                "'Restricted table (Updated 2025-01-01)'"
            )
            for schema in sorted(schemas):
                cur.execute(f"GRANT USAGE ON SCHEMA {_ident(schema)} TO {user}")
                cur.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA {_ident(schema)} TO {user}")
            cur.execute("ANALYZE")

    def _load(self, cur: Any, source: Source, spec: DatasetSpec) -> tuple[str, str]:
        info = source.describe(spec)
        library, table = spec.library, spec.table
        product = product_schema(spec.name)
        for schema in (product, library):
            cur.execute(f"CREATE SCHEMA IF NOT EXISTS {_ident(schema)}")
        target = f"{_ident(product)}.{_ident(table)}"
        view = f"{_ident(library)}.{_ident(table)}"
        columns = ", ".join(f"{_ident(f.name)} {_declared_type(f)}" for f in info.schema)
        cur.execute(f"CREATE TABLE {target} ({columns})")
        names = ", ".join(_ident(f.name) for f in info.schema)
        for part in source.partitions(spec):
            stream = _CsvStream(source.read_partition(spec, part.year, batch_rows=65_536))
            cur.copy_expert(
                f"COPY {target} ({names}) FROM STDIN WITH (FORMAT csv)", stream, size=_COPY_CHUNK
            )
        cur.execute(f"CREATE VIEW {view} AS SELECT * FROM {target}")
        if info.comment is not None:
            cur.execute(f"COMMENT ON TABLE {target} IS %s", (info.comment,))
            cur.execute(f"COMMENT ON VIEW {view} IS %s", (info.comment,))
        for field in info.schema:
            given = (field.metadata or {}).get(COMMENT_KEY)
            label = given.decode() if given else _COLUMN_LABELS.get(field.name, field.name.upper())
            # On the view: comments on the base table do not show through it.
            cur.execute(f"COMMENT ON COLUMN {view}.{_ident(field.name)} IS %s", (label,))
        return product, library

    # -- using ------------------------------------------------------------------------------

    @property
    def dsn(self) -> str:
        """A libpq connection string for the superuser on this database."""
        return self.server.dsn(self.dbname)

    def connect_kwargs(self, *, user: str = SUPERUSER) -> dict[str, Any]:
        """The ``wrds.Connection``/`WrdsSource` keyword arguments that reach this database."""
        kwargs: dict[str, Any] = {
            "wrds_hostname": "localhost",
            "wrds_port": self.server.port,
            "wrds_dbname": self.dbname,
            "wrds_username": user,
            # The socket folder as "host" overrides wrds_hostname and replaces the client's
            # default sslmode=require (the socket needs no SSL).
            "wrds_connect_args": {"host": self.server.socket_dir},
        }
        if user != SUPERUSER:
            kwargs["wrds_password"] = REPLICA_PASSWORD
        return kwargs

    def connection(self, *, user: str = SUPERUSER) -> wrds.Connection:
        """Return a connected ``wrds.Connection`` (closed with the replica).

        Connects once, without the client's fallbacks (it would retry the real WRDS host and
        then prompt on stdin).
        """
        from wrdsvault.sources.wrds import connect

        db = connect(**self.connect_kwargs(user=user), load_libraries=True)
        self._connections.append(db)
        return db

    def source(self, *, user: str = SUPERUSER, **options: Any) -> WrdsSource:
        """Return a `WrdsSource` for this database; it connects on first use and owns its
        connection (`Warehouse.close` closes it). ``options`` go to `WrdsSource`."""
        from wrdsvault.sources.wrds import WrdsSource

        return WrdsSource(**self.connect_kwargs(user=user), **options)

    @contextlib.contextmanager
    def _cursor(self) -> Iterator[Any]:
        if self._admin is None or self._admin.closed:
            self._admin = self.server.connect(self.dbname)
        with self._admin.cursor() as cur:
            yield cur

    def execute(self, sql: str, params: Sequence[Any] | None = None) -> list[tuple[Any, ...]]:
        """Run admin SQL as the superuser (autocommit); return the rows it produced, if any.

        Example: ``rep.execute("UPDATE crsp_a_stock.msf SET ret = 0 WHERE permno = %s", [10001])``.
        """
        with self._cursor() as cur:
            cur.execute(sql, params)
            return list(cur.fetchall()) if cur.description is not None else []

    def close(self) -> None:
        """Close its connections and drop the database (and stop the server if it started
        it). Idempotent."""
        for db in self._connections:
            with contextlib.suppress(Exception):
                db.close()
        self._connections.clear()
        if self._admin is not None:
            self._admin.close()
            self._admin = None
        if self._owns_server:
            self.server.stop()
        else:
            self.server.drop_database(self.dbname)

    def __enter__(self) -> WrdsReplica:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
