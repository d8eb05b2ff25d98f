"""`qwatch-edge doctor`: the site's radios and cameras (BLE adapters, serial scanners, RTSP cameras).

Every probe has a short timeout and never raises: a dead device is a failed check with its fix.
The running agent holds its serial ports exclusively, so run the doctor with the agent stopped
(`systemctl stop qwatch-edge`) to check scanners; the check says so when a port is busy.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

from edge.doctor_checks import Check, fail, ok, warn
from protocols.site_config import Camera, Receiver, SiteConfig

ASPECT_TOLERANCE = 0.05
MIN_ZONE_PIXELS = 64.0


# ---------------------------------------------------------------------- serial scanners
def check_serial_scanner(rx: Receiver, *, hello_timeout_s: float = 1.0) -> Check:
    """Open the scanner's port and identify it with HELLO (docs/protocol.md §7)."""
    import serial

    from firmware_interface.link import KIND_DOCK, KIND_SCANNER, DeviceLink, LinkError, LinkOptions

    dev = rx.source_arg
    name = f"scanner {rx.id}"
    try:
        link = DeviceLink.open(dev, LinkOptions(hello_timeout_s=hello_timeout_s, hello_attempts=2))
    except (serial.SerialException, OSError, ValueError) as exc:
        busy = "busy" in str(exc).lower() or "lock" in str(exc).lower()
        fix = ("the agent holds the port: stop it first (systemctl stop qwatch-edge)" if busy else
               f"plug the scanner in; check the path (ls -l /dev/serial/by-id/) and that the service user is "
               f"in group dialout; then fix receivers[{rx.id}].source in the site config")
        return fail("radios", name, f"cannot open {dev}: {exc}", fix)
    try:
        hello = link.hello(keep_others=False)
    except LinkError as exc:
        return fail("radios", name, f"{dev} opened but did not answer HELLO ({exc.reason})",
                    "wrong device, or the scanner firmware hung: unplug and replug it; if it stays silent "
                    "re-flash the scanner firmware or replace the dongle")
    finally:
        link.close()
    if hello.kind != KIND_SCANNER:
        what = "an enrolment dock" if hello.kind == KIND_DOCK else f"device kind {hello.kind}"
        return fail("radios", name, f"{dev} is {what}, not a scanner",
                    f"point receivers[{rx.id}].source at the scanner's serial device")
    return ok("radios", name, f"{dev}: scanner serial {hello.serial.hex()}, firmware {hello.fw_version!r}")


# ---------------------------------------------------------------------- BLE adapters
async def _bleak_scan(adapter: str, seconds: float) -> int:
    from bleak import BleakScanner

    scanner = BleakScanner(adapter=adapter)
    await scanner.start()
    await asyncio.sleep(seconds)
    await scanner.stop()
    return len(scanner.discovered_devices)


def check_ble_adapter(rx: Receiver, *, scan_s: float = 1.0,
                      sys_bluetooth: Path = Path("/sys/class/bluetooth")) -> Check:
    """The adapter exists and bleak can scan on it for a moment."""
    adapter = rx.source_arg
    name = f"BLE {rx.id}"
    fix = ("check `bluetoothctl list` and `rfkill list` (unblock it), that bluetoothd runs "
           "(systemctl status bluetooth), and that the service user is in group bluetooth")
    if not (sys_bluetooth / adapter).exists():
        return fail("radios", name, f"no adapter {adapter} (not in {sys_bluetooth})", fix)
    try:
        seen = asyncio.run(asyncio.wait_for(_bleak_scan(adapter, scan_s), timeout=scan_s + 5.0))
    except Exception as exc:  # bleak raises many types (DBus, BlueZ, timeouts): each is a failed check
        return fail("radios", name, f"bleak cannot scan on {adapter}: {type(exc).__name__}: {exc}", fix)
    return ok("radios", name, f"{adapter}: scanning works ({seen} devices in {scan_s:.0f} s)")


