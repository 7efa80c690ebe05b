"""`krx sync push --via git`: commit the home's results and receipts in its own git repository and push them."""

from __future__ import annotations

import os
import re
import subprocess
import time
from dataclasses import dataclass

from common import atomic, log, retry
from common.home import Home
from common.redact import redact
from nas.remote import DEFAULT_RSH, HIDDEN_TMP, SyncError, step

_log = log.get("sync")

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

    out = step("GIT_PUSH", push, retry_cfg=retry_cfg,
                details=lambda o: f"{redact(remote)} {branch}: "
                                  + ("up to date" if "[up to date]" in o else "pushed"))
    return {"committed": committed, "pushed": "[up to date]" not in out}
