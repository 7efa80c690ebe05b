"""Redaction, defined once: every secret the project knows (the environment's values of config.SECRET_NAMES and
any given), Slack token shapes and webhook URLs, and credentials inside URLs, replaced by one marker, `***`.

Whatever reaches a log line, Slack, a receipt, an HTTP answer or an exception text that might carry a secret goes
through `redact` first."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from common import config

MARK = "***"
# Slack token shapes (xoxb-, xoxp-, xoxa-, xoxr-, xoxs-, xoxe.xoxp-, xapp-) and incoming-webhook URLs
_PATTERNS = [
    re.compile(r"xox[a-z]?(?:\.[a-z]+)?-[A-Za-z0-9-]+"),
    re.compile(r"xapp-[A-Za-z0-9-]+"),
    re.compile(r"https?://hooks\.slack(?:-gov)?\.com/[^\s\"'<>]*", re.IGNORECASE),
]
_URL_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s]+@")  # up to the last @ before the host


def known_secrets() -> list[str]:
    """The values of every secret the project reads, as the environment holds them now."""
    return [s for s in map(config.secret, config.SECRET_NAMES) if s]


def redact(text: Any, secrets: Iterable[str] = ()) -> str:
    """`text` with the given secrets, the known ones, Slack tokens and webhooks, and URL credentials
    (https://user:token@host -> https://***@host) replaced by MARK."""
    out = str(text)
    for secret in sorted({*secrets, *known_secrets()}, key=len, reverse=True):
        if secret and len(secret) >= 6:  # a tiny "secret" would blank ordinary words
            out = out.replace(secret, MARK)
    for pattern in _PATTERNS:
        out = pattern.sub(MARK, out)
    return _URL_USERINFO.sub(rf"\1{MARK}@", out)
