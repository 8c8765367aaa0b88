"""Logs: one JSON object per line (time, level, logger, message, the request's id, and the
event's fields), or a line a person reads (`TESSERA_LOG_FORMAT=text`, as `make run` sets).
Tessera's loggers, uvicorn's and the worker's all go through it, at `TESSERA_LOG_LEVEL`.
Nothing secret is ever a field: events name accounts, clients and rules, never what was typed.
"""

from __future__ import annotations

import contextvars
import json
import logging
import logging.config
from datetime import UTC, datetime
from typing import Any

# The id of the request being served (`app.ops.observe`), on every line logged meanwhile.
request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id",
                                                                          default=None)

# What a LogRecord carries of its own; anything else was given as `extra=` (the event's fields).
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message", "asctime", "taskName", "color_message"}  # uvicorn's colored copy of the message


class RequestId(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get()
        return True


class JsonLines(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if getattr(record, "request_id", None):
            line["request_id"] = record.request_id
        for key, value in vars(record).items():
            if key not in _STANDARD and key not in line and key != "request_id":
                line[key] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


class Text(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s%(fields)s",
                         "%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        fields = {k: v for k, v in vars(record).items() if k not in _STANDARD
                  and k not in ("fields", "request_id")}
        record.fields = "".join(f" {k}={v}" for k, v in fields.items())
        return super().format(record)


def config(level: str, fmt: str) -> dict[str, Any]:
    """A `logging.config.dictConfig` for the process (uvicorn takes it as `log_config`)."""
    formatter = {"()": f"{__name__}.JsonLines"} if fmt == "json" else {"()": f"{__name__}.Text"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"request_id": {"()": f"{__name__}.RequestId"}},
        "formatters": {"default": formatter},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "default",
                                "filters": ["request_id"], "stream": "ext://sys.stderr"}},
        "root": {"handlers": ["stderr"], "level": level.upper()},
        "loggers": {
            "uvicorn": {"handlers": [], "propagate": True, "level": level.upper()},
            "uvicorn.error": {"handlers": [], "propagate": True, "level": level.upper()},
            # Tessera writes its own access log (`app.ops.observe`), with the request id.
            "uvicorn.access": {"handlers": [], "propagate": False, "level": "WARNING"},
            # SQLAlchemy's own lines are for debugging SQLAlchemy.
            "sqlalchemy": {"level": "WARNING"},
        },
    }


def configure(level: str, fmt: str) -> None:
    logging.config.dictConfig(config(level, fmt))
