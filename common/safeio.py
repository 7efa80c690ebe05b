"""Reading files that anyone with access to the home can put there: queue requests, state and report files.

A reader must never hang, never eat the machine's memory and never crash on what it finds:
- `read_bytes` opens without following a symbolic link and without blocking (a FIFO), checks that what it opened
  is a regular file (not a folder, a FIFO or a device), and reads at most a bounded number of bytes;
- `loads_json` parses strict JSON: UTF-8, no duplicate keys (the last one would silently win), no NaN or
  Infinity, and nesting too deep for the parser is an error, not a RecursionError;
- `show_name` makes a file name that is not UTF-8 printable and storable; `clip` cuts a long value for a log line.
Every refusal is an UnsafeFile or a ValueError whose message names the file and what was expected.
"""

from __future__ import annotations

import errno
import json
import os
import stat
from pathlib import Path
from typing import Any

from common.errors import AlertorError

MAX_STATE_BYTES = 1 << 20  # a switch, receipt or outbox is a few kB: 1 MB is generous and still bounded
_FLAGS = (os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
          | getattr(os, "O_CLOEXEC", 0))


class UnsafeFile(AlertorError, ValueError):
    """Not something to read: `kind` is "symlink", "fifo", "directory", "device", "socket" or "too_large"."""

    def __init__(self, path: str | os.PathLike, kind: str, what: str):
        self.path, self.kind = Path(path), kind
        super().__init__(f"{show_name(Path(path).name)}: {what}")


def file_kind(mode: int) -> str:
    """"file", "directory", "fifo", "device", "socket" or "symlink" of an st_mode."""
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISLNK(mode):
        return "symlink"
    if stat.S_ISDIR(mode):
        return "directory"
    if stat.S_ISFIFO(mode):
        return "fifo"
    if stat.S_ISSOCK(mode):
        return "socket"
    return "device"


def open_regular(path: str | os.PathLike) -> int:
    """A read-only descriptor of the regular file at `path`. FileNotFoundError when absent; UnsafeFile when it is
    anything else (a symbolic link is refused, never followed; a FIFO is never waited on)."""
    try:
        fd = os.open(path, _FLAGS)
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # O_NOFOLLOW on a symbolic link
            raise UnsafeFile(path, "symlink", "is a symbolic link, not a regular file") from None
        raise
    kind = file_kind(os.fstat(fd).st_mode)
    if kind != "file":
        os.close(fd)
        raise UnsafeFile(path, kind, f"is a {kind}, not a regular file")
    return fd


def read_bytes(path: str | os.PathLike, max_bytes: int = MAX_STATE_BYTES) -> bytes:
    """The file's bytes (see open_regular); UnsafeFile too when it holds more than `max_bytes`."""
    fd = open_regular(path)
    try:
        size = os.fstat(fd).st_size
        if size > max_bytes:
            raise UnsafeFile(path, "too_large", f"{size} bytes is over the limit of {max_bytes} bytes")
        chunks, size = [], 0
        while size <= max_bytes:
            chunk = os.read(fd, min(1 << 20, max_bytes + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > max_bytes:  # it grew while we read
            raise UnsafeFile(path, "too_large", f"over the limit of {max_bytes} bytes")
        return b"".join(chunks)
    finally:
        os.close(fd)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict:
    out: dict = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {clip(key, 40)!r}")
        out[key] = value
    return out


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def loads_json(data: bytes | str) -> Any:
    """Strict JSON (see the module's docstring); ValueError saying what is wrong."""
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8-sig")  # Notepad's BOM is harmless
        except UnicodeDecodeError as exc:
            raise ValueError(f"not UTF-8 text (byte {exc.start})") from None
    try:
        return json.loads(data, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except RecursionError:
        raise ValueError("nested too deeply") from None


def read_json(path: str | os.PathLike, max_bytes: int = MAX_STATE_BYTES) -> Any:
    """read_bytes + loads_json. FileNotFoundError when absent; ValueError (UnsafeFile included) naming the file
    when it cannot be used; OSError when it cannot be read."""
    data = read_bytes(path, max_bytes)
    try:
        return loads_json(data)
    except ValueError as exc:
        raise ValueError(f"{show_name(Path(path).name)} is not valid JSON: {exc}") from None


def show_name(name: str) -> str:
    """A file name as text that can be printed and stored: bytes that are not UTF-8 become \\xNN escapes."""
    return os.fsencode(name).decode("utf-8", "backslashreplace") if isinstance(name, str) else str(name)


def clip(value: Any, limit: int = 120) -> str:
    """str(value) cut to `limit` characters, saying how long it was: a 4,000-digit number never fills a log."""
    text = str(value)
    return text if len(text) <= limit else f"{text[:limit]}...({len(text)} chars)"
