"""`krx sync`: bring results home with rsync or git (issue 7, DESIGN 1 and 6).

The home is always the local side: `push` sends this home's results and ops receipts to the remote, `pull` fetches
the remote's results into this home. A NAS that fetches a PC's results runs `pull --remote pc:/path/to/home`; a PC
that delivers its results runs `push --remote nas:/volume1/krx`; the NAS's daily cycle runs `push` to copy its
results and receipts to a second place (a backup share, a viewer).

    krx sync push --via rsync --remote SPEC [--delete] [--rsh CMD] [--bwlimit KBPS]
        reports/ops/ (receipts, summary), reports/phase_c/ (trading's reconcile) and every result folder
        reports/done/<id>/ the remote lacks -> SPEC
    krx sync pull --via rsync --remote SPEC [--delete] [--rsh CMD] [--bwlimit KBPS]
        every result folder SPEC/reports/done/<id>/ this home lacks -> reports/done/
    krx sync push --via git [--remote NAME_OR_URL] [--branch NAME]
        commit reports/done/, reports/ops/ and reports/phase_c/ in the home's own git repository (created when
        missing) and push

SPEC is a local folder (a mounted share) or `[user@]host:path` reached over ssh; SPEC itself must exist (a missing
one is what an unmounted share looks like, and creating it would fill the local disk instead): everything below it
is created.

How a result folder stays whole on the receiving side (the queue takes `done/<id>/` for a finished result):
rsync writes the new folders into a hidden staging folder beside done/ (`reports/.sync-<host>.tmp/`, ignored by
every reader, resumed by the next run after an interruption, `--partial-dir` keeping half-sent files), and only
after rsync exited 0 is each folder renamed into done/: one rename, so a reader sees all of a result or none of
it. Over ssh the rename runs on the remote through the same remote shell rsync uses. Results are write-once (the
queue publishes each id once), so a folder the other side already has is never sent again; receipts and the
summary are single files, each replaced atomically (`--delay-updates`). Hidden temporary files and folders
(`.*.tmp`: jobs' work in progress) are never copied. `--delete` (off by default) also removes the result folders
(and receipts) the source side no longer has, each folder hidden first by a rename and only then deleted; it
refuses to empty a side whose source lists no results at all (an unmounted share looks like that).

Results a home's `krx retention pack` archived (listed in its state/archived_results.txt) count as present on that
side: `pull` never fetches them into the home that archived them, and `push` never sends them to a remote that
archived them (its index is read like its folders: directly or over the remote shell; none there means none
archived, a damaged one fails the sync). Otherwise sync and retention would undo each other every day.

Every rsync/git call is retried under the shared policy (app.yaml `retry`) when it failed for a transient reason
(rsync exit codes 10, 11, 12, 23, 24, 30, 35, 255; a git remote that cannot be reached), never for a usage error.
Exit codes: 0 done (including nothing to do), 2 another sync of this home is running, 3 failed.
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
from collections.abc import Sequence

from common import config, locks, log, retry
from common.errors import EXIT_BLOCKED, EXIT_FAILED, EXIT_OK
from common.home import Home
from common.queue_names import is_valid_id
from common.redact import redact
from nas import archived
from nas.gitpush import git_push
from nas.remote import HIDDEN_TMP, PARTIAL_DIR, Rsync, Side, Spec, SyncError, remote_shell, staging_name, step

_log = log.get("sync")


# --- rsync push and pull ---------------------------------------------------------------------------------------


def local_results(home: Home) -> set[str]:
    done = home.queue("done")
    try:
        return {e.name for e in os.scandir(done) if e.is_dir() and is_valid_id(e.name) and not e.name.startswith(".")}
    except FileNotFoundError:
        return set()


def local_archived(home: Home) -> set[str]:
    """The result ids this home's retention archived: sync treats them as present and never fetches them again."""
    try:
        return archived.ids(home)
    except archived.ArchivedIndexError as exc:
        raise SyncError(str(exc)) from None


def remote_archived(spec: Spec, rs: Rsync) -> set[str]:
    """The result ids the remote home's retention archived (its state/archived_results.txt): push never sends them
    back. A missing index means none (also: the remote is a plain folder, not a home); a damaged one is an error."""
    text = rs.fetch_text(spec, *archived.INDEX.split("/"))
    if text is None:
        return set()
    try:
        return archived.parse(text, redact(spec.arg(archived.INDEX)))
    except archived.ArchivedIndexError as exc:
        raise SyncError(str(exc)) from None


def _files_from(names: Sequence[str], fmt: str) -> str:
    fd, path = tempfile.mkstemp(prefix="krx-sync-", suffix=".txt")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.writelines(fmt.format(n) + "\n" for n in names)
    return path


