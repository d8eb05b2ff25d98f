"""Camera capture: OpenCV's FFmpeg backend, RTSP over TCP, grab every frame, retrieve at detect fps.

The capture thread `grab()`s every frame so the decoder keeps up with the stream (and the
RTSP buffer never grows), but `retrieve()`s and converts only the frames the detector
samples. A watchdog reconnects with exponential backoff when no frame arrives for
`stall_s` or the stream errors, records the reason, and reports `offline` after the first
reconnect attempt fails and `online` when frames return.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from protocols.bounds import Range, check_bounds

log = logging.getLogger(__name__)

# Low delay over TCP: no input buffering, 0.5 s reorder window, 5 s socket timeout, short probing.
FFMPEG_RTSP_OPTIONS = (
    "rtsp_transport;tcp|fflags;nobuffer|flags;low_delay|max_delay;500000|stimeout;5000000"
    "|analyzeduration;500000|probesize;65536"
)
_env_lock = threading.Lock()


# Bounds of CaptureOptions: the detect size and rate are the site config's `detect:` ranges
# (protocols.site_config.Detect); timeouts are positive and at most an hour.
CAPTURE_BOUNDS = {
    "width": Range(ge=32, le=3840), "height": Range(ge=32, le=2160), "fps": Range(gt=0, le=30),
    "stall_s": Range(gt=0, le=3600), "open_timeout_s": Range(gt=0, le=3600), "backoff_initial_s": Range(gt=0, le=3600),
    "backoff_max_s": Range(gt=0, le=3600), "decode_threads": Range(ge=0, le=64),
}


@dataclass(frozen=True, slots=True)
class CaptureOptions:
    """Tuning of one capture loop (defaults are the production values)."""

    width: int = 320
    height: int = 180
    fps: float = 5.0
    stall_s: float = 20.0  # no frame this long: reconnect
    open_timeout_s: float = 10.0
    backoff_initial_s: float = 1.0
    backoff_max_s: float = 30.0
    media_time: bool = False  # True: ts = media time (files in camera-test); False: Unix time
    pace: bool = False  # play files at their own rate (a file standing in for a live camera)
    loop_files: bool = True  # a file that ends is reopened (False: EOF ends the capture)
    keep_full: bool = True  # hand over the full-resolution frame too (snapshots)
    decode_threads: int = 1  # FFmpeg decoder threads; 1 is cheapest per frame on a small board

    def __post_init__(self) -> None:
        check_bounds(self, CAPTURE_BOUNDS)


@dataclass(frozen=True, slots=True)
class Sample:
    """One sampled frame: detect-size grey, optional full-size BGR, time and indices."""

    gray: np.ndarray
    full: np.ndarray | None
    ts: float
    index: int  # detect frame number since the capture started
    source_frame: int  # stream frame number since the last (re)connect
    chroma: float | None = None  # colour saturation (grey levels); ~0 for an IR picture, None if grey


def chroma_of(small: np.ndarray) -> float | None:
    """Mean |B-G| + |G-R| over a 16x9 copy: collapses to ~0 when the camera is in IR mode.

    The copy is small so that colour noise of a high-gain picture (independent per channel on
    the sensor) averages out and does not look like colour."""
    if small.ndim != 3 or small.shape[2] != 3:
        return None
    tiny = cv2.resize(small, (16, 9), interpolation=cv2.INTER_AREA).astype(np.int16)
    return float(np.abs(tiny[..., 0] - tiny[..., 1]).mean() + np.abs(tiny[..., 1] - tiny[..., 2]).mean())


class FrameSampler:
    """Pick frames at `fps` from a stream of timestamps (pure)."""

    def __init__(self, fps: float) -> None:
        self.period = 1.0 / fps
        self._next: float | None = None

    def take(self, ts: float) -> bool:
        """True if the frame at `ts` should be processed."""
        if self._next is None or ts >= self._next - 1e-3:
            nxt = (ts if self._next is None else self._next) + self.period
            # After a gap (reconnect, stall) resume from now instead of bursting to catch up.
            self._next = nxt if nxt > ts else ts + self.period
            return True
        return False

    def reset(self) -> None:
        """Forget the schedule (after a reconnect)."""
        self._next = None


def is_stream_url(source: str) -> bool:
    """True for network streams (rtsp://, rtsps://, http(s)://), False for files."""
    return "://" in source and not source.startswith("file://")


class Capture:
    """One camera's capture loop in its own thread. Callbacks run on that thread."""

    def __init__(
        self,
        source: str,
        opts: CaptureOptions,
        *,
        on_sample: Callable[[Sample], None],
        on_state: Callable[[str, float, str], None] | None = None,
        name: str = "camera",
    ) -> None:
        self.source = source
        self.opts = opts
        self.name = name
        self._on_sample = on_sample
        self._on_state = on_state or (lambda kind, ts, reason: None)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.frames_in = 0
        self.processed = 0
        self.skipped = 0
        self.reconnects = 0
        self.reasons: Counter[str] = Counter()
        self.online = False
        self.offline_reported = False
        self.last_reason = ""
        self.last_frame_mono = 0.0
        self._rate_t0 = time.monotonic()
        self._rate_in0 = 0
        self._rate_proc0 = 0
        self.fps_in = 0.0
        self.fps_proc = 0.0
        self.eof = False
        self._index = 0
        self._media_offset = 0.0

    # ------------------------------------------------------------------ control
    def start(self) -> None:
        """Start the capture thread."""
        self._stop.clear()
        self._thread = threading.Thread(target=self.run, name=f"capture-{self.name}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Ask the loop to stop and wait for it (a blocked read ends at the read timeout)."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    @property
    def stopped(self) -> bool:
        """True once stop() was called."""
        return self._stop.is_set()

    def stats(self) -> dict[str, float | int]:
        """Watchdog counters for node telemetry."""
        self._update_rates(force=False)
        out: dict[str, float | int] = {
            "fps_in": round(self.fps_in, 2),
            "fps_proc": round(self.fps_proc, 2),
            "frames_in": self.frames_in,
            "processed": self.processed,
            "skipped": self.skipped,
            "reconnects": self.reconnects,
            "online": int(self.online),
        }
        for reason, n in self.reasons.items():
            out[f"err_{reason}"] = n
        return out

    # ------------------------------------------------------------------ loop
    def run(self) -> None:
        """The capture loop; returns when stopped (or at EOF of a file with loop_files=False)."""
        backoff = self.opts.backoff_initial_s
        sampler = FrameSampler(self.opts.fps)
        attempt = 0
        while not self._stop.is_set():
            if attempt > 0:
                self.reconnects += 1
            attempt += 1
            got_frames, reason = self._session(sampler)
            if self._stop.is_set():
                break
            if not self.opts.loop_files and not is_stream_url(self.source):
                self.eof = True  # a file read once (camera-test): its end, or an unreadable file, ends it
                if reason != "eof":
                    self.reasons[reason] += 1
                break
            self.reasons[reason] += 1
            self.last_reason = reason
            if got_frames:
                backoff = self.opts.backoff_initial_s
                log.warning("camera=%s event=stream_lost reason=%s", self.name, reason)
                if reason == "eof":
                    continue  # a file standing in for a camera: loop it at once
                self._set_online(False, reason, report=False)
                continue  # first reconnect attempt right away; it is the "window"
            # A (re)connect attempt failed: now the camera counts as offline.
            self._set_online(False, reason, report=True)
            log.warning("camera=%s event=reconnect_failed reason=%s retry_in_s=%.1f", self.name, reason, backoff)
            if self._stop.wait(backoff):
                break
            backoff = min(self.opts.backoff_max_s, backoff * 2)

    def _open(self) -> cv2.VideoCapture | None:
        params = [
            cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, int(self.opts.open_timeout_s * 1000),
            cv2.CAP_PROP_READ_TIMEOUT_MSEC, int(self.opts.stall_s * 1000),
        ]
        if hasattr(cv2, "CAP_PROP_N_THREADS") and self.opts.decode_threads > 0:
            params += [cv2.CAP_PROP_N_THREADS, self.opts.decode_threads]
        source = self.source.removeprefix("file://")
        with _env_lock:  # the options are read from the environment at open time
            if is_stream_url(source):
                os.environ["OPENCV_FFMPEG_CAPTURE_OPTIONS"] = FFMPEG_RTSP_OPTIONS
            else:
                os.environ.pop("OPENCV_FFMPEG_CAPTURE_OPTIONS", None)
            cap = cv2.VideoCapture(source, cv2.CAP_FFMPEG, params)
        if not cap.isOpened():
            cap.release()
            return None
        return cap

    def _session(self, sampler: FrameSampler) -> tuple[bool, str]:
        """One connection: open, grab until error/stall/stop. Returns (got frames, reason)."""
        cap = self._open()
        if cap is None:
            return False, "open_failed"
        sampler.reset()
        is_file = not is_stream_url(self.source)
        src_fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
        frames = 0
        last = time.monotonic()
        wall0 = time.monotonic()
        media_base = self._media_offset
        last_media = media_base
        try:
            while not self._stop.is_set():
                ok = cap.grab()
                now = time.monotonic()
                if not ok:
                    if is_file:
                        return frames > 0, "eof" if frames > 0 else "read_error"
                    return frames > 0, "stall" if now - last >= self.opts.stall_s * 0.9 else "read_error"
                if now - last > self.opts.stall_s and frames > 0:
                    self.reasons["late_frame"] += 1
                last = now
                self.last_frame_mono = now
                frames += 1
                self.frames_in += 1
                # Files: the frame's media time. Streams: arrival time, because camera pts can be
                # stuck, jump or restart; the sampler thins bursts after a hiccup either way.
                media = media_base + self._media_pos(cap, frames, src_fps) if is_file else now - wall0
                last_media = media
                if is_file and self.opts.pace:
                    delay = (media - media_base) - (now - wall0)
                    if delay > 0 and self._stop.wait(delay):
                        break
                if not self.online:
                    self._set_online(True, "frames", report=self.offline_reported)
                ts = media if self.opts.media_time else time.time()
                if sampler.take(media):
                    self._deliver(cap, ts, frames)
                else:
                    self.skipped += 1
                self._update_rates(force=False)
            return frames > 0, "stopped"
        finally:
            self._media_offset = last_media + 1.0 / src_fps if is_file else self._media_offset
            cap.release()

    @staticmethod
    def _media_pos(cap: cv2.VideoCapture, frames: int, src_fps: float) -> float:
        pos = cap.get(cv2.CAP_PROP_POS_MSEC)
        if pos > 0 or frames == 1:
            return pos / 1000.0
        return (frames - 1) / src_fps

    def _deliver(self, cap: cv2.VideoCapture, ts: float, source_frame: int) -> None:
        ok, full = cap.retrieve()
        if not ok or full is None:
            self.reasons["retrieve_failed"] += 1
            return
        w, h = self.opts.width, self.opts.height
        small = cv2.resize(full, (w, h), interpolation=cv2.INTER_AREA)
        gray = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY) if small.ndim == 3 else small
        sample = Sample(gray, full if self.opts.keep_full else None, ts, self._index, source_frame,
                        chroma_of(small))
        self._index += 1
        self.processed += 1
        try:
            self._on_sample(sample)
        except Exception:  # a consumer bug must not kill the camera loop
            self.reasons["consumer_error"] += 1
            log.exception("camera=%s event=consumer_error", self.name)

    def _set_online(self, online: bool, reason: str, *, report: bool) -> None:
        was = self.online
        self.online = online
        if online and report:
            self.offline_reported = False
            self._emit("online", reason)
        elif not online and report and not self.offline_reported:
            self.offline_reported = True
            self._emit("offline", reason)
        elif online and not was:
            log.info("camera=%s event=connected", self.name)

    def _emit(self, kind: str, reason: str) -> None:
        ts = time.time()
        if self.opts.media_time:
            ts = self._media_offset
        log.info("camera=%s event=%s reason=%s", self.name, kind, reason)
        try:
            self._on_state(kind, ts, reason)
        except Exception:
            self.reasons["consumer_error"] += 1
            log.exception("camera=%s event=consumer_error", self.name)

    def _update_rates(self, *, force: bool) -> None:
        with self._lock:
            now = time.monotonic()
            dt = now - self._rate_t0
            if dt < 2.0 and not force:
                if dt > 0 and now - self.last_frame_mono > 2.0:
                    self.fps_in = self.fps_proc = 0.0
                return
            self.fps_in = (self.frames_in - self._rate_in0) / dt if dt > 0 else 0.0
            self.fps_proc = (self.processed - self._rate_proc0) / dt if dt > 0 else 0.0
            self._rate_t0, self._rate_in0, self._rate_proc0 = now, self.frames_in, self.processed
