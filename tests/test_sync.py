"""`krx sync`: real rsync between temporary folders (also through a remote shell, and interrupted), real git pushes
to a bare repository; the CLI runs as a subprocess like cron runs it."""

from __future__ import annotations

import datetime as dt
import fcntl
import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from conftest import krx

from common import retry
from common.home import Home, init_home
from common.redact import redact
from nas import remote

FAST_RETRY = {"KRX__APP__RETRY__ATTEMPTS": "4", "KRX__APP__RETRY__WAIT_INITIAL_S": "1.0",
              "KRX__APP__RETRY__WAIT_MAX_S": "2.0", "KRX__APP__RETRY__DEADLINE_S": "60"}
NO_RETRY = {"KRX__APP__RETRY__ATTEMPTS": "1"}


def tree(root: Path) -> dict[str, str]:
    """Every file below root (relative path -> sha256), hidden ones included: what a reader could see."""
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def add_result(home: Home, rid: str, size: int = 100) -> Path:
    folder = home.queue("done") / rid
    folder.mkdir(parents=True)
    (folder / "equity.csv").write_bytes(os.urandom(size))
    (folder / "report.html").write_text(f"<html>{rid}</html>")
    (folder / "result.json").write_text(f'{{"id": "{rid}"}}\n')
    return folder


def work_in_progress(home: Home) -> None:
    """What jobs leave while they run: a worker's hidden output folder, an atomic write's temp file."""
    tmp = home.queue("done") / ".r9.pc-1234.tmp"
    tmp.mkdir(parents=True)
    (tmp / "result.json").write_text("half")
    ops = home.reports / "ops" / "daily"
    ops.mkdir(parents=True, exist_ok=True)
    (ops / ".ops_report_latest.json.x1.tmp").write_text("half")


def add_receipts(home: Home) -> None:
    daily = home.reports / "ops" / "daily"
    (daily / "snapshots").mkdir(parents=True, exist_ok=True)
    (daily / "ops_report_latest.json").write_text('{"result": "COMPLETED"}\n')
    (daily / "snapshots" / "ops_run_20260105-161000.json").write_text('{"result": "COMPLETED"}\n')
    (home.reports / "ops" / "summary").mkdir(parents=True, exist_ok=True)
    (home.reports / "ops" / "summary" / "ops_summary_latest.json").write_text('{"overall_status": "OK"}\n')


def events(stderr: str) -> list[str]:
    return [line.split("] [")[2].split("]")[0] for line in stderr.splitlines() if line.startswith("[")]


@pytest.fixture
def pc(tmp_path: Path) -> Home:
    """A second home: the PC whose results the NAS fetches."""
    return init_home(tmp_path / "pc")[0]


@pytest.fixture
def fake_ssh(tmp_path: Path) -> str:
    """A remote shell that runs the command on this machine, as ssh runs it on the host (the real rsync protocol
    over a pipe, no sshd needed)."""
    script = tmp_path / "fake-ssh"
    script.write_text('#!/bin/sh\nshift\nexec sh -c "$*"\n')
    script.chmod(0o755)
    return str(script)


# --- rsync -----------------------------------------------------------------------------------------------------


