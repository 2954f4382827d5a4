"""Partner API: partners register referred users into the platform."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

from flask import Flask
from sqlalchemy import event
from werkzeug.middleware.proxy_fix import ProxyFix

from partner_api import auth, logs, requestid, security, stalls
from partner_api import config as app_config
from partner_api.errors import register_error_handlers
from partner_api.extensions import db, metrics, migrate, rate_limiter

MIGRATIONS = str(Path(__file__).parent / "migrations")


def create_app(
    settings: Mapping[str, str] | None = None, log_stream: TextIO | None = None
) -> Flask:
    """Build the app. `settings` stand in for environment variables.

    Log lines go to `log_stream`, standard output unless told otherwise.
    """
    # No /static route: the docs page serves its few files itself.
    app = Flask(__name__, static_folder=None)
    configure(app, settings)
    configure_logging(app, log_stream or sys.stdout)
    init_extensions(app)
    register_blueprints(app)
    register_error_handlers(app)
    register_commands(app)

    return app


def configure(app: Flask, settings: Mapping[str, str] | None) -> None:
    os.makedirs(app.instance_path, exist_ok=True)
    app.config.update(app_config.load(settings, app.instance_path))
    app.json.sort_keys = False  # type: ignore[attr-defined]
    # "/v1//internal" is a 404 in the envelope, not a redirect with HTML.
    app.url_map.merge_slashes = False

    hops = app.config["TRUSTED_PROXY_HOPS"]
    if hops:
        # Only the addresses added by our own proxies are believed; anything
        # the client wrote into X-Forwarded-For further left is ignored.
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops)  # type: ignore[method-assign]


def configure_logging(app: Flask, stream: TextIO) -> None:
    logs.configure(app, stream)


def init_extensions(app: Flask) -> None:
    db.init_app(app)
    migrate.init_app(app, db, directory=MIGRATIONS)
    # The request log goes first: its timer then starts right after the
    # request id is assigned, and its line is written after every other hook.
    logs.init_app(app)
    requestid.init_app(app)
    security.init_app(app)
    rate_limiter.init_app(app)
    metrics.init_app(app)
    auth.init_app(app)

    with app.app_context():
        if db.engine.dialect.name == "sqlite":
            event.listen(db.engine, "connect", _sqlite_pragmas)
        else:
            timeout_ms = app.config["DATABASE_STATEMENT_TIMEOUT_MS"]
            stalls.watchdog.watch(db.engine, timeout_ms / 1000)


def register_blueprints(app: Flask) -> None:
    from partner_api import docs, health, v1
    from partner_api.metrics import bp as metrics_bp

    app.register_blueprint(health.bp)
    app.register_blueprint(metrics_bp)
    app.register_blueprint(docs.bp)
    app.register_blueprint(v1.bp)


def register_commands(app: Flask) -> None:
    from partner_api import cli

    app.cli.add_command(cli.keys)
    app.cli.add_command(cli.audit_log)
    app.cli.add_command(cli.demo_key)
    app.cli.add_command(cli.idempotency_keys, name="idempotency")
    app.cli.add_command(cli.dev)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # SQLite enforces foreign keys only when asked, per connection; WAL lets
    # readers proceed while one worker writes.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.close()
