"""`krx retention`: pack old reports, logs and cached data into monthly archives; back the home up weekly.

    krx retention pack [--keep-days N] [--dry-run]
    krx retention backup [--target SPEC] [--keep N] [--rsh CMD]

pack: what is older than `keep_days` (app.yaml retention, default 30) goes into
`<archive_dir>/<kind>/<YYYY-MM>.tar.gz` (default archive_dir: the home's archive/), members named by their path in
the home, so `tar -xzf archive/logs/2026-01.tar.gz -C <home>` puts them back. Kinds:

    done            reports/done/<id>/ (a result folder is one item)
    signals         reports/signals/*
    outbox          reports/outbox/*
    ops-snapshots   reports/ops/daily/snapshots/*
    logs            logs/*.log
    data            cached files below data/ (everything but the EOD store, data/eod/)

- Age is the file's mtime (a folder's: its newest file's), and the month of the archive is that mtime's month in
  Asia/Seoul. mtime rather than a date in the name: it is what every kind has (a request id need not carry a date),
  and it says when the thing was last written, so a report written today about an old day is not archived today.
  A copy that did not keep mtimes only makes things look newer: they are archived later, never too early.
- Never touched: reports/pending/, processing/ and failed/ (live queue and errors waiting for a person), hidden
  entries (work in progress), the newest item of each kind (the "latest" lookups keep working after a long pause),
  and the EOD store data/eod/ as a whole: it is the history the scan and the backtest read (not a cache), its
  manifest lists every stored day, and removing a year behind its back would make the store claim days it lacks.
- Order, for each archive: write it to a hidden temporary file beside it, fsync, rename (a crash leaves no half
  archive under the real name); re-open it from disk and verify: the whole gzip stream (CRC and length), the member
  names exactly the planned ones, each file's size and sha256 equal to the original's as it is on disk now. Only
  then are the originals removed (a result folder first renamed out of done/, so it vanishes in one step). A failed
  write or verification removes nothing and drops the unverified archive. Archives are write-once: more items of
  an archived month go to `<YYYY-MM>.2.tar.gz`, `.3`, ...
- The ids of archived result folders are recorded in `state/archived_results.txt` (nas/archived.py), so
  `krx sync` never copies them back from the other side (without it, sync and retention would undo each other
  forever: pack removes an old result, the next sync fetches it again, the next pack archives it again).

backup: nas/backup.py.

Exit codes: 0 done (also nothing to do), 2 another run is busy, 3 failed (nothing removed for a failed archive).
"""

from __future__ import annotations

import argparse
import datetime as dt
import gzip
import hashlib
import logging
import os
import shutil
import tarfile
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from common import atomic, config, locks, log, retry
from common.errors import EXIT_BLOCKED, EXIT_FAILED, EXIT_OK, AlertorError
from common.home import Home
from common.redact import redact
from nas import archived, backup, remote

_log = log.get("retention")
CHUNK = 1 << 20


@dataclass(frozen=True)
class Kind:
    name: str
    rel: str    # folder below the home
    unit: str   # "dir": each sub-folder is one item; "file": each file; "tree": each file below, recursively
    pattern: str = "*"


KINDS = (
    Kind("done", "reports/done", "dir"),
    Kind("signals", "reports/signals", "file"),
    Kind("outbox", "reports/outbox", "file"),
    Kind("ops-snapshots", "reports/ops/daily/snapshots", "file"),
    Kind("logs", "logs", "file", "*.log"),
    Kind("data", "data", "tree"),
)
NEVER = ("reports/pending", "reports/processing", "reports/failed", "data/eod")  # see the module doc
# A fixed place in the home, not below archive_dir: `krx sync` reads the OTHER home's index too, and that home's
# archive_dir is in its own config (maybe absolute, maybe overridden by its environment), which sync cannot see.
# state/ is never packed, synced nor versioned, and `krx retention backup` keeps it with the rest of the home.
class RetentionError(AlertorError):
    pass


@dataclass
class Item:
    kind: str
    path: Path
    mtime: float
    files: list[Path] = field(default_factory=list)
    dirs: list[Path] = field(default_factory=list)


