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


def _timestamp(record: logging.LogRecord) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) \
        + f".{int(record.msecs):03d}Z"


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


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": _timestamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            **_fields(record),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    """``time level logger [kind namespace/name] message key=value ...``."""

    def format(self, record: logging.LogRecord) -> str:
        fields = _fields(record)
        about = fields.pop("object", None)
        kind = fields.pop("kind", None)
        prefix = f"[{kind} {about}] " if about and kind else f"[{about}] " if about else ""
        extras = "".join(f" {key}={_escape(value)}" for key, value in fields.items())
        line = f"{_timestamp(record)} {record.levelname} {record.name} {_escape(prefix)}" \
            f"{_escape(record.getMessage())}{extras}"
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
