"""The worker class gunicorn.conf.py gives gunicorn: ``gevent`` (default) or ``gthread``.

Both answer gunicorn's own errors in JSON (json_errors.py) and bound how long a client may
take to send a request (read_deadlines.py). The class module is imported only when chosen,
so ``gthread`` runs without gevent installed.
"""

from __future__ import annotations

from .settings import ServingSettings


def worker_class(settings: ServingSettings) -> type:
    """The chosen worker class, with the request deadlines of ``settings``."""
    base: type
    if settings.worker_class == "gevent":
        from .gevent_worker import GeventWorker

        base = GeventWorker
    else:
        from .gthread_worker import ThreadWorker

        base = ThreadWorker
    timeouts = {"header_timeout": settings.header_timeout, "body_timeout": settings.body_timeout}
    return type(base.__name__, (base,), timeouts)
