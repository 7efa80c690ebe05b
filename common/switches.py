"""The safety switches under state/ (DESIGN section 9): emergency stop, sender switch, execution gate.

Files: state/emergency_stop.json, state/sender.json, state/gate.json, written atomically. A missing file means the
default (emergency stop off, sender OFF, gate DRY_RUN). A file that cannot be read or parsed means stopped, never
"go": the emergency stop reads as on, the sender as off, the gate as MOCK_ONLY with `readable=False`.
Every change is appended to the event log (common.events) with who (the operator, else user@host), when and why.

The gate's REAL_ENABLED is set only while a two-key window is ACTIVE (common.window) and names that window; the
*effective* gate (`gate`, `effective_gate`) reads REAL_ENABLED as DRY_RUN once the window is no longer ACTIVE, so an
expired window needs no clean-up, and a hand-written REAL_ENABLED without a window is unreadable (MOCK_ONLY).

`external_send_allowed(home)` is the one question a job asks before anything leaves the machine (Slack, ...).
"""

from __future__ import annotations

import datetime as dt
import os
import stat
from collections.abc import MutableMapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from common import atomic, events, safeio, window
from common.errors import FAILED, REFUSED, OpsError
from common.home import Home
from common.log import now as clock_now

ESTOP_FILE = "emergency_stop.json"
SENDER_FILE = "sender.json"
GATE_FILE = "gate.json"

MOCK_ONLY, DRY_RUN, REAL_ENABLED = "MOCK_ONLY", "DRY_RUN", "REAL_ENABLED"
GATE_MODES = (MOCK_ONLY, DRY_RUN, REAL_ENABLED)
DEFAULT_GATE = DRY_RUN

# MOCK_ONLY means no external call of any kind: these config overrides (read before any YAML value) force the
# embedded sample source and keep Slack off, for the alert and for the ERROR log alike.
MOCK_ONLY_ENV = {
    "KRX__APP__SOURCE": "sample",
    "KRX__NOTIFY__DELIVERY_POLICY": "CONSOLE_ONLY",
    "KRX__NOTIFY__ERROR_LOG_TO_SLACK": "false",
}


class SwitchError(OpsError, ValueError):
    """A switch change was refused (bad value, missing reason, REAL_ENABLED without an ACTIVE window)."""

    def __init__(self, message: str, code: str = "SWITCH_REFUSED", exit_code: int = REFUSED):
        super().__init__(code, message, exit_code)

    def __str__(self) -> str:  # the message alone, as before the codes: callers print it after the switch name
        return self.message


@dataclass(frozen=True)
class Switch:
    name: str              # "emergency_stop" | "sender"
    on: bool               # the effective value (fail-closed when unreadable)
    by: str                # user@host of the last change; "default" when never set
    at: str | None         # ISO time of the last change
    reason: str            # why
    readable: bool = True  # False: the state file is damaged and `on` is the fail-closed value
    error: str | None = None
    channel: str | None = None  # the sender's real channel (SLACK) when it was turned on with one

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Gate:
    mode: str              # MOCK_ONLY | DRY_RUN | REAL_ENABLED (MOCK_ONLY when unreadable)
    by: str
    at: str | None
    reason: str
    readable: bool = True
    error: str | None = None
    window_id: str | None = None  # REAL_ENABLED: the ACTIVE window it was set under

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _read(path: Path) -> tuple[dict | None, str | None]:
    """(data, None), (None, None) when absent, or (None, error) when unreadable. Never hangs (a FIFO), never reads
    without bound (a symbolic link to /dev/zero) and never crashes (a file nested 100k levels deep)."""
    try:
        data = safeio.read_json(path)
    except FileNotFoundError:
        return None, None
    except ValueError as exc:
        return None, str(exc)
    except OSError as exc:
        return None, f"cannot read {path.name}: {exc.strerror or exc}"
    if not isinstance(data, dict):
        return None, f"{path.name} does not hold a JSON object"
    return data, None


def _replace(home: Home, filename: str, record: dict) -> str | None:
    """Write a switch file atomically, also over a damaged one (a folder, a FIFO or a link where the file should
    be, which a rename cannot replace): that is moved aside first. Returns what was replaced, or None."""
    path = home.state / filename
    replaced = None
    try:
        st = path.lstat()
        if not stat.S_ISREG(st.st_mode):
            replaced = f"a {safeio.file_kind(st.st_mode)}"
            aside = path.with_name(f".{filename}.damaged-{clock_now():%Y%m%d%H%M%S}-{os.getpid()}")
            os.replace(path, aside)
            replaced += f", moved aside to {aside.name}"
    except FileNotFoundError:
        pass
    atomic.write_json(path, record)
    return replaced


