"""Retention and sync must not undo each other: a result `krx retention pack` archived on one side is never copied
back by `krx sync` (pull into that home, or push from the other side into it). Real rsync between temporary
homes (also through a remote shell), real archives, the CLI run as cron runs it."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from conftest import krx, rotating

from common.home import Home, init_home
from nas import archived

DAY = 86400


def add_result(home: Home, rid: str, age_days: float = 0) -> Path:
    folder = home.queue("done") / rid
    folder.mkdir(parents=True)
    t = time.time() - age_days * DAY
    for name, data in (("result.json", f'{{"id": "{rid}"}}\n'.encode()), ("equity.csv", os.urandom(2000))):
        (folder / name).write_bytes(data)
        os.utime(folder / name, (t, t))
    return folder


def done(home: Home | Path) -> list[str]:
    folder = home.queue("done") if isinstance(home, Home) else home / "reports" / "done"
    return sorted(p.name for p in folder.iterdir())


@pytest.fixture
def pc(tmp_path: Path) -> Home:
    return init_home(tmp_path / "pc")[0]


@pytest.fixture
def fake_ssh(tmp_path: Path) -> str:
    """A remote shell that runs the command on this machine, as ssh runs it on the host (rsync over a pipe)."""
    script = tmp_path / "fake-ssh"
    script.write_text('#!/bin/sh\nshift\nexec sh -c "$*"\n')
    script.chmod(0o755)
    return str(script)


@pytest.fixture
def archived_on_nas(home: Home, pc: Home) -> tuple[Home, Home]:
    """The NAS (home) and the PC both have an old result; the NAS's retention archives it."""
    for h in (home, pc):
        add_result(h, "r-old", age_days=45)
        add_result(h, "r-new", age_days=1)  # the newest of its kind: never packed
    r = krx("retention", "pack", home=home)
    assert r.returncode == 0, r.stderr
    assert done(home) == ["r-new"] and archived.ids(home) == {"r-old"}
    assert list((home.root / "archive" / "done").glob("*.tar.gz"))
    return home, pc


def test_an_archived_result_is_neither_pulled_nor_pushed_back(archived_on_nas: tuple[Home, Home]) -> None:
    nas, pc = archived_on_nas
    add_result(pc, "r-pc1")  # not archived anywhere: still syncs
    r = krx("sync", "pull", "--remote", str(pc.root), home=nas)
    assert r.returncode == 0, r.stderr
    assert "fetched 1 results" in r.stderr and "1 archived here are not fetched" in r.stderr
    assert done(nas) == ["r-new", "r-pc1"]

    add_result(pc, "r-pc2")
    r = krx("sync", "push", "--remote", str(nas.root), home=pc)  # the PC delivering: reads the NAS's index
    assert r.returncode == 0, r.stderr
    assert "sent 1 results" in r.stderr and "1 more archived there: never sent again" in r.stderr
    assert done(nas) == ["r-new", "r-pc1", "r-pc2"]
    assert not [p for p in nas.reports.iterdir() if p.name.startswith(".")]  # no staging left behind

    # the loop is broken: the next pack has nothing to archive again (no <month>.2.tar.gz)
    r = krx("retention", "pack", home=nas)
    assert r.returncode == 0 and "0 archives written" in r.stderr, r.stderr
    assert len(list((nas.root / "archive" / "done").glob("*.tar.gz"))) == 1


def test_push_reads_the_remote_index_through_the_remote_shell(archived_on_nas: tuple[Home, Home],
                                                              fake_ssh: str) -> None:
    nas, pc = archived_on_nas
    add_result(pc, "r-pc1")
    r = krx("sync", "push", "--remote", f"nas-host:{nas.root}", "--rsh", fake_ssh, home=pc)
    assert r.returncode == 0, r.stderr
    assert "sent 1 results" in r.stderr and done(nas) == ["r-new", "r-pc1"]


def test_a_remote_without_an_index_gets_everything(home: Home, tmp_path: Path) -> None:
    """A plain folder (a backup share, a viewer) is not a home: nothing archived there."""
    add_result(home, "r1")
    add_result(home, "r2")
    share = tmp_path / "share"
    share.mkdir()
    r = krx("sync", "push", "--remote", str(share), home=home)
    assert r.returncode == 0, r.stderr
    assert "sent 2 results" in r.stderr and done(share) == ["r1", "r2"]