def check_radios(site: SiteConfig) -> list[Check]:
    """Every receiver of the site that belongs to real hardware."""
    out: list[Check] = []
    for rx in site.receivers:
        if rx.source_kind == "serial":
            out.append(check_serial_scanner(rx))
        elif rx.source_kind == "bluez":
            out.append(check_ble_adapter(rx))
    if not out:
        out.append(ok("radios", "receivers", "no BLE adapters or serial scanners in the site config"))
    return out


# ---------------------------------------------------------------------- cameras
def redact_url(url: str) -> str:
    """A camera URL without its password (rtsp://user:pass@host → rtsp://user:***@host)."""
    return re.sub(r"(://[^:/@]+):[^@/]*@", r"\1:***@", url)


def _polygon_area(points: list[tuple[float, float]]) -> float:
    return abs(sum(a[0] * b[1] - b[0] * a[1] for a, b in zip(points, points[1:] + points[:1], strict=True))) / 2


def judge_camera_frame(cam: Camera, width: int, height: int, fps: float) -> Check:
    """Zones against the frame: aspect ratio of the detect size vs the camera's, and zone size in pixels."""
    name = f"camera {cam.id}"
    detail = f"{width}x{height} at {fps:.1f} fps"
    cam_aspect, det_aspect = width / height, cam.detect.width / cam.detect.height
    if abs(cam_aspect / det_aspect - 1) > ASPECT_TOLERANCE:
        return warn("cameras", name, f"{detail}; detect size {cam.detect.width}x{cam.detect.height} has another "
                    f"aspect ratio ({det_aspect:.2f} vs {cam_aspect:.2f}): zones and masks are stretched",
                    f"set cameras[{cam.id}].detect width/height to the camera's aspect ratio and redraw the zones")
    small = [z.id for z in cam.zones
             if _polygon_area(list(z.polygon)) * cam.detect.width * cam.detect.height < MIN_ZONE_PIXELS]
    if small:
        return warn("cameras", name, f"{detail}; zones {', '.join(small)} cover under {MIN_ZONE_PIXELS:.0f} "
                    "pixels at detect size: motion there is never seen", "draw the zone larger or raise detect size")
    return ok("cameras", name, f"{detail}; {len(cam.zones)} zones fit the frame")


def check_camera(cam: Camera, *, timeout_s: float = 5.0) -> Check:
    """Open the camera, grab one frame, read its size and rate, and check the zones against it."""
    import cv2

    from edge.camera.capture import FFMPEG_RTSP_OPTIONS, is_stream_url

    name = f"camera {cam.id}"
    shown = redact_url(cam.url)
    fix = (f"check the camera's power and network (ping it), the user/password and path in "
           f"cameras[{cam.id}].url; test with `qwatch-edge camera-test --camera {cam.id}`")
    params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, int(timeout_s * 1000), cv2.CAP_PROP_READ_TIMEOUT_MSEC,
              int(timeout_s * 1000)]
    import os

    if is_stream_url(cam.url):
        os.environ["OPENCV_FFMPEG_CAPTURE_OPTIONS"] = FFMPEG_RTSP_OPTIONS
    cap = cv2.VideoCapture(cam.url.removeprefix("file://"), cv2.CAP_FFMPEG, params)
    try:
        if not cap.isOpened():
            return fail("cameras", name, f"cannot open {shown}", fix)
        if not cap.grab():
            return fail("cameras", name, f"{shown} opened but sent no frame within {timeout_s:.0f} s", fix)
        ok_, frame = cap.retrieve()
        if not ok_ or frame is None:
            return fail("cameras", name, f"{shown}: a frame arrived but could not be decoded", fix)
        height, width = frame.shape[:2]
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
    finally:
        cap.release()
    return judge_camera_frame(cam, int(width), int(height), fps)


def check_cameras(site: SiteConfig, *, timeout_s: float = 5.0) -> list[Check]:
    """Every camera of the site."""
    if not site.cameras:
        return [ok("cameras", "cameras", "no cameras in the site config")]
    return [check_camera(cam, timeout_s=timeout_s) for cam in site.cameras]
