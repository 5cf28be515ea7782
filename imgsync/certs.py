"""The system's CA certificates, loaded when a TLS connection first needs them.

aiohttp (3.10 and later) builds its two default :class:`ssl.SSLContext` objects while it
is imported, and each one reads and parses the whole system CA bundle
(``set_default_verify_paths``): 30-80 ms of every process that talks to a host, on a
small machine, spent even when every remote is plain ``http://`` (an emulator, a host on
the LAN) and no TLS connection is ever made.

:func:`deferred_ca_loading` lets such an import build its contexts without reading the
bundle. Each context keeps every setting it was created with (``CERT_REQUIRED``, hostname
checks, minimum version, ALPN); only the one call that loads the default CA locations is
postponed, and :meth:`Deferred.load` makes exactly that call, on the same context, before
the context's first use (:func:`load_on_use` hooks aiohttp's connector for that).

TLS verification is never weakened: a context whose load was postponed trusts *no*
certificate authority, so a handshake through it before the load fails instead of
passing. When aiohttp does not look as expected (another version's internals), every
postponed load is done at once, as aiohttp would have done it.
"""

from __future__ import annotations

import ssl
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["Deferred", "deferred_ca_loading", "load_on_use"]

# The C method every SSLContext inherits (ssl.SSLContext does not define its own).
_load_default_locations = ssl.SSLContext.set_default_verify_paths


class Deferred:
    """The contexts whose default CA locations are still to be loaded."""

    def __init__(self) -> None:
        self._pending: list[ssl.SSLContext] = []
        self._lock = threading.Lock()

    @property
    def pending(self) -> tuple[ssl.SSLContext, ...]:
        return tuple(self._pending)

    def postpone(self, ctx: ssl.SSLContext) -> None:
        with self._lock:
            self._pending.append(ctx)

    def load(self, ctx: ssl.SSLContext) -> None:
        """Load ``ctx``'s default CA locations now if they were postponed (once; cheap
        when nothing is pending). Thread-safe: a second caller waits for the first."""
        if not self._pending:
            return
        with self._lock:
            for i, waiting in enumerate(self._pending):
                if waiting is ctx:
                    _load_default_locations(ctx)
                    del self._pending[i]
                    return

    def load_all(self) -> None:
        with self._lock:
            while self._pending:
                _load_default_locations(self._pending.pop())


@contextmanager
def deferred_ca_loading() -> Iterator[Deferred]:
    """Within the block, a context created by this thread that asks for the default CA
    locations (``ssl.create_default_context()``, ``ctx.set_default_verify_paths()``) gets
    them later, through the :class:`Deferred` yielded. Other threads are not affected.
    If the block raises, everything postponed is loaded before the error goes on."""
    deferred = Deferred()
    if "set_default_verify_paths" in vars(ssl.SSLContext):  # someone else's patch: leave it
        yield deferred
        return
    owner = threading.get_ident()

    def set_default_verify_paths(self: ssl.SSLContext) -> None:
        if threading.get_ident() == owner:
            deferred.postpone(self)
        else:
            _load_default_locations(self)

    ssl.SSLContext.set_default_verify_paths = set_default_verify_paths  # type: ignore[method-assign]
    try:
        yield deferred
    except BaseException:
        deferred.load_all()
        raise
    finally:
        del ssl.SSLContext.set_default_verify_paths


def load_on_use(deferred: Deferred) -> None:
    """After ``import aiohttp`` inside :func:`deferred_ca_loading`: load each postponed
    context when aiohttp's connector first picks it for a connection (``https://``, or a
    redirect or proxy to one). The connector is the only user of aiohttp's two default
    contexts; if the contexts postponed are not exactly those, or the connector has no
    ``_get_ssl_context``, everything is loaded now instead."""
    if not deferred.pending:
        return
    connector = sys.modules.get("aiohttp.connector")
    cls: Any = getattr(connector, "TCPConnector", None)
    pick = getattr(cls, "_get_ssl_context", None)
    known = {
        id(getattr(connector, name, None))
        for name in ("_SSL_CONTEXT_VERIFIED", "_SSL_CONTEXT_UNVERIFIED")
    }
    if pick is None or not {id(ctx) for ctx in deferred.pending} <= known:
        deferred.load_all()
        return

    def _get_ssl_context(self: Any, req: Any) -> Any:
        ctx = pick(self, req)
        if ctx is not None:
            deferred.load(ctx)
        return ctx

    cls._get_ssl_context = _get_ssl_context
