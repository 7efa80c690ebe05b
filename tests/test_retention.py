"""`krx retention`: real archives on disk, verified before anything is removed; failures made by real filesystem
conditions (a file-size limit on the process, a file replaced while it is packed, a truncated archive); real rsync
backups into dated folders with hard links."""

from __future__ import annotations

import hashlib
import os
import resource
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
from conftest import krx, rotating

from common.home import Home
from nas import backup, retention

DAY = 86400


def put(home: Home, rel: str, data: bytes = b"x", age_days: float = 0) -> Path:
    path = home.root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    t = time.time() - age_days * DAY
    os.utime(path, (t, t))
    return path


def snapshot(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def members(path: Path) -> dict[str, bytes | None]:
    with tarfile.open(path, "r:gz") as tar:
        return {m.name: (tar.extractfile(m).read() if m.isfile() else None) for m in tar}  # type: ignore[union-attr]


@pytest.fixture
def aged(home: Home) -> Home:
    """A home with old and new things of every kind, and old things that must never be touched."""
    for rid, age in (("r-old1", 45), ("r-old2", 50), ("r-new", 3)):
        put(home, f"reports/done/{rid}/result.json", f'{{"id": "{rid}"}}'.encode(), age)
        put(home, f"reports/done/{rid}/equity.csv", os.urandom(3000), age)
    for day, age in (("20250101", 60), ("20250102", 59), ("20250301", 2)):
        put(home, f"reports/signals/signals_{day}.json", day.encode(), age)
        put(home, f"reports/outbox/{day}.json", day.encode(), age)
        put(home, f"reports/ops/daily/snapshots/ops_run_{day}-161000.json", day.encode(), age)
        put(home, f"logs/ingest_{day}.log", (day + "\n").encode() * 50, age)
    put(home, "data/cache/holidays_2024.json", b"[]", 90)
    put(home, "data/cache/holidays_2026.json", b"[]", 1)
    # never touched, however old
    put(home, "reports/pending/20250101-x.json", b"{}", 90)
    put(home, "reports/processing/20250101-y@0@pc.json", b"{}", 90)
    put(home, "reports/failed/z.json", b"{}", 90)
    put(home, f"data/eod/{time.localtime().tm_year}.parquet", b"eod", 90)
    put(home, "data/eod/manifest.json", b"{}", 90)
    put(home, "reports/done/.r9.pc.tmp/result.json", b"half", 90)
    put(home, "logs/.ingest.log.x.tmp", b"half", 90)
    return home


def test_pack_verifies_then_removes(aged: Home) -> None:
    home = aged
    before = snapshot(home.root)
    r = krx("retention", "pack", home=home)
    assert r.returncode == 0, r.stderr
    packed = [ln for ln in r.stderr.splitlines() if "[RETENTION_PACKED]" in ln]
    assert packed and all("verified (names, sizes, sha256)" in ln for ln in packed)

    archives = sorted(p.relative_to(home.root).as_posix() for p in (home.root / "archive").rglob("*.tar.gz"))
    assert not [p for p in (home.root / "archive").rglob("*") if p.name.startswith(".")]  # no temp left
    # every archived member is byte for byte the original, under its path in the home (tar -xzf ... -C home)
    archived: dict[str, str] = {}
    for a in archives:
        for name, data in members(home.root / a).items():
            if data is not None:
                archived[name] = hashlib.sha256(data).hexdigest()
    assert archived == {k: v for k, v in before.items() if k in archived}
    assert set(archived) == {
        "reports/done/r-old1/result.json", "reports/done/r-old1/equity.csv",
        "reports/done/r-old2/result.json", "reports/done/r-old2/equity.csv",
        "reports/signals/signals_20250101.json", "reports/signals/signals_20250102.json",
        "reports/outbox/20250101.json", "reports/outbox/20250102.json",
        "reports/ops/daily/snapshots/ops_run_20250101-161000.json",
        "reports/ops/daily/snapshots/ops_run_20250102-161000.json",
        "logs/ingest_20250101.log", "logs/ingest_20250102.log", "data/cache/holidays_2024.json"}
    # monthly archives per kind, named by the month of the item's mtime
    assert all(a.split("/")[1] in {"done", "signals", "outbox", "ops-snapshots", "logs", "data"} for a in archives)
    assert all(a.split("/")[2][:7].count("-") == 1 for a in archives)

    after = snapshot(home.root)
    assert not set(archived) & set(after)  # the originals are gone ...
    kept = {k for k in before if k not in archived}
    assert kept <= set(after)  # ... and everything else is still there, unchanged
    assert all(after[k] == before[k] for k in kept)
    assert not (home.queue("done") / "r-old1").exists() and (home.queue("done") / "r-new").is_dir()
    assert sorted(p.name for p in home.reports.iterdir() if p.name.startswith(".")) == []

    # nothing left to do; a new old item of an archived month goes into a second, write-once part
    r = krx("retention", "pack", home=home)
    assert r.returncode == 0 and "0 archives written" in r.stderr
    month = next(a for a in archives if a.startswith("archive/logs/")).split("/")[2][:7]
    first = (home.root / "archive" / "logs" / f"{month}.tar.gz").read_bytes()
    stamp = time.mktime(time.strptime(f"{month}-15", "%Y-%m-%d"))
    late = put(home, "logs/scan_late.log", b"late\n")
    os.utime(late, (stamp, stamp))
    r = krx("retention", "pack", home=home)
    assert r.returncode == 0, r.stderr
    assert (home.root / "archive" / "logs" / f"{month}.tar.gz").read_bytes() == first
    assert list(members(home.root / "archive" / "logs" / f"{month}.2.tar.gz")) == ["logs/scan_late.log"]


def test_dry_run_and_keep_days(aged: Home) -> None:
    before = snapshot(aged.root)
    r = krx("retention", "pack", "--dry-run", home=aged)
    assert r.returncode == 0 and r.stderr.count("[RETENTION_PLAN]") >= 6 and "reports/done/r-old1" in r.stderr
    after = snapshot(aged.root)
    assert {k: v for k, v in after.items() if k in before} == before and not (aged.root / "archive").exists()
    assert all(k.startswith(("logs/retention_", "state/.retention.lock")) for k in set(after) - set(before))
    r = krx("retention", "pack", "--keep-days", "55", home=aged)  # only what is older than 55 days
    assert r.returncode == 0, r.stderr
    assert (aged.queue("done") / "r-old1").is_dir() and (aged.queue("done") / "r-old2").is_dir()
    assert not (aged.root / "reports/signals/signals_20250101.json").exists()
    assert not (aged.root / "data/cache/holidays_2024.json").exists()


def test_the_newest_of_a_kind_stays_after_a_long_pause(home: Home) -> None:
    put(home, "reports/signals/signals_20250101.json", b"1", 100)
    put(home, "reports/signals/signals_20250102.json", b"2", 99)
    assert krx("retention", "pack", home=home).returncode == 0
    assert [p.name for p in (home.reports / "signals").iterdir()] == ["signals_20250102.json"]


def test_an_archive_that_cannot_be_written_removes_nothing(home: Home) -> None:
    put(home, "logs/ingest_20250101.log", os.urandom(400_000), 60)  # incompressible: the archive is as large
    put(home, "logs/ingest_20250102.log", os.urandom(400_000), 59)
    put(home, "logs/ingest_20250301.log", b"new", 1)
    before = snapshot(home.root)

    def limit() -> None:  # the kernel refuses any file beyond 100 kB for this process (like a full disk)
        resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))

    env = {k: v for k, v in os.environ.items() if not k.startswith(("KRX__", "SLACK_"))}
    env["KRX_HOME"] = str(home.root)
    r = subprocess.run([sys.executable, "-m", "faces.cli", "retention", "pack"], capture_output=True, text=True,
                       env=env, cwd=home.root, preexec_fn=limit, timeout=60)
    assert r.returncode == 3, r.stderr
    assert "[RETENTION_FAILED]" in r.stderr and "File too large" in r.stderr and "nothing removed" in r.stderr
    after = snapshot(home.root)
    assert {k: v for k, v in after.items() if k in before} == before  # every original still there, unchanged
    assert not [p for p in (home.root / "archive").rglob("*") if p.is_file()]  # no archive, no temp file


