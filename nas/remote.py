"""The other side of a sync or a backup: where it is (`Spec`), rsync run under its rules (`Rsync`), and the
renames there that publish or remove a result folder in one step (`Side`), in a local folder or over the remote
shell rsync uses. Shared by `krx sync` (nas/sync.py) and `krx retention backup` (nas/retention.py).
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common import atomic, log, retry
from common.errors import AlertorError
from common.queue_names import is_valid_id
from common.redact import redact

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


def step(name: str, fn: Callable[..., Any], *args: Any, retry_cfg: dict, details: Any = None) -> Any:
    """One step under the retry policy, one log line when it is done."""
    t0 = time.monotonic()
    out = retry.call(fn, *args, retry_cfg=retry_cfg)
    text = details(out) if callable(details) else (details or "")
    log.event(_log, name, text, rc=0, elapsed_ms=(time.monotonic() - t0) * 1000)
    return out
