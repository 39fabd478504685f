"""The direct delivery of core NATS messages: the same messages, in the same order, as nats-py's own path.

A property test feeds arbitrary protocol streams, cut at arbitrary places, to
nats-py's parser and to :class:`DirectParser` and compares what each hands on;
a real nats-server then delivers messages of every shape to a
:class:`DirectClient` and to a stock client side by side.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import nats
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nats.protocol.parser import AWAITING_CONTROL_LINE, Parser

from archiver.demo.servers import NatsServer
from archiver.service.nats_direct import DirectClient, DirectParser, direct_supported

OUR_SID = 7
#: A quick pass in the suite; ``./dev fuzz tests/test_nats_direct.py`` runs the profile's many examples.
QUICK = (
    settings()
    if os.environ.get("HYPOTHESIS_PROFILE") == "fuzz"
    else settings(max_examples=300, deadline=None)
)


class Recorder:
    """What a parser hands the client, as events: our subscription's messages as (subject, payload)."""

    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []
        self.parser: Parser | None = None  # reset on -ERR, as a client reconnecting would

    def deliver(self, subject: bytes, data: bytes) -> None:
        self.events.append(("deliver", subject, data))

    async def _process_msg(self, sid: int, subject: bytes, reply: bytes, data: bytes, headers: Any) -> None:
        if sid == OUR_SID:  # as DirectClient does for its direct subscription
            self.deliver(subject, data)
        else:
            self.events.append(("msg", sid, subject, reply, data, headers))

    async def _process_ping(self) -> None:
        self.events.append(("ping",))

    async def _process_pong(self) -> None:
        self.events.append(("pong",))

    async def _process_info(self, info: Any) -> None:
        self.events.append(("info", info))

    async def _process_err(self, err: str) -> None:
        self.events.append(("err", err))
        if self.parser is not None:
            self.parser.reset()


payloads = st.one_of(
    st.binary(max_size=120),
    st.sampled_from([b"", b"\r\n", b"MSG x 7 3\r\nabc\r\n", b"PING\r\n" * 3]),
    st.binary(min_size=5000, max_size=40000),
)
subjects = st.sampled_from([b"logs.app.ams.i1", b"logs.a-b.fra.x", b"_INBOX.x", b"a"])
sids = st.sampled_from([OUR_SID, 3, 70])


@st.composite
def operation(draw: st.DrawFn) -> bytes:
    """One server operation, as the server frames it."""
    kind = draw(st.sampled_from(["msg", "msg", "msg", "reply", "hmsg", "ping", "pong", "ok", "info", "err"]))
    subject, sid, payload = draw(subjects), draw(sids), draw(payloads)
    if kind == "msg":
        return b"MSG %s %d %d\r\n%s\r\n" % (subject, sid, len(payload), payload)
    if kind == "reply":
        return b"MSG %s %d _INBOX.r %d\r\n%s\r\n" % (subject, sid, len(payload), payload)
    if kind == "hmsg":
        head = b"NATS/1.0\r\nX-Key: v\r\n\r\n"
        return b"HMSG %s %d %d %d\r\n%s%s\r\n" % (
            subject,
            sid,
            len(head),
            len(head) + len(payload),
            head,
            payload,
        )
    return {
        "ping": b"PING\r\n",
        "pong": b"PONG\r\n",
        "ok": b"+OK\r\n",
        "info": b'INFO {"server_id":"x","max_payload":1048576}\r\n',
        "err": b"-ERR 'Permissions Violation for Subscription to \"x\"'\r\n",
    }[kind]


async def parse_all(parser: Parser, stream: bytes, cuts: list[int], recorder: Recorder) -> None:
    """Feed ``stream`` to ``parser`` in the pieces ``cuts`` makes, as the read loop does, until a reset
    (after which a reconnecting client reads a new connection's bytes, not the rest of these)."""
    last = 0
    for cut in [*sorted(cuts), len(stream)]:
        await parser.parse(stream[last:cut])
        last = cut
        if recorder.parser is not None and any(e[0] == "err" for e in recorder.events):
            return


def events_of(
    parser_class: type[Parser], stream: bytes, cuts: list[int], reset_on_err: bool = False
) -> tuple[list[tuple[Any, ...]], Parser]:
    """What ``parser_class`` hands on for ``stream`` read in pieces (``reset_on_err``: -ERR resets it)."""
    recorder = Recorder()
    parser = parser_class(recorder)
    recorder.parser = parser if reset_on_err else None
    if isinstance(parser, DirectParser):
        parser.sid = str(OUR_SID).encode()
        parser.deliver = recorder.deliver
    asyncio.run(parse_all(parser, stream, cuts, recorder))
    return recorder.events, parser


@pytest.mark.fuzz
@QUICK
@given(st.lists(operation(), max_size=30), st.data())
def test_direct_parser_hands_on_what_nats_py_does(operations: list[bytes], data: st.DataObject) -> None:
    """Any stream, cut anywhere: the same events in the same order, and the same bytes left over."""
    stream = b"".join(operations)
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=12))
    stock, stock_parser = events_of(Parser, stream, cuts)
    direct, direct_parser = events_of(DirectParser, stream, cuts)
    assert direct == stock
    assert direct_parser.state == stock_parser.state == AWAITING_CONTROL_LINE
    assert not direct_parser.buf and not stock_parser.buf
    # The client resets the parser on an -ERR (a reconnect): what was buffered is dropped alike.
    stock, stock_parser = events_of(Parser, stream, cuts, reset_on_err=True)
    direct, direct_parser = events_of(DirectParser, stream, cuts, reset_on_err=True)
    assert direct == stock
    assert bytes(direct_parser.buf) == bytes(stock_parser.buf)


