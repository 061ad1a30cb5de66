"""Logs of the runner and the operator (shared so both log alike), JSON or text.

JSON: one object per line with ``time``, ``level``, ``logger``, ``message`` and
every ``extra`` field a caller passed (``function``, ``request_id``, ``reason``,
``guest_output`` ...).  Text: one line, ``time level logger [object] message``
then the same fields as ``key=value``.  Either way a line names the object it
is about: kopf's per-object loggers pass ``k8s_ref``, our own code an
``object`` field (``namespace/name``).  Configured once by the CLI.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time

_STANDARD = frozenset(
    logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime", "taskName"}
#: Fields kopf (and uvicorn: color_message) add to records for their own formatters.
_KOPF_INTERNAL = frozenset({"settings", "k8s_skip", "k8s_ref", "color_message"})
#: Control characters, escaped in text lines so a client-chosen value (a path with
#: %0A) cannot start a forged line.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _escape(text: object) -> str:
    return _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode(), str(text))


_last_second: list[tuple[int, str]] = [(-1, "")]


def timestamp(created: float) -> str:
    """``created`` (seconds since the epoch) as logs write it, to the millisecond, UTC."""
    second = int(created)
    cached = _last_second[0]
    if cached[0] != second:
        cached = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created)))
        _last_second[0] = cached
    return f"{cached[1]}.{int((created - second) * 1000):03d}Z"


def _fields(record: logging.LogRecord) -> dict[str, object]:
    """The record's ``extra`` fields, with ``object`` naming the object it is about."""
    fields = {key: value for key, value in record.__dict__.items()
              if key not in _STANDARD and key not in _KOPF_INTERNAL and not key.startswith("_")}
    ref = getattr(record, "k8s_ref", None)
    if isinstance(ref, dict) and ref.get("name") and "object" not in fields:
        namespace = ref.get("namespace")
        fields["object"] = f"{namespace}/{ref['name']}" if namespace else str(ref["name"])
        if ref.get("kind"):
            fields.setdefault("kind", ref["kind"])
    return fields


def json_line(created: float, level: str, logger: str, message: str,
              fields: dict[str, object]) -> str:
    """One JSON log line (no newline); also used to write access lines in batches."""
    return json.dumps({"time": timestamp(created), "level": level.lower(), "logger": logger,
                       "message": message, **fields}, default=str)


def text_line(created: float, level: str, logger: str, message: str,
              fields: dict[str, object]) -> str:
    """One text log line (no newline): ``time level logger [kind object] message k=v ...``."""
    fields = dict(fields)
    about = fields.pop("object", None)
    kind = fields.pop("kind", None)
    prefix = f"[{kind} {about}] " if about and kind else f"[{about}] " if about else ""
    extras = "".join(f" {key}={_escape(value)}" for key, value in fields.items())
    return f"{timestamp(created)} {level} {logger} {_escape(prefix)}{_escape(message)}{extras}"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = _fields(record)
        if record.exc_info:
            fields["exception"] = self.formatException(record.exc_info)
        return json_line(record.created, record.levelname, record.name, record.getMessage(),
                         fields)


class TextFormatter(logging.Formatter):
    """``time level logger [kind namespace/name] message key=value ...``."""

    def format(self, record: logging.LogRecord) -> str:
        line = text_line(record.created, record.levelname, record.name, record.getMessage(),
                         _fields(record))
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def configure(level: str = "info", fmt: str = "json") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Per-request client logs would drown everything else at info level.
    logging.getLogger("httpx").setLevel(max(logging.WARNING, root.level))
