"""Imports every aggregate's models, so that `Base.metadata` knows all tables."""

from __future__ import annotations

import app.clients.models
import app.events.models
import app.services.models
import app.tokens.models

MODULES = (app.clients.models, app.events.models, app.services.models, app.tokens.models)


def load_all() -> None:
    """Nothing to do at call time: importing this module registered every table."""
