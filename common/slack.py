"""The one Slack sender: the day's alert and the ERROR log both go out through here.

- `SLACK_BOT_TOKEN` set: slack-sdk `WebClient.chat_postMessage(channel=, text=, blocks=)`, Block Kit blocks plus a
  plain-text fallback; `SLACK_API_URL` (e.g. `http://127.0.0.1:8765/api/`) overrides Slack's base URL.
- only `SLACK_WEBHOOK_URL` set: `slack_sdk.webhook.WebhookClient.send(text=, blocks=)` (the webhook's own channel).

Messages are split under Slack's limits (50 blocks per message, 3000 characters per section text, ~40k characters
of text). Retries are slack-sdk's own, bounded: one for a dropped connection, one for HTTP 500/503, and
`RateLimitErrorRetryHandler` for HTTP 429, which sleeps what Retry-After says. No token or webhook URL ever reaches
a log line, an exception text or a receipt: `redact()` scrubs them, and slack-sdk gets a quiet logger of its own
(its DEBUG lines would print the webhook URL).
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass, field
from typing import Any

from slack_sdk.http_retry.builtin_handlers import (
    ConnectionErrorRetryHandler,
    RateLimitErrorRetryHandler,
    ServerErrorRetryHandler,
)

from common import config
from common.errors import AlertorError
from common.log import now
from common.redact import redact

TOKEN_ENV = "SLACK_BOT_TOKEN"
WEBHOOK_ENV = "SLACK_WEBHOOK_URL"
API_URL_ENV = "SLACK_API_URL"

MAX_BLOCKS = 50             # blocks per message
MAX_SECTION_TEXT = 3000     # characters in one section block's text
MAX_HEADER_TEXT = 150       # characters in a header block's plain text
MAX_TEXT = 39_000           # characters per message (Slack truncates `text` at 40,000): a margin for the fallback


# slack-sdk logs through this logger only: never propagated, never shown. Its ERROR lines name the failure we
# report ourselves (without secrets), and at DEBUG it would print request bodies and the webhook URL.
_sdk_logger = logging.getLogger("slack_sdk.krx")
_sdk_logger.propagate = False
_sdk_logger.setLevel(logging.CRITICAL)
_sdk_logger.addHandler(logging.NullHandler())

log = logging.getLogger("krx.slack")


class SlackSendError(AlertorError, RuntimeError):
    """A message could not be delivered after slack-sdk's bounded retries. The text is already redacted."""

    def __init__(self, message: str, *, sent_ts: list[str] | None = None, status: int | None = None):
        super().__init__(message)
        self.sent_ts = sent_ts or []   # parts that did go out before the failure
        self.status = status


# --- Block Kit --------------------------------------------------------------------------------------------------


def escape(text: str) -> str:
    """Escape the three characters Slack's mrkdwn treats as control characters."""
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def header(text: str) -> dict:
    text = str(text)
    if len(text) > MAX_HEADER_TEXT:
        text = text[: MAX_HEADER_TEXT - 1] + "…"
    return {"type": "header", "text": {"type": "plain_text", "text": text, "emoji": True}}


def section(text: str) -> dict:
    """One mrkdwn section; longer texts are split by `split_blocks`."""
    return {"type": "section", "text": {"type": "mrkdwn", "text": str(text)}}


def context(text: str) -> dict:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": str(text)[:MAX_SECTION_TEXT]}]}


def divider() -> dict:
    return {"type": "divider"}


def _split_text(text: str, limit: int) -> list[str]:
    """Pieces of at most `limit` characters, cut at line ends where possible."""
    pieces: list[str] = []
    while len(text) > limit:
        cut = text.rfind("\n", 0, limit + 1)
        if cut <= 0:
            cut = limit
        pieces.append(text[:cut])
        text = text[cut:].lstrip("\n")
    if text or not pieces:
        pieces.append(text)
    return pieces


def _block_text(block: dict) -> str:
    if block.get("type") in ("section", "header"):
        return str(block.get("text", {}).get("text", ""))
    if block.get("type") == "context":
        return " ".join(str(e.get("text", "")) for e in block.get("elements", []))
    return ""


def split_blocks(blocks: list[dict]) -> list[dict]:
    """The blocks with every section text over 3000 characters cut into several sections."""
    out: list[dict] = []
    for block in blocks:
        text = block.get("text", {}).get("text") if block.get("type") == "section" else None
        if isinstance(text, str) and len(text) > MAX_SECTION_TEXT:
            out.extend(section(piece) for piece in _split_text(text, MAX_SECTION_TEXT))
        else:
            out.append(block)
    return out


@dataclass
class Message:
    """One chat.postMessage payload (without the channel): fallback text and blocks."""

    text: str
    blocks: list[dict] = field(default_factory=list)


def build_messages(blocks: list[dict], text: str | None = None) -> list[Message]:
    """Split blocks into messages within Slack's limits. Each message's fallback text is `text` when everything
    fits in one message, otherwise the text of that message's own blocks (so notifications stay meaningful)."""
    blocks = split_blocks(blocks)
    groups: list[list[dict]] = [[]]
    size = 0
    for block in blocks:
        n = len(_block_text(block))
        if groups[-1] and (len(groups[-1]) >= MAX_BLOCKS or size + n > MAX_TEXT):
            groups.append([])
            size = 0
        groups[-1].append(block)
        size += n
    messages = []
    for i, group in enumerate(groups):
        if len(groups) == 1 and text is not None:
            fallback = text
        else:
            fallback = "\n".join(t for t in map(_block_text, group) if t)
            if len(groups) > 1:
                fallback = f"({i + 1}/{len(groups)}) {fallback}"
        if len(fallback) > MAX_TEXT:
            fallback = fallback[: MAX_TEXT - 20] + "\n… (truncated)"
        messages.append(Message(fallback or " ", group))
    if not blocks and text is not None:  # a text-only message
        messages = [Message(piece) for piece in _split_text(text, MAX_TEXT)]
    return messages