def rsync_push(home: Home, spec: Spec, rs: Rsync, *, delete: bool, retry_cfg: dict) -> dict:
    """reports/ops/ and the result folders the remote lacks -> SPEC (see the module doc)."""
    home.queue("done").mkdir(parents=True, exist_ok=True)
    staging = staging_name()
    side = Side(spec, rs.rsh, rs.timeout_s)

    # 1. the remote's reports/done/ (empty) and reports/ops/; `SPEC/.` makes rsync fail instead of creating SPEC
    sources = [f"{home.root}/./reports/done"]
    for extra in ("ops", "phase_c"):  # receipts, the summary and trading's reconcile summary
        if (home.reports / extra).is_dir():
            sources.append(f"{home.root}/./reports/{extra}")
    args = ["--relative", "--delay-updates", f"--partial-dir={PARTIAL_DIR}", f"--exclude={HIDDEN_TMP}",
            "--exclude=/reports/done/*", *(["--delete"] if delete else []), *sources, spec.arg(".")]
    step("SYNC_OPS", rs.run, "ops", args, retry_cfg=retry_cfg,
          details=f"reports/ops/ -> {spec}" if len(sources) > 1 else f"no reports/ops/ yet; {spec} ready")

    # 2. which results the remote has, and which it has archived (retention removed them from its done/: sending
    # them again would only have them archived again, forever). Its done/ first, then its index: retention
    # records an id before it removes the folder, so in this order no id can slip between the two readings.
    def remote_state() -> tuple[set[str], set[str]]:
        return rs.list_dirs(spec, "reports", "done") or set(), remote_archived(spec, rs)

    mine = local_results(home)
    theirs, archived = step(
        "SYNC_LIST", remote_state, retry_cfg=retry_cfg,
        details=lambda r: f"remote has {len(r[0])} results"
                          + (f" ({len(r[1])} more archived there: never sent again)" if r[1] else "")
                          + f", this home {len(mine)}")

    # 3. the missing ones into the remote's staging folder, 4. each renamed into done/ in one step
    send = sorted(mine - theirs - archived)
    published: list[str] = []
    if send:
        listing = _files_from(send, "{}/")
        try:
            # --delete only inside our own staging copies: a run killed outright may have left rsync's temp files
            args = ["--delay-updates", f"--partial-dir={PARTIAL_DIR}", f"--exclude={HIDDEN_TMP}", "--delete",
                    f"--files-from={listing}", "--recursive", f"{home.queue('done')}/", spec.arg("reports", staging)]
            step("SYNC_RESULTS", rs.run, "results", args, retry_cfg=retry_cfg,
                  details=f"{len(send)} result folders -> {spec.arg('reports', staging)} (staging)")
        finally:
            os.unlink(listing)
        published, present = step(
            "SYNC_PUBLISH", side.publish, f"reports/{staging}", "reports/done", send, retry_cfg=retry_cfg,
            details=lambda r: f"published {len(r[0])} into {spec.arg('reports', 'done')}"
                              + (f"; {len(r[1])} were there already" if r[1] else ""))
    else:
        log.event(_log, "SYNC_RESULTS", "nothing new to send", rc=0)
    retry.call(side.drop, f"reports/{staging}", retry_cfg=retry_cfg)

    removed: list[str] = []
    if delete:
        # a result this home archived still counts as ours: --delete mirrors results, it never prunes history
        removed = _mirror_delete(side, theirs, mine | local_archived(home), "this home", retry_cfg)
    return {"sent": published, "deleted": removed}


def rsync_pull(home: Home, spec: Spec, rs: Rsync, *, delete: bool, retry_cfg: dict) -> dict:
    """The result folders SPEC/reports/done/ has and this home lacks -> reports/done/ (see the module doc)."""
    home.queue("done").mkdir(parents=True, exist_ok=True)
    staging = staging_name()
    local = Side(Spec(str(home.root)), rs.rsh, rs.timeout_s)
    # the results we have, and those our retention archived (fetching them would only have them archived again,
    # forever). done/ first, then the index: retention records an id before it removes the folder, so in this
    # order no id can slip between the two readings.
    mine = local_results(home)
    archived = local_archived(home)
    # top-level filters, first match wins: hidden entries, the results we have or archived, then every other folder
    skip = _files_from(sorted(mine | archived), "- /{}/")
    try:
        # --delete only inside our own staging copy: a run killed outright may have left rsync's temp files
        args = ["--delay-updates", f"--partial-dir={PARTIAL_DIR}", "--delete", "--exclude=/.*",
                f"--exclude-from={skip}", "--include=/*/", "--exclude=/*", f"--exclude={HIDDEN_TMP}",
                spec.arg("reports", "done", slash=True), f"{home.reports / staging}/"]
        step("SYNC_RESULTS", rs.run, "results", args, retry_cfg=retry_cfg,
              details=f"{spec.arg('reports', 'done')} -> {home.reports / staging} (staging)"
                      + (f"; {len(archived)} archived here are not fetched" if archived else ""))
    finally:
        os.unlink(skip)
    # an archived id left in the staging folder by an earlier, interrupted run is dropped with it, not published
    fetched = sorted(e.name for e in os.scandir(home.reports / staging)
                     if e.is_dir() and is_valid_id(e.name) and not e.name.startswith(".") and e.name not in archived) \
        if (home.reports / staging).is_dir() else []
    published, present = step(
        "SYNC_PUBLISH", local.publish, f"reports/{staging}", "reports/done", fetched, retry_cfg=retry_cfg,
        details=lambda r: f"published {len(r[0])} into {home.queue('done')}"
                          + (f"; {len(r[1])} were there already" if r[1] else ""))
    local.drop(f"reports/{staging}")

    removed: list[str] = []
    if delete:
        theirs = step("SYNC_LIST", rs.list_dirs, spec, "reports", "done", retry_cfg=retry_cfg,
                       details=lambda s: f"remote has {len(s or ())} results") or set()
        # a result the remote archived still counts as theirs: --delete mirrors results, it never prunes history
        removed = _mirror_delete(local, local_results(home), theirs | remote_archived(spec, rs), "the remote",
                                 retry_cfg)
    return {"sent": published, "deleted": removed}


