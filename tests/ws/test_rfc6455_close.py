"""RFC 6455 sections 5.5.1 and 7: Close frames, status codes, the closing handshake."""

from __future__ import annotations

import pytest
from wsutil import Recorder, client, close_payload, failure, raw_frame, server

from nbio.errors import ConnectionClosed
from nbio.ws._frames import encode_close_payload, is_valid_close_code, parse_close_payload
from nbio.ws.protocol import CLOSED, CLOSING, OPEN, Close, Message, WebSocketCore

VALID_CODES = [
    1000,
    1001,
    1002,
    1003,
    1007,
    1008,
    1009,
    1010,
    1011,
    1012,
    1013,
    1014,
    3000,
    3999,
    4000,
    4999,
]
INVALID_CODES = [0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535]


@pytest.mark.parametrize("code", VALID_CODES)
def test_valid_close_codes(code: int) -> None:
    p = server(auto_reply=False)
    assert p.receive_data(raw_frame(8, close_payload(code, b"bye"))) == [Close(code, "bye")]
    assert p.state == CLOSING and p.closed_by == "remote" and not p.failed
    assert p.close_reply() == b"\x88\x02" + code.to_bytes(2, "big")  # echo the code
    assert p.state == CLOSED
    assert is_valid_close_code(code)


@pytest.mark.parametrize("code", INVALID_CODES)
def test_invalid_close_codes_fail_1002(code: int) -> None:
    assert failure(server().receive_data(raw_frame(8, close_payload(code)))) == 1002
    assert not is_valid_close_code(code)
    with pytest.raises(ValueError):
        server().send_close(code)


def test_close_without_payload() -> None:
    p = server(auto_reply=False)
    assert p.receive_data(raw_frame(8)) == [Close(1005, "")]
    assert p.close_reply() == b"\x88\x00"


def test_close_payload_of_one_byte_fails() -> None:
    assert failure(server().receive_data(raw_frame(8, b"\x03"))) == 1002


def test_close_reply_is_queued_by_event_api() -> None:
    p = server()
    p.receive_data(raw_frame(8, close_payload(1001)))
    assert p.data_to_send() == b"\x88\x02\x03\xe9"
    assert p.state == CLOSED


def test_input_after_close_is_ignored() -> None:
    p = server()
    data = raw_frame(1, b"a") + raw_frame(8, close_payload(1000)) + raw_frame(1, b"b")
    assert p.receive_data(data) == [Message("a", True), Close(1000, "")]
    assert p.receive_data(raw_frame(1, b"c")) == []


def test_close_in_the_middle_of_a_fragmented_message() -> None:
    p = server()
    data = raw_frame(1, b"a", fin=False) + raw_frame(8, close_payload(1000))
    assert p.receive_data(data) == [Close(1000, "")]


def test_local_close_first() -> None:
    s = server()
    frame = s.send_close(1000, "done")
    assert frame == b"\x88\x06\x03\xe8done"
    assert s.state == CLOSING and s.closed_by == "local"
    assert s.send_close() == b""  # idempotent
    with pytest.raises(ConnectionClosed):
        s.encode_message("late")
    # Data frames after our Close are parsed but not delivered; the peer's Close is.
    events = s.receive_data(
        raw_frame(1, b"ignored")
        + raw_frame(2, b"x", fin=False)
        + raw_frame(0, b"y")
        + raw_frame(9, b"p")
        + raw_frame(8, close_payload(1000))
    )
    assert [e for e in events if isinstance(e, Message)] == []
    assert events[-1] == Close(1000, "")
    assert s.state == CLOSED and s.data_to_send() == b""  # no second Close
    assert s.close_code == 1000 and s.close_reason == "done"


def test_client_close_handshake_with_peer() -> None:
    c, s = client(), server()
    s.receive_data(c.send_close(1001, "going away"))
    assert s.state == CLOSED  # replied automatically
    events = c.receive_data(s.data_to_send())
    assert events == [Close(1001, "")]
    assert c.state == CLOSED and c.closed_by == "local" and s.closed_by == "remote"


def test_send_close_validation() -> None:
    s = server()
    with pytest.raises(ValueError):
        s.send_close(1000, "x" * 124)
    with pytest.raises(ValueError):
        s.send_close(None, "reason without code")
    assert s.state == OPEN
    assert s.send_close(None) == b"\x88\x00"
    assert s.send_close(1000, "é" * 61) == b""


def test_close_reply_after_failure_carries_our_code() -> None:
    p = server(auto_reply=False)
    p.receive_data(raw_frame(1, b"\xff"))
    reply = p.close_reply()
    assert reply[:4] == b"\x88" + bytes([len(reply) - 2]) + b"\x03\xef"


def test_failure_after_our_close_sends_nothing_more() -> None:
    p = server()
    p.send_close(1000)
    assert failure(p.receive_data(raw_frame(3, b""))) == 1002
    assert p.state == CLOSED and p.data_to_send() == b""


def test_on_close_called_once_by_callback_api() -> None:
    core, rec = WebSocketCore(), Recorder()
    core.feed(raw_frame(8, close_payload(1000)) + raw_frame(8, close_payload(1001)), rec)
    core.feed(raw_frame(8, close_payload(1002)), rec)
    assert rec.calls == [("close", 1000, "")]


def test_close_payload_helpers() -> None:
    assert encode_close_payload(1000, "ok") == b"\x03\xe8ok"
    assert encode_close_payload(None) == b""
    assert parse_close_payload(b"") == (1005, "")
    assert parse_close_payload(b"\x0f\xa0hi") == (4000, "hi")
    for bad, code in ((b"\x03", 1002), (b"\x03\xed", 1002), (b"\x03\xe8\xff", 1007)):
        with pytest.raises(Exception) as info:
            parse_close_payload(bad)
        assert info.value.close_code == code


def test_websockets_accepts_our_close_and_we_accept_theirs() -> None:
    from websockets.frames import Close as WClose
    from websockets.frames import Frame, Opcode

    payload = WClose(4001, "custom").serialize()
    assert server().receive_data(Frame(Opcode.CLOSE, payload).serialize(mask=True)) == [
        Close(4001, "custom")
    ]
    ours = encode_close_payload(3000, "ünï")
    assert WClose.parse(ours) == WClose(3000, "ünï")
