"""The dashboard's session cookie (faces/http/session.py) on a real home, with an injected clock: what it signs,
when it stops being accepted, and the key it is signed with."""

from __future__ import annotations

import datetime as dt
import stat

import jwt
import pytest

from common import operators
from common.errors import OpsError
from common.home import Home
from faces.http import session

T0 = dt.datetime(2026, 11, 30, 9, 0, tzinfo=dt.UTC)


def test_a_session_lasts_its_lifetime_and_no_longer(home: Home) -> None:
    _op, token = operators.add(home, "alice")
    cookie, made = session.sign_in(home, token, now=T0)
    seen = session.current(home, cookie, now=T0 + session.LIFETIME - dt.timedelta(seconds=1))
    assert seen is not None and (seen.operator, seen.csrf) == ("alice", made.csrf)
    assert session.current(home, cookie, now=T0 + session.LIFETIME) is None
    assert token not in cookie and token not in jwt.decode(cookie, options={"verify_signature": False}).values()


def test_the_key_is_made_once_private_and_a_forged_cookie_is_refused(home: Home) -> None:
    _op, token = operators.add(home, "alice")
    cookie, made = session.sign_in(home, token, now=T0)
    key = home.state / session.KEY_FILE
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    claims = jwt.decode(cookie, options={"verify_signature": False})
    for forged in (jwt.encode(claims, "another key of at least thirty-two bytes", algorithm="HS256"),
                   jwt.encode(claims, None, algorithm="none"), cookie[:-3] + "abc", "not a jwt", ""):
        assert session.current(home, forged, now=T0) is None, forged
    session.sign_in(home, token, now=T0)
    assert session.current(home, cookie, now=T0) == made  # signing in again did not replace the key
    key.unlink()  # a new key signs everybody out
    assert session.current(home, cookie, now=T0) is None


def test_an_operator_added_again_under_the_same_name_does_not_inherit_old_sessions(home: Home) -> None:
    _op, token = operators.add(home, "bob", now=T0)
    cookie, _made = session.sign_in(home, token, now=T0)
    operators.remove(home, "bob")
    operators.add(home, "bob", now=T0 + dt.timedelta(minutes=5))
    assert session.current(home, cookie, now=T0 + dt.timedelta(minutes=6)) is None


def test_sign_out_ends_the_sessions_issued_before_it_not_later_ones(home: Home) -> None:
    _op, token = operators.add(home, "carol")
    first, made = session.sign_in(home, token, now=T0)
    session.sign_out(home, made, now=T0 + dt.timedelta(minutes=1))
    assert session.current(home, first, now=T0 + dt.timedelta(minutes=2)) is None
    later, _ = session.sign_in(home, token, now=T0 + dt.timedelta(minutes=3))
    assert session.current(home, later, now=T0 + dt.timedelta(minutes=4)) is not None


def test_csrf_must_be_this_sessions(home: Home) -> None:
    _op, token = operators.add(home, "dave")
    cookie, made = session.sign_in(home, token)
    _other, theirs = session.sign_in(home, token)
    assert session.require(home, cookie, made.csrf).operator == "dave"
    for wrong in (None, "", theirs.csrf, made.csrf + "x"):
        with pytest.raises(OpsError) as caught:
            session.require(home, cookie, wrong)
        assert caught.value.code == "CSRF_INVALID"
    with pytest.raises(OpsError) as caught:
        session.require(home, None, made.csrf)
    assert caught.value.code == "SESSION_REQUIRED"
