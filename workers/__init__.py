"""The Celery side of the fleet: `celery -A workers worker` finds `app` here.

Nothing is configured at import: the app reads `Settings.load()` (environment, `.env`) the first
time its configuration is needed, i.e. when the worker starts (see workers.celery_app).
"""

from workers.celery_app import app

__all__ = ["app"]
