"""`krx sync`: bring results home with rsync or git (issue 7, DESIGN 1 and 6).

The home is always the local side: `push` sends this home's results and ops receipts to the remote, `pull` fetches
the remote's results into this home. A NAS that fetches a PC's results runs `pull --remote pc:/path/to/home`; a PC
that delivers its results runs `push --remote nas:/volume1/krx`; the NAS's daily cycle runs `push` to copy its
results and receipts to a second place (a backup share, a viewer).

    krx sync push --via rsync --remote SPEC [--delete] [--rsh CMD] [--bwlimit KBPS]
        reports/ops/ (receipts, summary), reports/phase_c/ (trading's reconcile) and every result folder
        reports/done/<id>/ the remote lacks -> SPEC
    krx sync pull --via rsync --remote SPEC [--delete] [--rsh CMD] [--bwlimit KBPS]
        every result folder SPEC/reports/done/<id>/ this home lacks -> reports/done/, and the worker heartbeats
        SPEC/reports/ops/heartbeat/*.json (common.heartbeat) -> reports/ops/heartbeat/
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
import contextlib
import logging
import os
import re
import shlex
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from common import atomic, config, locks, log, retry
from common.errors import EXIT_BLOCKED, EXIT_FAILED, EXIT_OK, AlertorError
from common.home import Home
from common.queue import is_valid_id
from common.redact import redact
from nas import archived

_log = log.get("sync")

# rsync exit codes worth another try: socket I/O (10), file I/O (11: e.g. the remote folder is missing, a share
# gone away), protocol stream (12), partial transfer (23: some files failed; a flaky share), vanished source
# files (24: a file moved while being sent), I/O timeout (30), daemon timeout (35), ssh could not connect (255).
# Everything else (1 syntax, 2 protocol, 3 bad paths, 4 unsupported option, 5 remote rsync missing, 20 interrupted,
# ...) is a usage or setup error that another try cannot fix.
RSYNC_TRANSIENT = frozenset({10, 11, 12, 23, 24, 30, 35, 255})
PARTIAL_DIR = ".rsync-partial"
DEFAULT_RSH = "ssh -o BatchMode=yes -o ConnectTimeout=20"  # cron has no terminal: fail instead of prompting


def remote_shell(given: str | None, configured: str) -> str:
    """rsync's remote shell: the one given, else app.yaml's sync.rsh, else $RSYNC_RSH, else ssh in batch mode."""
    return given or configured or os.environ.get("RSYNC_RSH") or DEFAULT_RSH
HIDDEN_TMP = ".*.tmp"  # jobs' work in progress (atomic writes, the worker's output folders): never a result
COMMIT_PREFIX = "Daily recon update - "
GIT_IDENTITY = ("-c", "user.name=krx-alertor", "-c", "user.email=krx-alertor@localhost")
GITIGNORE = """\
# krx-alertor home: only results and ops receipts are versioned (`krx sync push --via git`)
/data/
/logs/
/state/
/archive/
/.venv/
.env
/reports/pending/
/reports/processing/
/reports/failed/
.*.tmp
"""
# git push errors no retry can fix: a rejected push (the remote moved on), refused credentials, no such repository
GIT_PERMANENT = re.compile(
    r"rejected|non-fast-forward|fetch first|authentication failed|permission denied|could not read username|"
    r"terminal prompts disabled|repository not found|403|invalid username or password", re.IGNORECASE)


class SyncError(AlertorError):
    """A failure another try cannot fix (bad arguments, missing tools, a rejected push); the message says why."""


def staging_name() -> str:
    """The hidden staging folder beside done/ on the receiving side: one per sending machine, so two machines
    pushing to the same NAS never clean up each other's work in progress."""
    host = re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname()) or "host"
    return f".sync-{host}.tmp"


