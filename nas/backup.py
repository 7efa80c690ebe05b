"""`krx retention backup`: `rsync` of the whole home (without .venv/, caches and hidden temporary files) to
`<target>/<YYYY-MM-DD_HHMMSS>/`, each run a complete dated folder, files unchanged since the previous backup
hard-linked to it (`--link-dest`): every backup is a full tree you can browse or copy back, a week's backup costs
only what changed, and a file damaged or deleted at home does not reach the older backups (a plain mirror would
spread a mistake at the next run). The run writes into `<target>/.backup-in-progress.tmp/` (resumed after an
interruption) and renames it to its dated name when rsync succeeded; then the oldest beyond `backup_keep` are
removed (0 keeps all). The target must exist and sit outside the home; local path or host:path like `krx sync`.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

from common import log, retry
from common.errors import EXIT_OK
from common.home import Home
from nas import remote

_log = log.get("retention")

BACKUP_STAGING = ".backup-in-progress.tmp"
BACKUP_TRASH = ".backup-trash.tmp"
SNAPSHOT_RE = re.compile(r"^\d{4}-\d{2}-\d{2}_\d{6}(?:_\d+)?$")
BACKUP_EXCLUDES = ("/.venv/", "__pycache__/", ".pytest_cache/", ".ruff_cache/", remote.HIDDEN_TMP, "/reports/.sync-*")


def _inside(path: Path, folder: Path) -> bool:
    path, folder = path.resolve(), folder.resolve()
    return path == folder or folder in path.parents


def backup(home: Home, app: dict, target: str, keep: int, rsh: str | None = None) -> int:
    """One dated backup of the home to `target`, then prune beyond `keep` (`app`: the validated app.yaml)."""
    scfg = app["sync"]
    t0 = time.monotonic()
    spec = remote.Spec.parse(target)
    if spec.host is None and _inside(Path(spec.path), home.root):
        raise remote.SyncError(f"backup target {spec.path} is inside the home {home.root}: it would back itself up")
    rsh = remote.remote_shell(rsh, scfg["rsh"])
    rs = remote.Rsync(rsh, scfg["io_timeout_s"], scfg["timeout_s"])
    side = remote.Side(spec, rsh, scfg["timeout_s"])
    retry_cfg = app["retry"]
    log.event(_log, "BACKUP_START", f"{home.root} -> {spec} (keep {keep or 'all'})")

    snapshots = sorted(n for n in (retry.call(rs.list_dirs, spec, retry_cfg=retry_cfg) or ()) if SNAPSHOT_RE.match(n))
    name = f"{log.now():%Y-%m-%d_%H%M%S}"
    n = 1
    while (name if n == 1 else f"{name}_{n}") in snapshots:
        n += 1
    name = name if n == 1 else f"{name}_{n}"
    args = ["--delete", "--numeric-ids", f"--partial-dir={remote.PARTIAL_DIR}", "--stats",
            *(f"--exclude={e}" for e in BACKUP_EXCLUDES)]
    if snapshots:  # relative to the destination folder: unchanged files become hard links to the last backup
        args.append(f"--link-dest=../{snapshots[-1]}")
    args += [f"{home.root}/", spec.arg(BACKUP_STAGING, slash=True)]
    r0 = time.monotonic()
    out = retry.call(rs.run, "backup", args, retry_cfg=retry_cfg)
    stats = {k.strip(): v.strip() for k, _, v in (ln.partition(":") for ln in out.splitlines()) if v}
    log.event(_log, "BACKUP_RSYNC", f"files={stats.get('Number of files', '?')} "
              f"sent={stats.get('Number of regular files transferred', '?')} "
              f"linked_to={snapshots[-1] if snapshots else 'none (first backup)'}", rc=0,
              elapsed_ms=(time.monotonic() - r0) * 1000)
    retry.call(side.rename, BACKUP_STAGING, name, retry_cfg=retry_cfg)
    log.event(_log, "BACKUP_PUBLISH", f"{spec.arg(name)} complete", rc=0)
    snapshots.append(name)
    old = snapshots[:-keep] if keep > 0 else []
    if old:
        retry.call(side.remove, ".", old, BACKUP_TRASH, retry_cfg=retry_cfg)
        log.event(_log, "BACKUP_PRUNE", f"removed {len(old)} older than the newest {keep}: {', '.join(old)}", rc=0)
    log.event(_log, "BACKUP_DONE", f"{spec.arg(name)}; {len(snapshots) - len(old)} backups kept", rc=EXIT_OK,
              elapsed_ms=(time.monotonic() - t0) * 1000)
    return EXIT_OK
