"""Limits that hold across sprints: the shared pool, checks, starts a minute (harness).

`command` agents and checks append ``<what> <task> <start|end> <time>`` lines to one
file outside the repositories; the tests read who ran at once from it.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client

from agentfleet.leases import Lease, list_leases
from agentfleet.results import SprintReport
from tasks.limits import waits
from tests.conftest import MakeRepo
from tests.integration.conftest import command, run_sprint
from tests.support.sprint_process import AGENTFLEET, process_env, sprint_process


def stamped(events: Path, what: str, body: str) -> str:
    """A shell command recording when ``what`` of this task starts and ends."""
    mark = f'echo "{what} $AGENTFLEET_TASK {{}} $(date +%s.%N)" >> {events}'
    return f"{mark.format('start')}; {body}; {mark.format('end')}"


def intervals(events: Path, what: str) -> dict[str, tuple[float, float]]:
    """Per task: when ``what`` started and ended."""
    seen: dict[str, dict[str, float]] = {}
    for line in events.read_text().splitlines():
        kind, task, edge, at = line.split()
        if kind == what:
            seen.setdefault(task, {})[edge] = float(at)
    return {t: (e["start"], e["end"]) for t, e in seen.items()}


def most_at_once(spans: dict[str, tuple[float, float]]) -> int:
    """The largest number of intervals open at one moment."""
    edges = sorted([(s, 1) for s, _ in spans.values()] + [(e, -1) for _, e in spans.values()],
                   key=lambda x: (x[0], x[1]))
    live = peak = 0
    for _, step in edges:
        live += step
        peak = max(peak, live)
    return peak


def read_limit(name: str):
    with get_client(sync_client=True) as client:
        return client.read_global_concurrency_limit_by_name(name)


def tasks_writing(events: Path, names: list[str], seconds: float = 1,
                  **keys: object) -> list[dict[str, object]]:
    return [command(n, stamped(events, "agent", f"sleep {seconds}; echo {n} > {n}.txt"),
                    paths=[f"{n}.txt"], **keys) for n in names]


def test_two_sprints_sharing_a_pool_of_one_never_run_two_agents_at_once(
    harness, make_repo: MakeRepo, work_dir, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("AGENTFLEET_POOL_SIZE", "1")
    events = tmp_path / "events.log"
    reports: dict[str, tuple[bool, SprintReport]] = {}

    def one(name: str) -> None:
        folder = tmp_path / name
        folder.mkdir()
        repo = make_repo(name=f"repo-{name}")
        reports[name] = run_sprint(folder, {
            "name": name, "repo": str(repo), "limits": {"concurrency": 2, "pool": "shared-1"},
            "tasks": tasks_writing(events, [f"{name}-a", f"{name}-b"]),
        })

    threads = [threading.Thread(target=one, args=(n,)) for n in ("left", "right")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert all(ok for ok, _ in reports.values()), [r.summary_line() for _, r in reports.values()]
    agents = intervals(events, "agent")
    assert len(agents) == 4
    assert most_at_once(agents) == 1, agents
    # Missing, so created with AGENTFLEET_POOL_SIZE slots; all of them given back.
    limit = read_limit("shared-1")
    assert limit.limit == 1 and limit.active_slots == 0


def test_an_existing_pool_is_used_as_it_is(harness, make_repo, work_dir, tmp_path):
    with get_client(sync_client=True) as client:
        client.upsert_global_concurrency_limit_by_name("kept-pool", 3)
    ok, report = run_sprint(tmp_path, {
        "name": "kept", "repo": str(make_repo()), "limits": {"pool": "kept-pool"},
        "tasks": [command("a", "echo a > a.txt", paths=["a.txt"])],
    })
    assert ok, report.summary_line()
    assert read_limit("kept-pool").limit == 3  # AGENTFLEET_POOL_SIZE (8) changes nothing


def test_checks_are_capped_apart_and_a_verify_does_not_hold_an_agent_slot(
    harness, make_repo, work_dir, tmp_path
):
    events = tmp_path / "events.log"
    ok, report = run_sprint(tmp_path, {
        "name": "checks", "repo": str(make_repo()),
        "limits": {"concurrency": 1, "checks": 1, "pool": "checks-pool"},
        "verify": stamped(events, "verify", "sleep 3"),
        "tasks": tasks_writing(events, ["a", "b"]),
    })
    assert ok, report.summary_line()
    agents, verifies = intervals(events, "agent"), intervals(events, "verify")
    assert most_at_once(agents) == 1 and most_at_once(verifies) == 1
    # The second agent started before the first one's verify ended: the agent slot went
    # back when the first agent ended, not after its checks.
    first, second = sorted(agents, key=lambda t: agents[t][0])
    assert agents[second][0] < verifies[first][1], (agents, verifies)


def test_starts_per_minute_spaces_agent_starts(harness, make_repo, work_dir, tmp_path):
    events = tmp_path / "events.log"
    ok, report = run_sprint(tmp_path, {
        "name": "paced", "repo": str(make_repo()),
        "limits": {"concurrency": 3, "pool": "paced-pool", "starts_per_minute": 60},
        "tasks": [command(n, stamped(events, "agent", f"echo {n} > {n}.txt"),
                          paths=[f"{n}.txt"]) for n in ("a", "b", "c")],
    })
    assert ok, report.summary_line()
    starts = sorted(s for s, _ in intervals(events, "agent").values())
    # One start a second (a limit of one slot decaying at 1/s); the agents' own
    # timestamps come a little after their slot, hence the margin.
    assert all(b - a >= 0.75 for a, b in zip(starts, starts[1:], strict=False)), starts
    starts_limit = read_limit("paced-pool-starts")
    assert starts_limit.limit == 1 and starts_limit.slot_decay_per_second == 1.0


def test_a_sprint_in_another_process_waits_for_the_pool_too(
    harness, make_repo: MakeRepo, work_dir, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
):
    """The slot handoff across processes: refused by the server (423), asked again."""
    import yaml

    monkeypatch.setenv("AGENTFLEET_POOL_SIZE", "1")
    events = tmp_path / "events.log"
    other = tmp_path / "other"
    other.mkdir()
    plan = other / "plan.yaml"
    plan.write_text(yaml.safe_dump({
        "name": "other", "repo": str(make_repo(name="repo-other")), "agent": {"kind": "command"},
        "limits": {"pool": "shared-procs"},
        # Long enough for this process's sprint to start meanwhile and wait for the slot.
        "tasks": tasks_writing(events, ["other-a", "other-b"], seconds=4),
    }))
    env = process_env(tmp_path / "results", tmp_path / "work-other")
    with sprint_process(plan, env) as proc:
        # Start here once the other process's first agent holds the only slot.
        deadline = time.monotonic() + 120
        while not (events.exists() and "agent other-" in events.read_text()):
            assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read()
            time.sleep(0.1)
        ok, report = run_sprint(tmp_path, {
            "name": "here", "repo": str(make_repo(name="repo-here")),
            "limits": {"pool": "shared-procs"},
            "tasks": tasks_writing(events, ["here-a", "here-b"]),
        })
        out, _ = proc.communicate(timeout=240)
    assert ok, report.summary_line()
    assert proc.returncode == 0, out[-3000:]
    agents = intervals(events, "agent")
    assert len(agents) == 4 and most_at_once(agents) == 1, agents
    # This process's agents were refused by the server while the other process held it.
    assert waits("shared-procs") >= 1, agents
    assert read_limit("shared-procs").active_slots == 0


def _held_slot(work_dir: Path, deadline_s: float, proc) -> Lease:  # noqa: ANN001
    """The lease of the run's attempt once it records a slot of the pool."""
    deadline = time.monotonic() + deadline_s
    while True:
        held = [lease for _, lease in list_leases(work_dir) if lease and lease.slot]
        if held:
            return held[0]
        assert proc.poll() is None, proc.stdout.read()
        assert time.monotonic() < deadline, "the agent never held a slot"
        time.sleep(0.1)


