"""Structured logging: one line per event (key=value or JSON), with the item's context, and the
Replicate token removed from everything that is written.

Context (batch, item, model, prediction id, attempt, task id) comes from three places, merged in
this order: `log_context(...)` (contextvars, so it follows the code that runs one task, whatever
logger it uses), a `ContextAdapter`'s fields, and `extra=` of the call itself.

Redaction happens twice on purpose: a filter rewrites each record (message, args, exception text)
before any handler sees it, and the formatter redacts its final line again, so a secret that
reaches the output by some other path (a `stack_info`, a third-party formatter field) is still cut.
"""

from __future__ import annotations

import contextlib
import contextvars
import json as jsonlib
import logging
import re
import sys
import time
from collections.abc import Iterable, Iterator, Mapping
from types import MappingProxyType
from typing import IO, Any

from shared.settings import Settings

# The fields we put on a line when they are known, in this order.
CONTEXT_FIELDS = ("batch", "item", "model", "prediction", "attempt", "task_id")

# Replicate API tokens look like r8_ followed by ~37 alphanumerics; a generous lower bound.
TOKEN_PATTERN = re.compile(r"r8_[A-Za-z0-9]{20,}")
# user:password@ in any URL (Redis URLs carry the Redis password).
URL_PASSWORD_PATTERN = re.compile(r"(?P<head>[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]*:)[^@/\s]+@")
MASK = "[REDACTED]"

# Immutable default: every change makes a new mapping, so contexts never share state.
_context: contextvars.ContextVar[Mapping[str, Any]] = contextvars.ContextVar(
    "fleet_log_context", default=MappingProxyType({})
)


# --- context ------------------------------------------------------------------------------------


@contextlib.contextmanager
def log_context(**fields: Any) -> Iterator[None]:
    """Add fields (batch=, item=, model=, prediction=, attempt=, task_id=, ...) to every log line
    written inside the block, by any logger; nested blocks add to the outer ones. None is ignored."""
    merged = {**_context.get(), **{k: v for k, v in fields.items() if v is not None}}
    token = _context.set(merged)
    try:
        yield
    finally:
        _context.reset(token)


def bind_log_context(**fields: Any) -> None:
    """Add fields to the current context until it ends (for code that cannot use a `with`,
    e.g. after the prediction id becomes known deep inside a call)."""
    _context.set({**_context.get(), **{k: v for k, v in fields.items() if v is not None}})


class ContextAdapter(logging.LoggerAdapter):
    """A logger with fixed fields: `get_logger(__name__, batch=b, item=i).info("created")`."""

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        kwargs["extra"] = {**(self.extra or {}), **(kwargs.get("extra") or {})}
        return msg, kwargs


def get_logger(name: str, **fields: Any) -> ContextAdapter:
    return ContextAdapter(logging.getLogger(name), {k: v for k, v in fields.items() if v is not None})


# --- redaction ----------------------------------------------------------------------------------


class Redactor:
    """Removes secrets from text: the configured literal values, anything shaped like a
    Replicate token, and passwords inside URLs."""

    def __init__(self, secrets: Iterable[str | None] = ()):
        # Longest first, so a secret that contains another is cut whole.
        self.secrets = sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        text = TOKEN_PATTERN.sub(MASK, text)
        return URL_PASSWORD_PATTERN.sub(lambda m: m.group("head") + "***@", text)


def _safe_str(value: Any) -> str:
    try:
        return str(value)
    except Exception:  # a broken __str__ must not lose the log line
        return object.__repr__(value)


