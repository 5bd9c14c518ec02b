"""The per-message :class:`Context` handed to RPC handlers and middleware.

A context carries the incoming :class:`~nbio.rpc.message.Message`, the peer it came from
(``ctx.client``: a :class:`~nbio.rpc.client.Peer` that can ``call``/``notify`` back), the
handler chain (middleware + handler) with ``next()``/``abort()``, and per-message values.
``bind()`` decodes the request; ``write()``/``error()`` answer it.
"""

from __future__ import annotations

import logging
from types import CoroutineType
from typing import Any, Dict, Optional, Sequence

from nbio.errors import RpcError
from nbio.rpc.codec import payload_to_value, value_to_payload
from nbio.rpc.message import CMD_REQUEST, CMD_RESPONSE, FLAG_ASYNC, FLAG_ERROR, encode

__all__ = ["ERR_INTERNAL", "Context"]

logger = logging.getLogger("nbio.rpc")

#: Error text answered when a handler raises something other than RpcError.
ERR_INTERNAL = "internal server error"


class _Done:
    """What ``ctx.next()`` returns when the rest of the chain ran inline: awaitable, at once."""

    __slots__ = ()

    def __await__(self) -> Any:
        return iter(())

    def __repr__(self) -> str:
        return "<chain done>"


DONE = _Done()


class _Continuation:
    """The rest of a chain that reached a coroutine handler: awaiting it runs that coroutine,
    then the handlers after it. If nobody awaits it (a plain-function middleware called
    ``ctx.next()``), the dispatcher runs it as a task."""

    __slots__ = ("coro", "ctx", "started")

    def __init__(self, ctx: Context, coro: Any) -> None:
        self.ctx = ctx
        self.coro = coro
        self.started = False

    def __await__(self) -> Any:
        self.started = True
        return self._run().__await__()

    async def _run(self) -> None:
        ctx = self.ctx
        if ctx._pending is self:
            ctx._pending = None
        result = await self.coro
        if result is not None and not ctx._answered:
            ctx._result(result)
        await ctx._unawaited()
        rest = ctx.next()
        if rest is not DONE:
            await rest
        await ctx._unawaited()


