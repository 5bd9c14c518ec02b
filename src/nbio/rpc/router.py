"""Routing of incoming calls and notifies to handlers, with a middleware chain.

A :class:`Router` is arpc's ``Handler``: handlers by method name, middleware (``use``), a
not-found handler, connect/disconnect hooks and stream handlers. Both sides of a
connection have one, since both can be called.

* A plain-function handler runs inline, in the engine's read callback: no task, no future.
  Its return value (if not None) answers the request.
* A coroutine handler runs as a task.
* Middleware are handlers too (``fn(ctx)``) that call ``ctx.next()`` to run the rest of the
  chain, or ``ctx.abort()`` to stop it; see :func:`recover`, :func:`logging_middleware` and
  :func:`require` for examples.
* An exception from a handler answers the request: :class:`~nbio.errors.RpcError` with its
  text, anything else with ``"internal server error"`` (and is logged).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from types import CoroutineType
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from nbio.rpc.context import DONE, Context
from nbio.rpc.message import CMD_REQUEST, ERR_METHOD_NOT_FOUND

__all__ = [
    "ERR_SHUTTING_DOWN",
    "Router",
    "logging_middleware",
    "recover",
    "require",
]

logger = logging.getLogger("nbio.rpc")

#: Error text answered to requests that arrive while a server shuts down.
ERR_SHUTTING_DOWN = "server is shutting down"

Handler = Callable[[Context], Any]


class _Route:
    __slots__ = ("chain", "fast", "handler", "middleware")

    def __init__(self, handler: Handler, middleware: Tuple[Handler, ...]) -> None:
        self.handler = handler
        self.middleware = middleware
        self.chain: Tuple[Handler, ...] = (handler,)
        self.fast = False

    def build(self, global_mw: Tuple[Handler, ...]) -> None:
        self.chain = global_mw + self.middleware + (self.handler,)
        # one plain function and no middleware: called directly, no chain bookkeeping
        self.fast = len(self.chain) == 1 and not inspect.iscoroutinefunction(self.handler)


def _check_handler(fn: Any) -> None:
    if not callable(fn):
        raise TypeError(f"handler {fn!r} is not callable")


class Router:
    """Handlers by method name, middleware, hooks. See the module docstring."""

    def __init__(self) -> None:
        self._routes: Dict[str, _Route] = {}
        self._middleware: Tuple[Handler, ...] = ()
        self._not_found: Optional[_Route] = None
        self._streams: Dict[str, Callable[[Any], Any]] = {}
        self.connect_hooks: List[Callable[[Any], Any]] = []
        self.disconnect_hooks: List[Callable[[Any], Any]] = []

    # -- registration ---------------------------------------------------------------------------

    def handle(
        self, method: str, handler: Optional[Handler] = None, *, middleware: Sequence[Handler] = ()
    ) -> Any:
        """Register ``handler(ctx)`` for ``method`` (with per-route ``middleware`` run after
        the router-wide ones). Without ``handler``, returns a decorator."""
        if handler is None:

            def deco(fn: Handler) -> Handler:
                self.handle(method, fn, middleware=middleware)
                return fn

            return deco
        mb = method.encode("utf-8")
        if not 0 < len(mb) <= 127:
            raise ValueError(f"invalid method length: {len(mb)}, should be 1..127")
        _check_handler(handler)
        route = _Route(handler, tuple(middleware))
        route.build(self._middleware)
        self._routes[method] = route
        return handler

    def use(self, *middleware: Handler) -> None:
        """Add router-wide middleware, run before every handler (and the not-found handler)."""
        for mw in middleware:
            _check_handler(mw)
        self._middleware += tuple(middleware)
        for route in self._routes.values():
            route.build(self._middleware)
        if self._not_found is not None:
            self._not_found.build(self._middleware)

    def not_found(self, handler: Handler) -> Handler:
        """Handle calls and notifies for unknown methods (default: a request is answered
        ``method not found``, a notify is dropped). Usable as a decorator."""
        _check_handler(handler)
        self._not_found = _Route(handler, ())
        self._not_found.build(self._middleware)
        return handler

    def on_connect(self, hook: Callable[[Any], Any]) -> Callable[[Any], Any]:
        """Call ``hook(peer)`` when a connection is established (on a client: after every
        (re)connect). A coroutine hook runs as a task. Usable as a decorator."""
        self.connect_hooks.append(hook)
        return hook

    def on_disconnect(self, hook: Callable[[Any], Any]) -> Callable[[Any], Any]:
        """Call ``hook(peer)`` when a connection is gone. Usable as a decorator."""
        self.disconnect_hooks.append(hook)
        return hook

    def handle_stream(self, method: str, handler: Optional[Callable[[Any], Any]] = None) -> Any:
        """Register ``handler(stream)`` for streams the peer opens on ``method``; a
        coroutine handler runs as a task. Without ``handler``, returns a decorator."""
        if handler is None:

            def deco(fn: Callable[[Any], Any]) -> Callable[[Any], Any]:
                self.handle_stream(method, fn)
                return fn

            return deco
        _check_handler(handler)
        self._streams[method] = handler
        return handler

    def register(self, service: Any, name: Optional[str] = None) -> List[str]:
        """Register every public method of ``service`` as ``"Name.Method"`` (``Name``
        defaults to the class name). A service method takes the decoded request value
        and returns the response value (None answers an empty payload); it may be a
        coroutine. Returns the registered method names."""
        prefix = name or type(service).__name__
        names = []
        for attr in dir(service):
            if attr.startswith("_"):
                continue
            fn = getattr(service, attr)
            if not callable(fn) or inspect.isclass(fn):
                continue
            method = f"{prefix}.{attr}"
            self.handle(method, _service_handler(fn))
            names.append(method)
        if not names:
            raise ValueError(f"{service!r} has no public methods to register")
        return names

    @property
    def methods(self) -> List[str]:
        return sorted(self._routes)

    def stream_handler(self, method: str) -> Optional[Callable[[Any], Any]]:
        return self._streams.get(method)

    # -- dispatch -------------------------------------------------------------------------------

    def dispatch(self, peer: Any, msg: Any) -> None:
        """Run the handler chain for a request or notify ``msg`` received by ``peer``."""
        route = self._routes.get(msg.method)
        if route is None:
            route = self._not_found
            if route is None:
                if msg.cmd_byte == CMD_REQUEST:
                    Context(peer, msg).error(ERR_METHOD_NOT_FOUND)
                return
        ctx = Context(peer, msg, route.chain)
        if route.fast:
            try:
                result = route.handler(ctx)
            except Exception as exc:
                ctx._fail(exc)
                return
            if result is not None:
                if type(result) is CoroutineType:
                    ctx._pending = None
                    peer._spawn(_run_coro(ctx, result))
                elif not ctx._answered:
                    ctx.write(result)
            return
        try:
            rest = ctx.next()
        except Exception as exc:
            ctx._fail(exc)
            return
        if rest is not DONE or ctx._pending is not None:
            pending = ctx._pending
            if pending is not None and not pending.started:
                peer._spawn(_run_awaitable(ctx, pending))

    def run_hooks(self, hooks: List[Callable[[Any], Any]], peer: Any) -> None:
        for hook in hooks:
            try:
                result = hook(peer)
                if inspect.iscoroutine(result):
                    peer._spawn(_log_errors(result, hook))
            except Exception:
                logger.exception("nbio.rpc: hook %r raised", hook)


async def _run_coro(ctx: Context, coro: Any) -> None:
    try:
        result = await coro
        if result is not None and not ctx._answered:
            ctx._result(result)
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        ctx._fail(exc)


async def _run_awaitable(ctx: Context, aw: Any) -> None:
    try:
        await aw
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        ctx._fail(exc)


async def _log_errors(coro: Any, hook: Any) -> None:
    try:
        await coro
    except asyncio.CancelledError:
        raise
    except Exception:
        logger.exception("nbio.rpc: hook %r raised", hook)


def _service_handler(fn: Callable[..., Any]) -> Handler:
    if inspect.iscoroutinefunction(fn):

        async def ahandler(ctx: Context) -> None:
            ctx.write(await fn(ctx.bind()))

        return ahandler

    def handler(ctx: Context) -> None:
        ctx.write(fn(ctx.bind()))

    return handler


# -- example middleware -------------------------------------------------------------------------


def recover(expose: bool = True) -> Handler:
    """Middleware answering an exception from the rest of the chain with its text
    (``expose``) or ``"internal server error"``, and logging it (arpc's ``Recover``).
    Works for plain-function and coroutine handlers."""

    def answer(ctx: Context, exc: Exception) -> None:
        logger.warning("nbio.rpc: %r failed: %r", ctx.message.method, exc)
        if not ctx.answered:
            ctx.error(str(exc) if expose else "internal server error")

    async def guard(ctx: Context, aw: Any) -> None:
        try:
            await aw
        except Exception as exc:
            answer(ctx, exc)

    def mw(ctx: Context) -> Any:
        try:
            rest = ctx.next()
        except Exception as exc:
            answer(ctx, exc)
            return None
        if rest is not DONE:
            ctx._pending = None
            return guard(ctx, rest)
        return None

    return mw


def logging_middleware(log: Optional[logging.Logger] = None, level: int = logging.INFO) -> Handler:
    """Middleware logging every message with its handling time (arpc's ``Logger``);
    coroutine handlers are timed until they finish."""
    log = log or logger

    def done(ctx: Context, t0: float) -> None:
        m = ctx.message
        log.log(
            level,
            "rpc %s seq=%d from %s: %.3f ms",
            m.method,
            m.seq,
            ctx.client.remote_address,
            (time.perf_counter() - t0) * 1e3,
        )

    async def timed(ctx: Context, aw: Any, t0: float) -> None:
        try:
            await aw
        finally:
            done(ctx, t0)

    def mw(ctx: Context) -> Any:
        t0 = time.perf_counter()
        try:
            rest = ctx.next()
        except BaseException:
            done(ctx, t0)
            raise
        if rest is not DONE:
            ctx._pending = None
            return timed(ctx, rest, t0)
        done(ctx, t0)
        return None

    return mw


def require(check: Callable[[Context], bool], error: str = "unauthorized") -> Handler:
    """Auth middleware: runs the rest of the chain only if ``check(ctx)`` is true, else
    aborts and answers ``error``. E.g. ``require(lambda ctx: ctx.client.get("user"))``."""

    def mw(ctx: Context) -> None:
        if not check(ctx):
            ctx.abort(error)

    return mw
