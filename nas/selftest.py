"""`krx ops self-test`: which secrets each enabled channel and source needs, and whether each is present.

Only presence is ever reported: never a value, a prefix, a length or a hash of one. The same check feeds the
cycle's preflight (credentials for the configured source and delivery) and the summary's SECRETS_MISSING.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from common import config
from common.home import Home

KRX_SECRETS = ("KRX_ID", "KRX_PW")
SLACK_SECRETS = ("SLACK_BOT_TOKEN", "SLACK_WEBHOOK_URL")  # either one is enough


@dataclass
class Requirement:
    channel: str              # e.g. "source:pykrx", "alert:slack", "error_log:slack"
    enabled: bool
    required: bool            # False: the channel works without it (it is skipped, not broken)
    any_of: bool              # True: one of `secrets` is enough; False: all are needed
    secrets: dict[str, bool] = field(default_factory=dict)  # name -> present
    note: str = ""

    @property
    def complete(self) -> bool:
        if not self.enabled:
            return True
        found = [v for v in self.secrets.values()]
        return any(found) if self.any_of else all(found)

    def to_dict(self) -> dict:
        return {"channel": self.channel, "enabled": self.enabled, "required": self.required,
                "any_of": self.any_of, "secrets": dict(self.secrets), "complete": self.complete, "note": self.note}


def _present(name: str, env: Mapping[str, str] | None) -> bool:
    if env is None:
        return config.secret(name) is not None
    return bool(str(env.get(name, "")).strip())


def requirements(app: Mapping[str, Any], notify: Mapping[str, Any],
                 env: Mapping[str, str] | None = None) -> list[Requirement]:
    """The secret requirements of the validated app.yaml and notify.yaml; secrets looked up in `env` (the process's
    secrets, .env included, by default)."""
    source = app["source"]
    slack_alert = notify["delivery_policy"] == "SLACK"
    out = [
        Requirement(f"source:{source}", True, source == "pykrx", False,
                    {n: _present(n, env) for n in KRX_SECRETS} if source == "pykrx" else {},
                    "KRX data is members-only: pykrx needs a login" if source == "pykrx" else "embedded, no secret"),
        Requirement("alert:slack", slack_alert, True, True, {n: _present(n, env) for n in SLACK_SECRETS},
                    "delivery_policy SLACK" if slack_alert else "delivery_policy CONSOLE_ONLY: not used"),
        # The ERROR log goes to Slack only when a token or webhook is present (issue 4): without one the errors
        # stay in logs/, which is reported but does not fail the self-test.
        Requirement("error_log:slack", bool(notify["error_log_to_slack"]), False, True,
                    {n: _present(n, env) for n in SLACK_SECRETS},
                    "error_log_to_slack true" if notify["error_log_to_slack"] else "error_log_to_slack false"),
    ]
    return out


def home_requirements(home: Home, env: Mapping[str, str] | None = None) -> list[Requirement]:
    """requirements() of the home's configs as `env` (os.environ by default) selects them. Raises ConfigError."""
    env_cfg = os.environ if env is None else env
    return requirements(config.load("app", home, env=env_cfg), config.load("notify", home, env=env_cfg), env)


def missing(reqs: list[Requirement]) -> list[Requirement]:
    """Enabled, required channels whose secrets are incomplete."""
    return [r for r in reqs if r.enabled and r.required and not r.complete]


def run(home: Home, env: Mapping[str, str] | None = None) -> int:
    """Print the self-test; 0 when every required secret is present, 1 when not (or the config is invalid)."""
    try:
        reqs = home_requirements(home, env)
    except config.ConfigError as exc:
        print(f"self-test: config error: {exc}")
        return 1
    print("secrets self-test (presence only; values are never shown)")
    for r in reqs:
        state = "disabled" if not r.enabled else ("ok" if r.complete else ("MISSING" if r.required else "absent"))
        rule = "one of" if r.any_of else "all of"
        print(f"  {r.channel:<18} {state:<8} {r.note}")
        if r.enabled and r.secrets:
            print(f"    needs {rule}: " + ", ".join(f"{n}={'present' if p else 'missing'}"
                                                   for n, p in r.secrets.items()))
    bad = missing(reqs)
    if bad:
        print("self-test: INCOMPLETE: " + ", ".join(r.channel for r in bad))
        return 1
    print("self-test: complete")
    return 0
