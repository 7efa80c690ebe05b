"""common.atomic: what others read is whole, and readable by the other machine."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from common import atomic


def test_atomic_files_are_readable_by_the_other_machine(tmp_path: Path) -> None:
    path = atomic.write_json(tmp_path / "r.json", {"a": 1})
    umask = os.umask(0o022)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644 & ~umask
