"""Structured (JSON) logging, with phone numbers scrubbed from every record."""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

# E.164 and common North American shapes; scrubbed before anything is written.
PHONE_RE = re.compile(r"\+?\d[\d\s().-]{8,}\d")


def scrub(text: str) -> str:
    return PHONE_RE.sub("[phone]", text)


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        payload = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "msg": scrub(record.getMessage()),
        }
        extra = getattr(record, "fields", None)
        if isinstance(extra, dict):
            payload.update({k: scrub(str(v)) for k, v in extra.items()})
        if record.exc_info:
            payload["exc"] = scrub(self.formatException(record.exc_info))
        return json.dumps(payload)


class RepeatBackoff(logging.Filter):
    """Backs off repeated warnings and errors: a message (logger and format string) seen
    again within its interval is dropped; the interval starts at `first` s and doubles at
    each line let through, up to `longest` s, and starts over after `longest` s without
    the message. A line let through after drops says how many were dropped. While the
    broker was away, aiokafka's reconnects printed about 260 lines a second, one per
    retry of every client of every process."""

    def __init__(self, first: float = 1.0, longest: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.first, self.longest, self.clock = first, longest, clock
        self._lock = threading.Lock()
        # (logger, msg) -> [next allowed time, interval, dropped, last seen]
        self._seen: dict[tuple[str, str], list[float]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        key, now = (record.name, str(record.msg)), self.clock()
        with self._lock:
            state = self._seen.get(key)
            if state is None or now - state[3] > self.longest:
                if len(self._seen) > 1000:
                    self._seen.clear()
                self._seen[key] = [now + self.first, self.first, 0, now]
                return True
            state[3] = now
            if now < state[0]:
                state[2] += 1
                return False
            dropped = int(state[2])
            state[1] = min(state[1] * 2, self.longest)
            state[0], state[2] = now + state[1], 0
        if dropped:
            record.msg, record.args = f"{record.getMessage()} [{dropped} more like it dropped]", ()
        return True


def configure_logging(service: str, level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service))
    handler.addFilter(RepeatBackoff())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("aiokafka", "faust", "mode", "kafka", "twilio", "httpx", "uvicorn.access"):
        logging.getLogger(noisy).setLevel("WARNING")
