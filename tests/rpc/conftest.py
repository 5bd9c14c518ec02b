"""Fixtures for the RPC wire-format tests: every test runs against both implementations."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from nbio.rpc import message as m

IMPLS = {
    "python": SimpleNamespace(
        name="python",
        Message=m.PyMessage,
        encode=m.py_encode,
        encode_header=m.py_encode_header,
        parse_frame=m.py_parse_frame,
        FrameReader=m.PyFrameReader,
    )
}
if m.COMPILED:
    from nbio.rpc import _message as c

    IMPLS["compiled"] = SimpleNamespace(
        name="compiled",
        Message=c.Message,
        encode=c.encode,
        encode_header=c.encode_header,
        parse_frame=c.parse_frame,
        FrameReader=c.FrameReader,
    )


@pytest.fixture(params=sorted(IMPLS))
def wire(request: Any) -> SimpleNamespace:
    """The compiled (when built) and the pure-Python wire implementation."""
    return IMPLS[request.param]
