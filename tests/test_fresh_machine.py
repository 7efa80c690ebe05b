"""Finding 1: `make demo` / `make test` on a machine without rsync. The real Makefile and scripts/ensure_tools.sh
run under a PATH that hides rsync; only the package manager (the far end) and `id` are stand-ins."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _bin(tmp_path: Path, uid: int, apt_installs: bool) -> Path:
    """A PATH folder with what make and the script need (curl too), rsync left out, `id -u` answering `uid`."""
    folder = tmp_path / "bin"
    folder.mkdir()
    for tool in ("bash", "env", "make", "git", "curl", "cat", "sh"):
        os.symlink(shutil.which(tool), folder / tool)
    (folder / "id").write_text(f"#!/bin/sh\necho {uid}\n")
    log = tmp_path / "apt.log"
    real_rsync = shutil.which("rsync")
    link = f"{shutil.which('ln')} -s {real_rsync} {folder}/rsync" if apt_installs else "true"
    (folder / "apt-get").write_text(f'#!/bin/sh\necho "$@" >> {log}\ncase "$1" in install) {link};; esac\n')
    for name in ("id", "apt-get"):
        (folder / name).chmod(0o755)
    return folder


def _make(target: str, path: Path) -> subprocess.CompletedProcess:
    env = {"PATH": str(path), "HOME": os.environ.get("HOME", "/tmp")}
    return subprocess.run(["make", "-s", "-C", str(REPO), target], env=env, capture_output=True, text=True,
                          timeout=120)


def test_without_rsync_and_without_rights_make_stops_with_one_line(tmp_path: Path) -> None:
    folder = _bin(tmp_path, uid=1000, apt_installs=False)
    for target in ("demo", "test"):
        proc = _make(target, folder)
        assert proc.returncode != 0
        lines = [ln for ln in proc.stderr.splitlines() if ln.strip() and not ln.startswith("make")]
        assert lines == ["krx-alertor needs rsync: install it first (Debian/Ubuntu: sudo apt-get install rsync), "
                         "then run make again"], proc.stderr
        assert "pytest" not in proc.stdout and "faces.demo" not in proc.stdout  # nothing ran
    assert not (tmp_path / "apt.log").exists()  # no right to install: not even tried


def test_as_root_the_missing_tool_is_installed_with_apt_get(tmp_path: Path) -> None:
    folder = _bin(tmp_path, uid=0, apt_installs=True)
    proc = _make("tools", folder)
    assert proc.returncode == 0, proc.stderr
    assert "install -y -qq rsync" in (tmp_path / "apt.log").read_text()
    assert (folder / "rsync").exists()


def test_ci_runs_just_make_test() -> None:
    text = (REPO / ".ci" / "run").read_text()
    assert "exec make test" in text and "apt-get" not in text


def _browser_bin(tmp_path: Path, uid: int, apt_installs: bool) -> Path:
    """rsync and git there, chromium not; apt-get (a stand-in) links the real chromium in when it may install."""
    folder = _bin(tmp_path, uid, apt_installs=False)
    os.symlink(shutil.which("rsync"), folder / "rsync")
    chromium = shutil.which("chromium") or "/bin/true"  # the stand-in only needs something executable to link
    link = f"{shutil.which('ln')} -s {chromium} {folder}/chromium" if apt_installs else "true"
    log = tmp_path / "apt.log"
    (folder / "apt-get").write_text(f'#!/bin/sh\necho "$@" >> {log}\ncase "$1" in install) {link};; esac\n')
    return folder


def _ensure_browser(folder: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(REPO / "scripts" / "ensure_tools.sh"), "--browser"],
                          env={"PATH": str(folder), **env}, capture_output=True, text=True, timeout=60)


def test_make_test_installs_chromium_for_the_browser_tests(tmp_path: Path) -> None:
    folder = _browser_bin(tmp_path, uid=0, apt_installs=True)
    proc = _ensure_browser(folder)
    assert proc.returncode == 0, proc.stderr
    assert "install -y -qq chromium" in (tmp_path / "apt.log").read_text()
    assert (folder / "chromium").exists() and "skip" not in proc.stderr


def test_chromium_that_cannot_be_installed_stops_nothing_but_says_so(tmp_path: Path) -> None:
    folder = _browser_bin(tmp_path, uid=1000, apt_installs=False)
    proc = _ensure_browser(folder)
    assert proc.returncode == 0, proc.stderr  # rsync and git are there: the rest of the suite runs
    assert "the dashboard's browser tests will skip" in proc.stderr and "CI" not in proc.stderr
    assert "and fail under CI" in _ensure_browser(folder, CI="true").stderr