class RedactingFilter(logging.Filter):
    """Rewrites the record in place: the merged message, the exception and stack text, and any
    string attributes given through `extra=`. Attach it to HANDLERS (a logger's filters do not
    see records that propagate from child loggers)."""

    def __init__(self, redactor: Redactor):
        super().__init__()
        self.redact = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        # %-formatting first, then redact the result: a token split across msg and args (or
        # inside a tuple's repr) is caught only in the final text.
        if getattr(record, "_fleet_redacted", False):
            return True
        try:
            message = record.getMessage()
        except Exception:  # bad format string: keep what we can, redacted
            message = f"{record.msg!r} % {record.args!r}"
        record.msg = self.redact(message)
        record.args = None
        if record.exc_info and record.exc_info[0] is not None:
            record.exc_text = self.redact(logging.Formatter().formatException(record.exc_info))
            # Keep exc_info out of later formatters, which would render the raw traceback again.
            record.exc_info = None
        elif record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redact(record.stack_info)
        for name in CONTEXT_FIELDS:
            value = getattr(record, name, None)
            if isinstance(value, str):
                setattr(record, name, self.redact(value))
        record._fleet_redacted = True
        return True


class ContextFilter(logging.Filter):
    """Copies the contextvars context (and the running Celery task id) onto the record, without
    overriding fields passed explicitly through `extra=`."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name, value in _context.get().items():
            if not hasattr(record, name):
                setattr(record, name, value)
        if getattr(record, "task_id", None) is None:
            task_id = _current_celery_task_id()
            if task_id:
                record.task_id = task_id
        return True


def _current_celery_task_id() -> str | None:
    celery_state = sys.modules.get("celery._state")  # only if Celery is in use already
    if celery_state is None:
        return None
    try:
        task = celery_state.get_current_task()
        return getattr(task.request, "id", None) if task is not None else None
    except Exception:
        return None


# --- formatting ---------------------------------------------------------------------------------

_STANDARD_ATTRS = set(vars(logging.LogRecord("x", 0, "x", 0, "x", None, None))) | {
    "message",
    "asctime",
    "_fleet_redacted",
    "taskName",
}


def _record_fields(record: logging.LogRecord) -> dict[str, Any]:
    """Context fields first, in a fixed order, then any other `extra=` attributes."""
    fields: dict[str, Any] = {}
    for name in CONTEXT_FIELDS:
        value = getattr(record, name, None)
        if value is not None:
            fields[name] = value
    skip_data = record.name.startswith("celery")  # Celery's `data` extra repeats msg and traceback
    for name, value in vars(record).items():
        if skip_data and name == "data":
            continue
        if (
            name not in _STANDARD_ATTRS
            and name not in fields
            and not name.startswith("_")
            and value is not None
        ):
            fields[name] = value
    return fields


def _timestamp(record: logging.LogRecord) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"


class _RedactingFormatter(logging.Formatter):
    def __init__(self, redactor: Redactor):
        super().__init__()
        self.redact = redactor

    def format(self, record: logging.LogRecord) -> str:
        return self.redact(self.render(record))

    def render(self, record: logging.LogRecord) -> str:  # pragma: no cover - abstract
        raise NotImplementedError

    def _exception_text(self, record: logging.LogRecord) -> str | None:
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        parts = [t for t in (record.exc_text, record.stack_info) if t]
        return "\n".join(parts) if parts else None


class KeyValueFormatter(_RedactingFormatter):
    """`ts=... level=INFO logger=workers.tasks batch=b1 item=3 model=m msg="created prediction"`;
    a traceback follows as one quoted `exc=` field, so every event stays one line."""

    def render(self, record: logging.LogRecord) -> str:
        pairs: list[tuple[str, Any]] = [
            ("ts", _timestamp(record)),
            ("level", record.levelname),
            ("logger", record.name),
        ]
        pairs += list(_record_fields(record).items())
        pairs.append(("msg", record.getMessage()))
        exc = self._exception_text(record)
        if exc:
            pairs.append(("exc", exc))
        return " ".join(f"{key}={_kv_value(value)}" for key, value in pairs)


def _kv_value(value: Any) -> str:
    text = value if isinstance(value, str) else _safe_str(value)
    if text and not any(c.isspace() or c in '"=\\' for c in text):
        return text
    return jsonlib.dumps(text)  # quotes, and escapes newlines so the event stays on one line


class JsonFormatter(_RedactingFormatter):
    """One JSON object per line: ts, level, logger, the context fields, msg, exc."""

    def render(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {"ts": _timestamp(record), "level": record.levelname, "logger": record.name}
        data.update(_record_fields(record))
        data["msg"] = record.getMessage()
        exc = self._exception_text(record)
        if exc:
            data["exc"] = exc
        return jsonlib.dumps(data, default=_safe_str, ensure_ascii=False)


# --- setup --------------------------------------------------------------------------------------


def redactor_for(settings: Settings, extra_secrets: Iterable[str | None] = ()) -> Redactor:
    return Redactor(
        [
            settings.replicate_api_token,
            settings.webhook_secret,
            settings.redis_sentinel_password,
            *extra_secrets,
        ]
    )


def make_handler(
    settings: Settings,
    *,
    stream: IO[str] | None = None,
    json: bool = False,
    extra_secrets: Iterable[str | None] = (),
) -> logging.Handler:
    """A stream handler with the context and redaction filters and our formatter."""
    redactor = redactor_for(settings, extra_secrets)
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.addFilter(ContextFilter())
    handler.addFilter(RedactingFilter(redactor))
    handler.setFormatter(JsonFormatter(redactor) if json else KeyValueFormatter(redactor))
    return handler


def parse_level(level: str | int | None, default: str = "INFO") -> int:
    if isinstance(level, int):
        return level
    name = (level or default).upper()
    value = logging.getLevelName(name)
    if not isinstance(value, int):
        from shared.errors import ConfigError

        raise ConfigError(f"unknown log level {level!r} (use DEBUG, INFO, WARNING, ERROR)")
    return value


def configure_logging(
    settings: Settings,
    *,
    stream: IO[str] | None = None,
    json: bool = False,
    level: str | int | None = None,
    extra_secrets: Iterable[str | None] = (),
) -> logging.Handler:
    """Make the root logger write one structured line per event to `stream` (stderr by default).

    Replaces the handlers on the root logger (ours or basicConfig's) so a second call does not
    double every line; level from `level`, else `settings.log_level`. Returns the handler.
    """
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    handler = make_handler(settings, stream=stream, json=json, extra_secrets=extra_secrets)
    root.addHandler(handler)
    root.setLevel(parse_level(level if level is not None else settings.log_level))
    # Libraries that log request URLs/headers at DEBUG: keep them at WARNING unless asked.
    for noisy in ("urllib3", "httpx", "httpcore", "asyncio"):
        logging.getLogger(noisy).setLevel(max(root.level, logging.WARNING))
    logging.captureWarnings(True)
    return handler


def celery_setup_logging(
    settings: Settings,
    *,
    loglevel: str | int | None = None,
    json: bool | None = None,
    stream: IO[str] | None = None,
) -> logging.Handler:
    """For Celery's `setup_logging` signal (a connected receiver stops Celery configuring its own
    handlers): our handler on the root logger, and Celery's loggers propagating to it.

        @signals.setup_logging.connect
        def _setup(**_):
            celery_setup_logging(Settings.load())

    `json` defaults to settings.log_json (FLEET_LOG_JSON=1), so compose can choose
    JSON for a log shipper without a code change. The level is settings.log_level (FLEET_LOG_LEVEL)
    unless `loglevel` is passed; do not forward the signal's `loglevel` blindly: `celery worker`
    sends WARNING when no `-l` was given, which would hide every INFO event.
    """
    if json is None:
        json = settings.log_json
    handler = configure_logging(settings, stream=stream, json=json, level=loglevel)
    for name in ("celery", "celery.task", "celery.redirected", "celery.worker", "kombu"):
        logger = logging.getLogger(name)
        logger.handlers = []
        logger.propagate = True
    return handler
