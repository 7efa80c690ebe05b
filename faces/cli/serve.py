"""`krx serve`: the approval side's HTTP face on the NAS (127.0.0.1:8000 by default): the proposals API and page
(faces/http/approvals.py), OpenAPI at /docs.

It refuses to start while EXECUTION_JWT_SECRET is in its environment (from the shell or the home's .env): the
approval side must never hold the signing secret, so the secret lives only in the execution server's environment.
"""

from __future__ import annotations

import argparse
import os
import sys

from common.errors import EXIT_FAILED, EXIT_OK, OpsError
from common.home import Home


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--port", type=int, help="default: trading.yaml approval.port (8000)")


def create_app(home: Home, cfg: dict):
    from fastapi import FastAPI

    from faces.http import approvals, dashboard, install_error_handlers

    app = FastAPI(title="krx serve: the approval side")
    install_error_handlers(app)
    app.include_router(approvals.router(home, cfg))
    app.include_router(dashboard.router(home))
    return app


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
        app = create_app(home, cfg)
    except OpsError as exc:
        print(f"krx serve: {exc.code}: {exc.message}", file=sys.stderr)
        return exc.exit_code
    host, port = cfg["approval"]["host"], args.port or cfg["approval"]["port"]
    print(f"krx serve: listening on http://{host}:{port}", flush=True)
    serve_http(app, host, port)
    return EXIT_OK
