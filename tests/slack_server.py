"""A small local stand-in for Slack's Web API and incoming webhooks, for the Slack tests (not a mock of our code:
the real slack-sdk client talks HTTP to it). POST /api/chat.postMessage and POST /services/... are recorded;
`script` holds the responses to give first (status, headers, body), then every request succeeds."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Request:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    status: int


@dataclass
class SlackServer:
    script: list[tuple[int, dict[str, str], str]] = field(default_factory=list)
    requests: list[Request] = field(default_factory=list)
    delay_s: float = 0.0  # answer this late: keeps concurrent senders in flight together

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._ts = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    body = json.loads(raw or b"{}")
                except ValueError:
                    body = {"_raw": raw.decode("utf-8", "replace")}
                time.sleep(server.delay_s)
                status, headers, text = server._answer(self.path, body)
                with server._lock:
                    server.requests.append(Request(self.path, dict(self.headers.items()), body, status))
                data = text.encode("utf-8")
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Type", headers.get("Content-Type", "application/json; charset=utf-8"))
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def _answer(self, path: str, body: dict) -> tuple[int, dict[str, str], str]:
        with self._lock:
            if self.script:
                return self.script.pop(0)
            self._ts += 1
            ts = f"1700000000.{self._ts:06d}"
        if path.startswith("/services/"):
            return 200, {"Content-Type": "text/plain"}, "ok"
        return 200, {}, json.dumps({"ok": True, "channel": "C0INVESTOPS", "ts": ts,
                                    "message": {"text": body.get("text", "")}})

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/"

    def webhook_url(self, secret: str = "T000/B000/XXXXXXXXXXXXXXXXXXXXXXXX") -> str:
        return f"http://127.0.0.1:{self.port}/services/{secret}"

    @property
    def delivered(self) -> list[Request]:
        """Requests that were answered with success."""
        with self._lock:
            return [r for r in self.requests if r.status == 200]

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def unused_port() -> int:
    """A port nothing listens on (bound, then released)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
