"""The checker on hand-made histories: each anomaly is counted where it belongs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tests.faults.harness.checker import History, Ledger, Outcome, check

if TYPE_CHECKING:
    from pathlib import Path


def _ledger(tmp_path: Path, lines: list[str]) -> Ledger:
    folder = tmp_path / "ledger"
    folder.mkdir(exist_ok=True)
    (folder / "1.log").write_text("".join(f"{line}\n" for line in lines))
    return Ledger.read(folder)


def _enq(kind: str, *ids: str, at: float = 0.0) -> dict[str, Any]:
    return {"f": "enqueue", "type": kind, "ids": list(ids), "at": at, "wall": 1000 + at}


def _fault(kind: str, pid: int, at: float) -> dict[str, Any]:
    return {"f": "nemesis", "type": kind, "pid": pid, "at": at, "wall": 1000 + at}


def _done(run: str, recovered: tuple[float, ...] = ()) -> Outcome:
    return Outcome("succeeded", None, run, 1, len(recovered), recovered)


def test_clean_run(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path, ["start a 1 10 1.0 r1", "end a 1 10 1.1 r1"])
    events = [_enq("invoke", "a"), _enq("ok", "a")]
    report = check(events, ledger, {"a": _done("r1")}, lease_s=2)
    assert report.valid
    assert (report.acknowledged, report.completed, report.duplicate_starts) == (1, 1, 0)


def test_lost_stuck_dead_unexpected_recovered(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path, ["start x 1 10 1.0 r9", "start c 1 10 1.0 r3"])
    events = [
        _enq("invoke", "a", "b", "c", "d", "e"),
        _enq("ok", "a", "b", "c"),
        _enq("info", "d", "e"),
    ]
    outcomes: dict[str, Outcome | None] = {
        "a": None,
        "b": Outcome("running", None, None, 1, 0),
        "c": Outcome("dead", "exception", None, 1, 0),
        "d": _done("r4"),
        "e": None,
    }
    report = check(events, ledger, outcomes, lease_s=2)
    assert not report.valid
    assert report.lost == 2 and report.lost_ids == ["a", "b"]
    assert report.stuck == {"running": 1}
    assert report.dead == 1 and report.dead_reasons == {"exception": 1}
    assert report.unexpected == 1  # x ran but was never enqueued
    assert report.indeterminate == 2 and report.recovered == 1  # d showed up, e did not
    assert report.unexplained_results == 1  # d's result names a run not in the ledger


def test_duplicates_and_recovery_after_a_kill(tmp_path: Path) -> None:
    ledger = _ledger(
        tmp_path,
        [
            "start a 1 10 1.0 r1",  # pid 10 killed at 2.0 while running a
            "start b 1 10 1.0 r2",
            "end b 1 10 1.5 r2",  # b ended, but its ack was not committed
            "start a 1 11 5.0 r3",
            "end a 1 11 5.1 r3",
            "start b 1 11 5.5 r4",
            "end b 1 11 5.6 r4",
        ],
    )
    events = [_enq("invoke", "a", "b"), _enq("ok", "a", "b"), _fault("kill", 10, 2.0)]
    outcomes: dict[str, Outcome | None] = {
        "a": _done("r3", (1004.0,)),
        "b": _done("r4", (1004.5,)),
    }
    report = check(events, ledger, outcomes, lease_s=2)
    assert report.valid
    assert (report.duplicate_starts, report.duplicate_ends, report.jobs_rerun) == (2, 1, 2)
    assert report.kills == 1 and report.orphaned == 2
    assert (report.reruns_running, report.reruns_unsettled) == (1, 1)
    assert report.unexplained_duplicates == 0
    assert (report.recovery_p50_s, report.recovery_max_s) == (2.25, 2.5)
    assert (report.restart_p50_s, report.restart_max_s) == (3.25, 3.5)


def test_stale_commit_from_a_superseded_run(tmp_path: Path) -> None:
    ledger = _ledger(
        tmp_path,
        ["start a 1 10 1.0 r1", "start a 1 11 4.0 r2", "end a 1 11 4.5 r2", "end a 1 10 6.0 r1"],
    )
    events = [_enq("invoke", "a"), _enq("ok", "a")]
    report = check(events, ledger, {"a": _done("r1")}, lease_s=2)
    assert report.stale_commits == 1 and not report.valid
    assert check(events, ledger, {"a": _done("r2")}, lease_s=2).stale_commits == 0


def test_stale_commit_from_a_paused_run(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path, ["start a 1 10 1.0 r1", "end a 1 10 6.0 r1"])
    events = [
        _enq("invoke", "a"),
        _enq("ok", "a"),
        _fault("stop", 10, 1.5),
        _fault("cont", 10, 5.5),
    ]
    assert check(events, ledger, {"a": _done("r1")}, lease_s=2).stale_commits == 1
    assert check(events, ledger, {"a": _done("r1")}, lease_s=5).stale_commits == 0


def test_history_survives_a_torn_line(tmp_path: Path) -> None:
    history = History(tmp_path / "h" / "p.jsonl")
    history.enqueue("invoke", ["a"])
    history.close()
    with open(tmp_path / "h" / "p.jsonl", "a") as f:
        f.write('{"f": "enqueue", "ty')  # the writer was killed mid-line
    events = History.read(tmp_path / "h")
    assert [e["type"] for e in events] == ["invoke"]
