"""Sans-IO HTTP/1.1 for both ends of a connection: bytes in, events out; calls in, bytes out.

Parsing uses llhttp (strict mode; vendored in vendor/llhttp and driven from Cython with C
callbacks: Python objects are made once per field and per message, not per parser event);
serialization is done here. No sockets, no event loop: the engine feeds received bytes and
writes the bytes these objects return.

Events (``receive_data`` returns them in order, as a list):

* :class:`Request` (server side) / :class:`Response` (client side): a message head.
  Header names are lowercased ``bytes``, values are ``bytes`` as sent (surrounding
  whitespace removed). ``Response`` with ``status < 200`` is an interim (1xx) response and is
  not followed by ``Data``/``EndOfMessage``.
* :class:`Data`: a piece of the body (``data``; chunked framing removed).
* :class:`EndOfMessage`: the body ended; ``trailers`` holds chunked trailer fields (a tuple).
* :class:`~nbio.errors.HTTPProtocolError` (an exception *instance*, delivered as the last event,
  not raised): the peer broke the protocol. On the server its ``status`` is what to answer
  (400 malformed or smuggling attempt, 413 body too large, 414 target too long, 431 header
  section too large or too many fields, 501 unsupported transfer coding, 505 version);
  :meth:`ServerConnection.error_response` builds that response, then close the connection.
  :class:`~nbio.errors.HTTPMessageTooBig` (also a ``MessageTooBig``) is the 413 case.

Server::

    conn = ServerConnection(max_body_size=1 << 20)
    for event in conn.receive_data(data):
        if type(event) is Request: ...
        elif type(event) is Data: ...
        elif type(event) is EndOfMessage:
            transport.write(conn.respond(200, [(b"content-type", b"text/plain")], b"hi"))
        else:  # HTTPProtocolError
            transport.write(conn.error_response(event)); close()
    if conn.must_close: close()   # after the response bytes are written

A response may be sent before its request body has arrived (e.g. 413); when the connection
stays open, that request's remaining ``Data``/``EndOfMessage`` events still follow and the
caller drops them. Nothing after a request without keep-alive is parsed (RFC 9112 9.6).

Responses are produced in request order (pipelining): ``respond``, or ``start_response`` +
``send_data`` + ``end_response`` for streaming (Content-Length when given in the headers,
else chunked for HTTP/1.1 clients, else close-delimited for HTTP/1.0 clients). Responses to
HEAD carry no body, nor do 1xx, 204 and 304. ``Date`` comes from a cache the caller refreshes
once a second with :func:`refresh_date`. Keep-alive follows RFC 9112 section 9.3:
``must_close`` turns true when the request asked for it (``Connection: close``, HTTP/1.0
without keep-alive), the response did, or the body framing needs it.

Backpressure: with ``pause_after_message=True`` the connection stops handing out events after
each ``EndOfMessage`` (``paused`` is true; further input is parsed and held);
:meth:`ServerConnection.resume` hands out the held events of the next request.

Upgrade/CONNECT: the request comes with ``upgrade`` set (the lowercased Upgrade value, or
``b"connect"``) followed by ``EndOfMessage``; parsing stops and the bytes after the head are
``trailing_data`` (e.g. WebSocket frames sent with the handshake). Answer 101
(``start_response(101, ...)``) and switch, or answer normally and call ``decline_upgrade()``
to go on in HTTP/1.1 (bodiless requests only; with a body, close after answering).

Expect: 100-continue: ``Request.expect_continue`` is set; call
:meth:`ServerConnection.send_100_continue` when the application starts reading the body (it
returns ``b""`` when the interim response is not needed). Answering finally without it makes
the connection close, since the client may never send the announced body.

Client (one request at a time)::

    conn = ClientConnection()
    transport.write(conn.send_request(b"GET", b"/", [(b"host", b"example.com")]))
    events = conn.receive_data(data)         # Response, Data..., EndOfMessage
    events = conn.receive_eof()              # ends a close-delimited body
    conn.reusable                            # keep-alive verdict once the response is complete

Defences (server): Content-Length together with Transfer-Encoding, duplicate Content-Length,
obs-fold, bare LF, invalid characters, Transfer-Encoding in HTTP/1.0, chunked not last → 400;
other transfer codings → 501; missing or duplicate Host in HTTP/1.1 → 400. Limits: request
target (414), header section bytes and field count (431, trailers included), body size (413,
checked against Content-Length up front and while reading chunked bodies).

Known limits of llhttp, by design here: versions other than 1.0/1.1 are answered 505
(llhttp strict mode rejects HTTP/1.2+); unknown methods are answered 400 (llhttp knows a fixed
method list); the head of a response to HEAD/CONNECT is cut at its blank line by hand because
llhttp cannot be told the body is absent.
"""

from __future__ import annotations

from nbio.errors import HTTPMessageTooBig, HTTPProtocolError
from nbio.http._h1 import (
    ClientConnection,
    Data,
    EndOfMessage,
    Request,
    Response,
    ServerConnection,
    date_header,
    refresh_date,
)

__all__ = [
    "ClientConnection",
    "Data",
    "EndOfMessage",
    "HTTPMessageTooBig",
    "HTTPProtocolError",
    "Request",
    "Response",
    "ServerConnection",
    "date_header",
    "refresh_date",
]
