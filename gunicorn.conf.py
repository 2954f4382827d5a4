"""gunicorn settings for production serving (`make run`).

Every value can be set from the environment; gunicorn's own WEB_CONCURRENCY
sets the worker count.
"""

import os
import sys

bind = os.environ.get("BIND", "127.0.0.1:8000")
workers = int(os.environ.get("WEB_CONCURRENCY", "4"))
worker_class = os.environ.get("WORKER_CLASS", "sync")
# Dependency timeouts (Redis 0.25 s, PostgreSQL 3 s to connect, 10 s per
# statement) are all shorter than this, so a stalled dependency yields a 503
# rather than a killed worker.
timeout = int(os.environ.get("WORKER_TIMEOUT", "30"))
graceful_timeout = int(os.environ.get("GRACEFUL_TIMEOUT", "30"))
keepalive = 5
accesslog = "-"
# The path without its query string: a partner who puts a key in the URL by
# mistake must not find it in our logs.
access_log_format = '%(h)s "%(m)s %(U)s" %(s)s %(b)s %(M)sms'
errorlog = "-"
# No preload: each worker builds its own app, so database pools and Redis
# connections are created after the fork and never shared.
preload_app = False
# The control socket defaults to one path per user: several instances on one
# host would fight over it, and nothing here uses it.
control_socket_disable = True


def on_starting(server: object) -> None:
    """Refuse per-process rate limits in production unless asked for."""
    allow_memory = os.environ.get("ALLOW_PER_PROCESS_LIMITS", "").lower() == "true"
    if not os.environ.get("REDIS_URL") and not allow_memory:
        sys.exit(
            "REDIS_URL is not set: each gunicorn worker would count rate limits "
            "on its own, multiplying the published limit. Set REDIS_URL, or set "
            "ALLOW_PER_PROCESS_LIMITS=true to accept per-process limits."
        )