# --- where the other side is ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Spec:
    """A local folder, or `[user@]host:path` over a remote shell (ssh)."""

    path: str
    host: str | None = None

    @classmethod
    def parse(cls, text: str) -> Spec:
        text = text.strip()
        if not text:
            raise SyncError("no remote given: pass --remote SPEC or set app.yaml sync.remote")
        if text.startswith("rsync://") or "::" in text:
            raise SyncError(f"rsync daemon remotes are not supported ({text!r}): use a local path or host:path")
        m = re.match(r"^([^/:]+):(.*)$", text)
        windows_drive = m is not None and len(m.group(1)) == 1 and os.name == "nt"
        if m and not windows_drive:
            # a remote path without a leading / is relative to the login's home, for rsync and ssh alike; "~/"
            # would reach the remote shell quoted (no expansion), so it becomes that relative form
            path = m.group(2)
            path = path[2:] if path.startswith("~/") else "" if path == "~" else path
            return cls(path=path.rstrip("/") or ".", host=m.group(1))
        return cls(path=str(Path(text).expanduser().absolute()))

    @property
    def remote(self) -> bool:
        return self.host is not None

    def arg(self, *parts: str, slash: bool = False) -> str:
        """The rsync argument for a path below the spec's root."""
        path = "/".join([self.path.rstrip("/") or "/", *parts]) if parts else self.path
        path = path + "/" if slash and not path.endswith("/") else path
        return f"{self.host}:{path}" if self.host else path

    def __str__(self) -> str:
        return redact(self.arg())


# --- running rsync and the remote side's renames ---------------------------------------------------------------


@dataclass
class Rsync:
    rsh: str
    io_timeout_s: int
    timeout_s: int
    bwlimit_kbps: int = 0

    def base(self) -> list[str]:
        cmd = ["rsync", "-a", f"--timeout={self.io_timeout_s}", f"--rsh={self.rsh}"]
        if self.bwlimit_kbps:
            cmd.append(f"--bwlimit={self.bwlimit_kbps}")
        return cmd

    def run(self, step: str, args: Sequence[str]) -> str:
        """Run rsync once; TransientError for a failure worth another try, SyncError for any other."""
        cmd = [*self.base(), *args]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=self.timeout_s)
        except FileNotFoundError:
            raise SyncError("rsync is not installed (apt-get install rsync; Synology: enable rsync)") from None
        except subprocess.TimeoutExpired:
            raise retry.TransientError(f"{step}: rsync did not finish within {self.timeout_s}s") from None
        if proc.returncode == 0:
            return proc.stdout
        lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
        why = redact(" | ".join(lines[-3:]) or "no message")
        msg = f"{step}: rsync exit {proc.returncode}: {why}"
        if "No such file or directory" in why and ("mkdir" in why or "change_dir" in why):
            msg += " (the remote folder must exist: create it once, or mount the share)"
        if proc.returncode in RSYNC_TRANSIENT:
            raise retry.TransientError(msg)
        raise SyncError(msg)

    def list_dirs(self, spec: Spec, *parts: str) -> set[str] | None:
        """Names of the result folders in spec/parts (valid ids, not hidden); None when the folder is missing."""
        try:
            out = self.run("list", ["--list-only", "--no-recursive", "--dirs", spec.arg(*parts, slash=True)])
        except (retry.TransientError, SyncError) as exc:
            if "No such file or directory" in str(exc) and "change_dir" in str(exc):
                return None
            raise
        names = set()
        for line in out.splitlines():
            fields = line.split(None, 4)
            if len(fields) == 5 and fields[0].startswith("d") and is_valid_id(fields[4]) \
                    and not fields[4].startswith("."):
                names.add(fields[4])
        return names

    def fetch_text(self, spec: Spec, *parts: str) -> str | None:
        """The text of one file at spec/parts, copied through rsync like everything else (a local folder or over
        the remote shell, no other tool needed there); None when the file (or its folder) does not exist."""
        where = redact(spec.arg(*parts))
        with tempfile.TemporaryDirectory(prefix="krx-sync-") as tmp:
            try:
                self.run("read", [spec.arg(*parts), f"{tmp}/"])
            except (retry.TransientError, SyncError) as exc:
                if "No such file or directory" in str(exc) and ("link_stat" in str(exc) or "change_dir" in str(exc)):
                    return None
                if "Permission denied" in str(exc):  # another try cannot fix permissions
                    raise SyncError(f"{where}: unreadable: {exc}") from None
                raise
            path = Path(tmp) / parts[-1]
            if path.is_symlink() or not path.is_file():
                raise SyncError(f"{where}: not a regular file")
            try:
                return path.read_text(encoding="utf-8")
            except UnicodeDecodeError as exc:
                raise SyncError(f"{where}: unreadable: {exc}") from None


