"""TLS for nbio connections, above either engine backend.

TLS runs in memory: each connection has an :class:`ssl.SSLObject` between two
:class:`ssl.MemoryBIO` objects, fed from the engine's ``on_data`` and flushed with the
connection's ``write``. No thread, no blocking, no asyncio transport. The user's handler sees a
:class:`TLSConn` with the same API as a plain connection and gets ``on_open`` once the
handshake is done.

Use it through the engine: ``engine.listen(handler, host, port, ssl=server_context)`` and
``await engine.dial(handler, host, port, ssl=client_context)``.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from typing import Any, Optional

from ..errors import ClosedByPeer, ConnectionClosed, DeadlineExceeded
from ._files import CHUNK, FileQueue, file_range

__all__ = ["TLSConn", "TLSLayer", "default_client_context"]

logger = logging.getLogger("nbio.engine.tls")

_READ_SIZE = 16384  # a TLS record carries at most 16 KiB of plaintext
_LINGER = 5.0  # seconds to wait for the peer's close_notify after ours

# TLSConn states
_HANDSHAKE, _OPEN, _CLOSING, _CLOSED = range(4)


def record_sni(context: ssl.SSLContext) -> None:
    """Make a server context remember the SNI name each client sent (chaining any
    ``sni_callback`` already set), so :attr:`TLSConn.server_hostname` reports it."""
    previous = context.sni_callback
    if getattr(previous, "_nbio_records_sni", False):
        return

    def callback(sslobj: Any, name: Optional[str], ctx: ssl.SSLContext) -> Any:
        sslobj._nbio_sni = name
        return previous(sslobj, name, ctx) if previous is not None else None  # type: ignore[arg-type]

    callback._nbio_records_sni = True  # type: ignore[attr-defined]
    context.sni_callback = callback


def default_client_context() -> ssl.SSLContext:
    """A client context with certificate and hostname verification on (the default)."""
    return ssl.create_default_context(ssl.Purpose.SERVER_AUTH)


class TLSLayer:
    """Engine handler that runs TLS and passes plaintext to the user's handler.

    One layer serves every connection of a listener (server side), or one dial (client side).
    """

    __slots__ = (
        "context",
        "handler",
        "handshake_timeout",
        "server_hostname",
        "server_side",
        "session",
        "user_close",
        "user_data",
        "user_drain",
        "user_open",
        "waiter",
    )

    def __init__(
        self,
        handler: Any,
        context: ssl.SSLContext,
        *,
        server_side: bool,
        server_hostname: Optional[str] = None,
        handshake_timeout: float = 10.0,
        session: Optional[ssl.SSLSession] = None,
        waiter: Optional[asyncio.Future] = None,
    ) -> None:
        self.handler = handler
        self.context = context
        self.server_side = server_side
        self.server_hostname = server_hostname
        self.handshake_timeout = handshake_timeout
        self.session = session
        self.waiter = waiter
        if server_side:
            record_sni(context)
        self.user_open = getattr(handler, "on_open", None)
        self.user_data = handler.on_data
        self.user_close = getattr(handler, "on_close", None)
        self.user_drain = getattr(handler, "on_drain", None)

    # -- engine callbacks on the raw (encrypted) connection -----------------------------------

    def on_open(self, raw: Any) -> None:
        tls = TLSConn(self, raw)
        raw.session = tls
        if self.handshake_timeout:
            raw.set_read_deadline(self.handshake_timeout)
        tls._feed(b"")

    def on_data(self, raw: Any, data: Any) -> None:
        raw.session._feed(data)

    def on_eof(self, raw: Any) -> bool:
        raw.session._eof = True
        return False

    def on_drain(self, raw: Any) -> None:
        raw.session._drained()

    def on_close(self, raw: Any, exc: Optional[BaseException]) -> None:
        tls = raw.session
        if isinstance(tls, TLSConn):
            tls._raw_closed(exc)


class TLSConn:
    """A TLS connection: the plain connection API, encrypted on the wire.

    Extra attributes: :meth:`selected_alpn_protocol`, :meth:`getpeercert`, :meth:`version`,
    :meth:`cipher`, :attr:`tls_session` (for resumption: pass it to a later ``dial``) and
    :attr:`session_reused`.
    """

    __slots__ = (
        "_close_reason",
        "_eof",
        "_files",
        "_in",
        "_layer",
        "_opened",
        "_out",
        "_raw",
        "_ssl",
        "_state",
        "session",
    )

    def __init__(self, layer: TLSLayer, raw: Any) -> None:
        self._layer = layer
        self._raw = raw
        self._in = ssl.MemoryBIO()
        self._out = ssl.MemoryBIO()
        self._ssl = layer.context.wrap_bio(
            self._in,
            self._out,
            server_side=layer.server_side,
            server_hostname=layer.server_hostname,
            session=layer.session,
        )
        self._state = _HANDSHAKE
        self._opened = False  # the handshake completed: the user's handler knows this conn
        self._close_reason: Optional[BaseException] = None
        self._eof = False
        self._files: Optional[FileQueue] = None
        self.session: Any = None

    def __repr__(self) -> str:
        state = ("handshake", "open", "closing", "closed")[self._state]
        return f"<nbio.TLSConn {state} over {self._raw!r}>"

    # -- TLS details --------------------------------------------------------------------------

    def selected_alpn_protocol(self) -> Optional[str]:
        """The protocol ALPN agreed on, if any."""
        return self._ssl.selected_alpn_protocol()

    def getpeercert(self, binary_form: bool = False) -> Any:
        """The peer's certificate (see :meth:`ssl.SSLObject.getpeercert`)."""
        return self._ssl.getpeercert(binary_form)

    def version(self) -> Optional[str]:
        """The negotiated protocol version, e.g. ``"TLSv1.3"``."""
        return self._ssl.version()

    def cipher(self) -> Any:
        return self._ssl.cipher()

    @property
    def server_hostname(self) -> Optional[str]:
        """The SNI name: what the client asked for (on either side)."""
        if self._layer.server_side:
            return getattr(self._ssl, "_nbio_sni", None)
        return self._ssl.server_hostname

    @property
    def tls_session(self) -> Optional[ssl.SSLSession]:
        """The TLS session, reusable by a later dial to the same server."""
        return self._ssl.session

    @property
    def session_reused(self) -> bool:
        return bool(self._ssl.session_reused)

    @property
    def raw(self) -> Any:
        """The underlying (encrypted) engine connection."""
        return self._raw

    # -- the connection API -------------------------------------------------------------------

    @property
    def engine(self) -> Any:
        return self._raw.engine

    @property
    def handler(self) -> Any:
        return self._layer.handler

    @property
    def closed(self) -> bool:
        return self._state == _CLOSED

    @property
    def closing(self) -> bool:
        return self._state >= _CLOSING

    @property
    def buffered(self) -> int:
        pending = self._files.pending if self._files is not None else 0
        return int(self._raw.buffered) + pending

    @property
    def reading(self) -> bool:
        return bool(self._raw.reading)

    @property
    def local_address(self) -> Any:
        return self._raw.local_address

    @property
    def remote_address(self) -> Any:
        return self._raw.remote_address

    def fileno(self) -> int:
        return int(self._raw.fileno())

    def write(self, data: Any) -> None:
        """Encrypt and send ``data``."""
        if self._state != _OPEN:
            raise ConnectionClosed(None, "write on a closed connection")
        if self._files is not None:
            self._files.add_bytes(data)
            return
        self._ssl.write(data)
        self._flush()

    def writelines(self, chunks: Any) -> None:
        """Encrypt several buffers and send the records in one write."""
        if self._state != _OPEN:
            raise ConnectionClosed(None, "write on a closed connection")
        if self._files is not None:
            for chunk in chunks:
                self.write(chunk)
            return
        for chunk in chunks:
            self._ssl.write(chunk)
        self._flush()

    def sendfile(self, file: Any, offset: int = 0, count: Optional[int] = None) -> None:
        """Send a file range; under TLS it is read and encrypted a chunk at a time, paced by
        the connection's write queue (no zero-copy)."""
        if self._state != _OPEN:
            raise ConnectionClosed(None, "write on a closed connection")
        fd, count = file_range(file, offset, count)
        if count <= 0:
            return
        if self._files is None:
            self._files = FileQueue()
        self._files.add_file(file, fd, offset, count)
        self._pump_files()

    def close(self, reason: Optional[BaseException] = None) -> None:
        """Send close_notify, flush, close; ``on_close`` gets ``reason``."""
        if reason is not None and self._close_reason is None:
            self._close_reason = reason
        if self._state == _HANDSHAKE:
            self._state = _CLOSED
            self._raw.abort()
            return
        if self._state != _OPEN:
            return
        if self._files is not None:
            self._state = _CLOSING  # finished by _pump_files
            return
        self._shutdown()

    def abort(self, reason: Optional[BaseException] = None) -> None:
        """Close at once, without close_notify; ``on_close`` gets ``reason``."""
        if reason is not None and self._close_reason is None:
            self._close_reason = reason
        self._raw.abort()

    def pause_reading(self) -> None:
        self._raw.pause_reading()

    def resume_reading(self) -> None:
        self._raw.resume_reading()
        if self._state == _OPEN and self._ssl.pending():
            self._feed(b"")  # deliver what was decrypted while paused

    def set_read_deadline(self, timeout: Optional[float]) -> None:
        self._raw.set_read_deadline(timeout)

    def set_write_deadline(self, timeout: Optional[float]) -> None:
        self._raw.set_write_deadline(timeout)

    def set_idle_timeout(self, timeout: Optional[float]) -> None:
        self._raw.set_idle_timeout(timeout)

    def set_handler(self, handler: Any) -> None:
        """Hand this TLS connection to another handler (as ``Conn.set_handler``)."""
        self._layer = TLSLayer(
            handler,
            self._layer.context,
            server_side=self._layer.server_side,
            server_hostname=self._layer.server_hostname,
            handshake_timeout=self._layer.handshake_timeout,
        )

    def drain(self) -> Any:
        return self._raw.drain()

    # -- internals ----------------------------------------------------------------------------

    def _flush(self) -> None:
        out = self._out
        if out.pending:
            data = out.read()
            if not self._raw.closed:
                try:
                    self._raw.write(data)
                except ConnectionClosed:
                    pass

    def _feed(self, data: Any) -> None:
        if data:
            self._in.write(data)
        layer = self._layer
        if self._state == _HANDSHAKE:
            try:
                self._ssl.do_handshake()
            except ssl.SSLWantReadError:
                self._flush()
                return
            except (ssl.SSLError, ssl.CertificateError) as exc:
                self._flush()  # the alert, if any
                self._fail_handshake(exc)
                return
            self._state = _OPEN
            self._opened = True
            self._raw.set_read_deadline(None)
            self._flush()
            if layer.user_open is not None:
                try:
                    layer.user_open(self)
                except Exception as exc:
                    logger.error("nbio: on_open raised for %r", self, exc_info=exc)
                    self._close_reason = exc
                    self._raw.abort()
                    return
            waiter = layer.waiter
            if waiter is not None and not waiter.done():
                waiter.set_result(self)
        while self._state in (_OPEN, _CLOSING) and self._raw.reading:
            try:
                chunk = self._ssl.read(_READ_SIZE)
            except ssl.SSLWantReadError:
                break
            except ssl.SSLZeroReturnError:
                self._peer_closed()
                break
            except ssl.SSLError as exc:
                self._close_reason = exc
                self._raw.abort()
                return
            if not chunk:
                self._peer_closed()
                break
            if self._state != _OPEN:
                continue  # we are closing: discard
            try:
                # the handler may have changed (set_handler: upgrades, ALPN h2)
                self._layer.user_data(self, chunk)
            except Exception as exc:
                logger.error("nbio: %s raised in on_data for %r", type(exc).__name__, self,
                             exc_info=exc)
                self._close_reason = exc
                self._raw.abort()
                return
            if not self._in.pending and not self._ssl.pending():
                break  # nothing left to decrypt: skip the read that would only fail
        self._flush()  # session tickets, key updates

    def _peer_closed(self) -> None:
        """close_notify from the peer: answer with ours (if not sent yet) and close."""
        if self._state == _OPEN:
            if self._close_reason is None:
                self._close_reason = ClosedByPeer("TLS close_notify from peer")
            self._shutdown()
        elif self._state == _CLOSING:
            self._raw.close()  # the answer to our close_notify: done

    def _shutdown(self) -> None:
        """Send close_notify, then close the socket once the peer answers with its own (or
        EOF). Closing at once could reset the connection while the peer is still reading,
        and a reset makes its kernel drop data it has not read yet."""
        self._state = _CLOSING
        try:
            self._ssl.unwrap()
            done = True
        except ssl.SSLWantReadError:
            done = False
        except ssl.SSLError:
            done = True
        self._flush()
        if done or self._eof or self._close_reason is not None:
            self._raw.close()
        else:
            self._raw.set_read_deadline(_LINGER)

    def _fail_handshake(self, exc: BaseException) -> None:
        self._state = _CLOSED
        self._close_reason = exc
        if self._layer.server_side:
            logger.info("nbio: TLS handshake from %r failed: %s", self._raw.remote_address, exc)
        self._raw.close()

    def _drained(self) -> None:
        if self._files is not None:
            self._pump_files()
            return
        on_drain = self._layer.user_drain
        if on_drain is not None and self._state == _OPEN:
            try:
                on_drain(self)
            except Exception as exc:
                logger.error("nbio: on_drain raised for %r", self, exc_info=exc)
                self._close_reason = exc
                self._raw.abort()

    def _pump_files(self) -> None:
        files = self._files
        raw = self._raw
        if files is None:
            return

        def write(chunk: bytes) -> None:
            self._ssl.write(chunk)
            self._flush()

        try:
            done = files.pump(write, lambda: not raw.closed and raw.buffered < CHUNK)
        except OSError as exc:
            self._close_reason = exc
            raw.abort()
            return
        if done:
            self._files = None
            if self._state == _CLOSING:
                self._shutdown()

    def _raw_closed(self, exc: Optional[BaseException]) -> None:
        state = self._state
        self._state = _CLOSED
        self._files = None
        reason = self._close_reason if self._close_reason is not None else exc
        if state == _CLOSING and self._close_reason is None:
            reason = None  # we closed (however the peer answered our close_notify)
        if isinstance(reason, DeadlineExceeded) and state == _HANDSHAKE:
            reason = DeadlineExceeded("tls handshake")
        layer = self._layer
        if not self._opened or (layer.waiter is not None and not layer.waiter.done()):
            waiter = layer.waiter
            if waiter is not None and not waiter.done():
                waiter.set_exception(
                    reason if reason is not None else ConnectionClosed(None, "closed during TLS handshake")
                )
            return  # the user's handler never saw this connection
        if layer.user_close is not None:
            try:
                layer.user_close(self, reason)
            except Exception as cb_exc:
                logger.error("nbio: on_close raised for %r", self, exc_info=cb_exc)
