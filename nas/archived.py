"""The index of archived results: `state/archived_results.txt`, the ids `krx retention pack` archived.

Both sides read it: retention writes it, and sync treats the ids as present (it never brings an archived result
back, and `--delete` never prunes archived history). Otherwise sync and retention would undo each other every day.
"""

from __future__ import annotations

from common import atomic, safeio
from common.errors import AlertorError
from common.home import Home
from common.queue_names import is_valid_id

INDEX = "state/archived_results.txt"
HEADER = ("# result ids `krx retention pack` archived (archive/done/): `krx sync` never brings them back.\n"
          "# One id per line; written only by retention (atomic replace).\n")


class ArchivedIndexError(AlertorError):
    """The index is damaged or unreadable: never read as "none archived"."""


def parse(text: str, where: str) -> set[str]:
    """The ids in an archived-results index; ArchivedIndexError for anything that is not one (a damaged index must
    not be read as "fewer archived": that would start the sync/retention loop again)."""
    ids: set[str] = set()
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if not is_valid_id(line):
            raise ArchivedIndexError(f"{where}: line {n} is not a result id ({line[:60]!r}); the index is damaged: "
                                     "fix or remove that line")
        ids.add(line)
    return ids


def ids(home: Home) -> set[str]:
    """The result ids this home's `krx retention pack` archived and removed from reports/done/. A missing index
    means none; an unreadable or damaged one is an ArchivedIndexError, never "none"."""
    path = home.root / INDEX
    try:
        text = safeio.read_bytes(path).decode("utf-8")
    except FileNotFoundError:
        return set()
    except (OSError, ValueError) as exc:  # ValueError: not a regular file, too large, not UTF-8
        raise ArchivedIndexError(f"{path}: archived-results index unreadable: {exc}") from None
    return parse(text, str(path))


def record(home: Home, new: set[str]) -> None:
    """Add ids to the index in one atomic replace (a reader sees the old index or the new one, never half)."""
    known = ids(home)
    if new <= known:
        return
    atomic.write_text(home.root / INDEX, HEADER + "".join(f"{i}\n" for i in sorted(known | new)))