class Side:
    """File operations on one side's folder (its root is a spec's path): the renames that publish or remove a
    result folder in one step. Local folders use the OS directly; a host:path runs a POSIX shell script on the
    host through the remote shell rsync uses (ssh), so no other tool is needed there."""

    def __init__(self, spec: Spec, rsh: str, timeout_s: int):
        self.spec, self.rsh, self.timeout_s = spec, rsh, timeout_s

    def _sh(self, step: str, script: str) -> list[str]:
        assert self.spec.host is not None
        cmd = [*shlex.split(self.rsh), self.spec.host, script]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=self.timeout_s)
        except FileNotFoundError:
            raise SyncError(f"{step}: remote shell {self.rsh.split()[0]!r} not found") from None
        except subprocess.TimeoutExpired:
            raise retry.TransientError(f"{step}: the remote shell did not finish within {self.timeout_s}s") from None
        if proc.returncode != 0:
            why = redact(" | ".join(proc.stderr.strip().splitlines()[-3:]) or "no message")
            raise retry.TransientError(f"{step}: remote shell exit {proc.returncode}: {why}")
        return proc.stdout.splitlines()

    def publish(self, staging: str, target: str, names: Sequence[str]) -> tuple[list[str], list[str]]:
        """Rename staging/<name> to target/<name> for each name; a name the target has already is dropped from the
        staging folder instead (results are write-once). Returns (published, already there)."""
        published: list[str] = []
        present: list[str] = []
        if not names:
            return published, present
        if self.spec.host is None:
            root = Path(self.spec.path)
            (root / target).mkdir(parents=True, exist_ok=True)
            for name in names:
                src, dst = root / staging / name, root / target / name
                if not src.is_dir():
                    continue
                try:
                    if dst.exists():
                        raise FileExistsError(dst)
                    os.rename(src, dst)  # onto a name that does not exist: POSIX refuses a non-empty target
                    published.append(name)
                except OSError:
                    if not dst.is_dir():
                        raise
                    shutil.rmtree(src, ignore_errors=True)
                    present.append(name)
            atomic.fsync_dir(root / target)
            return published, present
        q = shlex.quote
        lines = [f"cd {q(self.spec.path)} || exit 3", f"mkdir -p {q(target)} || exit 3"]
        for name in names:
            src, dst = q(f"{staging}/{name}"), q(f"{target}/{name}")
            # mv onto an existing folder would move into it: the test keeps a present result untouched
            lines.append(f"if [ ! -d {src} ]; then :; elif [ -e {dst} ]; then rm -rf {src} && echo present {q(name)};"
                         f" else mv {src} {dst} && echo published {q(name)}; fi")
        for line in self._sh("publish", "\n".join(lines)):
            word, _, name = line.partition(" ")
            (published if word == "published" else present if word == "present" else []).append(name)
        return published, present

    def rename(self, src: str, dst: str) -> None:
        """Rename src to dst (relative to the root) in one step; fails when dst exists already."""
        if self.spec.host is None:
            root = Path(self.spec.path)
            if (root / dst).exists():
                raise FileExistsError(root / dst)
            os.rename(root / src, root / dst)
            atomic.fsync_dir((root / dst).parent)
            return
        q = shlex.quote
        self._sh("rename", f"cd {q(self.spec.path)} || exit 3\n"
                 f"[ -e {q(dst)} ] && {{ echo {q(dst)} exists >&2; exit 3; }}\nmv {q(src)} {q(dst)}")

    def remove(self, target: str, names: Sequence[str], trash: str) -> None:
        """Remove target/<name> folders: each renamed into the hidden trash first (gone from readers in one step),
        then deleted, then the trash itself."""
        if not names:
            return
        if self.spec.host is None:
            root = Path(self.spec.path)
            (root / trash).mkdir(parents=True, exist_ok=True)
            for name in names:
                with contextlib.suppress(FileNotFoundError):
                    os.rename(root / target / name, root / trash / name)
            shutil.rmtree(root / trash, ignore_errors=True)
            return
        q = shlex.quote
        lines = [f"cd {q(self.spec.path)} || exit 3", f"mkdir -p {q(trash)} || exit 3"]
        lines += [f"[ -e {q(target + '/' + n)} ] && mv {q(target + '/' + n)} {q(trash + '/' + n)}" for n in names]
        lines.append(f"rm -rf {q(trash)}")
        self._sh("delete", "\n".join(lines))

    def drop(self, rel: str) -> None:
        """Remove a hidden staging folder of ours once it is empty of work worth resuming."""
        if self.spec.host is None:
            shutil.rmtree(Path(self.spec.path) / rel, ignore_errors=True)
        else:
            self._sh("cleanup", f"cd {shlex.quote(self.spec.path)} && rm -rf {shlex.quote(rel)}")


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


