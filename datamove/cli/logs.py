"""Where log records go and how they look: stderr or ``--log-file``, text or JSON lines.

Every line starts with (text) or carries (JSON, ``time``) an ISO 8601 UTC timestamp
with milliseconds, so lines from cron, CI or a Kubernetes pod can be ordered and
joined with other logs. JSON lines are one object each, with the stable field
names documented in docs/OPERATIONS.md: ``time``, ``level``, ``logger``,
``message``, then the record's own fields (``event: object`` and ``event:
stats`` records from pipeline/events.py), and ``exception`` for a traceback.

No credential reaches a line: records are scrubbed as they are created
(redact.install_log_scrubber), every handler filters what it emits, and the JSON
formatter scrubs each field it writes.

Light on purpose (imported by cli/__init__.py): logging, json and redact only.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

LOG_FORMATS = ("text", "json")

# Loggers an operator always sees at INFO, whatever -v says: the stats lines (on only
# when --stats asks for them) and the few lines about the run itself (the dashboard).
_ALWAYS_INFO = ("datamove.stats", "datamove.run")
_OBJECTS = "datamove.objects"

_installed: logging.Handler | None = None


def iso_utc(created: float) -> str:
    """``2026-12-03T11:40:00.123Z``."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created)) + \
        f".{int(created % 1 * 1000):03d}Z"


class TextFormatter(logging.Formatter):
    """``2026-12-03T11:40:00.123Z INFO datamove.stats: 12/40 objects, ...``."""

    def format(self, record: logging.LogRecord) -> str:
        line = f"{iso_utc(record.created)} {record.levelname} {record.name}: " \
               f"{record.getMessage()}"
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line += "\n" + record.exc_text
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line; every string value scrubbed of credentials."""

    def format(self, record: logging.LogRecord) -> str:
        from datamove.redact import scrub

        doc: dict[str, Any] = {"time": iso_utc(record.created),
                               "level": record.levelname.lower(), "logger": record.name,
                               "message": record.getMessage()}
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            doc.update({k: v for k, v in fields.items() if k not in doc})
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            doc["exception"] = record.exc_text
        clean = {k: scrub(v) if isinstance(v, str) else v for k, v in doc.items()}
        return json.dumps(clean, ensure_ascii=False, default=str)


def configure_logging(verbose: int, log_format: str = "text",
                      log_file: str | None = None) -> None:
    """Log to stderr (or ``log_file``, appended) at WARNING, INFO (-v) or DEBUG (-vv),
    as text or JSON lines, with no credential in any line. Called again by a
    command with its own options: the handler installed before is replaced.

    Per-object lines (``datamove.objects``) need -v, except failures (WARNING);
    stats lines and the dashboard address are always shown when they happen.

    At DEBUG botocore logs request headers (session tokens, signatures) and
    bodies. Every record is scrubbed as it is created (redact.install_log_scrubber),
    whichever thread or library of this process makes it, and every handler already
    configured, including those of libraries that do not propagate to the root
    (distributed, tornado), also filters what it emits.
    """
    global _installed
    from datamove.redact import install_log_scrubber

    install_log_scrubber()
    handler: logging.Handler
    if log_file:
        handler = logging.FileHandler(log_file, mode="a", encoding="utf-8")
    else:
        handler = _Stderr(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    root = logging.getLogger()
    if _installed is not None and _installed in root.handlers:
        root.removeHandler(_installed)
        _installed.close()
    root.addHandler(handler)
    _installed = handler
    root.setLevel(logging.WARNING - 10 * min(verbose, 2))
    for name in _ALWAYS_INFO:
        logging.getLogger(name).setLevel(min(logging.INFO, root.level))
    logging.getLogger(_OBJECTS).setLevel(logging.NOTSET if verbose else logging.WARNING)
    loggers = [root, *(logger for logger in list(logging.Logger.manager.loggerDict.values())
                       if isinstance(logger, logging.Logger))]
    for logger in loggers:
        for each in logger.handlers:
            if not any(isinstance(f, _Scrub) for f in each.filters):
                each.addFilter(_Scrub())


class _Stderr(logging.StreamHandler):  # type: ignore[type-arg]
    """stderr as it is when a line is written, not when logging was configured: the
    live display (rich) swaps it for a proxy that prints lines above its bars."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


class _Scrub(logging.Filter):
    """Replace anything that looks like a credential in a log line by <redacted>
    (for records the scrubbing factory did not make, or that changed since)."""

    def filter(self, record: logging.LogRecord) -> bool:
        from datamove.redact import scrub_record

        scrub_record(record)
        return True
