"""Typed errors for every contract. Each message says what was wrong and where."""

from __future__ import annotations


class QwatchError(Exception):
    """Base class of every error raised by the contract code."""


class AdvertError(QwatchError):
    """A wristband advert could not be decoded. `reason` is a stable counter key."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason


class FrameError(QwatchError):
    """A serial frame (docs/protocol.md §7) was malformed. `reason` is a stable counter key."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason


class PayloadError(QwatchError):
    """An MQTT payload or an observation line did not match its schema."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason


class TopicError(QwatchError):
    """An MQTT topic is not part of the qwatch/v1 topic tree."""


class ConfigError(QwatchError):
    """A configuration file is wrong. The message names the file, the key path and what is allowed."""

    def __init__(self, file: str, key: str, message: str) -> None:
        where = f"{file}: {key}" if key else file
        super().__init__(f"{where}: {message}")
        self.file = file
        self.key = key
        self.detail = message
