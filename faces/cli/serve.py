"""`krx serve [--host H] [--port P]`: the NAS's HTTP face (127.0.0.1:8000 by default): the ops API under /api
(faces/http/ops_api.py, ops_runs.py, artifacts.py; docs/ops_api.md), the proposals API and page
(faces/http/approvals.py), OpenAPI at /docs.

A non-loopback --host is refused (exit 2) unless app.yaml `api.allow_remote: true`; then every request needs an
operator token (faces/http/guard.py). POSTs are rate-limited either way.

It refuses to start while EXECUTION_JWT_SECRET is in its environment (from the shell or the home's .env): the
approval side must never hold the signing secret, so the secret lives only in the execution server's environment.
"""

from __future__ import annotations

import argparse
import os
import sys

from common import config
from common.errors import EXIT_BLOCKED, EXIT_FAILED, EXIT_OK, OpsError
from common.home import Home


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", help="default: trading.yaml approval.host (127.0.0.1); a non-loopback address needs "
                   "app.yaml api.allow_remote: true")
    p.add_argument("--port", type=int, help="default: trading.yaml approval.port (8000)")


def create_app(home: Home, cfg: dict, *, remote: bool = False):
    """The app; `remote`: bound to a non-loopback address, so every request needs an operator token."""
    from fastapi import FastAPI

    from faces.http import approvals, artifacts, dashboard, guard, install_error_handlers, ops_api, ops_runs

    app = FastAPI(title="krx serve: the ops API and the approval side")
    install_error_handlers(app)
    guard.install(app, home, config.load("app", home)["api"], remote=remote)
    app.include_router(ops_api.router(home))
    app.include_router(ops_runs.router(home))
    app.include_router(artifacts.router(home))
    app.include_router(approvals.router(home, cfg))
    app.include_router(dashboard.router(home))
    return app


def is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name other than localhost may resolve anywhere


def run(args: argparse.Namespace) -> int:
    from faces.http import run as serve_http
    from nas.trading import db

    home = Home.from_env()
    try:
        cfg = db.load_config(home)
        name = cfg["execution"]["secret_env"]
        if os.environ.get(name):
            raise OpsError("SECRET_ON_APPROVAL_SIDE", f"{name} is set in this environment (shell or the home's "
                           ".env): the approval side must not hold the signing secret; give it only to `krx trade "
                           "execution-server`", EXIT_FAILED)
        db.open_db(home).close()
        host, port = args.host or cfg["approval"]["host"], args.port or cfg["approval"]["port"]
        remote = not is_loopback(host)
        if remote and not config.load("app", home)["api"]["allow_remote"]:
            raise OpsError("REMOTE_NOT_ALLOWED", f"--host {host} is not a loopback address: set api.allow_remote: "
                           "true in configs/app.yaml to serve the network (every request then needs an operator "
                           "token)", EXIT_BLOCKED)
        app = create_app(home, cfg, remote=remote)
    except OpsError as exc:
        print(f"krx serve: {exc.code}: {exc.message}", file=sys.stderr)
        return exc.exit_code
    print(f"krx serve: listening on http://{host}:{port}", flush=True)
    serve_http(app, host, port)
    return EXIT_OK