class Context:
    """One incoming request or notify on its way through the handler chain.

    * ``client`` - the peer the message came from (call/notify it back), ``message`` - the
      parsed :class:`~nbio.rpc.message.Message`, ``body`` - its payload bytes;
    * ``bind(as_type=None)`` - the request value: through the codec, or raw with
      ``as_type=str`` / ``as_type=bytes`` (arpc's ``*string`` / ``*[]byte`` targets);
    * ``write(value)`` / ``error(text)`` - answer a request (a notify gets no answer);
      a handler may also just ``return value``;
    * ``next()`` / ``abort()`` - middleware control; ``get``/``set``/``values`` - per-message
      values shared along the chain.
    """

    __slots__ = (
        "_aborted",
        "_answered",
        "_chain",
        "_index",
        "_pending",
        "_values",
        "client",
        "message",
    )

    def __init__(self, client: Any, message: Any, chain: Sequence[Any] = ()) -> None:
        self.client = client
        self.message = message
        self._chain = chain
        self._index = -1
        self._aborted = False
        self._answered = message.cmd_byte != CMD_REQUEST
        self._values: Optional[Dict[Any, Any]] = None
        self._pending: Optional[_Continuation] = None

    def __repr__(self) -> str:
        m = self.message
        return f"<Context {m.method!r} seq={m.seq} cmd={m.cmd}>"

    # -- the message --------------------------------------------------------------------------

    @property
    def method(self) -> str:
        return str(self.message.method)

    @property
    def body(self) -> bytes:
        """The raw payload."""
        return bytes(self.message.payload)

    @property
    def is_request(self) -> bool:
        """True for a Call (answer expected), False for a Notify."""
        return bool(self.message.cmd_byte == CMD_REQUEST)

    def bind(self, as_type: Any = None) -> Any:
        """The request value: decoded with the connection's codec, or the payload as text
        (``as_type=str``) or bytes (``as_type=bytes``). An empty payload gives None.

        A payload the codec cannot decode raises RpcError (which, uncaught, answers the
        caller with its text)."""
        try:
            return payload_to_value(self.message.payload, self.client.codec, as_type)
        except Exception as exc:
            raise RpcError(
                f"cannot decode the request with {type(self.client.codec).__name__}: {exc}"
            ) from exc

    # -- answering ----------------------------------------------------------------------------

    @property
    def answered(self) -> bool:
        """True once the request was answered (always True for a notify)."""
        return self._answered

    def write(self, value: Any = None) -> bool:
        """Answer the request with ``value`` (str/bytes raw, anything else via the codec).

        Returns False when nothing was sent: the message is a notify or the connection is
        gone. Answering twice raises RuntimeError."""
        msg = self.message
        if msg.cmd_byte != CMD_REQUEST:
            return False
        if self._answered:
            raise RuntimeError(f"request {msg.method!r} seq={msg.seq} was already answered")
        self._answered = True
        peer = self.client
        frame = encode(
            CMD_RESPONSE,
            msg.method,
            msg.seq,
            value_to_payload(value, peer.codec),
            msg.flags & FLAG_ASYNC,
        )
        return bool(peer._answer(frame))

    def error(self, text: Any) -> bool:
        """Answer the request with an error (flag 0x01, the text as payload); the caller
        gets :class:`~nbio.errors.RpcError` with this text."""
        msg = self.message
        if msg.cmd_byte != CMD_REQUEST:
            return False
        if self._answered:
            raise RuntimeError(f"request {msg.method!r} seq={msg.seq} was already answered")
        self._answered = True
        frame = encode(
            CMD_RESPONSE,
            msg.method,
            msg.seq,
            str(text).encode("utf-8"),
            FLAG_ERROR | (msg.flags & FLAG_ASYNC),
        )
        return bool(self.client._answer(frame))

    def _result(self, value: Any) -> None:
        # a handler's return value answers the request
        if self.message.cmd_byte == CMD_REQUEST:
            self.write(value)

    def _fail(self, exc: BaseException) -> None:
        """A handler raised: answer RpcError with its text, anything else generically."""
        if isinstance(exc, RpcError):
            text = str(exc)
        else:
            logger.error(
                "nbio.rpc: handler for %r raised %s",
                self.message.method,
                type(exc).__name__,
                exc_info=(type(exc), exc, exc.__traceback__),
            )
            text = ERR_INTERNAL
        if not self._answered:
            self.error(text)

    # -- the chain ----------------------------------------------------------------------------

    @property
    def aborted(self) -> bool:
        return self._aborted

    def abort(self, error: Optional[str] = None) -> None:
        """Stop the chain: handlers after the current one do not run. With ``error``, the
        request is answered with that error text (if not answered yet)."""
        self._aborted = True
        if error is not None and not self._answered:
            self.error(error)

    def next(self) -> Any:
        """Run the rest of the chain. Returns an awaitable: ``await ctx.next()`` in a
        coroutine middleware waits for coroutine handlers too; a plain-function
        middleware may ignore it (coroutine handlers further down then run as a task)."""
        chain = self._chain
        n = len(chain)
        i = self._index + 1
        while i < n and not self._aborted:
            self._index = i
            result = chain[i](self)
            if result is not None:
                if type(result) is CoroutineType:
                    cont = _Continuation(self, result)
                    self._pending = cont
                    return cont
                if not self._answered:
                    self._result(result)
            pending = self._pending
            if pending is not None and not pending.started:
                # a middleware called next() and did not await the coroutine part of
                # the chain: the rest belongs to that continuation
                return pending
            i = self._index + 1
        return DONE

    async def _unawaited(self) -> None:
        pending = self._pending
        if pending is not None and not pending.started:
            await pending

    # -- values -------------------------------------------------------------------------------

    @property
    def values(self) -> Dict[Any, Any]:
        """Per-message values, shared by the middleware and the handler."""
        if self._values is None:
            self._values = {}
        return self._values

    def get(self, key: Any, default: Any = None) -> Any:
        return default if self._values is None else self._values.get(key, default)

    def set(self, key: Any, value: Any) -> None:
        self.values[key] = value
