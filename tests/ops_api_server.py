"""The ops API for the tests: `krx serve`'s app on a real uvicorn (a free 127.0.0.1 port) over a temporary home,
with three operators: alice and bob (role operator) and carol (role viewer)."""

from __future__ import annotations

from dataclasses import dataclass

import httpx
from trading_servers import ThreadServer

from common import operators
from common.home import Home
from faces.cli.serve import create_app
from nas.trading import db


@dataclass
class Api:
    home: Home
    server: ThreadServer
    client: httpx.Client
    tokens: dict[str, str]

    def auth(self, name: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[name]}"}

    def close(self) -> None:
        self.client.close()
        self.server.close()


def start(home: Home, *, remote: bool = False) -> Api:
    tokens = {name: operators.add(home, name, role=role)[1]
              for name, role in (("alice", "operator"), ("bob", "operator"), ("carol", "viewer"))}
    server = ThreadServer(create_app(home, db.load_config(home), remote=remote))
    return Api(home, server, httpx.Client(base_url=server.url, timeout=120), tokens)
