"""Supervision alerts: what ``coco serve`` did to keep the stack up (the embedded database
restarted, a restart bound hit, dagster dev gone), told to the rules asking for ``supervision``.

These events happen outside Dagster (the supervisor runs beside ``dagster dev``), so coco serve
delivers them itself: in a thread per event, each channel tried TRIES times, a failure said in
coco serve's output (masked) and never stopping the supervision.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable

from core4_pipelines.alerts.channels import Alert, DeliveryError, channel_label, deliver

TRIES = 3
RETRY_SECONDS = (2.0, 10.0)  # waits between the tries
# How long coco serve waits on its way out for messages still being delivered.
FLUSH_SECONDS = 20.0


class SupervisionAlerts:
    """``say`` that also tells each line to the supervision rules of ``settings``."""

    def __init__(self, settings, say: Callable[[str], None], ui_url: str | None = None):
        self.rules = [rule for rule in settings.alerts if "supervision" in rule.events]
        self.say, self.ui_url = say, ui_url
        self.where = f"coco serve on {socket.gethostname()}"
        self._threads: list[threading.Thread] = []

    def __call__(self, text: str) -> None:
        self.say(text)
        if not self.rules:
            return
        alert = Alert(event="supervision", project=self.where, key=f"supervision:{time.time()}",
                      subject=f"[core4] {self.where}: {text.split(';', 1)[0]}", lines=(text,), url=self.ui_url)
        thread = threading.Thread(target=self._deliver, args=(alert,), name="core4-supervision-alert", daemon=True)
        self._threads = [t for t in self._threads if t.is_alive()] + [thread]
        thread.start()

    def _deliver(self, alert: Alert) -> None:
        for rule in self.rules:
            for channel in rule.channels():
                for attempt in range(1, TRIES + 1):
                    try:
                        deliver(rule, channel, alert)
                        break
                    except DeliveryError as exc:
                        if attempt == TRIES:
                            self.say(f"alert supervision -> {channel_label(rule, channel)}: {exc}; "
                                     f"gave up after {TRIES} tries")
                        else:
                            time.sleep(RETRY_SECONDS[min(attempt, len(RETRY_SECONDS)) - 1])

    def flush(self, timeout: float = FLUSH_SECONDS) -> None:
        """Wait (up to ``timeout`` seconds in all) for the messages still being delivered."""
        end = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, end - time.monotonic()))
