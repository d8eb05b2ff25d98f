"""Host side of the wristband enrollment dock (docs/protocol.md §7): read and program the docked band."""

from __future__ import annotations

import serial

from firmware_interface.link import KIND_DOCK, DeviceLink, LinkError, LinkOptions
from protocols.errors import FrameError
from protocols.serial_frame import (
    PROGRAM_STATUS,
    BandInfo,
    BandProgram,
    BandProgramResult,
    HelloReply,
    MsgType,
)


class DockClient:
    """A short-lived session with the dock. Use as a context manager.

    Every failure (device absent, wrong device, timeout, ERROR reply) raises LinkError with
    a reason, so the enrol command can tell the technician what to do.
    """

    def __init__(self, device: str, options: LinkOptions | None = None, program_timeout_s: float = 5.0) -> None:
        self.device = device
        self._options = options or LinkOptions()
        self._program_timeout_s = program_timeout_s
        self._link: DeviceLink | None = None
        self.hello: HelloReply | None = None

    def __enter__(self) -> DockClient:
        try:
            self._link = DeviceLink.open(self.device, self._options)
        except (serial.SerialException, OSError, ValueError) as exc:
            raise LinkError("open_failed", f"cannot open {self.device}: {exc}") from None
        try:
            reply = self._link.hello()
            if reply.kind != KIND_DOCK:
                raise LinkError("wrong_device", f"{self.device} is device kind {reply.kind}, not a dock (2)")
        except BaseException:
            self._link.close()
            self._link = None
            raise
        self.hello = reply
        return self

    def __exit__(self, *exc: object) -> None:
        if self._link is not None:
            self._link.close()
            self._link = None

    def _request(self, msg_type: int, payload: bytes, reply_type: int, timeout_s: float) -> bytes:
        if self._link is None:
            raise LinkError("not_open", "use DockClient as a context manager")
        try:
            return self._link.request(msg_type, payload, reply_type, timeout_s).payload
        except (serial.SerialException, OSError) as exc:
            raise LinkError("disconnect", f"dock {self.device} went away: {exc}") from None

    def info(self) -> BandInfo:
        """Identity, counter and battery of the band in the dock. LinkError('device_error') if none."""
        payload = self._request(MsgType.BAND_INFO_REQ, b"", MsgType.BAND_INFO, self._options.hello_timeout_s)
        try:
            return BandInfo.from_payload(payload)
        except FrameError as exc:
            raise LinkError("bad_reply", str(exc)) from None

    def program(self, prog: BandProgram) -> BandProgramResult:
        """Write band_id, key and radio settings. Raises LinkError('program_failed') unless status is ok."""
        payload = self._request(MsgType.BAND_PROGRAM, prog.to_payload(), MsgType.BAND_PROGRAM_RESULT,
                                self._program_timeout_s)
        try:
            result = BandProgramResult.from_payload(payload)
        except FrameError as exc:
            raise LinkError("bad_reply", str(exc)) from None
        if result.status != 0:
            text = PROGRAM_STATUS.get(result.status, f"status {result.status}")
            raise LinkError("program_failed", f"dock reports: {text}")
        if result.band_id != prog.band_id:
            raise LinkError("program_failed", f"dock programmed band {result.band_id}, asked for {prog.band_id}")
        return result
