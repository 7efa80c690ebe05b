"""`krx worker`: the PC worker's command (the loop is pc.worker, its options pc.worker_settings).

    krx worker [--inbox reports/pending] [--out reports/done] [--polling] [--interval S] [--lease S]
               [--max-attempts N] [--concurrency N] [--once]
"""

from __future__ import annotations

import argparse
import logging

from common import log
from common.errors import EXIT_FAILED
from common.home import Home
from pc import worker as pc_worker
from pc import worker_settings

_log = log.get("worker")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    worker_settings.add_arguments(parser)


def run(args: argparse.Namespace) -> int:
    home = Home.from_env()
    log.setup_logging("worker", home)
    try:
        worker = pc_worker.build(args.inbox, args.out, home=home, job=args.job, **worker_settings.overrides(args))
    except (ImportError, AttributeError, ValueError) as exc:
        log.event(_log, "WORKER_START", f"cannot load the job {args.job}: {exc}", rc=EXIT_FAILED, level=logging.ERROR)
        return EXIT_FAILED
    return worker.run(once=args.once)
