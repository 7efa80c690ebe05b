"""`krx request`: queue the day's backtest request for the PC worker (DESIGN 6, submit).

With `--via http://pc:8000` (or app.yaml `request.via`) the request goes to the PC's backtest API (`krx worker
--http`) instead, with the operator token of KRX_OPERATOR_TOKEN, under the project's retry policy; when the PC does
not answer (off, unreachable, or failing with 5xx after the retries) it falls back to the file queue. The log says
which path took it (`path=http` or `path=file`). A refusal (a bad token, a request the PC's validation rejects) is
an error, not a fallback: the same request would be refused by the worker too. The request id is deterministic, so
sending the same day twice (or a retry whose first answer was lost) queues it once."""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
from pathlib import Path

import yaml

from common import config, events, log, operators, queue, retry, schemas
from common.args import parse_date
from common.errors import EXIT_FAILED, EXIT_OK
from common.home import Home
from common.store import EodStore, StoreError
from common.strategy import NAME as STRATEGY
from common.strategy import warmup_rows

_log = log.get("request")


def _window(home: Home, store: EodStore, day: dt.date | None, warmup: int) -> tuple[dt.date, dt.date]:
    """(start, end) of a queued request: the configured years up to `day` (default: the store's last day),
    starting no earlier than `warmup` rows after the store's first day (when the store has them)."""
    last = store.last_date()
    if last is None:
        raise ValueError(f"the store {store.root} is empty; run `krx ingest` first")
    end = day or last
    if end > last:
        raise ValueError(f"{end} is after the store's last day {last}; run `krx ingest --date {end}` first")
    years = config.load("app", home)["request"]["years"]
    # leave the strategy its warm-up history before the first day it reports on (when the store has it)
    stored = sorted(d for d in store.stored_dates() if d <= end)
    if not stored:
        raise ValueError(f"{end} is before the store's first day {store.first_date()}: no data to backtest")
    warm = stored[warmup] if len(stored) > warmup else stored[0]
    return max(warm, end - dt.timedelta(days=round(365.25 * years))), end


def build(home: Home, day: dt.date | None = None) -> dict:
    """The day's backtest_request/1: the strategy with the NAS's current parameters, over the configured years up
    to `day` (default: the store's last day), starting no earlier than the strategy's warm-up allows. Its id
    derives from date, strategy and parameters."""
    strategies = config.load("strategies", home)
    params = strategies["strategies"][STRATEGY]
    start, end = _window(home, EodStore.for_home(home), day, warmup_rows(params))
    return schemas.new_request(STRATEGY, start, end, params=params,
                               correlation_id=events.correlation_id(end, STRATEGY), home=home,
                               strategies=strategies, requested_by=events.who())


SWEEP_KEYS = ("strategy", "grid", "start", "end", "universe")


def build_sweep(home: Home, path: Path, day: dt.date | None = None) -> dict:
    """A backtest_sweep/1 from a YAML file (`grid:` parameter -> list of values; `strategy`, `start`, `end`,
    `universe` optional: by default the day's request's strategy and window, with the warm-up of the grid's
    hungriest combination)."""
    try:
        spec = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ValueError(f"{path}: cannot read the sweep: {str(exc).splitlines()[0]}") from None
    if not isinstance(spec, dict) or "grid" not in spec:
        raise ValueError(f"{path}: expected a mapping with grid: (parameter: [values, ...]) and optionally "
                         f"{', '.join(k for k in SWEEP_KEYS if k != 'grid')}")
    unknown = sorted(str(k) for k in spec if k not in SWEEP_KEYS)
    if unknown:
        raise ValueError(f"{path}: {unknown[0]}: unknown key (allowed: {', '.join(SWEEP_KEYS)})")
    strategies = config.load("strategies", home)
    strategy = spec.get("strategy", STRATEGY)
    base = strategies["strategies"].get(strategy)
    if not isinstance(strategy, str) or base is None:
        raise ValueError(f"{path}: strategy: {strategy!r} is not in configs/strategies.yaml")
    try:
        combos = schemas.grid_runs(spec["grid"], file=str(path))
        warmup = max(warmup_rows(config.check_strategy_params(o, base, source=str(path))) for _, o in combos)
    except config.ConfigError as exc:
        raise ValueError(f"{exc} (in the grid)") from None
    start, end = _window(home, EodStore.for_home(home), day, warmup)
    day = spec["end"] if isinstance(spec.get("end"), dt.date) else end
    # a date YAML could not read stays text here: the request's validation names the field
    return schemas.new_sweep(strategy, spec.get("start", start), spec.get("end", end), spec["grid"],
                             universe=spec.get("universe", "ALL"), correlation_id=events.correlation_id(day, strategy),
                             home=home, strategies=strategies, requested_by=events.who())