def test_a_killed_runs_slot_comes_back_when_reaped_not_after_its_lease(
    harness, make_repo: MakeRepo, work_dir, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
):
    """kill -9 of a real run holding the pool's only slot: `agentfleet clean`, and the
    sprint's next run, give it back at once (the lease would hold it 60 s)."""
    import signal
    import subprocess

    import yaml

    monkeypatch.setenv("AGENTFLEET_POOL_SIZE", "1")
    events = tmp_path / "events.log"
    repo = make_repo()
    plan = tmp_path / "killed.yaml"
    plan.write_text(yaml.safe_dump({
        "name": "killed", "repo": str(repo), "agent": {"kind": "command"},
        "limits": {"pool": "killed-pool"},
        "tasks": tasks_writing(events, ["slow"], seconds=120),
    }))
    env = process_env(tmp_path / "results")  # the test's work dir: its leases are read here
    agentfleet = str(AGENTFLEET)

    def killed_run() -> tuple[Lease, float]:
        with sprint_process(plan, env) as proc:
            lease = _held_slot(work_dir, 120, proc)
            assert read_limit("killed-pool").active_slots == 1
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            killed_at = time.monotonic()
            proc.communicate()
            return lease, killed_at

    # 1. `agentfleet clean --yes` after the kill.
    lease, killed_at = killed_run()
    assert lease.slot is not None and lease.slot.limit == "killed-pool"
    assert read_limit("killed-pool").active_slots == 1  # the orphan's lease still holds it
    done = subprocess.run([agentfleet, "clean", "--yes"], env=env, text=True,
                          capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "gave back its slot of the shared pool 'killed-pool'" in done.stdout, done.stdout
    assert read_limit("killed-pool").active_slots == 0
    assert time.monotonic() - killed_at < 45, "no faster than the lease's expiry"

    # 2. The sprint's next run reaps the orphan and takes the only slot at once.
    lease, killed_at = killed_run()
    ok, report = run_sprint(tmp_path, {
        "name": "killed", "repo": str(repo), "limits": {"pool": "killed-pool"},
        "tasks": tasks_writing(events, ["slow"], seconds=0),
    })
    assert ok, report.summary_line()
    assert time.monotonic() - killed_at < 45, "the new run waited for the lease to expire"
    assert read_limit("killed-pool").active_slots == 0
    assert list_leases(work_dir) == []