def _step(name: str, fn, *args, retry_cfg: dict, details=None):
    """One step under the retry policy, one log line when it is done."""
    t0 = time.monotonic()
    out = retry.call(fn, *args, retry_cfg=retry_cfg)
    text = details(out) if callable(details) else (details or "")
    log.event(_log, name, text, rc=0, elapsed_ms=(time.monotonic() - t0) * 1000)
    return out


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
    _step("SYNC_OPS", rs.run, "ops", args, retry_cfg=retry_cfg,
          details=f"reports/ops/ -> {spec}" if len(sources) > 1 else f"no reports/ops/ yet; {spec} ready")

    # 2. which results the remote has, and which it has archived (retention removed them from its done/: sending
    # them again would only have them archived again, forever). Its done/ first, then its index: retention
    # records an id before it removes the folder, so in this order no id can slip between the two readings.
    def remote_state() -> tuple[set[str], set[str]]:
        return rs.list_dirs(spec, "reports", "done") or set(), remote_archived(spec, rs)

    mine = local_results(home)
    theirs, archived = _step(
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
            _step("SYNC_RESULTS", rs.run, "results", args, retry_cfg=retry_cfg,
                  details=f"{len(send)} result folders -> {spec.arg('reports', staging)} (staging)")
        finally:
            os.unlink(listing)
        published, present = _step(
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
        _step("SYNC_RESULTS", rs.run, "results", args, retry_cfg=retry_cfg,
              details=f"{spec.arg('reports', 'done')} -> {home.reports / staging} (staging)"
                      + (f"; {len(archived)} archived here are not fetched" if archived else ""))
    finally:
        os.unlink(skip)
    # an archived id left in the staging folder by an earlier, interrupted run is dropped with it, not published
    fetched = sorted(e.name for e in os.scandir(home.reports / staging)
                     if e.is_dir() and is_valid_id(e.name) and not e.name.startswith(".") and e.name not in archived) \
        if (home.reports / staging).is_dir() else []
    published, present = _step(
        "SYNC_PUBLISH", local.publish, f"reports/{staging}", "reports/done", fetched, retry_cfg=retry_cfg,
        details=lambda r: f"published {len(r[0])} into {home.queue('done')}"
                          + (f"; {len(r[1])} were there already" if r[1] else ""))
    local.drop(f"reports/{staging}")
    # the PC worker's heartbeat for the watchdog (common.heartbeat): a few small files, each replaced whole; a
    # remote without them transfers nothing
    _step("SYNC_HEARTBEAT", rs.run, "heartbeat", [
        "--delay-updates", "--prune-empty-dirs", "--exclude=/ops/heartbeat/.*", "--include=/ops/",
        "--include=/ops/heartbeat/", "--include=/ops/heartbeat/*.json", "--exclude=*",
        spec.arg("reports", slash=True), f"{home.reports}/"],
        retry_cfg=retry_cfg, details=f"{spec.arg('reports', 'ops', 'heartbeat')} -> {home.reports / 'ops'}")

    removed: list[str] = []
    if delete:
        theirs = _step("SYNC_LIST", rs.list_dirs, spec, "reports", "done", retry_cfg=retry_cfg,
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
    _step("SYNC_DELETE", side.remove, "reports/done", extra, "reports/.sync-trash.tmp", retry_cfg=retry_cfg,
          details=f"removed {len(extra)} result folders {source_name} no longer has")
    return extra


# --- git push --------------------------------------------------------------------------------------------------


@dataclass
class Git:
    home: Home
    timeout_s: int
    identity: tuple[str, ...] = ()

    def __call__(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        # the home's own repository, never one that merely encloses it (e.g. a code checkout)
        cmd = ["git", f"--git-dir={self.home.root / '.git'}", f"--work-tree={self.home.root}", *self.identity, *args]
        env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C"}  # cron has no terminal; parse English
        env.setdefault("GIT_SSH_COMMAND", DEFAULT_RSH)
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=self.timeout_s, env=env,
                                  cwd=self.home.root)
        except FileNotFoundError:
            raise SyncError("git is not installed") from None
        except subprocess.TimeoutExpired:
            raise retry.TransientError(f"git {args[0]} did not finish within {self.timeout_s}s") from None
        if check and proc.returncode != 0:
            why = redact(" | ".join(proc.stderr.strip().splitlines()[-4:]) or "no message")
            raise SyncError(f"git {args[0]} exit {proc.returncode}: {why}")
        return proc


def git_push(home: Home, remote: str, branch: str, *, retry_cfg: dict, timeout_s: int) -> dict:
    git = Git(home, timeout_s)
    if not (home.root / ".git").exists():
        t0 = time.monotonic()
        git("init", "-q")
        git("symbolic-ref", "HEAD", f"refs/heads/{branch}")
        if not (home.root / ".gitignore").exists():
            atomic.write_text(home.root / ".gitignore", GITIGNORE)
        log.event(_log, "GIT_INIT", f"new repository in {home.root} (branch {branch}, .gitignore keeps data/, "
                  "logs/, state/, .venv out)", rc=0, elapsed_ms=(time.monotonic() - t0) * 1000)
    if not all(git("config", key, check=False).stdout.strip() for key in ("user.name", "user.email")):
        git.identity = GIT_IDENTITY

    # stage results and receipts (also their removal, e.g. by retention); hidden work in progress never
    paths = [p for p in ("reports/done", "reports/ops", "reports/phase_c")
             if (home.root / p).exists() or git("ls-files", "--", p, check=False).stdout.strip()]
    message = f"{COMMIT_PREFIX}{log.now():%Y-%m-%d}"
    committed = False
    if paths:
        git("add", "-A", "--", *paths, f":(exclude,glob)**/{HIDDEN_TMP}", f":(exclude,glob)**/{HIDDEN_TMP}/**")
        if git("diff", "--cached", "--quiet", "--", *paths, check=False).returncode == 1:
            t0 = time.monotonic()
            git("commit", "-q", "-m", message, "--", *paths)
            sha = git("rev-parse", "--short", "HEAD").stdout.strip()
            stat = git("show", "--stat", "--format=", "HEAD").stdout.strip().splitlines()
            log.event(_log, "GIT_COMMIT", f"{sha} {message!r} {stat[-1].strip() if stat else ''}", rc=0,
                      elapsed_ms=(time.monotonic() - t0) * 1000)
            committed = True
    if not committed:
        log.event(_log, "GIT_COMMIT", "nothing to commit", rc=0)

    if git("rev-parse", "--verify", "-q", "HEAD", check=False).returncode != 0:
        log.event(_log, "GIT_PUSH", "no commits yet; nothing to push", rc=0)
        return {"committed": False, "pushed": False}
    if not remote:
        if "origin" in git("remote", check=False).stdout.split():
            remote = "origin"
        else:
            raise SyncError("no git remote: pass --remote NAME_OR_URL or set app.yaml sync.remote "
                            "(the commit is kept and goes out with the next push)")

    def push() -> str:
        proc = git("push", "--porcelain", remote, f"HEAD:refs/heads/{branch}", check=False)
        if proc.returncode == 0:
            return proc.stdout
        why = redact(" | ".join((proc.stderr + proc.stdout).strip().splitlines()[-4:]) or "no message")
        msg = f"git push to {redact(remote)} ({branch}) exit {proc.returncode}: {why}"
        if GIT_PERMANENT.search(why):
            raise SyncError(msg)
        raise retry.TransientError(msg)

    out = _step("GIT_PUSH", push, retry_cfg=retry_cfg,
                details=lambda o: f"{redact(remote)} {branch}: "
                                  + ("up to date" if "[up to date]" in o else "pushed"))
    return {"committed": committed, "pushed": "[up to date]" not in out}


# --- the command -----------------------------------------------------------------------------------------------


def home_lock(home: Home, name: str) -> contextlib.AbstractContextManager[bool]:
    """A non-blocking lock on state/.<name>.lock (common.locks): False when another run of this home holds it."""
    return locks.attempt(home.state / f".{name}.lock")


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
    with home_lock(home, "sync") as locked:
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