def test_push_sends_results_and_receipts_never_work_in_progress(home: Home, tmp_path: Path) -> None:
    add_result(home, "20260105-momentum_topN_v1-abc")
    add_result(home, "20260106-momentum_topN_v1-def")
    add_receipts(home)
    work_in_progress(home)
    (home.reports / "phase_c" / "latest").mkdir(parents=True)  # trading's reconcile summary travels like results
    (home.reports / "phase_c" / "latest" / "recon_summary.json").write_text('{"schema": "recon_summary/1"}')
    nas = tmp_path / "nas"
    nas.mkdir()

    r = krx("sync", "push", "--via", "rsync", "--remote", str(nas), home=home)
    assert r.returncode == 0, r.stderr
    assert events(r.stderr) == ["SYNC_START", "SYNC_OPS", "SYNC_LIST", "SYNC_RESULTS", "SYNC_PUBLISH", "SYNC_DONE"]
    assert "sent 2 results" in r.stderr
    mine = {k: v for k, v in tree(home.reports).items() if not k.split("/")[-2].startswith(".")
            and not Path(k).name.startswith(".") and k.split("/")[0] in ("done", "ops", "phase_c")}
    assert "phase_c/latest/recon_summary.json" in mine
    assert tree(nas / "reports") == mine  # byte for byte, and nothing hidden, no staging left behind
    assert not any(p.name.startswith(".") for p in nas.rglob("*"))

    # again: nothing new to send; a result only the remote has stays (no --delete)
    (nas / "reports" / "done" / "20250101-old").mkdir()
    (nas / "reports" / "done" / "20250101-old" / "result.json").write_text("{}")
    r = krx("sync", "push", "--remote", str(nas), home=home)  # rsync is app.yaml's default
    assert r.returncode == 0, r.stderr
    assert "nothing new to send" in r.stderr and "sent 0 results" in r.stderr
    assert (nas / "reports" / "done" / "20250101-old" / "result.json").exists()


def test_push_delete_only_when_asked(home: Home, tmp_path: Path) -> None:
    add_result(home, "r1")
    add_receipts(home)
    nas = tmp_path / "nas"
    nas.mkdir()
    assert krx("sync", "push", "--remote", str(nas), home=home).returncode == 0
    (nas / "reports" / "done" / "gone").mkdir()
    (nas / "reports" / "done" / "gone" / "result.json").write_text("{}")
    busy = nas / "reports" / "done" / ".r2.nas-worker.tmp"  # a job running on the remote: never touched
    busy.mkdir()
    (busy / "x").write_text("x")
    (home.reports / "ops" / "daily" / "snapshots" / "ops_run_20260105-161000.json").unlink()

    r = krx("sync", "push", "--remote", str(nas), "--delete", home=home)
    assert r.returncode == 0, r.stderr
    assert "SYNC_DELETE" in events(r.stderr) and "deleted 1" in r.stderr
    assert sorted(p.name for p in (nas / "reports" / "done").iterdir()) == [".r2.nas-worker.tmp", "r1"]
    assert (busy / "x").exists()
    assert not (nas / "reports" / "ops" / "daily" / "snapshots" / "ops_run_20260105-161000.json").exists()


def test_pull_fetches_new_results_into_the_home(home: Home, pc: Home) -> None:
    add_result(pc, "r1")
    add_result(pc, "r2", size=5000)
    work_in_progress(pc)
    mine = add_result(home, "r1")  # the NAS has r1 already: results are write-once, never overwritten
    before = tree(mine)

    r = krx("sync", "pull", "--remote", str(pc.root), home=home)
    assert r.returncode == 0, r.stderr
    assert events(r.stderr) == ["SYNC_START", "SYNC_RESULTS", "SYNC_PUBLISH", "SYNC_DONE"]
    assert "fetched 1 results" in r.stderr
    assert tree(home.queue("done") / "r2") == tree(pc.queue("done") / "r2")
    assert tree(mine) == before
    assert sorted(p.name for p in home.queue("done").iterdir()) == ["r1", "r2"]
    assert sorted(p.name for p in home.reports.iterdir()) == ["done", "failed", "pending", "processing"]

    # --delete: the NAS drops a result the PC no longer has; refuses when the PC lists none (share not mounted?)
    add_result(home, "r0")
    r = krx("sync", "pull", "--remote", str(pc.root), "--delete", home=home)
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in home.queue("done").iterdir()) == ["r1", "r2"]
    empty = init_home(pc.root.parent / "empty")[0]
    r = krx("sync", "pull", "--remote", str(empty.root), "--delete", home=home)
    assert r.returncode == 3 and "refusing to delete" in r.stderr
    assert sorted(p.name for p in home.queue("done").iterdir()) == ["r1", "r2"]


