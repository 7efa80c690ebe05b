"""What a `krx worker` is told: its Settings (app.yaml `worker:` with command-line overrides), the job it runs and
the queue options of its command line. The worker loop itself is pc.worker; the `krx worker` command (with
`--http`, the backtest API) is faces/cli/worker.py."""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from common import config, schemas
from common.home import Home

DEFAULT_JOB = "pc.jobs:run"

# The job: run_request(request, out_dir, home, progress=None) -> result dict; it writes its files into out_dir.
Job = Callable[..., Mapping[str, Any] | None]


@dataclass(frozen=True)
class Settings:
    """The `worker:` section of configs/app.yaml, with command-line overrides."""

    polling: bool = False
    interval_s: float = 5.0
    lease_s: float = 300.0
    max_attempts: int = 3
    concurrency: int = 1
    settle_s: float = 3.0
    max_request_bytes: int = schemas.DEFAULT_MAX_BYTES
    stop_grace_s: float = 20.0

    @classmethod
    def from_config(cls, home: Home | None = None, **overrides: Any) -> Settings:
        cfg = config.load("app", home).get("worker", {})
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in cfg.items() if k in known}
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    @property
    def heartbeat_s(self) -> float:
        # Several beats per lease, so one late beat (a busy machine) never looks like a dead worker.
        return max(0.02, min(self.interval_s, self.lease_s / 5))


def load_job(spec: str) -> Job:
    """`module:function` -> the callable."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ValueError(f"--job expects MODULE:FUNCTION, got {spec!r}")
    target: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        target = getattr(target, part)
    if not callable(target):
        raise ValueError(f"{spec} is not callable")
    return target


def positive(kind: type) -> Callable[[str], Any]:
    """argparse type: a positive int or float."""
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a positive {kind.__name__}, got {text!r}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"expected a positive {kind.__name__}, got {text!r}")
        return value
    return parse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The queue options of `krx worker` (faces/cli/worker.py adds the HTTP ones)."""
    parser.add_argument("--inbox", type=Path, help="the queue's inbox (default: reports/pending of the home); "
                        "processing/ and failed/ sit beside it")
    parser.add_argument("--out", type=Path, help="where results go (default: done/ beside the inbox)")
    parser.add_argument("--polling", action=argparse.BooleanOptionalAction, default=None,
                        help="poll instead of native file events: needed on SMB/NFS shares (default: app.yaml)")
    parser.add_argument("--interval", type=positive(float), metavar="S",
                        help="inbox re-scan, lease check and polling period in seconds")
    parser.add_argument("--lease", type=positive(float), metavar="S",
                        help="a claim whose heartbeat is older than this goes back to the inbox")
    parser.add_argument("--max-attempts", type=positive(int), metavar="N", help="tries before failed/")
    parser.add_argument("--concurrency", type=positive(int), metavar="N", help="jobs run at the same time")
    parser.add_argument("--settle", type=positive(float), metavar="S",
                        help="a request that does not parse is failed once unchanged this long")
    parser.add_argument("--once", action="store_true", help="process everything pending, then exit")
    parser.add_argument("--job", default=DEFAULT_JOB, metavar="MODULE:FUNCTION",
                        help=f"the job run on each request (default {DEFAULT_JOB}); another function with the same "
                        "signature serves tests, benchmarks and custom jobs. Requests never choose it.")


def overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The Settings overrides of parsed `add_arguments` options (None: app.yaml decides)."""
    return {"polling": args.polling, "interval_s": args.interval, "lease_s": args.lease,
            "max_attempts": args.max_attempts, "concurrency": args.concurrency, "settle_s": args.settle}
