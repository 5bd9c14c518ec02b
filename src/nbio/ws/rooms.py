"""WebSocket rooms over a backplane: publish to a room, every member in every process gets it.

:class:`Rooms` groups WebSocket connections (callback-API :class:`~nbio.ws.WebSocketConn`
or async-API :class:`~nbio.ws.WebSocket`, mixed freely) into named rooms. ``publish(room,
message)`` goes through a backplane (:mod:`nbio.backplane`): :class:`~nbio.backplane.
LocalBackplane` (the default) reaches the members of this process,
:class:`~nbio.backplane_redis.RedisBackplane` those of every worker process or machine
sharing the Redis server.

A :class:`Rooms` holds *one* backplane subscription per room with local members (not one
per connection); it is taken when the first local member joins and dropped when the last
one leaves. A message arriving on it is framed (and compressed) once and written to every
local member with :func:`nbio.ws.broadcast`. So each member gets each publish exactly
once, whichever process published it (within the backplane's guarantees: a Redis outage
is a loss window, reported by the backplane, never duplicated deliveries).

Room topics on the backplane are ``prefix + room`` (``"ws:"`` by default), so that rooms
and RPC pub/sub topics sharing one backplane stay apart. On the backplane a message is one
kind byte (text or binary) followed by the payload.

Closing: an async-API connection leaves its rooms by itself when it closes. The callback
API keeps no per-connection hook, so call :meth:`Rooms.leave_all` from ``on_close`` (or
pass ``on_close=rooms.on_close``); members found closed while delivering are dropped too.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Dict, List, Optional, Set, Union

from nbio.backplane import Backplane, LocalBackplane, Subscription
from nbio.errors import ConnectionClosed
from nbio.ws._conn import WebSocketConn
from nbio.ws.connection import WebSocket
from nbio.ws.server import broadcast

__all__ = ["Rooms"]

logger = logging.getLogger("nbio.ws")

AnyConn = Union[WebSocketConn, WebSocket]
Message = Union[str, bytes, bytearray, memoryview]

_TEXT = b"t"
_BINARY = b"b"


def _core(conn: AnyConn) -> WebSocketConn:
    if isinstance(conn, WebSocketConn):
        return conn
    if isinstance(conn, WebSocket):
        return conn.core
    raise TypeError(f"expected a WebSocketConn or a WebSocket, got {type(conn).__name__}")


def encode_message(message: Message) -> bytes:
    """The backplane form of a room message: kind byte + payload."""
    if isinstance(message, str):
        return _TEXT + message.encode("utf-8")
    if isinstance(message, (bytes, bytearray, memoryview)):
        return _BINARY + bytes(message)
    raise TypeError(f"a room message is str or bytes, not {type(message).__name__}")


def decode_message(data: bytes) -> Union[str, bytes]:
    """Inverse of :func:`encode_message`; ValueError for anything else."""
    kind = data[:1]
    if kind == _TEXT:
        return bytes(data[1:]).decode("utf-8")
    if kind == _BINARY:
        return bytes(data[1:])
    raise ValueError(f"not a room message (kind byte {kind!r})")


class _Room:
    __slots__ = ("members", "name", "sub")

    def __init__(self, name: str) -> None:
        self.name = name
        # insertion-ordered set of members
        self.members: Dict[WebSocketConn, None] = {}
        self.sub: Optional[Subscription] = None


class _Member:
    __slots__ = ("hook", "rooms", "ws")

    def __init__(self) -> None:
        self.rooms: Set[str] = set()
        self.ws: Optional[WebSocket] = None  # async API: whose close we watch
        self.hook: Optional[Callable[[Any], None]] = None


class Rooms:
    """Named groups of WebSocket connections, fanned out through ``backplane``.

    ``backplane``: any :class:`~nbio.backplane.Backplane` (default: a new
    :class:`~nbio.backplane.LocalBackplane`, owned and closed by :meth:`close`). ``prefix``
    is prepended to room names to form backplane topics.

    All methods but :meth:`ready` and :meth:`close` are synchronous and non-blocking.
    """

    def __init__(self, backplane: Optional[Backplane] = None, *, prefix: str = "ws:") -> None:
        self._own_backplane = backplane is None
        self.backplane: Backplane = LocalBackplane() if backplane is None else backplane
        self.prefix = prefix
        self._rooms: Dict[str, _Room] = {}
        self._conns: Dict[WebSocketConn, _Member] = {}
        self._published = 0
        self._received = 0
        self._sent = 0
        self._dropped_closed = 0
        self._bad_messages = 0

    def __repr__(self) -> str:
        return f"<nbio.ws.Rooms rooms={len(self._rooms)} connections={len(self._conns)}>"

    # -- membership ---------------------------------------------------------------------------

    def join(self, conn: AnyConn, room: str) -> None:
        """Add ``conn`` to ``room`` (idempotent). The first local member subscribes this
        process to the room on the backplane; ``await ready(room)`` waits until that
        subscription is live (at once on a local backplane). Raises
        :class:`~nbio.errors.ConnectionClosed` for a connection that is no longer open."""
        core = _core(conn)
        if not core.open:
            raise ConnectionClosed(
                core.close_code or 1006, core.close_reason or "connection closed"
            )
        r = self._rooms.get(room)
        if r is None:
            r = self._rooms[room] = _Room(room)
            r.sub = self.backplane.subscribe(self.prefix + room, self._deliver)
        if core in r.members:
            return
        r.members[core] = None
        member = self._conns.get(core)
        if member is None:
            member = self._conns[core] = _Member()
            self._hook_close(core, member)
        member.rooms.add(room)

    def leave(self, conn: AnyConn, room: str) -> bool:
        """Remove ``conn`` from ``room``; True if it was a member. The last local member
        leaving drops this process's backplane subscription to the room."""
        core = _core(conn)
        member = self._conns.get(core)
        if member is None or room not in member.rooms:
            return False
        member.rooms.discard(room)
        if not member.rooms:
            self._forget(core, member)
        self._remove(core, room)
        return True

    def leave_all(self, conn: AnyConn) -> int:
        """Remove ``conn`` from every room (call it from the callback API's ``on_close``);
        the number of rooms it left."""
        core = _core(conn)
        member = self._conns.get(core)
        if member is None:
            return 0
        self._forget(core, member)
        rooms = list(member.rooms)
        member.rooms.clear()
        for room in rooms:
            self._remove(core, room)
        return len(rooms)

    def on_close(self, conn: AnyConn, code: int = 1000, reason: str = "") -> None:
        """``on_close(ws, code, reason)`` for a callback-API upgrader: :meth:`leave_all`."""
        self.leave_all(conn)

    def members(self, room: str) -> int:
        """The number of local members of ``room`` (this process only)."""
        r = self._rooms.get(room)
        return 0 if r is None else len(r.members)

    def rooms(self, conn: Optional[AnyConn] = None) -> List[str]:
        """The rooms with local members, or those ``conn`` is in."""
        if conn is None:
            return list(self._rooms)
        member = self._conns.get(_core(conn))
        return [] if member is None else sorted(member.rooms)

    async def ready(self, room: str) -> None:
        """Wait until this process's subscription to ``room`` is live on the backplane
        (publishes from any process reach its local members from then on). Returns at
        once when the room has no local member."""
        r = self._rooms.get(room)
        if r is not None and r.sub is not None:
            await r.sub.ready()

    # -- publishing ---------------------------------------------------------------------------

    def publish(self, room: str, message: Message) -> None:
        """Send ``message`` (``str``: a text message, bytes-like: binary) to every member of
        ``room`` in every process sharing the backplane, once each. Non-blocking."""
        data = encode_message(message)
        self._published += 1
        self.backplane.publish(self.prefix + room, data)

    def _deliver(self, topic: str, data: bytes, to_one: bool) -> bool:
        self._received += 1
        r = self._rooms.get(topic[len(self.prefix) :])
        if r is None or not r.members:
            return False
        try:
            message = decode_message(data)
        except ValueError as exc:  # includes UnicodeDecodeError
            self._bad_messages += 1
            logger.warning("nbio.ws.rooms: dropped a malformed message on %r: %s", topic, exc)
            return False
        members = list(r.members)  # writes may close connections, which may leave rooms
        sent = broadcast(members, message)
        self._sent += sent
        if sent < len(members):
            self._prune(members)
        return True

    def _prune(self, members: List[WebSocketConn]) -> None:
        """Drop members that turned out closed (callback API without ``leave_all``)."""
        for core in members:
            if not core.open and core in self._conns:
                self._dropped_closed += 1
                self.leave_all(core)

    # -- internals ----------------------------------------------------------------------------

    def _remove(self, core: WebSocketConn, room: str) -> None:
        r = self._rooms.get(room)
        if r is None:
            return
        r.members.pop(core, None)
        if not r.members:
            del self._rooms[room]
            if r.sub is not None:
                r.sub.close()

    def _hook_close(self, core: WebSocketConn, member: _Member) -> None:
        """Async API: leave every room when the connection closes."""
        ws = core.session
        if isinstance(ws, WebSocket):

            def hook(_: Any) -> None:
                self.leave_all(core)

            member.ws = ws
            member.hook = hook
            ws._closed.add_done_callback(hook)

    def _forget(self, core: WebSocketConn, member: _Member) -> None:
        del self._conns[core]
        if member.ws is not None and member.hook is not None:
            member.ws._closed.remove_done_callback(member.hook)
        member.ws = member.hook = None

    # -- introspection and shutdown -----------------------------------------------------------

    def stats(self) -> Dict[str, Any]:
        """Counters: ``rooms`` (with local members), ``members`` (memberships),
        ``connections`` (in at least one room), ``published`` (publish calls), ``received``
        (messages from the backplane), ``sent`` (messages written to connections),
        ``dropped_closed`` (members found closed and removed), ``bad_messages``, and
        ``backplane`` (the backplane's own stats: connection state, loss windows)."""
        return {
            "rooms": len(self._rooms),
            "members": sum(len(r.members) for r in self._rooms.values()),
            "connections": len(self._conns),
            "published": self._published,
            "received": self._received,
            "sent": self._sent,
            "dropped_closed": self._dropped_closed,
            "bad_messages": self._bad_messages,
            "backplane": self.backplane.stats(),
        }

    async def close(self) -> None:
        """Empty every room and drop the backplane subscriptions (the connections stay
        open); close the backplane if this object created it."""
        for core in list(self._conns):
            self.leave_all(core)
        if self._own_backplane:
            await self.backplane.close()
