"""The escalation outbox worker: sends queued deliveries (webhook, e-mail), retries with backoff.

An escalation queues one delivery per channel in the same transaction that marks the alert
escalated (``AlertStore.escalate_due``), so a crash between the two cannot lose a notification, and
a restart resumes the queue. Each try is leased in the store before it is sent, so two processes
sharing the store never send the same delivery at once. Every try, good or bad, becomes an
``escalation_delivery`` event in the alert's history and a counter in ``/healthz``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from zoneinfo import ZoneInfo

from cloud.alert_store import AlertStore, alert_view
from cloud.notify import DeliveryError, Email, NotifyConfig, Webhook, message_text, send_email, send_webhook

log = logging.getLogger("qwatch.cloud.notify")
WORKERS = 4


class Notifier:
    """Drains the delivery queue on a thread. ``run_once`` is the clock-driven core the thread loops on."""

    def __init__(self, store: AlertStore, config: NotifyConfig, *, tz: ZoneInfo,
                 clock: Callable[[], float] = time.time, poll_s: float = 0.5) -> None:
        self.store = store
        self.config = config
        self.tz = tz
        self.clock = clock
        self.poll_s = poll_s
        self.counts: Counter[str] = Counter()  # updated from the send threads: Counter += is not atomic
        self._count_lock = threading.Lock()
        self.last_error: dict[str, str] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def channels(self, site: str) -> list[str]:
        """What ``escalate_due`` queues for an alert of ``site``."""
        return self.config.channels(site)

    def start(self) -> None:
        """Start the worker thread."""
        self._thread = threading.Thread(target=self._loop, name="notifier", daemon=True)
        self._thread.start()
        sites = sorted(self.config.sites)
        log.info("event=notify_start sites=%s default=%s", ",".join(sites) or "-", self.config.default is not None)

    def stop(self) -> None:
        """Stop after the current delivery."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(15)

    def _loop(self) -> None:
        while not self._stop.wait(self.poll_s):
            try:
                self.run_once()
            except Exception:  # the worker must not die; the queue is durable, try again next round
                self.counts["loop_errors"] += 1
                log.exception("event=notify_loop_error")

    def lease_s(self) -> float:
        """How long a claimed delivery stays ours: twice the slowest channel's timeout plus a margin, so a
        slow send never lets another process claim (and send) the same delivery again."""
        chans = [c for c in (self.config.default, *self.config.sites.values()) if c is not None]
        timeouts = [w.timeout_s for c in chans for w in c.webhooks]
        timeouts += [c.email.smtp.timeout_s for c in chans if c.email is not None]
        return 2 * max(timeouts, default=10.0) + 30.0

    def run_once(self) -> int:
        """Send due deliveries, up to ``WORKERS`` at once (a slow SMTP server does not hold up a webhook);
        returns how many were tried."""
        claimed = self.store.claim_deliveries(self.clock(), lease_s=self.lease_s(), limit=WORKERS)
        if len(claimed) == 1:
            self._deliver(claimed[0])
        elif claimed:
            with ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="notify-send") as pool:
                list(pool.map(self._deliver, claimed))
        return len(claimed)

    def _deliver(self, d: dict[str, Any]) -> None:
        row = self.store.get(d["alert_id"])
        target = self.config.resolve(d["site"], d["channel"])
        error: str | None = None
        if row is None:
            error = "alert not found"
        elif target is None:
            error = "channel no longer configured"
        else:
            try:
                self._send(target, alert_view(row))
            except DeliveryError as exc:
                error = str(exc)
        now = self.clock()
        kind = d["channel"].partition(":")[0]
        if error is None:
            self.store.finish_delivery(d["id"], now, ok=True, error=None, retry_at=None)
            self._count(f"{kind}_sent")
            log.info("event=escalation_delivered alert=%s site=%s channel=%s attempt=%d", d["alert_id"], d["site"],
                     d["channel"], d["attempts"])
            return
        retry_at = None if target is None or row is None else self.config.retry.retry_at(d["attempts"], now)
        self.store.finish_delivery(d["id"], now, ok=False, error=error, retry_at=retry_at)
        self._count(f"{kind}_failed_attempts")
        self.last_error[d["channel"]] = error
        if retry_at is None:
            self._count(f"{kind}_gave_up")
        log.warning("event=escalation_delivery_failed alert=%s site=%s channel=%s attempt=%d error=%s retry_in_s=%s",
                    d["alert_id"], d["site"], d["channel"], d["attempts"], error,
                    "never" if retry_at is None else f"{retry_at - now:.0f}")

    def _count(self, key: str) -> None:
        with self._count_lock:
            self.counts[key] += 1

    def _send(self, target: Webhook | Email, view: dict[str, Any]) -> None:
        subject, body = message_text(view, self.tz, self.config.dashboard_url)
        if isinstance(target, Webhook):
            send_webhook(target, view, f"{subject}\n{body}")
        else:
            send_email(target, subject, body)

    def stats(self) -> dict[str, Any]:
        """For /healthz: attempts by outcome, the last error per channel name (our words, no secrets), and
        queued deliveries per site by state."""
        return {"counts": dict(self.counts), "last_error": dict(self.last_error),
                "by_site": self.store.delivery_counts()}
