"""One open serial connection to a qwatch device (docs/protocol.md §7): framing, seq numbers, handshake.

Framing and CRC come from `protocols.serial_frame`; this module adds the pyserial I/O and
the request/reply discipline (a reply echoes its request's seq). Reads never block for
longer than the port's read timeout, and every decode error is counted, never raised.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass

import serial

from protocols.errors import FrameError
from protocols.serial_frame import Frame, FrameDecoder, HelloReply, MsgType, encode_frame

log = logging.getLogger("qwatch.firmware_interface.link")

BAUD = 115200
KIND_SCANNER = 1
KIND_DOCK = 2
PROTO_VERSION = 1


class LinkError(Exception):
    """The device did not answer as the protocol requires. `reason` is a stable counter key."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason


@dataclass(frozen=True, slots=True)
class LinkOptions:
    """Timeouts of one connection. Tests shrink them."""

    read_timeout_s: float = 0.05
    write_timeout_s: float = 1.0
    hello_timeout_s: float = 1.0
    hello_attempts: int = 3


class DeviceLink:
    """A framed connection over an open pyserial port."""

    def __init__(self, port: serial.Serial, options: LinkOptions | None = None) -> None:
        self.port = port
        self.options = options or LinkOptions()
        self.decoder = FrameDecoder()
        self._seq = 0
        self._pending: deque[Frame] = deque()
        self.discarded = 0

    @classmethod
    def open(cls, device: str, options: LinkOptions | None = None) -> DeviceLink:
        """Open `device` at 115200 8N1, exclusively, and drop whatever the device sent before us.

        Raises serial.SerialException (or OSError) if the device is absent or busy.
        """
        opts = options or LinkOptions()
        port = serial.Serial(
            device, BAUD, bytesize=8, parity="N", stopbits=1,
            timeout=opts.read_timeout_s, write_timeout=opts.write_timeout_s, exclusive=True,
        )
        port.reset_input_buffer()
        return cls(port, opts)

    def close(self) -> None:
        """Close the port; never raises (the device may already be gone)."""
        try:
            self.port.close()
        except Exception as exc:  # closing a vanished tty can fail in several ways; it is closed anyway
            log.debug("event=close_failed error=%r", exc)

    def next_seq(self) -> int:
        """A fresh sequence number for a host-initiated request."""
        self._seq = (self._seq + 1) & 0xFF
        return self._seq

    def send(self, msg_type: int, payload: bytes = b"", seq: int | None = None) -> int:
        """Write one frame; returns its seq. Raises serial.SerialException if the device is gone."""
        s = self.next_seq() if seq is None else seq
        self.port.write(encode_frame(msg_type, s, payload))
        return s

    def read_frames(self) -> list[Frame]:
        """Whatever whole frames arrived within one read timeout (possibly none).

        Raises serial.SerialException when the device disappeared (unplug).
        """
        if self._pending:
            out = list(self._pending)
            self._pending.clear()
            return out
        waiting = self.port.in_waiting
        data = self.port.read(waiting if waiting > 0 else 1)
        return self.decoder.feed(data) if data else []

    def request(self, msg_type: int, payload: bytes, reply_type: int, timeout_s: float, *,
                keep_others: bool = True) -> Frame:
        """Send a request and wait for the reply with the same seq (or an ERROR frame with it).

        Frames that are not the reply are kept and returned by the next `read_frames` call,
        so a scanner's adverts are not lost during a keepalive; with `keep_others=False` they
        are discarded and counted in `discarded`. Raises LinkError on timeout or on an ERROR reply.
        """
        seq = self.send(msg_type, payload)
        deadline = time.monotonic() + timeout_s
        kept: list[Frame] = []
        try:
            while time.monotonic() < deadline:
                for frame in self.read_frames():
                    if frame.seq == seq and frame.type == reply_type:
                        return frame
                    if frame.seq == seq and frame.type == MsgType.ERROR:
                        code = frame.payload[0] if frame.payload else -1
                        text = frame.payload[1:].decode("utf-8", "replace")
                        raise LinkError("device_error", f"device answered ERROR {code}: {text}")
                    kept.append(frame)
            raise LinkError("timeout", f"no reply of type 0x{reply_type:02x} within {timeout_s}s")
        finally:
            if keep_others:
                self._pending.extend(kept)
            else:
                self.discarded += len(kept)

    def hello(self, *, keep_others: bool = True) -> HelloReply:
        """Identify the device (HELLO handshake), retrying a few times. Raises LinkError.

        On connect, pass keep_others=False: whatever the device queued before the host was
        there is stale (adverts from seconds ago would get a wrong receive time).
        """
        last: LinkError | None = None
        for _ in range(self.options.hello_attempts):
            try:
                frame = self.request(MsgType.HELLO, b"", MsgType.HELLO_REPLY, self.options.hello_timeout_s,
                                     keep_others=keep_others)
            except LinkError as exc:
                last = exc
                continue
            try:
                reply = HelloReply.from_payload(frame.payload)
            except FrameError as exc:
                raise LinkError("bad_hello", str(exc)) from None
            if reply.proto != PROTO_VERSION:
                raise LinkError("proto_mismatch", f"device speaks protocol {reply.proto}, host {PROTO_VERSION}")
            return reply
        assert last is not None
        raise LinkError("handshake_timeout", f"no HELLO_REPLY after {self.options.hello_attempts} tries: {last}")