def test_host_path_through_a_remote_shell(home: Home, pc: Home, tmp_path: Path, fake_ssh: str) -> None:
    add_result(home, "r1")
    add_receipts(home)
    nas = tmp_path / "nas"
    nas.mkdir()
    r = krx("sync", "push", "--remote", f"nas-host:{nas}", "--rsh", fake_ssh, home=home)
    assert r.returncode == 0, r.stderr
    assert "published 1 into nas-host:" in r.stderr
    assert tree(nas / "reports" / "done") == tree(home.queue("done"))
    assert not any(p.name.startswith(".") for p in nas.rglob("*"))

    add_result(pc, "p1")
    r = krx("sync", "pull", "--remote", f"pc-host:{pc.root}", "--rsh", fake_ssh, home=home)
    assert r.returncode == 0, r.stderr
    assert tree(home.queue("done") / "p1") == tree(pc.queue("done") / "p1")

    add_result(home, "r2")
    (nas / "reports" / "done" / "x9").mkdir()
    r = krx("sync", "push", "--remote", f"nas-host:{nas}", "--rsh", fake_ssh, "--delete", home=home)
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in (nas / "reports" / "done").iterdir()) == ["p1", "r1", "r2"]


def run_streaming(home: Home, args: list[str], env: dict, on_line) -> tuple[int, str]:
    """Run the CLI and hand each stderr line to on_line as it arrives (the test reacts to the real failure)."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("KRX__", "SLACK_"))}
    full_env.update({"KRX_HOME": str(home.root), **env})
    proc = subprocess.Popen([sys.executable, "-m", "faces.cli", *args], stderr=subprocess.PIPE, text=True,
                            stdout=subprocess.DEVNULL, env=full_env, cwd=home.root)
    lines = []
    assert proc.stderr is not None
    for line in proc.stderr:
        lines.append(line)
        on_line(line)
    return proc.wait(timeout=60), "".join(lines)


def test_a_missing_remote_is_retried_until_it_appears(home: Home, tmp_path: Path) -> None:
    add_result(home, "r1", size=20000)
    add_result(home, "r2")
    add_receipts(home)
    nas = tmp_path / "share" / "krx"  # the share is not mounted yet: rsync itself fails (exit 11)

    def mount(line: str) -> None:
        if "[RETRY]" in line:
            nas.mkdir(parents=True, exist_ok=True)

    rc, err = run_streaming(home, ["sync", "push", "--remote", str(nas)], FAST_RETRY, mount)
    assert rc == 0, err
    retries = [ln for ln in err.splitlines() if "[RETRY]" in ln]
    assert len(retries) == 1 and "rsync exit 11" in retries[0] and "mkdir" in retries[0]
    assert events(err)[-1] == "SYNC_DONE"
    assert tree(nas / "reports" / "done") == tree(home.queue("done"))
    assert not any(p.name.startswith(".") for p in nas.rglob("*"))


def test_gives_up_within_bounds_with_a_clear_message(home: Home, tmp_path: Path) -> None:
    add_result(home, "r1")
    before = tree(home.root / "reports")
    r = krx("sync", "push", "--remote", str(tmp_path / "not-mounted" / "krx"), home=home,
            env={**FAST_RETRY, "KRX__APP__RETRY__ATTEMPTS": "2"})
    assert r.returncode == 3
    assert r.stderr.count("[RETRY]") == 1  # bounded by the attempts: 2 in all, so one retry
    failed = [ln for ln in r.stderr.splitlines() if "[SYNC_FAILED]" in ln]
    assert failed and "[ERROR]" in failed[0] and "rc=3" in failed[0]
    assert "gave up after retries" in failed[0] and "remote folder must exist" in failed[0]
    assert not (tmp_path / "not-mounted").exists()  # never created: that would fill the local disk
    assert tree(home.root / "reports") == before


def test_an_interrupted_transfer_never_shows_half_a_result(home: Home, tmp_path: Path) -> None:
    big = add_result(home, "big", size=6_000_000)
    add_result(home, "small")
    nas = tmp_path / "nas"
    nas.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KRX__", "SLACK_"))}
    env["KRX_HOME"] = str(home.root)
    proc = subprocess.Popen([sys.executable, "-m", "faces.cli", "sync", "push", "--remote", str(nas),
                             "--bwlimit", "1000"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)  # its own process group: rsync dies with it
    staging = nas / "reports" / remote.staging_name()
    deadline = time.monotonic() + 60  # a start-up deadline for a slow machine: the 6 MB copy itself takes 6 s
    while time.monotonic() < deadline and not any(p.is_file() and p.stat().st_size > 200_000
                                                  for p in staging.rglob("*")):
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # a power cut in the middle of the big file
    proc.wait(timeout=10)
    assert any(staging.rglob("*")), "the transfer was not caught in flight"
    assert list((nas / "reports" / "done").iterdir()) == []  # no result half there: the staging is hidden

    r = krx("sync", "push", "--remote", str(nas), home=home)
    assert r.returncode == 0, r.stderr
    assert tree(nas / "reports" / "done" / "big") == tree(big)  # exactly the source: no stray temp files
    assert sorted(p.name for p in (nas / "reports").iterdir()) == ["done"]


def test_rsync_usage_errors_are_not_transient() -> None:
    rs = remote.Rsync(remote.DEFAULT_RSH, 10, 30)
    with pytest.raises(remote.SyncError, match="rsync exit 1"):
        rs.run("x", ["--no-such-option", "/nonexistent/", "/tmp/"])
    with pytest.raises(retry.TransientError, match="rsync exit 23"):
        rs.run("x", ["/nonexistent-krx-source/", "/tmp/nonexistent-krx-dest/"])


def test_spec_and_redaction() -> None:
    assert remote.Spec.parse("nas:/volume1/krx") == remote.Spec("/volume1/krx", "nas")
    assert remote.Spec.parse("me@nas:krx/").arg("reports", "done", slash=True) == "me@nas:krx/reports/done/"
    assert remote.Spec.parse("nas:~/krx") == remote.Spec("krx", "nas")
    assert remote.Spec.parse("nas:") == remote.Spec(".", "nas")
    assert remote.Spec.parse("/mnt/share/krx/").host is None
    assert remote.Spec.parse("./a:b").host is None
    for bad in ("", "nas::module", "rsync://nas/krx"):
        with pytest.raises(remote.SyncError):
            remote.Spec.parse(bad)
    assert redact("https://bob:s3cret@github.com/x.git") == "https://***@github.com/x.git"
    assert redact("fatal: 'https://ghp_TOKEN@host/r' not found") == "fatal: 'https://***@host/r' not found"
    assert redact("git@github.com:me/r.git") == "git@github.com:me/r.git"


def test_a_second_sync_of_the_same_home_is_refused(home: Home, tmp_path: Path) -> None:
    home.state.mkdir(exist_ok=True)
    with open(home.state / ".sync.lock", "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        r = krx("sync", "push", "--remote", str(tmp_path), home=home)
    assert r.returncode == 2 and "[SYNC_BUSY]" in r.stderr


# --- git -------------------------------------------------------------------------------------------------------


@pytest.fixture
def git_env(tmp_path: Path) -> dict:
    """No global or system git config: the identity must come from the fallback."""
    (tmp_path / "userhome").mkdir()
    return {"HOME": str(tmp_path / "userhome"), "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull}


def bare(path: Path) -> Path:
    subprocess.run(["git", "init", "-q", "--bare", str(path)], check=True)
    return path


def git_out(repo: Path, *args: str) -> str:
    return subprocess.run(["git", f"--git-dir={repo}", *args], capture_output=True, text=True, check=True).stdout


def test_git_push_initialises_commits_and_pushes(home: Home, tmp_path: Path, git_env: dict) -> None:
    add_result(home, "r1")
    add_receipts(home)
    work_in_progress(home)
    (home.data / "eod").mkdir(parents=True)
    (home.data / "eod" / "2026.parquet").write_bytes(b"x")
    (home.logs / "sync_20260105.log").write_text("x")
    remote = bare(tmp_path / "remote.git")

    r = krx("sync", "push", "--via", "git", "--remote", str(remote), "--branch", "results", home=home, env=git_env)
    assert r.returncode == 0, r.stderr
    assert events(r.stderr) == ["SYNC_START", "GIT_INIT", "GIT_COMMIT", "GIT_PUSH", "SYNC_DONE"]
    today = dt.datetime.now(ZoneInfo("Asia/Seoul")).date().isoformat()
    assert git_out(remote, "log", "--format=%s|%an <%ae>", "results").splitlines() == [
        f"Daily recon update - {today}|krx-alertor <krx-alertor@localhost>"]
    files = git_out(remote, "ls-tree", "-r", "--name-only", "results").split()
    assert files == sorted(["reports/done/r1/equity.csv", "reports/done/r1/report.html", "reports/done/r1/result.json",
                            "reports/ops/daily/ops_report_latest.json",
                            "reports/ops/daily/snapshots/ops_run_20260105-161000.json",
                            "reports/ops/summary/ops_summary_latest.json"])
    gitignore = (home.root / ".gitignore").read_text()
    assert all(f"/{d}/" in gitignore for d in ("data", "logs", "state", ".venv"))

    # nothing to commit is success; a new result is one more commit with the same message format
    r = krx("sync", "push", "--via", "git", "--remote", str(remote), "--branch", "results", home=home, env=git_env)
    assert r.returncode == 0, r.stderr
    assert "nothing to commit" in r.stderr and "up to date" in r.stderr
    add_result(home, "r2")
    r = krx("sync", "push", "--via", "git", "--remote", str(remote), "--branch", "results", home=home, env=git_env)
    assert r.returncode == 0, r.stderr
    assert git_out(remote, "log", "--format=%s", "results").splitlines() == [f"Daily recon update - {today}"] * 2


def test_git_push_retries_and_later_pushes_what_was_committed(home: Home, tmp_path: Path, git_env: dict) -> None:
    add_result(home, "r1")
    remote = tmp_path / "share" / "remote.git"  # not there: the push fails for real
    r = krx("sync", "push", "--via", "git", "--remote", str(remote), home=home,
            env={**git_env, **FAST_RETRY, "KRX__APP__RETRY__ATTEMPTS": "2"})
    assert r.returncode == 3, r.stderr
    assert r.stderr.count("[RETRY]") == 1 and "[GIT_COMMIT]" in r.stderr and "[SYNC_FAILED]" in r.stderr

    def mount(line: str) -> None:
        if "[RETRY]" in line:
            remote.parent.mkdir(exist_ok=True)
            bare(remote)

    # nothing new to commit, the earlier commit still goes out once the remote is back
    rc, err = run_streaming(home, ["sync", "push", "--via", "git", "--remote", str(remote)],
                            {**git_env, **FAST_RETRY}, mount)
    assert rc == 0, err
    assert "nothing to commit" in err and err.count("[RETRY]") == 1 and "[GIT_PUSH] rc=0" in err
    assert "reports/done/r1/result.json" in git_out(remote, "ls-tree", "-r", "--name-only", "main")


def test_git_never_prints_credentials(home: Home, git_env: dict) -> None:
    add_result(home, "r1")
    url = "https://bob:s3cret-token@127.0.0.1:9/krx.git"  # nothing listens on port 9: refused at once
    r = krx("sync", "push", "--via", "git", "--remote", url, home=home, env={**git_env, **NO_RETRY})
    assert r.returncode == 3
    assert "https://***@127.0.0.1:9/krx.git" in r.stderr
    logs = "".join(p.read_text() for p in home.logs.glob("*.log"))
    assert "s3cret" not in r.stderr + r.stdout + logs and "bob" not in r.stderr + logs


def test_git_pull_is_refused_clearly(home: Home) -> None:
    r = krx("sync", "pull", "--via", "git", home=home)
    assert r.returncode == 3 and "pull --via git is not supported" in r.stderr


def test_redact_hides_a_password_that_contains_an_at_sign() -> None:
    """git takes the last "@" before the host (https://user:p@ss@host/...): no part of the password may remain."""
    out = redact("fatal: unable to access 'https://bob:p@ss@github.com/me/r.git/': 403")
    assert out == "fatal: unable to access 'https://***@github.com/me/r.git/': 403"
    assert redact("https://host/a@b and https://x:y@h") == "https://host/a@b and https://***@h"
