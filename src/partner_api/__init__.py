"""Partner API: partners register referred users into the platform."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flask import Flask
from sqlalchemy import event
from werkzeug.middleware.proxy_fix import ProxyFix

from partner_api import auth, requestid
from partner_api import config as app_config
from partner_api.errors import register_error_handlers
from partner_api.extensions import db, migrate, rate_limiter

MIGRATIONS = str(Path(__file__).parent / "migrations")


def create_app(settings: Mapping[str, str] | None = None) -> Flask:
    """Build the app. `settings` stand in for environment variables."""
    app = Flask(__name__)
    configure(app, settings)
    configure_logging(app)
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


def configure_logging(app: Flask) -> None:
    logger = logging.getLogger("partner_api")
    logger.setLevel(app.config["LOG_LEVEL"])
    if not logging.getLogger().handlers and not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
        )
        logger.addHandler(handler)


def init_extensions(app: Flask) -> None:
    db.init_app(app)
    migrate.init_app(app, db, directory=MIGRATIONS)
    requestid.init_app(app)
    rate_limiter.init_app(app)
    auth.init_app(app)

    with app.app_context():
        if db.engine.dialect.name == "sqlite":
            event.listen(db.engine, "connect", _sqlite_pragmas)


def register_blueprints(app: Flask) -> None:
    from partner_api import health, v1

    app.register_blueprint(health.bp)
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
