"""Core NATS messages handed over as (subject, payload) bytes, without nats-py's per-message machinery.

For each message nats-py matches a regular expression, awaits two coroutines,
builds a ``Msg``, queues it for the subscription's task and awaits the
callback: ~4 µs of the bare subscriber's ~8 at 20k msg/s, as much as the
archiver's whole receive path (bench/receive_cost.py, BENCHMARKS.md). The
archiver's core-NATS callback never waits (with the spool, the default) and
needs only the subject and payload, so :class:`DirectParser` frames the read
buffer itself and calls it for each ``MSG`` of the one subscription it serves.

Every other operation (INFO, PING, PONG, +OK, -ERR, HMSG, a message of
another subscription) is cut out as one whole frame and given to nats-py's own
parser, so its handling is nats-py's; :class:`DirectClient` also hands that
subscription's messages which reach nats-py's ``_process_msg`` (those with
headers) to the same function. Each message arrives once, in the order sent.

This leans on nats-py internals (the parser's ``buf`` and ``state``, the
client's ``_ps`` and ``_process_msg``): :func:`direct_supported` checks them,
and the service uses nats-py's own path where they differ.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

from nats.aio.client import Client
from nats.aio.client import __version__ as nats_version
from nats.aio.subscription import Subscription
from nats.protocol import parser as nats_parser

from archiver.logs import event

#: Called with each message's subject and payload; it must not block (it runs inside the read loop).
Deliver = Callable[[bytes, bytes], None]

_MSG = b"MSG "
_HMSG = b"HMSG "
_CRLF = b"\r\n"


@functools.cache
def direct_supported() -> bool:
    """Whether this nats-py's parser and client have the internals :class:`DirectParser` relies on."""
    probe = nats_parser.Parser(None)
    return (
        isinstance(getattr(probe, "buf", None), bytearray)
        and getattr(probe, "state", None) == getattr(nats_parser, "AWAITING_CONTROL_LINE", object())
        and callable(getattr(Client, "_process_msg", None))
        and callable(getattr(Client, "_remove_sub", None))
        and hasattr(Client(), "_ps")
    )


def usable(deliver: Deliver | None) -> Deliver | None:
    """``deliver`` if this nats-py allows direct delivery (else None, said once in the log)."""
    if deliver is None or direct_supported():
        return deliver
    event(logging.WARNING, "nats-py's internals differ from those tested: messages take its own (slower) path",
          nats_py=nats_version)  # fmt: skip
    return None


def frame_end(view: bytes, pos: int, eol: int) -> int | None:
    """Where the operation whose control line is ``view[pos:eol]`` ends (None: its size is not a number)."""
    if view.startswith(_MSG, pos) or view.startswith(_HMSG, pos):
        size = view[pos:eol].rsplit(None, 1)[-1]
        if not size.isdigit():
            return None
        return eol + 2 + int(size) + 2
    return eol + 2


class DirectParser(nats_parser.Parser):
    """nats-py's parser, with the plain ``MSG`` frames of one subscription delivered straight to a function."""

    #: The length of an incomplete frame at the buffer's head: nothing to do until the buffer holds it.
    _wait_for = 0
    #: How many times the client reset the parser (nats-py's parser, run on one operation, may cause one).
    _resets = 0

    def __init__(self, nc: Any = None) -> None:
        super().__init__(nc)
        self.deliver: Deliver | None = None
        self.sid = b""

    def reset(self) -> None:
        """As nats-py's (the client calls it on a reconnect), also forgetting an incomplete frame."""
        super().reset()
        self._wait_for = 0
        self._resets += 1

    async def parse(self, data: bytes = b"") -> None:
        """Deliver each complete frame in the buffer; keep an incomplete one for the next read."""
        self.buf.extend(data)
        deliver = self.deliver
        if deliver is None or self.state != nats_parser.AWAITING_CONTROL_LINE:
            # Mid-payload: only after nats-py took a frame this parser could not size (never from a server).
            await super().parse()
            return
        if len(self.buf) < self._wait_for:
            return
        self._wait_for = 0
        sid = self.sid
        resets = self._resets
        view = bytes(self.buf)
        pos = 0
        end = len(view)
        while pos < end:
            eol = view.find(_CRLF, pos)
            if eol < 0:
                break  # a control line still arriving (nats-py waits the same way)
            if view.startswith(_MSG, pos):
                fields = view[pos + 4 : eol].split()
                if len(fields) in (3, 4) and fields[1] == sid and fields[-1].isdigit():
                    start = eol + 2
                    stop = start + int(fields[-1])
                    if stop + 2 > end:
                        self._wait_for = stop + 2 - pos
                        break
                    pos = stop + 2
                    try:
                        deliver(fields[0], view[start:stop])
                    except Exception as exc:  # as nats-py treats a failing callback: reported
                        await self.nc._error_cb(exc)
                        if self._resets != resets:
                            return  # the client reset the parser meanwhile: its buffer is a new one
                    continue
            op_end = frame_end(view, pos, eol)
            if op_end is not None and op_end > end:
                self._wait_for = op_end - pos
                break
            del self.buf[:pos]
            if not await self._by_nats_py(None if op_end is None else op_end - pos):
                return
            view = bytes(self.buf)
            pos = 0
            end = len(view)
        del self.buf[:pos]

    async def _by_nats_py(self, length: int | None) -> bool:
        """nats-py's parser on the buffer's first ``length`` bytes, one whole operation (None: on all of it).

        False when nats-py keeps part of it, or reset the parser: it owns the buffer from there, as it
        would without this parser.
        """
        rest = self.buf
        resets = self._resets
        self.buf = bytearray(rest if length is None else rest[:length])
        await super().parse()
        if self._resets != resets:
            return False
        left, self.buf = self.buf, rest
        del rest[: len(rest) if length is None else length]
        if left or self.state != nats_parser.AWAITING_CONTROL_LINE:
            rest[:0] = left
            return False
        return True


class DirectClient(Client):
    """A nats-py client whose one direct subscription's messages go to a function, not through ``Msg`` objects."""

    def __init__(self) -> None:
        super().__init__()
        self._direct_parser = DirectParser(self)
        self._ps = self._direct_parser

    def direct(self, subscription: Subscription, deliver: Deliver) -> None:
        """From now on, hand ``subscription``'s messages to ``deliver`` (its callback no longer sees them)."""
        self._direct_parser.sid = str(subscription._id).encode()
        self._direct_parser.deliver = deliver

    def _is_direct(self, sid: int) -> bool:
        return self._direct_parser.deliver is not None and self._direct_parser.sid == str(sid).encode()

    def _remove_sub(self, sid: int, max_msgs: int = 0) -> None:
        if self._is_direct(sid):  # unsubscribed or drained: its late messages are dropped, as nats-py does
            self._direct_parser.deliver = None
            self._direct_parser.sid = b""
        super()._remove_sub(sid, max_msgs)

    async def _process_msg(self, sid: int, subject: bytes, reply: bytes, data: bytes, headers: bytes) -> None:
        deliver = self._direct_parser.deliver
        if deliver is None or not self._is_direct(sid):
            await super()._process_msg(sid, subject, reply, data, headers)
            return
        try:
            deliver(subject, data)
        except Exception as exc:
            await self._error_cb(exc)
