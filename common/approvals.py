"""Two-key approval requests (DESIGN section 10), state/approvals.json.

An approval has a kind (`real_enable`), is bound to one subject (its window), expires `approval_ttl_hours` after
it was requested, and takes key 1 and key 2 from two different operators. The second key uses it: it can never
approve anything again. The rules live here as functions over one record; common.window stores and applies them.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from common import formats, statefile
from common.errors import REFUSED, OpsError
from common.home import Home

FILE = "approvals.json"
SCHEMA = formats.APPROVALS
REAL_ENABLE = "real_enable"
PENDING, USED, EXPIRED = "PENDING", "USED", "EXPIRED"
KEYS = ("1", "2")


def _path(home: Home) -> Path:
    return home.state / FILE


def load_all(home: Home) -> dict[str, dict]:
    return statefile.load_records(_path(home), SCHEMA, "approvals", _valid, "{id: {kind, subject, expires_at, keys}}")


def save_all(home: Home, recs: dict[str, dict]) -> None:
    statefile.save(_path(home), {"schema": SCHEMA, "approvals": recs})


def _valid(rec: Any) -> bool:
    try:
        keys = rec["keys"]
        dt.datetime.fromisoformat(rec["expires_at"])
        return isinstance(rec["subject"], str) and isinstance(keys, dict) and set(keys) <= set(KEYS) and all(
            isinstance(k.get("operator"), str) and dt.datetime.fromisoformat(k["at"]) for k in keys.values())
    except (KeyError, TypeError, ValueError, AttributeError):
        return False


def new(approval_id: str, kind: str, subject: str, by: str, now: dt.datetime, ttl_hours: float) -> dict:
    return {"id": approval_id, "kind": kind, "subject": subject, "requested_by": by,
            "requested_at": now.isoformat(timespec="seconds"),
            "expires_at": (now + dt.timedelta(hours=ttl_hours)).isoformat(timespec="seconds"),
            "keys": {}, "used_at": None}


def complete(rec: dict) -> bool:
    """Both keys given, by two different operators."""
    keys = rec["keys"]
    return set(keys) == set(KEYS) and keys["1"]["operator"] != keys["2"]["operator"]


def state(rec: dict, now: dt.datetime) -> str:
    if complete(rec) and rec.get("used_at"):
        return USED
    return EXPIRED if now >= dt.datetime.fromisoformat(rec["expires_at"]) else PENDING


def add_key(rec: dict, key: str, operator: str, now: dt.datetime) -> bool:
    """Record `key` by `operator` on `rec` (in place); True when this was the second key (the approval is used).
    Raises OpsError (exit 2) for every broken rule."""
    rid = rec["id"]
    if key not in KEYS:
        raise OpsError("BAD_KEY", f"approval {rid}: key must be 1 or 2, got {key!r}", 3)
    current = state(rec, now)
    if current == USED:
        raise OpsError("APPROVAL_USED", f"approval {rid} was used at {rec['used_at']}: an approval is used once")
    if current == EXPIRED:
        raise OpsError("APPROVAL_EXPIRED", f"approval {rid} expired at {rec['expires_at']}: request a new window")
    given = rec["keys"].get(key)
    if given:
        raise OpsError("KEY_ALREADY_GIVEN", f"approval {rid}: key {key} was given by {given['operator']} at "
                       f"{given['at']}")
    other = rec["keys"].get("2" if key == "1" else "1")
    if other and other["operator"] == operator:
        raise OpsError("SAME_OPERATOR", f"approval {rid}: {operator} gave the other key; the two keys must come "
                       "from two different operators", REFUSED)
    rec["keys"][key] = {"operator": operator, "at": now.isoformat(timespec="seconds")}
    if complete(rec):
        rec["used_at"] = now.isoformat(timespec="seconds")
        return True
    return False


def view(rec: dict, now: dt.datetime) -> dict[str, Any]:
    """The approval as `krx ops approval status` shows it: state, keys with operators and times, TTL left."""
    current = state(rec, now)
    left = (dt.datetime.fromisoformat(rec["expires_at"]) - now).total_seconds()
    return {"id": rec["id"], "kind": rec["kind"], "subject": rec["subject"], "state": current,
            "requested_by": rec.get("requested_by"), "requested_at": rec.get("requested_at"),
            "expires_at": rec["expires_at"], "ttl_left_s": int(left) if current == PENDING and left > 0 else 0,
            "keys": {k: rec["keys"].get(k) for k in KEYS}, "used_at": rec.get("used_at")}
