"""The dashboard at `/` (in `krx serve`): the day at a glance, and the forms a person runs it with.

  GET  /                        the page (sign in first): nas.status.snapshot rendered, with its forms
  GET  /login, POST /login      sign in with an operator token (form field `token`) -> a session cookie
  POST /logout                  sign out
  POST /dashboard/emergency_stop   state=on|off, reason     common.switches.set_emergency_stop
  POST /dashboard/sender           state=on|off, reason[, channel]   common.switches.set_sender
  POST /dashboard/cycle            run the day's ops cycle   nas.cycle.run_exclusive

Server-rendered (Jinja2, autoescaped), no script, no external asset: it works on a NAS without internet. Every
form POST needs the session cookie (401 SESSION_REQUIRED) and the session's CSRF token (403 CSRF_INVALID); both are
checked before anything else, so a refused POST changes nothing. The forms call the same core functions as
`krx ops estop|sender|cycle`, acting as the signed-in operator (faces/http/session.py). A refusal of the core
(no reason, a cycle already running) re-renders the page with its message, at the status faces/http maps it to.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from fastapi import APIRouter, Cookie, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape

from common import switches
from common.errors import AlertorError, OpsError
from common.home import Home
from faces import KRX
from faces.http import session, status_of

TEMPLATES = Environment(loader=FileSystemLoader(Path(__file__).parent / "templates"),
                        autoescape=select_autoescape(["html"]))
MAX_FORM_BYTES = 16 * 1024
# the page runs no script, loads nothing from elsewhere and may not be framed (a framed "stop" button is a click
# another site could steal); never cached, since it shows the state of the moment
HEADERS = {"Cache-Control": "no-store", "X-Frame-Options": "DENY", "Content-Security-Policy":
           "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"}
# what the page confirms after a form worked (the redirect names one of these, never free text)
DONE = {"estop": "Emergency stop changed.", "sender": "Sender switch changed.", "cycle": "The ops cycle ran."}


async def _form(request: Request) -> dict[str, str]:
    """An application/x-www-form-urlencoded body as {field: first value}; bounded, never a traceback."""
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        raise OpsError("BAD_REQUEST", f"form body: expected at most {MAX_FORM_BYTES} bytes, got {len(body)}")
    try:
        fields = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True, max_num_fields=20)
    except ValueError:  # more fields than any of these forms has
        raise OpsError("BAD_REQUEST", "form body: expected at most 20 fields") from None
    return {k: v[0] for k, v in fields.items()}


def _on_off(form: dict[str, str]) -> bool:
    value = form.get("state", "")
    if value not in ("on", "off"):
        raise OpsError("BAD_REQUEST", f"form field state: expected on or off, got {value[:20]!r}")
    return value == "on"


def _ttl(seconds: Any) -> str:
    """Seconds left as `1h 02m 03s`; `expired` at zero or below, `-` when there is none."""
    if not isinstance(seconds, int | float) or isinstance(seconds, bool):
        return "-"
    if seconds <= 0:
        return "expired"
    h, rest = divmod(int(seconds), 3600)
    return (f"{h}h " if h else "") + f"{rest // 60:02d}m {rest % 60:02d}s"


TEMPLATES.filters["ttl"] = _ttl


def _see_other(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


def router(home: Home) -> APIRouter:
    r = APIRouter(include_in_schema=False)

    def page(sess: session.Session, *, done: str | None = None, error: AlertorError | None = None) -> HTMLResponse:
        from nas import status

        html = TEMPLATES.get_template("dashboard.html").render(
            s=status.snapshot(home), sess=sess, csrf=sess.csrf, done=DONE.get(done or ""),
            error=error, gate_modes=switches.GATE_MODES, channels=switches.SENDER_CHANNELS)
        return HTMLResponse(html, status_code=status_of(error) if error else 200, headers=HEADERS)

    def login_page(error: AlertorError | None = None) -> HTMLResponse:
        return HTMLResponse(TEMPLATES.get_template("login.html").render(error=error),
                            status_code=status_of(error) if error else 200, headers=HEADERS)

    def signed_in(form: dict[str, str] = Depends(_form),
                  krx_session: str | None = Cookie(default=None)) -> tuple[session.Session, dict[str, str]]:
        """Every form POST that changes something: the session, its CSRF token and a role that may change, first
        (nothing else runs when one is wrong); then a live fire's lockdown that a killed process left recorded is
        completed, as every `krx ops` command and API change does first."""
        from nas import live_fire

        sess = session.require(home, krx_session, form.get("csrf"))
        live_fire.recover(home)
        return sess, form

    @r.get("/", response_class=HTMLResponse)
    def dashboard(done: str | None = None, krx_session: str | None = Cookie(default=None)) -> Response:
        sess = session.current(home, krx_session)
        return page(sess, done=done) if sess else _see_other("/login")

    @r.get("/login", response_class=HTMLResponse)
    def login_form() -> HTMLResponse:
        return login_page()

    @r.post("/login")
    def login(request: Request, form: dict[str, str] = Depends(_form)) -> Response:
        try:
            cookie, sess = session.sign_in(home, form.get("token"))
        except AlertorError as exc:
            return login_page(exc)
        answer = _see_other("/")
        answer.set_cookie(session.COOKIE, cookie, max_age=int(session.LIFETIME.total_seconds()), httponly=True,
                          samesite="strict", secure=request.url.scheme == "https", path="/")
        return answer

    @r.post("/logout")
    def logout(form: dict[str, str] = Depends(_form), krx_session: str | None = Cookie(default=None)) -> Response:
        session.sign_out(home, session.require(home, krx_session, form.get("csrf"), change=False))
        answer = _see_other("/login")
        answer.delete_cookie(session.COOKIE, path="/", httponly=True, samesite="strict")
        return answer

    def act(sess: session.Session, done: str, call: Callable[[], object]) -> Response:
        try:
            call()
        except AlertorError as exc:
            return page(sess, error=exc)
        return _see_other(f"/?done={done}")

    @r.post("/dashboard/emergency_stop")
    def emergency_stop(auth: tuple[session.Session, dict[str, str]] = Depends(signed_in)) -> Response:
        sess, form = auth
        return act(sess, "estop", lambda: switches.set_emergency_stop(
            home, _on_off(form), form.get("reason", ""), operator=sess.operator))

    @r.post("/dashboard/sender")
    def sender(auth: tuple[session.Session, dict[str, str]] = Depends(signed_in)) -> Response:
        sess, form = auth
        return act(sess, "sender", lambda: switches.set_sender(
            home, _on_off(form), form.get("reason", ""), operator=sess.operator,
            channel=form.get("channel") or None))

    @r.post("/dashboard/cycle")
    def cycle(auth: tuple[session.Session, dict[str, str]] = Depends(signed_in)) -> Response:
        from nas import cycle as ops_cycle

        return act(auth[0], "cycle", lambda: ops_cycle.run_exclusive(home, command=KRX))

    return r
