"""Firmware simulator: serves an emulated scanner or dock on a pty, like a USB CDC device.

The command line that serves one is `python -m devtools.firmware_sim` (it can feed the
scanner from the edge simulator, which this package may not import). `link` keeps a stable
symlink, as udev's /dev/serial/by-id does, so an unplug/replug (new pty) reappears under the
same name.

Like real firmware it never waits for the host: when the host does not read, frames are
dropped (counted), not queued without bound.
"""

from __future__ import annotations

import contextlib
import os
import queue
import select
import threading
import time
import tty
from pathlib import Path

from firmware_interface.device import Device
from protocols.serial_frame import FrameDecoder

MAX_TX_BUFFER = 8 * 1024  # a CDC device's buffers are small; stale adverts are worthless anyway


class PtyServer:
    """Runs a `Device` behind a pty master in a thread. Fault injection for tests included."""

    def __init__(self, device: Device, *, link: Path | None = None, poll_s: float = 0.01) -> None:
        self.device = device
        self.link = link
        self._poll_s = poll_s
        self._master = -1
        self._slave_keep = -1
        self.slave_name = ""
        self._tx = bytearray()
        self._cmds: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.decoder = FrameDecoder()
        self.counts = {"rx_frames": 0, "tx_frames": 0, "tx_dropped": 0, "unplugs": 0, "replugs": 0}
        self._corrupt_next = 0

    @property
    def path(self) -> str:
        """What the host should open: the stable link if any, else the current pty slave."""
        return str(self.link) if self.link is not None else self.slave_name

    @property
    def plugged(self) -> bool:
        return self._master >= 0

    def start(self) -> str:
        """Create the pty, start serving, and return the path the host should open."""
        self._plug()
        self._thread = threading.Thread(target=self._run, name="fw-sim", daemon=True)
        self._thread.start()
        return self.path

    def stop(self) -> None:
        """Stop serving and remove the pty (and link)."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(5.0)
        self._unplug()

    def unplug(self) -> None:
        """Emulate pulling the USB cable: the host's next read fails, the device path vanishes."""
        self._cmds.put(("unplug", b""))

    def replug(self) -> None:
        """Emulate plugging it back in: a fresh pty, the link re-pointed to it."""
        self._cmds.put(("replug", b""))

    def inject(self, raw: bytes) -> None:
        """Send raw bytes (line noise, a truncated frame) to the host between frames."""
        self._cmds.put(("inject", raw))

    def corrupt_next(self, n: int = 1) -> None:
        """Flip one bit inside each of the next n outgoing frames, so their CRC fails."""
        self._cmds.put(("corrupt", n.to_bytes(4, "little")))

    def _plug(self) -> None:
        master, slave = os.openpty()
        tty.setraw(slave)  # no echo, no line discipline, before the host opens it
        os.set_blocking(master, False)
        self._master, self._slave_keep = master, slave
        self.slave_name = os.ttyname(slave)
        self._tx.clear()
        if self.link is not None:
            tmp = self.link.with_name(self.link.name + ".new")
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            tmp.symlink_to(self.slave_name)
            tmp.replace(self.link)

    def _unplug(self) -> None:
        if self.link is not None:
            with contextlib.suppress(FileNotFoundError):
                self.link.unlink()
        for fd in (self._master, self._slave_keep):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._master = self._slave_keep = -1

    def _command(self, cmd: str, arg: bytes) -> None:
        if cmd == "unplug" and self.plugged:
            self._unplug()
            self.counts["unplugs"] += 1
        elif cmd == "replug" and not self.plugged:
            self._plug()
            self.counts["replugs"] += 1
        elif cmd == "inject":
            self._queue_tx(arg)
        elif cmd == "corrupt":
            self._corrupt_next += int.from_bytes(arg, "little")

    def _queue_tx(self, frame: bytes) -> None:
        if len(self._tx) + len(frame) > MAX_TX_BUFFER:
            self.counts["tx_dropped"] += 1
            return
        self._tx += frame

    def _run(self) -> None:
        while not self._stopping.is_set():
            while not self._cmds.empty():
                self._command(*self._cmds.get_nowait())
            if not self.plugged:
                self._stopping.wait(self._poll_s)
                continue
            for frame in self.device.poll(time.time()):
                if self._corrupt_next:
                    self._corrupt_next -= 1
                    frame = _flip_bit(frame)
                self._queue_tx(frame)
                self.counts["tx_frames"] += 1
            self._io_once()

    def _io_once(self) -> None:
        want_write = [self._master] if self._tx else []
        try:
            readable, writable, _ = select.select([self._master], want_write, [], self._poll_s)
        except (OSError, ValueError):
            return
        if readable:
            try:
                data = os.read(self._master, 4096)
            except (BlockingIOError, OSError):
                data = b""
            for frame in self.decoder.feed(data):
                self.counts["rx_frames"] += 1
                for reply in self.device.handle(frame):
                    self._queue_tx(reply)
        if writable and self._tx:
            try:
                n = os.write(self._master, self._tx)
                del self._tx[:n]
            except (BlockingIOError, OSError):
                pass


def _flip_bit(frame: bytes) -> bytes:
    """Corrupt the type byte (just after the first COBS code) without creating a 0x00 delimiter."""
    flipped = frame[1] ^ 0x01
    return bytes((frame[0], flipped if flipped else 0x02)) + frame[2:]