def _hidden(path: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def _walk_dir(folder: Path) -> tuple[list[Path], list[Path], bool]:
    """(dirs, files, clean) below folder, itself included in dirs; clean is False when something is neither a
    regular file nor a folder (a symlink, a pipe): such an item is left alone rather than archived half."""
    dirs, files, clean = [folder], [], True
    for root, subdirs, names in os.walk(folder):
        for d in subdirs:
            p = Path(root) / d
            if p.is_symlink():
                clean = False
            dirs.append(p)
        for n in names:
            p = Path(root) / n
            if p.is_symlink() or not p.is_file():
                clean = False
            files.append(p)
    return sorted(dirs), sorted(files), clean


def collect(home: Home, kind: Kind) -> tuple[list[Item], list[str]]:
    """Every item of a kind (hidden ones and the never-touched folders excluded) and what was skipped, why."""
    base = home.root / kind.rel
    items: list[Item] = []
    skipped: list[str] = []
    if not base.is_dir():
        return items, skipped
    never = [home.root / n for n in NEVER]
    if kind.unit == "dir":
        for entry in sorted(base.iterdir()):
            if entry.name.startswith(".") or entry.is_symlink() or not entry.is_dir():
                continue
            dirs, files, clean = _walk_dir(entry)
            if not clean:
                skipped.append(f"{entry.relative_to(home.root)}: holds a link or special file")
                continue
            mtime = max((f.stat().st_mtime for f in files), default=entry.stat().st_mtime)
            items.append(Item(kind.name, entry, mtime, files, dirs))
    else:
        found = base.rglob(kind.pattern) if kind.unit == "tree" else base.glob(kind.pattern)
        for p in sorted(found):
            if _hidden(p, base) or any(p == n or n in p.parents for n in never):
                continue
            if p.is_symlink() or not p.is_file():
                continue
            items.append(Item(kind.name, p, p.stat().st_mtime, [p]))
    return items, skipped


def plan(home: Home, keep_days: int, now: float | None = None) -> tuple[dict[tuple[str, str], list[Item]], list[str]]:
    """(kind, YYYY-MM) -> the items to pack into that month's archive; and the skipped items."""
    now = time.time() if now is None else now
    cutoff = now - keep_days * 86400
    groups: dict[tuple[str, str], list[Item]] = defaultdict(list)
    skipped: list[str] = []
    for kind in KINDS:
        items, skip = collect(home, kind)
        skipped += skip
        if not items:
            continue
        newest = max(items, key=lambda i: i.mtime)
        for item in items:
            if item.mtime < cutoff and item is not newest:
                month = dt.datetime.fromtimestamp(item.mtime, log.TZ).strftime("%Y-%m")
                groups[(kind.name, month)].append(item)
    return dict(sorted(groups.items())), skipped


class _HashingReader:
    """Hands a file to tarfile and hashes exactly the bytes that went into the archive."""

    def __init__(self, fh):
        self.fh, self.sha, self.size = fh, hashlib.sha256(), 0

    def read(self, n: int = -1) -> bytes:
        data = self.fh.read(n)
        self.sha.update(data)
        self.size += len(data)
        return data


def _sha256(path: Path) -> tuple[int, str]:
    sha, size = hashlib.sha256(), 0
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            sha.update(chunk)
            size += len(chunk)
    return size, sha.hexdigest()


def archive_path(folder: Path, month: str) -> Path:
    """The first free name of the month: archives are write-once."""
    n = 1
    while True:
        path = folder / (f"{month}.tar.gz" if n == 1 else f"{month}.{n}.tar.gz")
        if not path.exists():
            return path
        n += 1


def write_archive(home: Home, items: list[Item], path: Path) -> dict[str, tuple[int, str] | None]:
    """Write the items into a new archive at `path` atomically; returns member name -> (size, sha256) of every file
    as it went in (None for folders)."""
    members: dict[str, tuple[int, str] | None] = {}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            with tarfile.open(fileobj=fh, mode="w:gz", format=tarfile.PAX_FORMAT) as tar:
                for item in items:
                    for d in item.dirs:
                        name = d.relative_to(home.root).as_posix()
                        tar.addfile(tar.gettarinfo(str(d), arcname=name))
                        members[name] = None
                    for f in item.files:
                        name = f.relative_to(home.root).as_posix()
                        info = tar.gettarinfo(str(f), arcname=name)
                        with open(f, "rb") as src:
                            reader = _HashingReader(src)
                            tar.addfile(info, reader)  # reads exactly info.size bytes, or fails
                        members[name] = (reader.size, reader.sha.hexdigest())
            fh.flush()
            os.fsync(fh.fileno())
        if path.exists():  # write-once, even against a run that ignored the lock
            raise FileExistsError(path)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    atomic.fsync_dir(path.parent)
    return members


def verify_archive(home: Home, path: Path, members: dict[str, tuple[int, str] | None]) -> list[str]:
    """Re-open the archive from disk and compare it with what was planned and with the originals; [] when sound."""
    problems: list[str] = []
    try:
        with gzip.open(path, "rb") as gz:  # the whole stream: a truncated or corrupt archive fails its CRC here
            while gz.read(CHUNK):
                pass
        seen: list[str] = []
        with tarfile.open(path, "r:gz") as tar:
            for m in tar:
                seen.append(m.name)
                want = members.get(m.name, "missing")
                if want == "missing":
                    problems.append(f"{m.name}: in the archive but not planned")
                elif want is None:
                    if not m.isdir():
                        problems.append(f"{m.name}: expected a folder")
                elif not m.isfile():
                    problems.append(f"{m.name}: expected a file")
                else:
                    sha = hashlib.sha256()
                    src = tar.extractfile(m)
                    assert src is not None
                    while chunk := src.read(CHUNK):
                        sha.update(chunk)
                    if (m.size, sha.hexdigest()) != want:
                        problems.append(f"{m.name}: archived {m.size} bytes differ from the {want[0]} read")
        if sorted(seen) != sorted(members):
            problems.append(f"members differ: {len(seen)} archived, {len(members)} planned")
    except (OSError, EOFError, tarfile.TarError) as exc:
        return [f"cannot read the archive back: {type(exc).__name__}: {exc}"]
    for name, want in members.items():
        if want is None:
            continue
        try:
            now = _sha256(home.root / name)
        except OSError as exc:
            problems.append(f"{name}: original unreadable: {exc}")
            continue
        if now != want:
            problems.append(f"{name}: the original changed since it was packed ({now[0]} bytes now, {want[0]} packed)")
    return problems


def remove_items(home: Home, items: list[Item], members: dict) -> tuple[int, list[str]]:
    """Remove verified originals; a folder is renamed out of sight first, so readers never see half of it."""
    removed, problems = 0, []
    for item in items:
        try:
            if item.dirs:  # a folder must still hold exactly what was archived (results are write-once)
                rel = item.path.relative_to(home.root).as_posix()
                dirs, files, clean = _walk_dir(item.path)
                names = {p.relative_to(home.root).as_posix() for p in dirs + files}
                if not clean or names != {n for n in members if n == rel or n.startswith(rel + "/")}:
                    problems.append(f"{item.path.relative_to(home.root)}: changed after packing; kept")
                    continue
                trash = item.path.parent.parent / f".retention-{item.kind}.tmp"
                trash.mkdir(exist_ok=True)
                os.rename(item.path, trash / item.path.name)
                atomic.fsync_dir(item.path.parent)
                shutil.rmtree(trash)
            else:
                item.path.unlink()
            removed += 1
        except OSError as exc:
            problems.append(f"{item.path.relative_to(home.root)}: not removed: {exc}")
    return removed, problems


def archive_root(home: Home, cfg: dict) -> Path:
    folder = Path(cfg["archive_dir"]).expanduser()
    return folder if folder.is_absolute() else home.root / folder


def pack(home: Home, cfg: dict, keep_days: int, *, dry_run: bool = False, now: float | None = None) -> int:
    """Archive what is older than keep_days (`cfg`: app.yaml's validated retention section)."""
    root = archive_root(home, cfg)
    t0 = time.monotonic()
    groups, skipped = plan(home, keep_days, now)
    cutoff = dt.datetime.fromtimestamp((time.time() if now is None else now) - keep_days * 86400, log.TZ)
    log.event(_log, "RETENTION_START", f"keep_days={keep_days} (older than {cutoff:%Y-%m-%d %H:%M}) "
              f"archives={len(groups)} into {root}" + (" dry-run" if dry_run else ""))
    for why in skipped:
        log.event(_log, "RETENTION_SKIP", why, level=logging.WARNING)
    failed = packed = removed_total = 0
    for (kind, month), items in groups.items():
        rel = [str(i.path.relative_to(home.root)) for i in items]
        if dry_run:
            log.event(_log, "RETENTION_PLAN", f"{kind} {month}: {len(items)} items -> "
                      f"{archive_path(root / kind, month)}: {', '.join(rel[:5])}{' ...' if len(rel) > 5 else ''}")
            continue
        path = archive_path(root / kind, month)
        g0 = time.monotonic()
        try:
            members = write_archive(home, items, path)
        except (OSError, tarfile.TarError) as exc:
            failed += 1
            log.event(_log, "RETENTION_FAILED", f"{kind} {month}: archive {path} not written ({exc}); nothing removed",
                      rc=EXIT_FAILED, level=logging.ERROR)
            continue
        problems = verify_archive(home, path, members)
        if problems:
            failed += 1
            path.unlink(missing_ok=True)  # never trusted: the originals are all still there
            log.event(_log, "RETENTION_FAILED", f"{kind} {month}: archive {path.name} failed verification, dropped; "
                      f"nothing removed: {'; '.join(problems[:3])}", rc=EXIT_FAILED, level=logging.ERROR)
            continue
        if kind == "done":
            # After verification, so a failed archive never records ids (their folders stay and still sync);
            # before removal, so there is no moment when an id is neither in done/ nor in the index: a crash
            # between the two, or a sync running alongside, can never see it missing and fetch it back. A crash
            # after this line leaves an id both recorded and present: harmless (sync has it either way, the next
            # pack archives it again).
            try:
                archived.record(home, {i.path.name for i in items})
            except (OSError, archived.ArchivedIndexError) as exc:
                failed += 1
                path.unlink(missing_ok=True)  # not recorded: removing the folders would let sync bring them back
                log.event(_log, "RETENTION_FAILED", f"{kind} {month}: archived-results index not updated ({exc}); "
                          f"archive {path.name} dropped, nothing removed", rc=EXIT_FAILED, level=logging.ERROR)
                continue
        removed, problems = remove_items(home, items, members)
        packed += 1
        removed_total += removed
        files = sum(1 for v in members.values() if v is not None)
        log.event(_log, "RETENTION_PACKED", f"{kind} {month}: {len(items)} items ({files} files, "
                  f"{sum(v[0] for v in members.values() if v):,} bytes) -> {path} verified (names, sizes, sha256); "
                  f"removed {removed}", rc=EXIT_OK, elapsed_ms=(time.monotonic() - g0) * 1000)
        for why in problems:
            log.event(_log, "RETENTION_KEPT", f"{kind} {month}: {why}", level=logging.WARNING)
    rc = EXIT_FAILED if failed else EXIT_OK
    log.event(_log, "RETENTION_DONE", f"{packed} archives written and verified, {removed_total} items removed"
              + (f", {failed} failed (their items kept)" if failed else "") + (" (dry-run)" if dry_run else ""),
              rc=rc, elapsed_ms=(time.monotonic() - t0) * 1000, level=logging.ERROR if failed else logging.INFO)
    return rc


# --- the command -----------------------------------------------------------------------------------------------


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="retention_command", required=True, metavar="SUBCOMMAND")
    s = sub.add_parser("pack", help="pack old reports, logs and cached data into verified monthly archives",
                       description="pack old reports, logs and cached data into verified monthly archives")
    s.add_argument("--keep-days", type=int, metavar="N", help="keep the last N days as they are "
                   "(default: app.yaml retention.keep_days)")
    s.add_argument("--dry-run", action="store_true", help="show what would be packed; change nothing")
    s = sub.add_parser("backup", help="back the home up with rsync into a dated folder",
                       description="back the home up with rsync into a dated folder")
    s.add_argument("--target", metavar="SPEC", help="local path or host:path (default: app.yaml "
                   "retention.backup_target)")
    s.add_argument("--keep", type=int, metavar="N", help="dated backups to keep (default: app.yaml "
                   "retention.backup_keep; 0 keeps all)")
    s.add_argument("--rsh", metavar="CMD", help="remote shell for host:path (default: app.yaml sync.rsh)")