def test_a_frame_arriving_a_byte_at_a_time() -> None:
    """The slowest reader: every frame split at every byte."""
    stream = b"".join(
        [
            b"MSG logs.a.b.c 7 5\r\nhello\r\n",
            b"PING\r\n",
            b"MSG logs.a.b.c 7 _INBOX.1 2\r\nhi\r\n",
            b"+OK\r\n",
        ]
    )
    cuts = list(range(len(stream)))
    assert events_of(DirectParser, stream, cuts)[0] == events_of(Parser, stream, cuts)[0]


def test_a_large_frame_is_not_rescanned_per_read() -> None:
    """A 4 MiB payload in 32 KiB reads: the parser waits for the whole frame instead of copying the
    buffer on each read (quadratic); its bytes arrive whole."""
    payload = bytes(range(256)) * (4 * 4096)
    stream = b"MSG logs.a.b.c 7 %d\r\n%s\r\nPING\r\n" % (len(payload), payload)
    cuts = list(range(0, len(stream), 32768))
    events, parser = events_of(DirectParser, stream, cuts)
    assert events == [("deliver", b"logs.a.b.c", payload), ("ping",)]
    assert not parser.buf


def test_this_nats_py_has_what_direct_delivery_needs() -> None:
    """The internals DirectParser relies on exist in the nats-py installed (else the service uses the stock path)."""
    assert direct_supported()


async def test_direct_client_receives_what_a_stock_client_does(nats_server: NatsServer) -> None:
    """Through a real server: plain, reply-bearing, header-bearing, empty and large messages, the direct
    subscription's in order; another subscription of the same client still gets Msg objects."""
    got: list[tuple[bytes, bytes]] = []
    stock: list[tuple[bytes, bytes]] = []
    other: list[bytes] = []
    direct = DirectClient()
    await direct.connect(nats_server.url)
    reference = await nats.connect(nats_server.url)

    async def ignore(msg: Any) -> None:
        raise AssertionError("the direct subscription's callback was called")

    async def on_stock(msg: Any) -> None:
        stock.append((msg.subject.encode(), msg.data))

    async def on_other(msg: Any) -> None:
        other.append(msg.data)

    sub = await direct.subscribe("logs.>", cb=ignore)
    direct.direct(sub, lambda subject, data: got.append((subject, data)))
    await direct.subscribe("other", cb=on_other)
    await reference.subscribe("logs.>", cb=on_stock)
    await direct.flush()
    await reference.flush()
    publisher = await nats.connect(nats_server.url)
    sent = []
    for i in range(3000):
        subject = f"logs.app{i % 7}.ams.inst{i % 3}"
        payload = b"x" * (i % 50) + str(i).encode() if i % 500 else bytes(range(256)) * 2000
        sent.append((subject.encode(), payload))
        if i % 11 == 0:
            await publisher.publish(subject, payload, headers={"Nats-Msg-Id": str(i)})
        elif i % 13 == 0:
            await publisher.publish(subject, payload, reply="_INBOX.none")
        else:
            await publisher.publish(subject, payload)
        if i % 997 == 0:
            await publisher.publish("other", b"not a log %d" % i)
    await publisher.flush()
    for _ in range(200):
        if len(got) >= len(sent) and len(stock) >= len(sent) and len(other) == 4:
            break
        await asyncio.sleep(0.05)
    assert got == sent
    assert stock == sent
    assert other == [b"not a log %d" % i for i in range(0, 3000, 997)]
    await asyncio.gather(publisher.close(), reference.close(), direct.close())


async def test_a_failing_delivery_is_reported_and_reading_goes_on(nats_server: NatsServer) -> None:
    """A delivery that raises goes to error_cb, as a failing nats-py callback does, and the next messages
    still arrive; once unsubscribed, nothing more is delivered."""
    errors: list[BaseException] = []
    got: list[bytes] = []

    async def on_error(exc: Exception) -> None:
        errors.append(exc)

    def deliver(subject: bytes, data: bytes) -> None:
        if data == b"boom":
            raise ValueError("boom")
        got.append(data)

    async def never(msg: Any) -> None:
        raise AssertionError("the direct subscription's callback was called")

    direct = DirectClient()
    await direct.connect(nats_server.url, error_cb=on_error)
    sub = await direct.subscribe("logs.>", cb=never)
    direct.direct(sub, deliver)
    await direct.flush()
    publisher = await nats.connect(nats_server.url)
    for payload in (b"one", b"boom", b"two"):
        await publisher.publish("logs.a.b.c", payload)
    await publisher.publish("logs.a.b.c", b"boom", headers={"X": "y"})  # through nats-py's _process_msg
    await publisher.publish("logs.a.b.c", b"three")
    await publisher.flush()
    for _ in range(100):
        if len(got) == 3:
            break
        await asyncio.sleep(0.02)
    assert got == [b"one", b"two", b"three"]
    assert [str(e) for e in errors] == ["boom", "boom"]
    await sub.unsubscribe()
    await direct.flush()
    await publisher.publish("logs.a.b.c", b"after")
    await publisher.flush()
    await direct.flush()
    assert got == [b"one", b"two", b"three"]
    await asyncio.gather(publisher.close(), direct.close())