def _mirror_delete(side: Side, present: set[str], source: set[str], source_name: str, retry_cfg: dict) -> list[str]:
    """--delete: remove from `side` the result folders `present` there that the source side (`source`: its
    results and archived ids) does not have. A source listing nothing is what an unmounted share looks like:
    refused rather than emptying the other side."""
    extra = sorted(present - source)
    if extra and not source:
        raise SyncError(f"--delete: {source_name} lists no results at all; refusing to delete {len(extra)} result "
                        f"folders on the other side (is the share mounted, is reports/done/ the right folder?)")
    step("SYNC_DELETE", side.remove, "reports/done", extra, "reports/.sync-trash.tmp", retry_cfg=retry_cfg,
          details=f"removed {len(extra)} result folders {source_name} no longer has")
    return extra


# --- the command -----------------------------------------------------------------------------------------------


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("direction", choices=["pull", "push"],
                   help="push: this home -> remote; pull: the remote's results -> this home")
    p.add_argument("--via", choices=["rsync", "git"], help="transport (default: app.yaml sync.via)")
    p.add_argument("--remote", metavar="SPEC", help="rsync: local path or host:path; git: remote name or URL "
                   "(default: app.yaml sync.remote)")
    p.add_argument("--branch", metavar="NAME", help="git: branch to push to (default: app.yaml sync.branch)")
    p.add_argument("--delete", action="store_true",
                   help="rsync: also remove result folders the source side no longer has (off by default)")
    p.add_argument("--rsh", metavar="CMD", help="rsync: remote shell for host:path (default: app.yaml sync.rsh)")
    p.add_argument("--bwlimit", type=int, default=0, metavar="KBPS",
                   help="rsync: cap the bandwidth (KiB/s) so the day's sync does not choke the link")


def run(args: argparse.Namespace) -> int:
    home = Home.from_env()
    log.setup_logging("sync", home)
    app = config.load("app", home)
    cfg = app["sync"]
    via = args.via or cfg["via"]
    remote = args.remote if args.remote is not None else cfg["remote"]
    branch = args.branch or cfg["branch"]
    t0 = time.monotonic()
    with locks.home_lock(home, "sync") as locked:
        if not locked:
            log.event(_log, "SYNC_BUSY", "another `krx sync` of this home is running; try again later",
                      rc=EXIT_BLOCKED, level=logging.WARNING)
            return EXIT_BLOCKED
        try:
            if via == "git":
                if args.direction == "pull":
                    raise SyncError("pull --via git is not supported: the NAS fetches with `git pull` in its clone, "
                                    "or use pull --via rsync")
                log.event(_log, "SYNC_START", f"push --via git remote={redact(remote) or '(origin)'} "
                          f"branch={branch} home={home.root}")
                out = git_push(home, remote, branch, retry_cfg=app["retry"], timeout_s=cfg["timeout_s"])
                summary = ("committed and " if out["committed"] else "nothing to commit; ") + (
                    "pushed" if out["pushed"] else "remote up to date")
            else:
                spec = Spec.parse(remote)
                rsh = remote_shell(args.rsh, cfg["rsh"])
                rs = Rsync(rsh, cfg["io_timeout_s"], cfg["timeout_s"], args.bwlimit)
                log.event(_log, "SYNC_START", f"{args.direction} --via rsync remote={spec} home={home.root}"
                          + (" --delete" if args.delete else ""))
                fn = rsync_push if args.direction == "push" else rsync_pull
                out = fn(home, spec, rs, delete=args.delete, retry_cfg=app["retry"])
                summary = f"{'sent' if args.direction == 'push' else 'fetched'} {len(out['sent'])} results" + (
                    f", deleted {len(out['deleted'])}" if args.delete else "")
        except (SyncError, retry.TransientError, OSError) as exc:
            what = "gave up after retries: " if isinstance(exc, retry.TransientError) else ""
            log.event(_log, "SYNC_FAILED", f"{args.direction} --via {via}: {what}{redact(str(exc))}",
                      rc=EXIT_FAILED, elapsed_ms=(time.monotonic() - t0) * 1000, level=logging.ERROR)
            return EXIT_FAILED
    log.event(_log, "SYNC_DONE", f"{args.direction} --via {via}: {summary}", rc=EXIT_OK,
              elapsed_ms=(time.monotonic() - t0) * 1000)
    return EXIT_OK