# --- sending ----------------------------------------------------------------------------------------------------


@dataclass
class Receipt:
    """What was delivered: never holds a token or a webhook URL."""

    via: str            # "web" (chat.postMessage) or "webhook"
    channel: str        # the channel asked for (a webhook posts to its own channel)
    ts: list[str]       # Slack's message timestamps, one per part ("" for a webhook, which returns none)
    sent_at: str
    parts: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def retry_handlers(rate_limit_retries: int = 2) -> list:
    """slack-sdk's own bounded retries: a dropped connection once, HTTP 500/503 once, HTTP 429 after Retry-After."""
    return [
        ConnectionErrorRetryHandler(max_retry_count=1),
        ServerErrorRetryHandler(max_retry_count=1),
        RateLimitErrorRetryHandler(max_retry_count=max(0, rate_limit_retries)),
    ]


class Sender:
    """Posts messages to one channel through the Web API (token) or an incoming webhook."""

    def __init__(
        self,
        channel: str,
        *,
        token: str | None = None,
        webhook_url: str | None = None,
        base_url: str | None = None,
        timeout_s: int = 10,
        rate_limit_retries: int = 2,
    ):
        if not token and not webhook_url:
            raise ValueError(f"no Slack credentials: set {TOKEN_ENV} or {WEBHOOK_ENV}")
        self.channel = channel
        self._secrets = [s for s in (token, webhook_url) if s]
        handlers = retry_handlers(rate_limit_retries)
        if token:
            from slack_sdk import WebClient

            kwargs: dict[str, Any] = {"base_url": base_url} if base_url else {}
            self.via = "web"
            self._client = WebClient(token=token, timeout=timeout_s, logger=_sdk_logger, retry_handlers=handlers,
                                     **kwargs)
        else:
            from slack_sdk.webhook import WebhookClient

            self.via = "webhook"
            self._client = WebhookClient(webhook_url, timeout=timeout_s, logger=_sdk_logger, retry_handlers=handlers)

    def __repr__(self) -> str:  # never the token or the URL
        return f"Sender(channel={self.channel!r}, via={self.via!r})"

    def payloads(self, messages: list[Message]) -> list[dict]:
        """Exactly what goes over the wire for each message (the outbox records these)."""
        out = []
        for m in messages:
            payload: dict[str, Any] = {"text": m.text}
            if m.blocks:
                payload["blocks"] = m.blocks
            if self.via == "web":
                payload = {"channel": self.channel, **payload}
            out.append(payload)
        return out

    def _post(self, payload: dict) -> str:
        if self.via == "web":
            resp = self._client.chat_postMessage(**payload)  # raises SlackApiError on HTTP or API errors
            return str(resp.get("ts") or "")
        resp = self._client.send(**payload)
        if resp.status_code != 200:
            raise _WebhookStatus(resp.status_code, str(resp.body)[:200])
        return ""

    def send(self, messages: list[Message]) -> Receipt:
        """Post every message in order; raise SlackSendError (redacted) when one fails after the retries."""
        sent: list[str] = []
        payloads = self.payloads(messages)
        for i, payload in enumerate(payloads):
            error = None
            try:
                sent.append(self._post(payload))
            except Exception as exc:  # slack-sdk, urllib and socket errors alike: one redacted summary
                where = f" (part {i + 1}/{len(payloads)})" if len(payloads) > 1 else ""
                text = redact(f"Slack {self.via} post to {self.channel} failed{where}: {_describe(exc)}",
                              self._secrets)
                error = SlackSendError(text, sent_ts=sent, status=_status_of(exc))
            if error is not None:  # raised out here so it carries no context (the sdk's request holds the token)
                raise error
        return Receipt(self.via, self.channel, sent, now().isoformat(timespec="seconds"), len(sent))

    def post(self, blocks: list[dict] | None = None, text: str | None = None) -> Receipt:
        """Build the messages (split under Slack's limits) and send them."""
        return self.send(build_messages(blocks or [], text))


class _WebhookStatus(Exception):
    def __init__(self, status: int, body: str):
        super().__init__(f"HTTP {status}: {body}")
        self.status = status


def _status_of(exc: BaseException) -> int | None:
    status = getattr(exc, "status", None)
    if status is None:
        status = getattr(getattr(exc, "response", None), "status_code", None)
    return status if isinstance(status, int) else None


def _describe(exc: BaseException) -> str:
    """A short cause without the response's request arguments (which carry the Authorization header)."""
    from slack_sdk.errors import SlackApiError

    if isinstance(exc, SlackApiError):
        resp = exc.response
        error = resp.get("error") if isinstance(resp.data, dict) else None
        return f"HTTP {resp.status_code}" + (f": {error}" if error else "")
    reason = getattr(exc, "reason", None)
    return f"{type(exc).__name__}: {reason if reason is not None else exc}"


def configured() -> bool:
    """True when a bot token or a webhook URL is present in the environment."""
    return bool(config.secret(TOKEN_ENV) or config.secret(WEBHOOK_ENV))


def sender(channel: str, *, timeout_s: int = 10, rate_limit_retries: int = 2) -> Sender | None:
    """The sender the environment allows (the bot token wins over the webhook), or None without credentials."""
    token, webhook = config.secret(TOKEN_ENV), config.secret(WEBHOOK_ENV)
    if not token and not webhook:
        return None
    base_url = os.environ.get(API_URL_ENV, "").strip() or None
    return Sender(channel, token=token, webhook_url=None if token else webhook, base_url=base_url,
                  timeout_s=timeout_s, rate_limit_retries=rate_limit_retries)
