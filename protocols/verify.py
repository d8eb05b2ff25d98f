"""Advert authentication and anti-replay (docs/protocol.md §1 receiver rules).

Pure: the caller passes the observation time, so replay of a field log gives the same
verdicts as the live agent did.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal, NamedTuple

from cryptography.hazmat.primitives.cmac import CMAC

from protocols.advert import StatusAdvert, check_tag, decode_status, tag_context
from protocols.errors import AdvertError

ACCEPTED = "accepted"
DUPLICATE = "duplicate"
UNKNOWN_BAND = "unknown_band"
WRONG_COMPANY = "wrong_company"
BAD_TAG = "bad_tag"
REPLAY = "replay"

Alarm = Literal["advert_forgery", "advert_replay"]


class Verdict(NamedTuple):
    """What the verifier decided about one received advert (a NamedTuple: one per advert, cheap).

    `outcome` is ``accepted`` (a new advert), ``duplicate`` (the same advert heard again by
    another receiver: an extra RSSI sample) or a drop reason. `advert` is set for accepted
    and duplicate adverts, and for authenticated-but-replayed ones it is None. `band_id`
    is set whenever the payload decoded, so alarms can name the band.
    """

    outcome: str
    advert: StatusAdvert | None = None
    band_id: int | None = None
    alarm: Alarm | None = None

    @property
    def usable(self) -> bool:
        return self.outcome in (ACCEPTED, DUPLICATE)


@dataclass(slots=True)
class _BandState:
    last_counter: int = -1
    last_ts: float = 0.0
    last_payload: bytes = b""
    mac: CMAC | None = None  # keyed once per band: copying it is 4× cheaper than keying AES per advert
    bad_tags: deque[float] = field(default_factory=deque)
    replays: deque[float] = field(default_factory=deque)


class AdvertVerifier:
    """Decode, authenticate and de-duplicate adverts for the enrolled bands of one site."""

    def __init__(
        self,
        keys: Mapping[int, bytes],
        company_id: int,
        *,
        dup_window_s: float = 2.0,
        alarm_window_s: float = 60.0,
        alarm_count: int = 3,
    ) -> None:
        self._keys = dict(keys)
        self._company_id = company_id
        self._dup_window_s = dup_window_s
        self._alarm_window_s = alarm_window_s
        self._alarm_count = alarm_count
        self._bands: dict[int, _BandState] = {}
        self.counts: dict[str, int] = {}

    def set_keys(self, keys: Mapping[int, bytes]) -> None:
        """Replace the enrolled keys (after enrolment or a config push). Replay state is kept."""
        self._keys = dict(keys)
        for state in self._bands.values():
            state.mac = None  # a band may have a new key: key its CMAC again on the next advert

    def verify(self, ts: float, company_id: int, data: bytes) -> Verdict:
        """Judge one advert heard at `ts`. Never raises for any input bytes."""
        verdict = self._judge(ts, company_id, data)
        self.counts[verdict.outcome] = self.counts.get(verdict.outcome, 0) + 1
        return verdict

    def _judge(self, ts: float, company_id: int, data: bytes) -> Verdict:
        try:
            advert = decode_status(data)
        except AdvertError as exc:
            return Verdict(exc.reason)
        band_id = advert.band_id
        if company_id != self._company_id:
            return Verdict(WRONG_COMPANY, band_id=band_id)
        key = self._keys.get(band_id)
        if key is None:
            return Verdict(UNKNOWN_BAND, band_id=band_id)
        state = self._bands.get(band_id)
        if state is None:
            state = self._bands[band_id] = _BandState()
        if state.mac is None:
            state.mac = tag_context(key)
        # The same bytes as the last accepted advert were already authenticated: skip the CMAC.
        # This is the common case (one advert heard by several receivers) and halves the cost.
        if data != state.last_payload and not check_tag(key, company_id, data, ctx=state.mac):
            return Verdict(BAD_TAG, band_id=band_id, alarm=self._note(state.bad_tags, ts, "advert_forgery"))
        if advert.counter > state.last_counter:
            state.last_counter = advert.counter
            state.last_ts = ts
            state.last_payload = bytes(data)
            return Verdict(ACCEPTED, advert, band_id)
        if advert.counter == state.last_counter and abs(ts - state.last_ts) <= self._dup_window_s:
            return Verdict(DUPLICATE, advert, band_id)
        return Verdict(REPLAY, band_id=band_id, alarm=self._note(state.replays, ts, "advert_replay"))

    def _note(self, window: deque[float], ts: float, alarm: Alarm) -> Alarm | None:
        window.append(ts)
        while window and window[0] < ts - self._alarm_window_s:
            window.popleft()
        return alarm if len(window) >= self._alarm_count else None
