"""The safety switches under state/ (DESIGN section 9): emergency stop, sender switch, execution gate.

Files: state/emergency_stop.json, state/sender.json, state/gate.json, written atomically. A missing file means the
default (emergency stop off, sender OFF, gate DRY_RUN). A file that cannot be read or parsed means stopped, never
"go": the emergency stop reads as on, the sender as off, the gate as MOCK_ONLY with `readable=False`.
Every change is appended to the event log (common.events) with who (user@host), when and why.

`external_send_allowed(home)` is the one question a job asks before anything leaves the machine (Slack, ...).
"""

from __future__ import annotations

import os
import stat
from collections.abc import MutableMapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from common import atomic, events, safeio
from common.home import Home
from common.log import now

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


class SwitchError(ValueError):
    """A switch change was refused (bad value, missing reason, REAL_ENABLED without approval)."""


@dataclass(frozen=True)
class Switch:
    name: str              # "emergency_stop" | "sender"
    on: bool               # the effective value (fail-closed when unreadable)
    by: str                # user@host of the last change; "default" when never set
    at: str | None         # ISO time of the last change
    reason: str            # why
    readable: bool = True  # False: the state file is damaged and `on` is the fail-closed value
    error: str | None = None

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
            aside = path.with_name(f".{filename}.damaged-{now():%Y%m%d%H%M%S}-{os.getpid()}")
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
    return Switch(name, data["on"], str(data.get("by", "unknown")), data.get("at"), str(data.get("reason", "")))


def _check_reason(reason: str) -> str:
    reason = " ".join(str(reason or "").split())
    if not reason:
        raise SwitchError("a reason is required for every switch change (it goes into the event log)")
    return reason


def _set_switch(home: Home | str | os.PathLike, name: str, filename: str, on: bool, reason: str,
                current: Switch) -> Switch:
    if not isinstance(on, bool):
        raise SwitchError(f"{name}: expected on=True or on=False, got {on!r}")
    home = Home.of(home)
    reason = _check_reason(reason)
    record = {"schema": "switch/1", "name": name, "on": on, "by": events.who(),
              "at": now().isoformat(timespec="seconds"), "reason": reason}
    replaced = _replace(home, filename, record)
    events.append(home, f"{name.upper()}_{'ON' if on else 'OFF'}", switch=name, on=on,
                  previous=current.on if current.readable else "unreadable", reason=reason,
                  **({} if current.readable else {"replaced_damaged": replaced or current.error}))
    return Switch(name, on, record["by"], record["at"], reason)


def emergency_stop(home: Home | str | os.PathLike) -> Switch:
    """The emergency stop: off by default; on when its file is unreadable."""
    return _switch(home, "emergency_stop", ESTOP_FILE, default=False, fail_closed=True)


def set_emergency_stop(home: Home | str | os.PathLike, on: bool, reason: str) -> Switch:
    return _set_switch(home, "emergency_stop", ESTOP_FILE, on, reason, emergency_stop(home))


def sender(home: Home | str | os.PathLike) -> Switch:
    """The sender switch: OFF on a fresh home and when its file is unreadable."""
    return _switch(home, "sender", SENDER_FILE, default=False, fail_closed=False)


def set_sender(home: Home | str | os.PathLike, on: bool, reason: str) -> Switch:
    return _set_switch(home, "sender", SENDER_FILE, on, reason, sender(home))


def gate_state(home: Home | str | os.PathLike) -> Gate:
    """The execution gate with who set it; MOCK_ONLY and readable=False when the file is damaged."""
    path = Home.of(home).state / GATE_FILE
    data, error = _read(path)
    if error is None and data is not None and data.get("mode") not in GATE_MODES:
        error = f"{GATE_FILE}: mode {data.get('mode')!r} is not one of {', '.join(GATE_MODES)}"
    if error is None and data is not None and data.get("mode") == REAL_ENABLED:
        # REAL_ENABLED needs a two-key approval that does not exist yet: a hand-written file cannot grant it
        error = f"{GATE_FILE}: REAL_ENABLED without a two-key approval"
    if error:
        return Gate(MOCK_ONLY, "unknown", None, error, readable=False, error=error)
    if data is None:
        return Gate(DEFAULT_GATE, "default", None, "never set")
    return Gate(data["mode"], str(data.get("by", "unknown")), data.get("at"), str(data.get("reason", "")))


def gate(home: Home | str | os.PathLike) -> str:
    """MOCK_ONLY | DRY_RUN | REAL_ENABLED; DRY_RUN by default, MOCK_ONLY (the most closed) when unreadable."""
    return gate_state(home).mode


def set_gate(home: Home | str | os.PathLike, mode: str, reason: str) -> Gate:
    home = Home.of(home)
    mode = str(mode).upper()
    if mode not in GATE_MODES:
        raise SwitchError(f"gate: expected one of {', '.join(GATE_MODES)}, got {mode!r}")
    reason = _check_reason(reason)
    current = gate_state(home)
    if mode == REAL_ENABLED:
        events.append(home, "GATE_CHANGE_REFUSED", requested=mode, current=current.mode, reason=reason,
                      why="two-key approval required")
        raise SwitchError("gate: REAL_ENABLED is refused: it needs a two-key approval, and the approval "
                          "workflow does not exist yet; the gate stays " + current.mode)
    record = {"schema": "gate/1", "mode": mode, "by": events.who(),
              "at": now().isoformat(timespec="seconds"), "reason": reason}
    replaced = _replace(home, GATE_FILE, record)
    events.append(home, "GATE_SET", mode=mode, previous=current.mode if current.readable else "unreadable",
                  reason=reason, **({} if current.readable else {"replaced_damaged": replaced or current.error}))
    return Gate(mode, record["by"], record["at"], reason)


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