def _switch(home: Home | str | os.PathLike, name: str, filename: str, default: bool, fail_closed: bool) -> Switch:
    path = Home.of(home).state / filename
    data, error = _read(path)
    if error is None and data is not None and not isinstance(data.get("on"), bool):
        error = f"{filename}: 'on' is not true or false"
    if error:
        return Switch(name, fail_closed, "unknown", None, error, readable=False, error=error)
    if data is None:
        return Switch(name, default, "default", None, "never set")
    channel = data.get("channel") if isinstance(data.get("channel"), str) else None
    return Switch(name, data["on"], str(data.get("by", "unknown")), data.get("at"), str(data.get("reason", "")),
                  channel=channel)


def _check_reason(reason: str) -> str:
    reason = " ".join(str(reason or "").split())
    if not reason:
        raise SwitchError("a reason is required for every switch change (it goes into the event log)",
                          "REASON_REQUIRED", FAILED)
    return reason


def _set_switch(home: Home | str | os.PathLike, name: str, filename: str, on: bool, reason: str,
                current: Switch, operator: str | None = None, channel: str | None = None) -> Switch:
    if not isinstance(on, bool):
        raise SwitchError(f"{name}: expected on=True or on=False, got {on!r}")
    home = Home.of(home)
    reason = _check_reason(reason)
    channel = channel if on else None
    record = {"schema": "switch/1", "name": name, "on": on, "by": operator or events.who(),
              "at": clock_now().isoformat(timespec="seconds"), "reason": reason, "channel": channel}
    replaced = _replace(home, filename, record)
    events.append(home, f"{name.upper()}_{'ON' if on else 'OFF'}", switch=name, on=on, operator=operator,
                  previous=current.on if current.readable else "unreadable", reason=reason, channel=channel,
                  **({} if current.readable else {"replaced_damaged": replaced or current.error}))
    return Switch(name, on, record["by"], record["at"], reason, channel=channel)


def emergency_stop(home: Home | str | os.PathLike) -> Switch:
    """The emergency stop: off by default; on when its file is unreadable."""
    return _switch(home, "emergency_stop", ESTOP_FILE, default=False, fail_closed=True)


def set_emergency_stop(home: Home | str | os.PathLike, on: bool, reason: str, *,
                       operator: str | None = None) -> Switch:
    return _set_switch(home, "emergency_stop", ESTOP_FILE, on, reason, emergency_stop(home), operator)


def sender(home: Home | str | os.PathLike) -> Switch:
    """The sender switch: OFF on a fresh home and when its file is unreadable."""
    return _switch(home, "sender", SENDER_FILE, default=False, fail_closed=False)


SENDER_CHANNELS = ("SLACK",)


def set_sender(home: Home | str | os.PathLike, on: bool, reason: str, *, operator: str | None = None,
               channel: str | None = None) -> Switch:
    """`channel` names the real channel the live fire sends through (SLACK); kept only while the sender is on."""
    if channel is not None and channel not in SENDER_CHANNELS:
        raise SwitchError(f"sender: channel must be one of {', '.join(SENDER_CHANNELS)}, got {channel!r}",
                          "BAD_CHANNEL", 3)
    return _set_switch(home, "sender", SENDER_FILE, on, reason, sender(home), operator, channel)


def gate_state(home: Home | str | os.PathLike) -> Gate:
    """The execution gate with who set it; MOCK_ONLY and readable=False when the file is damaged."""
    path = Home.of(home).state / GATE_FILE
    data, error = _read(path)
    if error is None and data is not None and data.get("mode") not in GATE_MODES:
        error = f"{GATE_FILE}: mode {data.get('mode')!r} is not one of {', '.join(GATE_MODES)}"
    if error is None and data is not None and data.get("mode") == REAL_ENABLED and not isinstance(
            data.get("window_id"), str):
        # set_gate always names the window: a REAL_ENABLED without one was written by hand
        error = f"{GATE_FILE}: REAL_ENABLED without a real-enable window"
    if error:
        return Gate(MOCK_ONLY, "unknown", None, error, readable=False, error=error)
    if data is None:
        return Gate(DEFAULT_GATE, "default", None, "never set")
    return Gate(data["mode"], str(data.get("by", "unknown")), data.get("at"), str(data.get("reason", "")),
                window_id=data.get("window_id") if data["mode"] == REAL_ENABLED else None)


