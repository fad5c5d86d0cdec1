"""Registry storage backends, chosen by URL.

:func:`open_store` turns a store URL into a :class:`~sdk.registry.store.Store`:

- ``memory://`` -- :class:`~sdk.registry.memory.MemoryStore`, lost on exit (tests, labs).
- ``sqlite:///path.db`` -- :class:`~registry.store.sqlite.SqliteStore`, the default. As with
  SQLAlchemy, what follows ``sqlite:///`` is the path: ``sqlite:///registry.db`` is relative to the
  working directory, ``sqlite:////var/lib/vwire/registry.db`` (four slashes) is absolute. Parent
  directories and the file are created when missing.
- ``etcd://host:port[,host:port...][/prefix]`` -- :class:`~registry.store.etcd.EtcdStore`, shared
  by several registry replicas (records under ``/vwire/registry`` unless a prefix is given).

Anything else (an unknown scheme, a missing ``://``, a host, an empty path, a query string) raises
:class:`~sdk.errors.InvalidArgument` on field ``store`` naming the accepted forms. A new backend
(Kubernetes CRDs) is one entry in ``_FACTORIES``: a function from the URL to a Store.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from urllib.parse import SplitResult, urlsplit

from registry.store.sqlite import SqliteStore
from sdk.errors import InvalidArgument
from sdk.registry.memory import MemoryStore
from sdk.registry.store import Store

ACCEPTED = (
    "sqlite:///path.db (relative) or sqlite:////abs/path.db, memory://, or "
    "etcd://host:port[,host:port...][/prefix]"
)


def _bad(url: str, problem: str) -> InvalidArgument:
    return InvalidArgument("store", f"{problem} in {url!r}; accepted forms: {ACCEPTED}")


def _open_memory(url: str, parts: SplitResult) -> Store:
    if parts.netloc or parts.path:
        raise _bad(url, "memory:// takes no host or path")
    return MemoryStore()


def _open_sqlite(url: str, parts: SplitResult) -> Store:
    if parts.netloc:
        raise _bad(url, f"sqlite:// takes no host (got {parts.netloc!r}; use three slashes)")
    path = parts.path.removeprefix("/")
    if not path:
        raise _bad(url, "sqlite:// needs a database file path")
    return SqliteStore.open(Path(path))


def _open_etcd(url: str, parts: SplitResult, etcd_tls_dir: Path | None = None) -> Store:
    # Imported here: the etcd client (aetcd) costs a registry on SQLite ~5 MB resident.
    from registry.store.etcd import EtcdStore

    try:
        return EtcdStore.open(url, parts, etcd_tls_dir)
    except ValueError as e:
        raise _bad(url, str(e)) from None


#: URL scheme -> factory. Register new backends here (etcd is opened on its own: it takes TLS).
_FACTORIES: dict[str, Callable[[str, SplitResult], Store]] = {
    "memory": _open_memory,
    "sqlite": _open_sqlite,
}
#: Schemes of backends in the design but not written yet, for a clearer message.
_PLANNED = ("k8s", "crd")


def open_store(url: str, etcd_tls_dir: Path | None = None) -> Store:
    """Open the store named by ``url``; raise InvalidArgument(``store``) if it is not accepted.

    SQLite failures to open (unreadable or corrupt file, newer schema) raise FailedPrecondition.
    ``etcd_tls_dir`` (etcd:// only, else InvalidArgument on that field) makes the etcd store
    speak TLS with the CA, certificate and key in that directory.
    """
    if "://" not in url:
        raise _bad(url, "missing '://'")
    try:
        parts = urlsplit(url)
    except ValueError as e:
        raise _bad(url, f"malformed URL ({e})") from e
    if parts.query or parts.fragment or url.endswith(("?", "#")):
        raise _bad(url, "query strings and fragments are not supported")
    if parts.scheme == "etcd":
        return _open_etcd(url, parts, etcd_tls_dir)
    if etcd_tls_dir is not None:
        raise InvalidArgument("etcd_tls_dir", f"is for etcd:// stores only (the store is {url})")
    factory = _FACTORIES.get(parts.scheme)
    if factory is None:
        if parts.scheme in _PLANNED:
            raise _bad(url, f"the {parts.scheme}:// backend is not available yet")
        raise _bad(url, f"unknown scheme {parts.scheme!r}")
    return factory(url, parts)


def default_store_url(state_dir: Path) -> str:
    """The default store: the SQLite file ``registry.db`` in ``state_dir``."""
    return f"sqlite:///{state_dir / 'registry.db'}"


__all__ = ["ACCEPTED", "default_store_url", "open_store"]
