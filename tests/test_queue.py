"""The folder protocol of DESIGN section 6, step by step, on real folders (common.queue)."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import pytest

from common import queue, queue_names
from common.home import Home, init_home
from common.queue import Queue


@pytest.fixture
def q(tmp_path: Path) -> Queue:
    return Queue.at(tmp_path / "reports" / "pending").ensure()


def req(request_id: str, **extra) -> dict:
    return {"schema": "backtest_request/1", "id": request_id, **extra}


def names(folder: Path) -> list[str]:
    return sorted(os.listdir(folder))


def age(path: Path, seconds: float) -> None:
    t = time.time() - seconds
    os.utime(path, (t, t))


def test_layout_defaults_to_the_home_and_siblings_of_the_inbox(tmp_path: Path) -> None:
    home, _ = init_home(tmp_path)
    assert Queue.of_home(home) == Queue(home.queue("pending"), home.queue("done"), home.queue("processing"),
                                        home.queue("failed"))
    custom = Queue.at(tmp_path / "share" / "in", tmp_path / "results")
    assert custom.processing == tmp_path / "share" / "processing"
    assert custom.failed == tmp_path / "share" / "failed"
    assert custom.out == tmp_path / "results"
    assert Queue.at(tmp_path / "x" / "pending").out == tmp_path / "x" / "done"


def test_submit_writes_one_file_by_rename_and_is_idempotent(q: Queue) -> None:
    assert q.submit(req("r1", n=1)) is True
    assert names(q.inbox) == ["r1.json"]  # no temporary file left behind
    assert json.loads((q.inbox / "r1.json").read_text())["n"] == 1
    assert q.submit(req("r1", n=2)) is False
    assert json.loads((q.inbox / "r1.json").read_text())["n"] == 1  # the first one stays


@pytest.mark.parametrize("state", ["retried", "processing", "done", "failed"])
def test_submit_queues_nothing_when_the_id_is_known_anywhere(q: Queue, state: str) -> None:
    where = {
        "retried": q.inbox / "r1@2.json",
        "processing": q.processing / "r1@1@host-1-abc.json",
        "done": q.out / "r1",
        "failed": q.failed / "r1.json",
    }[state]
    if state == "done":
        where.mkdir()
    else:
        where.write_text("{}")
    assert q.where("r1") == ("pending" if state == "retried" else state)
    assert q.submit(req("r1")) is False
    assert not (q.inbox / "r1.json").exists()
    assert q.submit(req("r10")) is True  # a prefix of another id is another id


@pytest.mark.parametrize("bad", ["../../x", "", ".", "..", "a/b", "a@b", "x" * 129, None, 5, "é"])
def test_submit_refuses_an_unsafe_id(q: Queue, bad) -> None:
    with pytest.raises(ValueError, match="request id"):
        q.submit({"id": bad})
    assert names(q.inbox) == []


def test_module_level_submit_uses_the_given_out_folder(tmp_path: Path) -> None:
    inbox, out = tmp_path / "p", tmp_path / "results"
    (out / "r1").mkdir(parents=True)
    assert queue.submit(inbox, req("r1"), out=out) is False
    assert queue.submit(inbox, req("r2"), out=out) is True
    assert (inbox / "r2.json").is_file()


def test_pending_lists_requests_oldest_first_and_never_hidden_files(q: Queue) -> None:
    for name in ("b.json", "a@2.json", ".c.tmp", ".d.json", "notes.txt", "bad name.json", "x@y.json"):
        (q.inbox / name).write_text("{}")
    (q.inbox / "dir.json").mkdir()
    age(q.inbox / "b.json", 30)
    age(q.inbox / "a@2.json", 20)
    entries = q.pending()
    assert [(e.id, e.attempts, e.valid_name) for e in entries[:2]] == [("b", 0, True), ("a", 2, True)]
    # a folder named like a request is not a request either: it comes back to be failed, never silently skipped
    assert sorted((e.path.name, e.kind) for e in entries if not e.valid_name) == [
        ("bad name.json", "file"), ("dir.json", "directory"), ("x@y.json", "file")]
    assert len(entries) == 5


def test_a_symlink_in_the_inbox_is_never_a_request(q: Queue, tmp_path: Path) -> None:
    secret = tmp_path / "secret.json"
    secret.write_text('{"id": "secret"}')
    (q.inbox / "secret.json").symlink_to(secret)
    [entry] = q.pending()
    assert entry.valid_name is False
    assert q.fail_entry(entry, "INVALID_REQUEST", "a link", "me-1") is True
    assert secret.read_text() == '{"id": "secret"}'  # the target is untouched; only the link moved
    assert (q.failed / "secret.json").is_symlink()


def test_claim_renames_with_attempt_and_owner_and_a_fresh_heartbeat(q: Queue) -> None:
    q.submit(req("r1"))
    age(q.inbox / "r1.json", 3600)  # waited an hour: must not look stale once claimed
    [entry] = q.pending()
    before = time.time()
    claim = q.claim(entry, "pc1-42-abc")
    assert claim is not None
    assert claim.path == q.processing / "r1@1@pc1-42-abc.json"
    assert (claim.id, claim.attempt, claim.owner) == ("r1", 1, "pc1-42-abc")
    assert claim.path.stat().st_mtime >= before - 1  # touched by the claim (1 s for coarse file timestamps)
    assert q.claim(entry, "pc2-43-def") is None  # the loser just moves on
    assert q.claims() == [claim]


def test_only_one_of_many_racing_claimers_wins_each_request(q: Queue) -> None:
    for i in range(200):
        q.submit(req(f"r{i}"))
    entries = q.pending()
    won: dict[str, list[str]] = {}
    barrier = threading.Barrier(8)

    def claimer(owner: str) -> None:
        barrier.wait()
        for entry in entries:
            if q.claim(entry, owner):
                won.setdefault(entry.id, []).append(owner)

    threads = [threading.Thread(target=claimer, args=(f"w{i}-1-aaa",)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 200 and all(len(owners) == 1 for owners in won.values())
    assert len(q.claims()) == 200 and q.pending() == []


def test_heartbeat_refreshes_the_mtime_and_reports_a_lost_claim(q: Queue) -> None:
    q.submit(req("r1"))
    claim = q.claim(q.pending()[0], "me-1-aaa")
    age(claim.path, 100)
    before = time.time()
    assert q.heartbeat(claim) is True
    assert claim.path.stat().st_mtime >= before - 1  # touched by the heartbeat, however slow the machine
    age(claim.path, 100)
    [rec] = q.recover(lease_s=10, max_attempts=3)
    assert rec.action == "requeued"
    assert q.heartbeat(claim) is False


def test_finish_publishes_the_folder_once(q: Queue) -> None:
    q.submit(req("r1"))
    first = q.claim(q.pending()[0], "a-1-aaa")
    tmp = q.temp_dir(first)
    assert tmp == q.out / ".r1.a-1-aaa.tmp"
    (tmp / "result.json").write_text('{"by": "a"}')
    # the same request, queued again and claimed by another worker that runs too
    q.inbox.joinpath("r1@1.json").write_text("{}")
    second = q.claim(q.pending()[0], "b-2-bbb")
    tmp2 = q.temp_dir(second)
    (tmp2 / "result.json").write_text('{"by": "b"}')
    assert q.finish(first, tmp) is True
    assert q.finish(second, tmp2) is False
    assert names(q.out) == ["r1"]  # no temporary folder left, one result
    assert json.loads((q.out / "r1" / "result.json").read_text()) == {"by": "a"}
    assert q.claims() == []


def test_finish_refuses_to_replace_a_result_even_when_it_did_not_look_first(q: Queue) -> None:
    (q.out / "r1").mkdir()
    (q.out / "r1" / "result.json").write_text('{"by": "first"}')
    q.processing.joinpath("r1@1@b-2-bbb.json").write_text("{}")
    claim = q.claims()[0]
    tmp = q.temp_dir(claim)
    (tmp / "result.json").write_text('{"by": "second"}')
    with pytest.raises(OSError):  # the rename itself refuses: the target folder is not empty
        os.rename(tmp, q.out / "r1")
    assert q.finish(claim, tmp) is False
    assert json.loads((q.out / "r1" / "result.json").read_text()) == {"by": "first"}


def test_fail_writes_the_request_and_its_error_record(q: Queue) -> None:
    q.submit(req("r1"))
    claim = q.claim(q.pending()[0], "a-1-aaa")
    assert q.fail(claim, "JOB_FAILED", "no data", extra_field=1) is True
    assert names(q.failed) == ["r1.error.json", "r1.json"]
    error = json.loads((q.failed / "r1.error.json").read_text())
    assert error["error_code"] == "JOB_FAILED" and error["message"] == "no data" and error["attempts"] == 1
    assert error["id"] == "r1" and error["owner"] == "a-1-aaa" and error["extra_field"] == 1
    assert q.fail(claim, "JOB_FAILED", "again") is False  # no longer ours: nothing written
    assert names(q.failed) == ["r1.error.json", "r1.json"]


def test_recover_requeues_with_the_attempt_counted_then_fails_at_max_attempts(q: Queue) -> None:
    q.submit(req("r1"))
    for attempt in (1, 2, 3):
        [entry] = q.pending()
        assert entry.attempts == attempt - 1
        claim = q.claim(entry, "dead-1-aaa")
        assert claim.attempt == attempt
        assert q.recover(lease_s=10, max_attempts=3) == []  # fresh heartbeat: left alone
        age(claim.path, 11)
        [rec] = q.recover(lease_s=10, max_attempts=3)
        assert rec.claim == claim
        if attempt < 3:
            assert rec.action == "requeued" and names(q.inbox) == [f"r1@{attempt}.json"]
    assert rec.action == "failed"
    assert q.pending() == [] and q.claims() == []
    error = json.loads((q.failed / "r1.error.json").read_text())
    assert (error["error_code"], error["attempts"]) == ("JOB_FAILED", 3)
    assert "heartbeat" in error["message"]


def test_recover_only_drops_a_stale_claim_whose_result_exists(q: Queue) -> None:
    (q.out / "r1").mkdir()
    (q.processing / "r1@1@dead-1-aaa.json").write_text("{}")
    age(q.processing / "r1@1@dead-1-aaa.json", 100)
    [rec] = q.recover(lease_s=10, max_attempts=3)
    assert rec.action == "done"
    assert names(q.processing) == [] and names(q.inbox) == []


def test_release_puts_a_claim_back_counted_or_not(q: Queue) -> None:
    q.submit(req("r1"))
    claim = q.claim(q.pending()[0], "a-1-aaa")
    assert q.release(claim, count_attempt=False) is True
    assert names(q.inbox) == ["r1.json"]
    claim = q.claim(q.pending()[0], "a-1-aaa")
    assert q.release(claim, count_attempt=True) is True
    assert names(q.inbox) == ["r1@1.json"]
    assert q.release(claim, count_attempt=True) is False


def test_cleanup_removes_orphan_temp_folders_and_completes_half_failures(q: Queue) -> None:
    q.processing.joinpath("live@1@a-1-aaa.json").write_text("{}")
    for name in (".live.a-1-aaa.tmp", ".dead.b-2-bbb.tmp", ".young.c-3-ccc.tmp"):
        (q.out / name).mkdir()
        (q.out / name / "result.json").write_text("{}")
    age(q.out / ".live.a-1-aaa.tmp", 100)
    age(q.out / ".dead.b-2-bbb.tmp", 100)
    # a crash between "request to failed/" and "error record to its name"
    (q.failed / "r9.json").write_text("{}")
    (q.failed / ".r9.d-4-ddd.error.tmp").write_text('{"error_code": "INVALID_JSON"}')
    (q.failed / ".gone.d-4-ddd.error.tmp").write_text("{}")
    age(q.failed / ".gone.d-4-ddd.error.tmp", 100)
    removed = q.cleanup(lease_s=10)
    assert sorted(p.name for p in removed) == [".dead.b-2-bbb.tmp", ".gone.d-4-ddd.error.tmp"]
    assert names(q.out) == [".live.a-1-aaa.tmp", ".young.c-3-ccc.tmp"]
    assert names(q.failed) == ["r9.error.json", "r9.json"]


def test_names_parse_without_ambiguity() -> None:
    assert queue_names.parse_pending_name("a.b-c_d.json") == ("a.b-c_d", 0)
    assert queue_names.parse_pending_name("a.b@12.json") == ("a.b", 12)
    assert queue_names.parse_pending_name(".a.json") is None
    assert queue_names.parse_pending_name("a@b.json") is None
    assert queue_names.parse_claim_name("a.b@3@host-1-abc.json") == ("a.b", 3, "host-1-abc")
    assert queue_names.parse_claim_name("a@3@host.1.json") is None
    owner = queue_names.new_owner()
    assert "." not in owner and "@" not in owner and queue_names.parse_claim_name(f"x@1@{owner}.json")


def test_home_queue_folders_are_the_default(tmp_path: Path) -> None:
    home = Home(tmp_path)
    q = Queue.of_home(home).ensure()
    assert q.submit(req("r1"))
    assert (tmp_path / "reports" / "pending" / "r1.json").is_file()