def _checked(value: int, name: str) -> int:
    if value < 0:
        raise RetentionError(f"{name} must be 0 or more, got {value}")
    return value


def run(args: argparse.Namespace) -> int:
    home = Home.from_env()
    cmd = args.retention_command
    log.setup_logging("retention", home)
    app = config.load("app", home)
    cfg = app["retention"]
    with locks.home_lock(home, "retention" if cmd == "pack" else "backup") as locked:
        if not locked:
            log.event(_log, "RETENTION_BUSY", f"another `krx retention {cmd}` of this home is running",
                      rc=EXIT_BLOCKED, level=logging.WARNING)
            return EXIT_BLOCKED
        try:
            if cmd == "pack":
                keep_days = _checked(cfg["keep_days"] if args.keep_days is None else args.keep_days, "keep_days")
                return pack(home, cfg, keep_days, dry_run=args.dry_run)
            target = args.target or cfg["backup_target"]
            if not target:
                raise RetentionError("no backup target: pass --target SPEC or set app.yaml retention.backup_target")
            keep = _checked(cfg["backup_keep"] if args.keep is None else args.keep, "backup_keep")
            return backup.backup(home, app, target, keep, args.rsh)
        except (RetentionError, remote.SyncError, retry.TransientError, OSError) as exc:
            what = "gave up after retries: " if isinstance(exc, retry.TransientError) else ""
            log.event(_log, "RETENTION_FAILED" if cmd == "pack" else "BACKUP_FAILED", f"{what}{redact(str(exc))}",
                      rc=EXIT_FAILED, level=logging.ERROR)
            return EXIT_FAILED
