"""The home folder: where configs, data, reports, state and logs live (KRX_HOME, default: the current folder)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from common import atomic

# The default configs ship in the repository's configs/ folder (the project is installed editable).
DEFAULT_CONFIGS = Path(__file__).resolve().parent.parent / "configs"
QUEUE_DIRS = ("pending", "processing", "done", "failed")


@dataclass(frozen=True)
class Home:
    root: Path

    @classmethod
    def of(cls, home: Home | str | os.PathLike) -> Home:
        """A Home, from a Home or a folder path."""
        return home if isinstance(home, Home) else cls(Path(home).resolve())

    @classmethod
    def from_env(cls) -> Home:
        return cls(Path(os.environ.get("KRX_HOME") or os.getcwd()).resolve())

    @property
    def configs(self) -> Path:
        return self.root / "configs"

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def reports(self) -> Path:
        return self.root / "reports"

    @property
    def state(self) -> Path:
        return self.root / "state"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    def queue(self, name: str) -> Path:
        """One of the queue folders: pending, processing, done, failed."""
        return self.reports / name


def init_home(root: str | os.PathLike) -> tuple[Home, list[str]]:
    """Create a home with the default configs and empty folders; existing files are never overwritten."""
    home = Home(Path(root).resolve())
    created: list[str] = []
    for folder in [home.configs, home.data, home.state, home.logs, *(home.queue(q) for q in QUEUE_DIRS)]:
        if not folder.is_dir():
            folder.mkdir(parents=True, exist_ok=True)
            created.append(str(folder.relative_to(home.root)) + "/")
    for src in sorted(DEFAULT_CONFIGS.glob("*.yaml")):
        dst = home.configs / src.name
        if not dst.exists():
            atomic.write_bytes(dst, src.read_bytes())  # every job reads it: never a half-copied config
            created.append(str(dst.relative_to(home.root)))
    return home, created