def test_a_file_replaced_while_it_is_packed_fails_verification(home: Home) -> None:
    """A log rotator replaces logs/busy.log over and over (each version old-dated, same size, other bytes): the
    archive holds the version it read, the original on disk is another one by the time it is verified."""
    put(home, "logs/ingest_20250301.log", b"new", 1)
    put(home, "logs/quiet.log", b"q" * 1000, 60)
    busy = put(home, "logs/busy.log", b"0" * 2_000_000, 60)
    with rotating(busy, busy.stat().st_mtime):
        r = krx("retention", "pack", home=home)
    assert r.returncode == 3, r.stderr
    failed = next(ln for ln in r.stderr.splitlines() if "[RETENTION_FAILED]" in ln)
    assert "failed verification" in failed and "logs/busy.log" in failed and "nothing removed" in failed
    assert busy.exists() and (home.logs / "quiet.log").exists()  # same archive: kept too
    assert not list((home.root / "archive").rglob("*.tar.gz"))


def test_the_verifier_reads_the_archive_back_from_disk(home: Home, tmp_path: Path) -> None:
    put(home, "logs/a.log", os.urandom(50_000), 60)
    item = retention.Item("logs", home.logs / "a.log", 0, [home.logs / "a.log"])
    path = tmp_path / "2025-01.tar.gz"
    written = retention.write_archive(home, [item], path)
    assert retention.verify_archive(home, path, written) == []
    os.truncate(path, path.stat().st_size - 100)  # the disk lost the end of it
    assert retention.verify_archive(home, path, written)
    with pytest.raises(FileExistsError):  # write-once
        retention.write_archive(home, [item], path)


