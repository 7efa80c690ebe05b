"""Atomic writes: a reader sees the old file or the new one, never half of either."""

from __future__ import annotations

import functools
import json
import os
import tempfile
from pathlib import Path
from typing import Any


def fsync_dir(path: Path) -> None:
    """Make a rename inside `path` durable (no-op where directories cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# Reports, queue files and state are read by other accounts too (a NAS and a PC on one share), so a written file
# is readable like any file the user creates (mkstemp alone would leave 0600). Secrets are not written here: the
# event log's key is created 0600 by common.anchor, tokens live in .env.
DEFAULT_MODE = 0o644


def write_bytes(path: str | os.PathLike, data: bytes, mode: int = DEFAULT_MODE, *, durable: bool = True) -> Path:
    """Write `data` to a hidden temporary file beside `path`, fsync it, then rename it over `path`. The file gets
    `mode` less the process's umask. `durable=False` skips the fsyncs: still all-or-nothing for a reader, but a
    power cut may bring back the previous version (for files whose lagging is harmless)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        if hasattr(os, "fchmod"):
            os.fchmod(fd, mode & ~_umask())
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            if durable:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if durable:
        fsync_dir(path.parent)
    return path


@functools.cache
def _umask() -> int:
    """The process's umask, read without changing it (Linux: /proc), else the common 022."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o022


def write_text(path: str | os.PathLike, text: str, *, durable: bool = True) -> Path:
    # a name that is not UTF-8 (surrogates) becomes a \udcXX escape, never a UnicodeEncodeError mid-job
    return write_bytes(path, text.encode("utf-8", "backslashreplace"), durable=durable)


def write_json(path: str | os.PathLike, obj: Any, *, durable: bool = True) -> Path:
    return write_text(path, json.dumps(obj, ensure_ascii=False, indent=2, default=str) + "\n", durable=durable)


def create_secret(path: str | os.PathLike, data: bytes) -> bool:
    """Create `path` (mode 0600, its folder 0700 when made here) holding `data`, unless it exists: a key another
    process created a moment ago is never replaced (a link cannot overwrite). True when this call created it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    finally:
        tmp.unlink(missing_ok=True)
