"""gunicorn settings for production serving (`make run`).

Every value can be set from the environment; gunicorn's own WEB_CONCURRENCY
sets the worker count.
"""

import glob
import json
import logging
import os
import re
import shutil
import sys
import tempfile
from http import HTTPStatus

from gunicorn import util

bind = os.environ.get("BIND", "127.0.0.1:8000")
workers = int(os.environ.get("WEB_CONCURRENCY", "4"))
worker_class = os.environ.get("WORKER_CLASS", "sync")
# Dependency timeouts (Redis 0.25 s, PostgreSQL 3 s to connect, 10 s per
# statement) are all shorter than this, so a stalled dependency yields a 503
# rather than a killed worker.
timeout = int(os.environ.get("WORKER_TIMEOUT", "30"))
graceful_timeout = int(os.environ.get("GRACEFUL_TIMEOUT", "30"))
keepalive = 5
# The app writes one JSON line per request itself (404s included), with the
# request id and key id gunicorn cannot see; a second access line would only
# double the volume.
accesslog = None
errorlog = "-"
# Keys whole or cut short, as partner_api.apikeys.LEAK_PATTERN matches them.
# Importing the package here would import prometheus_client in the master
# before on_starting below sets its multiprocess directory.
LEAKED_KEY = re.compile(r"pak_(?:live|test)_[0-9A-Za-z_]*")
# A query string may hold other secrets (a password a client put in the URL);
# the app's own request line leaves it out, and so does this.
QUERY = re.compile(r"\?[^\s'\"]+")


class RedactKeys(logging.Filter):
    """gunicorn quotes request lines and headers it cannot parse, and the URL
    of a request that failed: a key or query string there must not be logged."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "pak_" in message or "?" in message:
            message = QUERY.sub("?[redacted]", LEAKED_KEY.sub("[redacted]", message))
            record.msg, record.args = message, None

        if record.exc_info:
            text = logging.Formatter().formatException(record.exc_info)
            record.exc_text, record.exc_info = LEAKED_KEY.sub("[redacted]", text), None

        return True


# gunicorn's own lines (start, stop, worker timeouts) in the JSON shape of the
# app's, on the same stream: the options mirror partner_api.logs.FORMAT.
logconfig_dict = {
    "root": {"level": "WARNING", "handlers": []},
    "loggers": {
        "gunicorn.error": {"level": "INFO", "handlers": ["json"], "propagate": False},
        "gunicorn.access": {"level": "INFO", "handlers": [], "propagate": False},
    },
    "handlers": {
        "json": {
            "class": "logging.StreamHandler",
            "formatter": "json",
            "filters": ["redact_keys"],
            "stream": "ext://sys.stdout",
        },
    },
    "filters": {"redact_keys": {"()": RedactKeys}},
    "formatters": {
        "json": {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "fmt": "{levelname}{name}{message}",
            "style": "{",
            "rename_fields": {"levelname": "level", "name": "logger"},
            "timestamp": "time",
        },
    },
}
# No preload: each worker builds its own app, so database pools and Redis
# connections are created after the fork and never shared.
preload_app = False
# The control socket defaults to one path per user: several instances on one
# host would fight over it, and nothing here uses it.
control_socket_disable = True

# Requests gunicorn refuses before the app sees them (a request line over
# limit_request_line, too many or too large headers, a malformed request):
# the same JSON envelope as every other error instead of gunicorn's HTML.
# gunicorn's own text may quote the offending header, so it is not echoed.
GUNICORN_ERRORS = {
    400: ("bad_request", "The request is not valid HTTP/1.1."),
    403: ("forbidden", "The request was refused."),
    414: ("uri_too_long", "The request line is longer than the server accepts."),
    417: ("expectation_failed", "Only 'Expect: 100-continue' is supported."),
    431: (
        "request_header_fields_too_large",
        "The request has more or larger headers than the server accepts.",
    ),
    500: ("internal_error", "The server failed to handle this request."),
    501: ("not_implemented", "This transfer coding is not supported."),
}


def write_json_error(sock: object, status_int: int, reason: str, mesg: str) -> None:
    code, message = GUNICORN_ERRORS.get(status_int, ("bad_request", reason))
    body = json.dumps(
        {
            "message": message,
            "error": HTTPStatus(status_int).phrase,
            "statusCode": status_int,
            "code": code,
        }
    )
    response = (
        f"HTTP/1.1 {status_int} {HTTPStatus(status_int).phrase}\r\n"
        "Connection: close\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        # The headers partner_api.security puts on every other response.
        "X-Content-Type-Options: nosniff\r\n"
        "X-Frame-Options: DENY\r\n"
        "Referrer-Policy: no-referrer\r\n"
        "Content-Security-Policy: default-src 'none'; frame-ancestors 'none'\r\n"
        "Cache-Control: no-store\r\n"
        f"\r\n{body}"
    )
    util.write_nonblock(sock, response.encode("latin-1"))


util.write_error = write_json_error


METRICS_DIR = "PROMETHEUS_MULTIPROC_DIR"
_private_metrics_dir: list[str] = []


def on_starting(server: object) -> None:
    """Check the rate-limit setup, then prepare the shared metrics directory."""
    allow_memory = os.environ.get("ALLOW_PER_PROCESS_LIMITS", "").lower() == "true"
    if not os.environ.get("REDIS_URL") and not allow_memory:
        sys.exit(
            "REDIS_URL is not set: each gunicorn worker would count rate limits "
            "on its own, multiplying the published limit. Set REDIS_URL, or set "
            "ALLOW_PER_PROCESS_LIMITS=true to accept per-process limits."
        )

    # Workers inherit the variable and write their samples there, so that a
    # scrape of any worker sums them all. It must be set before anything in
    # this process imports prometheus_client, which reads it once.
    directory = os.environ.get(METRICS_DIR)
    if directory:
        os.makedirs(directory, exist_ok=True)
        # Samples of a previous run would be added to this one's.
        for stale in glob.glob(os.path.join(directory, "*.db")):
            os.remove(stale)
    else:
        directory = tempfile.mkdtemp(prefix="partner-api-metrics-")
        _private_metrics_dir.append(directory)
        os.environ[METRICS_DIR] = directory


def child_exit(server: object, worker: object) -> None:
    """Let a dead worker's live gauges go; its counters keep adding up."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)  # type: ignore[attr-defined]


def on_exit(server: object) -> None:
    for directory in _private_metrics_dir:
        shutil.rmtree(directory, ignore_errors=True)