def test_a_damaged_index_is_an_error_not_none(archived_on_nas: tuple[Home, Home], fake_ssh: str) -> None:
    nas, pc = archived_on_nas
    add_result(pc, "r-pc1")
    index = nas.root / archived.INDEX
    index.write_text(index.read_text() + "r-old/../x\n")
    for args in (["push", "--remote", str(nas.root)],
                 ["push", "--remote", f"nas-host:{nas.root}", "--rsh", fake_ssh]):
        r = krx("sync", *args, home=pc)
        assert r.returncode == 3 and "[SYNC_FAILED]" in r.stderr, r.stderr
        assert "archived_results.txt: line" in r.stderr and "not a result id" in r.stderr
    r = krx("sync", "pull", "--remote", str(pc.root), home=nas)
    assert r.returncode == 3 and "not a result id" in r.stderr
    assert done(nas) == ["r-new"]  # nothing sent or fetched

    index.unlink()
    index.mkdir()  # unreadable as a file
    r = krx("sync", "push", "--remote", f"nas-host:{nas.root}", "--rsh", fake_ssh, home=pc)
    assert r.returncode == 3 and "not a regular file" in r.stderr, r.stderr
    r = krx("sync", "pull", "--remote", str(pc.root), home=nas)
    assert r.returncode == 3 and "index unreadable" in r.stderr, r.stderr
    assert done(nas) == ["r-new"]

    # retention fails closed too: it never removes a result it could not record
    add_result(nas, "r-old2", age_days=50)
    r = krx("retention", "pack", home=nas)
    assert r.returncode == 3 and "index not updated" in r.stderr and "nothing removed" in r.stderr, r.stderr
    assert done(nas) == ["r-new", "r-old2"]


def test_the_index_survives_a_second_pack(home: Home) -> None:
    add_result(home, "r-a", age_days=70)
    add_result(home, "r-b", age_days=45)
    add_result(home, "r-new", age_days=1)
    assert krx("retention", "pack", home=home).returncode == 0
    assert archived.ids(home) == {"r-a", "r-b"}
    first = (home.root / archived.INDEX).read_text()
    assert first.startswith("#") and first.endswith("r-a\nr-b\n")

    assert krx("retention", "pack", home=home).returncode == 0  # nothing to pack: the index stays as it is
    assert (home.root / archived.INDEX).read_text() == first
    add_result(home, "r-c", age_days=40)
    r = krx("retention", "pack", home=home)
    assert r.returncode == 0 and "1 archives written" in r.stderr, r.stderr
    assert archived.ids(home) == {"r-a", "r-b", "r-c"}
    assert done(home) == ["r-new"]
    assert not [p for p in home.state.iterdir() if p.name.endswith(".tmp")]  # atomic replace left nothing


def test_a_pack_that_fails_verification_records_nothing(home: Home) -> None:
    """A file of a result is replaced over and over while it is packed (same size, old mtime, other bytes): the
    archive fails verification, so neither result of that month is removed nor recorded as archived."""
    busy_dir = add_result(home, "r-busy", age_days=60)
    add_result(home, "r-quiet", age_days=60)  # same month: same archive
    add_result(home, "r-new", age_days=1)
    busy = busy_dir / "equity.csv"
    busy.write_bytes(b"0" * 2_000_000)
    old = time.time() - 60 * DAY
    os.utime(busy, (old, old))
    with rotating(busy, old, home.root):  # outside the result folder, so the folder's file list stays put
        r = krx("retention", "pack", home=home)
    assert r.returncode == 3, r.stderr
    failed = next(ln for ln in r.stderr.splitlines() if "[RETENTION_FAILED]" in ln)
    assert "failed verification" in failed and "nothing removed" in failed
    assert done(home) == ["r-busy", "r-new", "r-quiet"]
    assert archived.ids(home) == set()
    assert not (home.root / archived.INDEX).exists()


def test_delete_never_prunes_archived_history(archived_on_nas: tuple[Home, Home]) -> None:
    nas, pc = archived_on_nas
    # the NAS mirrors to the PC with --delete: the PC keeps the result the NAS archived (it is history, not gone)
    r = krx("sync", "push", "--remote", str(pc.root), "--delete", home=nas)
    assert r.returncode == 0, r.stderr
    assert done(pc) == ["r-new", "r-old"]
    # the PC mirrors from the NAS with --delete: the PC's copy of what the NAS archived stays too
    r = krx("sync", "pull", "--remote", str(nas.root), "--delete", home=pc)
    assert r.returncode == 0, r.stderr
    assert done(pc) == ["r-new", "r-old"]
