"""`krx worker`: the PC worker's command (the loop is pc.worker, its options pc.worker_settings).

    krx worker [--inbox reports/pending] [--out reports/done] [--polling] [--interval S] [--lease S]
               [--max-attempts N] [--concurrency N] [--once] [--http [--port 8000] [--host 127.0.0.1]]

`--http` also serves the backtest API (faces/http/backtest_api.py) on the worker's own queue, in the same process:
the worker loop keeps the main thread, so its signal handling stays as it is (SIGINT/SIGTERM: no new claims, the
running job gets stop_grace_s, then goes back to the inbox; a second signal releases at once), and uvicorn serves
from a thread, where it installs no signal handlers of its own. The server holds nothing the queue does not: a POST
answered 202 is already a pending/<id>.json on disk, so stopping it last (after the worker) loses nothing.
"""

from __future__ import annotations

import argparse
import logging

from common import config, log
from common.errors import EXIT_FAILED, OpsError
from common.home import Home
from pc import worker as pc_worker
from pc import worker_settings

_log = log.get("worker")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    worker_settings.add_arguments(parser)
    parser.add_argument("--http", action="store_true", help="also serve the backtest API (POST /backtest, GET "
                        "/backtest/{id}) on the same queue; loopback only unless worker.http.allow_remote")
    parser.add_argument("--port", type=worker_settings.positive(int), help="the API's port (default: app.yaml "
                        "worker.http.port, 8000)")
    parser.add_argument("--host", help="the API's address (default: app.yaml worker.http.host, 127.0.0.1)")


def run(args: argparse.Namespace) -> int:
    home = Home.from_env()
    log.setup_logging("worker", home)
    if args.http and args.once:
        log.event(_log, "WORKER_START", "--http serves until stopped: it does not go with --once", rc=EXIT_FAILED,
                  level=logging.ERROR)
        return EXIT_FAILED
    try:
        worker = pc_worker.build(args.inbox, args.out, home=home, job=args.job, **worker_settings.overrides(args))
    except (ImportError, AttributeError, ValueError) as exc:
        log.event(_log, "WORKER_START", f"cannot load the job {args.job}: {exc}", rc=EXIT_FAILED, level=logging.ERROR)
        return EXIT_FAILED
    if not args.http:
        return worker.run(once=args.once)
    from faces.http import Background, backtest_api

    try:
        cfg = config.load("app", home)["worker"]["http"]
        host, port = args.host or cfg["host"], args.port or cfg["port"]
        backtest_api.check_bind(host, cfg["allow_remote"])
        if not worker.queue.inbox.is_dir():  # the worker says why (an unmounted share); the API must not start
            return worker.run()
        app = backtest_api.create_app(home, worker.queue, max_bytes=worker.settings.max_request_bytes,
                                      on_queued=worker.hint)
        server = Background(app, host, port)
        server.start()
    except (OpsError, config.ConfigError, OSError) as exc:
        log.event(_log, "HTTP_START", f"the backtest API cannot start: {exc}", rc=EXIT_FAILED, level=logging.ERROR)
        return EXIT_FAILED
    log.event(_log, "HTTP_START", f"the backtest API listens on http://{host}:{server.port}")
    try:
        return worker.run()
    finally:
        server.stop()
        log.event(_log, "HTTP_STOP", f"the backtest API on port {server.port} stopped")