def effective_gate(home: Home | str | os.PathLike, *, now: dt.datetime | None = None) -> str:
    """The gate every reader uses: REAL_ENABLED only while the window it was set under is ACTIVE, else DRY_RUN;
    MOCK_ONLY when the file is unreadable."""
    g = gate_state(home)
    if g.mode != REAL_ENABLED:
        return g.mode
    current = window.active(Home.of(home), now=now)
    return REAL_ENABLED if current is not None and current["id"] == g.window_id else DRY_RUN


def gate(home: Home | str | os.PathLike) -> str:
    """The effective gate: MOCK_ONLY | DRY_RUN | REAL_ENABLED; DRY_RUN by default, MOCK_ONLY when unreadable."""
    return effective_gate(home)


def set_gate(home: Home | str | os.PathLike, mode: str, reason: str, *, operator: str | None = None,
             now: dt.datetime | None = None) -> Gate:
    home = Home.of(home)
    mode = str(mode).upper()
    if mode not in GATE_MODES:
        raise SwitchError(f"gate: expected one of {', '.join(GATE_MODES)}, got {mode!r}")
    reason = _check_reason(reason)
    current = gate_state(home)
    active = None
    if mode == REAL_ENABLED:
        active = window.active(home, now=now)
        code, why = (("OPERATOR_REQUIRED", "it needs an operator") if not operator else
                     ("WINDOW_NOT_ACTIVE", "no real-enable window is ACTIVE") if active is None else ("", ""))
        if code:
            events.append(home, "GATE_CHANGE_REFUSED", requested=mode, current=current.mode, reason=reason,
                          operator=operator, code=code, why=why)
            raise SwitchError(f"gate: REAL_ENABLED is refused: {why}; it needs a window with a two-key approval "
                              f"(krx ops window request, then two operators approve); the gate stays {current.mode}",
                              code)
    record = {"schema": "gate/1", "mode": mode, "by": operator or events.who(),
              "at": (now or clock_now()).isoformat(timespec="seconds"), "reason": reason,
              "window_id": active["id"] if active else None}
    replaced = _replace(home, GATE_FILE, record)
    events.append(home, "GATE_SET", mode=mode, previous=current.mode if current.readable else "unreadable",
                  reason=reason, operator=operator, window_id=record["window_id"],
                  **({} if current.readable else {"replaced_damaged": replaced or current.error}))
    return Gate(mode, record["by"], record["at"], reason, window_id=record["window_id"])


def enforce_mock_only(home: Home | str | os.PathLike, environ: MutableMapping[str, str] | None = None) -> bool:
    """When the gate is MOCK_ONLY (or unreadable), put MOCK_ONLY_ENV into `environ` (os.environ by default) so this
    process and its children load a config with no external channel; returns whether it did."""
    if gate(home) != MOCK_ONLY:
        return False
    (os.environ if environ is None else environ).update(MOCK_ONLY_ENV)
    return True


def external_send_allowed(home: Home | str | os.PathLike) -> tuple[bool, str]:
    """(True, "") only when the emergency stop is readable and off, the sender readable and on, and the gate
    readable and not MOCK_ONLY; otherwise (False, why)."""
    stop = emergency_stop(home)
    if not stop.readable:
        return False, f"emergency stop state unreadable ({stop.error}): treated as on"
    if stop.on:
        return False, f"emergency stop is on (by {stop.by} at {stop.at}: {stop.reason})"
    snd = sender(home)
    if not snd.readable:
        return False, f"sender state unreadable ({snd.error}): treated as off"
    if not snd.on:
        return False, "sender switch is off" + ("" if snd.by == "default" else f" (by {snd.by}: {snd.reason})")
    g = gate_state(home)
    if not g.readable:
        return False, f"gate state unreadable ({g.error}): treated as MOCK_ONLY"
    if g.mode == MOCK_ONLY:
        return False, "gate is MOCK_ONLY: no external call of any kind"
    return True, ""
