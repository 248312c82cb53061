"""gunicorn settings for every Funnel API (``gunicorn -c deploy/gunicorn.conf.py``).

Threads let keep-alive clients (SDKs batch over one connection) share a worker; request
work is short (a validation and one local commit), so 2 workers x 4 threads fits 2 cores.
"""

from shared.config import Env

_env = Env()
workers = _env.integer("GUNICORN_WORKERS", 2)
worker_class = "gthread"
threads = _env.integer("GUNICORN_THREADS", 4)
keepalive = 5
timeout = 30
graceful_timeout = 20
accesslog = _env.optional("GUNICORN_ACCESS_LOG")
errorlog = "-"
# gunicorn ≥ 25 opens one control socket per master at a fixed path; three APIs on one
# machine would fight over it.
control_socket_disable = True


def child_exit(server: object, worker: object) -> None:
    """A worker that exits leaves its metrics files: mark them dead (multiprocess mode,
    shared.metrics) so live gauges stop counting it."""
    if _env.optional("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(getattr(worker, "pid", 0))
