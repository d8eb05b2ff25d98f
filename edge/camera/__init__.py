"""Cameras: RTSP capture with a watchdog, motion and tamper detection, camera events and alerts."""
