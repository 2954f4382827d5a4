"""Extension singletons, bound to an app by the factory."""

from typing import TYPE_CHECKING

from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import MetaData
from sqlalchemy.orm import DeclarativeBase

from partner_api.metrics import Metrics
from partner_api.ratelimit import RateLimiter


class Base(DeclarativeBase):
    # Deterministic constraint names: migrations stay reviewable and the
    # conflict handler can tell which unique constraint a write violated.
    metadata = MetaData(
        naming_convention={
            "ix": "ix_%(column_0_label)s",
            "uq": "uq_%(table_name)s_%(column_0_N_name)s",
            "ck": "ck_%(table_name)s_%(constraint_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
        }
    )


db = SQLAlchemy(model_class=Base)

# Models subclass db.Model; type checkers see the typed declarative base.
if TYPE_CHECKING:
    Model = Base
else:
    Model = db.Model
migrate = Migrate()
rate_limiter = RateLimiter()
metrics = Metrics()