def send(home: Home, request: dict, via: str) -> dict | None:
    """POST `request` to the PC's backtest API at `via`: its answer (`queued` false when the PC already had it), or
    None when the PC does not answer. ValueError for a refusal, naming the API's code and message."""
    import httpx

    token = operators.token_from(os.environ, None)
    if not token:
        raise ValueError(f"--via {via}: the PC's backtest API needs an operator token in {operators.TOKEN_ENV} "
                         "(`krx ops operator add NAME` on the PC prints one)")
    app = config.load("app", home)
    url = via.rstrip("/") + "/backtest"

    def post() -> httpx.Response:
        try:
            answer = httpx.post(url, params={"strategy": request["strategy"]}, content=queue.encode(request),
                                headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
                                timeout=app["request"]["http_timeout_s"])
        except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
            raise ValueError(f"--via {via}: expected an http URL like http://pc:8000 ({exc})") from None
        except httpx.TransportError as exc:  # refused, timed out, reset: the PC may be off
            raise retry.TransientError(f"{url}: {type(exc).__name__}: {exc}") from None
        if answer.status_code == 429 or answer.status_code >= 500:
            raise retry.TransientError(f"{url}: HTTP {answer.status_code}")
        return answer

    try:
        answer = retry.call(post, retry_cfg=app["retry"])
    except retry.TransientError as exc:
        log.event(_log, "REQUEST_FALLBACK", f"id={request['id']} the PC's backtest API did not answer ({exc}); "
                  "using the file queue", level=logging.WARNING)
        return None
    try:
        body = answer.json()
    except ValueError:
        body = {}
    if answer.status_code not in (200, 202) or not isinstance(body, dict) or body.get("id") != request["id"]:
        what = f"{body.get('code')}: {body.get('message')}" if isinstance(body, dict) and body.get("code") else \
            answer.text[:200]
        raise ValueError(f"the PC's backtest API at {via} refused request {request['id']}: HTTP "
                         f"{answer.status_code} {what}")
    return body


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--date", type=parse_date, help="the day the request ends on (default: the store's last day)")
    p.add_argument("--sweep", type=Path, metavar="FILE", help="queue a backtest_sweep/1 instead: a YAML file with "
                   "grid: (parameter: [values]) and optionally strategy, start, end, universe (docs/sweep.md)")
    p.add_argument("--via", metavar="URL", help="send it to the PC's backtest API (`krx worker --http`), e.g. "
                   "http://pc:8000, falling back to the file queue when the PC does not answer; \"\" = the file "
                   "queue (default: app.yaml request.via)")


def run(args: argparse.Namespace) -> int:
    home = Home.from_env()
    log.setup_logging("request", home)
    try:
        request = build_sweep(home, args.sweep, args.date) if args.sweep else build(home, args.date)
        via = config.load("app", home)["request"]["via"] if args.via is None else args.via
        answer = send(home, request, via) if via else None
        path = "file" if answer is None else "http"
        queued = queue.Queue.of_home(home).submit(request) if answer is None else bool(answer.get("queued"))
    except (ValueError, OSError, StoreError) as exc:  # RequestError and ConfigError are ValueErrors too
        log.event(_log, "REQUEST_FAILED", str(exc), rc=EXIT_FAILED, level=logging.ERROR)
        return EXIT_FAILED
    what = "queued" if queued else "already queued or done; nothing new"
    where = f"path=http via={via}" if path == "http" else "path=file"
    log.event(_log, "REQUEST_QUEUED" if queued else "REQUEST_EXISTS",
              f"id={request['id']} {where} {request['start']}..{request['end']} {what}", rc=EXIT_OK)
    if queued:
        events.append(home, "request_queued", correlation_id=request["correlation_id"], id=request["id"],
                      start=request["start"], end=request["end"], via=path)
    print(request["id"])
    return EXIT_OK
