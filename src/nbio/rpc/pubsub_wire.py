"""Wire encoding of arpc pub/sub topics (``extension/pubsub/topic.go``).

A topic travels as the payload of a request (client -> server) or notify (server ->
subscribers) on one of the routes below, laid out as::

    data || name (UTF-8) || uint16 LE len(name) || int64 LE timestamp (UnixNano)

Subscribe/unsubscribe send a topic with empty data. ``in_A`` (authenticate) carries the
password as a raw string instead.
"""

from __future__ import annotations

import struct
import time
from typing import NamedTuple, Optional, Union

from nbio.errors import ProtocolError

__all__ = [
    "ERR_INVALID_PASSWORD",
    "ERR_INVALID_TOPIC_BYTES",
    "ERR_INVALID_TOPIC_EMPTY",
    "ERR_INVALID_TOPIC_NAME_LENGTH",
    "MAX_TOPIC_NAME_LEN",
    "ROUTE_AUTHENTICATE",
    "ROUTE_PUBLISH",
    "ROUTE_PUBLISH_TO_ONE",
    "ROUTE_SUBSCRIBE",
    "ROUTE_UNSUBSCRIBE",
    "TOPIC_TAIL_SIZE",
    "Topic",
    "decode_topic",
    "encode_topic",
]

ROUTE_AUTHENTICATE = "in_A"
ROUTE_SUBSCRIBE = "in_S"
ROUTE_UNSUBSCRIBE = "in_U"
#: Publish to all subscribers; also the method of the notify that delivers a topic.
ROUTE_PUBLISH = "in_P"
ROUTE_PUBLISH_TO_ONE = "in_P1"

MAX_TOPIC_NAME_LEN = 1024
#: uint16 name length + int64 timestamp.
TOPIC_TAIL_SIZE = 10

# arpc's error texts (extension/pubsub/error.go), sent back in error responses.
ERR_INVALID_PASSWORD = "invalid password"
ERR_INVALID_TOPIC_EMPTY = 'invalid topic, should not be ""'
ERR_INVALID_TOPIC_BYTES = "invalid topic bytes, should be more than 10 bytes"
ERR_INVALID_TOPIC_NAME_LENGTH = "invalid topic name length, should not be more than 1024"

_TAIL = struct.Struct("<Hq")


class Topic(NamedTuple):
    """A decoded topic: its name, its data and the publisher's UnixNano timestamp."""

    name: str
    data: bytes
    timestamp: int


def encode_topic(
    name: str, data: Union[bytes, bytearray, memoryview] = b"", timestamp: Optional[int] = None
) -> bytes:
    """The payload for ``name`` carrying ``data``; ``timestamp`` defaults to now (ns)."""
    nb = name.encode("utf-8")
    if not nb:
        raise ValueError(ERR_INVALID_TOPIC_EMPTY)
    if len(nb) > MAX_TOPIC_NAME_LEN:
        raise ValueError(ERR_INVALID_TOPIC_NAME_LENGTH)
    if timestamp is None:
        timestamp = time.time_ns()
    return b"".join((data, nb, _TAIL.pack(len(nb), timestamp)))


def decode_topic(body: Union[bytes, bytearray, memoryview]) -> Topic:
    """Parse a topic payload; malformed input raises ProtocolError with arpc's error text."""
    body = bytes(body)
    n = len(body)
    if n < TOPIC_TAIL_SIZE:
        raise ProtocolError(ERR_INVALID_TOPIC_BYTES)
    name_len, timestamp = _TAIL.unpack_from(body, n - TOPIC_TAIL_SIZE)
    if name_len == 0 or name_len > MAX_TOPIC_NAME_LEN:
        raise ProtocolError(ERR_INVALID_TOPIC_NAME_LENGTH)
    end = n - TOPIC_TAIL_SIZE
    if name_len > end:  # arpc would panic slicing here; it is malformed input
        raise ProtocolError(ERR_INVALID_TOPIC_BYTES)
    name = body[end - name_len : end].decode("utf-8", "surrogateescape")
    return Topic(name, body[: end - name_len], timestamp)