# --- backup ----------------------------------------------------------------------------------------------------


def test_backup_dated_folders_with_hard_links_and_pruning(home: Home, tmp_path: Path) -> None:
    put(home, "reports/done/r1/result.json", b"{}")
    put(home, "data/eod/2026.parquet", os.urandom(10_000))
    put(home, ".venv/lib/big.so", b"x" * 1000)
    put(home, "reports/done/.r2.pc.tmp/result.json", b"half")
    target = tmp_path / "backup"
    target.mkdir()

    r = krx("retention", "backup", "--target", str(target), home=home)
    assert r.returncode == 0, r.stderr
    first = [p for p in target.iterdir()]
    assert len(first) == 1 and backup.SNAPSHOT_RE.match(first[0].name)
    assert (first[0] / "data/eod/2026.parquet").read_bytes() == (home.data / "eod/2026.parquet").read_bytes()
    assert (first[0] / "configs" / "app.yaml").exists()
    assert not (first[0] / ".venv").exists() and not (first[0] / "reports/done/.r2.pc.tmp").exists()

    put(home, "reports/done/r2/result.json", b"{}")
    r = krx("retention", "backup", "--target", str(target), home=home)
    assert r.returncode == 0, r.stderr
    snaps = sorted(target.iterdir())
    assert len(snaps) == 2 and "linked_to=" + snaps[0].name in r.stderr
    a, b = (s / "data/eod/2026.parquet" for s in snaps)
    assert a.stat().st_ino == b.stat().st_ino  # unchanged: a hard link, no second copy
    assert (snaps[1] / "reports/done/r2/result.json").exists() and not (snaps[0] / "reports/done/r2").exists()

    r = krx("retention", "backup", "--target", str(target), "--keep", "2", home=home)
    assert r.returncode == 0 and "[BACKUP_PRUNE]" in r.stderr
    assert sorted(target.iterdir())[0] == snaps[1] and len(list(target.iterdir())) == 2


def test_backup_refuses_bad_targets(home: Home, tmp_path: Path) -> None:
    r = krx("retention", "backup", home=home)
    assert r.returncode == 3 and "no backup target" in r.stderr
    r = krx("retention", "backup", "--target", str(home.root / "backup"), home=home)
    assert r.returncode == 3 and "inside the home" in r.stderr
    r = krx("retention", "backup", "--target", str(tmp_path / "usb" / "krx"), home=home,
            env={"KRX__APP__RETRY__ATTEMPTS": "1"})
    assert r.returncode == 3 and "[BACKUP_FAILED]" in r.stderr and "remote folder must exist" in r.stderr
    assert not (tmp_path / "usb").exists()
