"""Codex agents started ahead of their agent slot, their model requests held by the proxy
(agentfleet/start_ahead.py, agentfleet/metering/start_gate.py).

Real Codex 0.169 runs through a real sprint meter (the metering proxy) to the scripted
model server; attempts run in threads as the sprint runs them, with one agent slot.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from agentfleet.agent_config import AgentConfig
from agentfleet.attempt import AttemptSpec, run_attempt
from agentfleet.control import RunControl
from agentfleet.guardrails import RunGuards
from agentfleet.metering.sprint import SprintMeter
from agentfleet.process import ProcessInfo, find_processes, observe_spawns, tracked_in
from agentfleet.results import AttemptResult
from agentfleet.start_ahead import StartAhead
from agentfleet.testing import RecordedRequest, Script, ScriptedModelServer
from tasks.attempt import held_start_gate, sprint_metered
from tests.conftest import run_git
from tests.support.waiting import processes_under, wait_for

pytestmark = pytest.mark.codex

PROJECT_ROOT = Path(__file__).resolve().parents[2]
CODEX = PROJECT_ROOT / "node_modules" / ".bin" / "codex"

if not CODEX.exists():
    pytest.skip(f"the pinned Codex CLI is not installed at {CODEX}", allow_module_level=True)


def script(tasks: list[str], delay_s: float) -> Script:
    """Each task: a patch adding its file, then the final message; each after ``delay_s``."""
    return Script.model_validate({"rules": [
        {"name": t, "match": f"[{t}]", "responses": [
            {"delay_s": delay_s, "steps": [{"do": "patch", "patch": (
                f"*** Begin Patch\n*** Add File: {t}.txt\n+{t}\n*** End Patch\n")}]},
            {"delay_s": delay_s, "steps": [{"do": "message", "text": f"Added {t}.txt."}]},
        ]} for t in tasks
    ]})


class Sprint:
    """A sprint's run control, one agent slot, its meter and places for held starts."""

    def __init__(self, repo: Path, work: Path, env: dict[str, str], meter: SprintMeter,
                 places: int = 1, max_hold_s: float = 60) -> None:
        self.repo, self.work, self.env, self.meter = repo, work, env, meter
        self.start = run_git(repo, "rev-parse", "HEAD").strip()
        self.control = RunControl("s")
        self.guards = RunGuards(concurrency=1, checks=2)
        self.ahead = StartAhead(places, max_hold_s)
        self.results: dict[str, AttemptResult] = {}
        self.spawned: dict[str, list[ProcessInfo]] = {}
        self.logs: dict[str, list[str]] = {}
        self.threads: list[threading.Thread] = []

    def run(self, task: str, timeout_s: float = 60) -> None:
        """Start task ``task``'s attempt in a thread, as the sprint's task runner does."""
        name = f"{task}#1"
        spec = AttemptSpec(
            sprint="s", task_id=task, attempt=1, branch=f"agentfleet-attempts/s/{task}/1",
            repo=self.repo, worktree_root=self.work / "worktrees", start_sha=self.start,
            prompt=f"[{task}] Add {task}.txt.", paths=None, agent=AgentConfig(),
            timeout_s=timeout_s, retries=0, codex_path=CODEX, grace_s=2,
        )
        agent = self.meter.route(name, task, spec.agent, self.env, None)
        spec = spec.model_copy(update={"agent": agent})
        control = self.control.attempt(name)
        spawned = self.spawned.setdefault(task, [])
        log = self.logs.setdefault(task, [])

        def body() -> None:
            with tracked_in(control.processes), observe_spawns(spawned.append):
                self.results[task] = run_attempt(
                    spec, env=self.env, log=log.append, cancel=control.cancel,
                    guards=self.guards, ahead=self.ahead,
                    gate=held_start_gate(sprint_metered(self.meter, name), name))

        thread = threading.Thread(target=body, name=name)
        self.threads.append(thread)
        thread.start()

    def join(self, timeout_s: float = 120) -> None:
        for thread in self.threads:
            thread.join(timeout_s)
            assert not thread.is_alive(), f"{thread.name} did not end"


def spans(requests: list[RecordedRequest]) -> dict[str, tuple[float, float]]:
    """Per rule (task): its first request's arrival and its last response's end."""
    out: dict[str, tuple[float, float]] = {}
    for r in requests:
        first, last = out.get(r.rule or "", (r.started_at, r.finished_at or r.started_at))
        out[r.rule or ""] = (min(first, r.started_at), max(last, r.finished_at or r.started_at))
    return out


@pytest.fixture
def model() -> ScriptedModelServer:
    with ScriptedModelServer(Script(rules=[])) as server:
        yield server


@pytest.fixture
def env(model: ScriptedModelServer, tmp_path: Path) -> dict[str, str]:
    home = model.write_codex_home(tmp_path / "codex-home")
    base = {k: v for k, v in os.environ.items() if not k.startswith("AGENTFLEET_")}
    return {**base, **model.agent_env(home)}


def test_a_held_agent_asks_the_model_as_soon_as_the_slot_frees_never_beside_another(
    make_repo, model: ScriptedModelServer, env: dict[str, str], tmp_path: Path
) -> None:
    tasks = ["one", "two", "three"]
    model.set_script(script(tasks, delay_s=1.5))
    repo = make_repo()
    with SprintMeter(None, lambda _: None) as meter:
        sprint = Sprint(repo, tmp_path / "work", env, meter)
        sprint.run("one")
        wait_for(lambda: model.requests, timeout=60, what="the first agent's request")
        sprint.run("two")  # held: started ahead, its first request waits for the slot
        wait_for(lambda: meter.proxy.start_gates.arrived("two#1") is not None, timeout=60,
                   what="the held agent's first request at the proxy")
        sprint.run("three")  # second in line: starts ahead once "two" has the slot
        sprint.join()

    assert all(sprint.results[t].succeeded for t in tasks), {
        t: sprint.results[t].reason for t in tasks}
    # "one" found its slot free and started as usual; the others started ahead.
    assert (sprint.ahead.started, sprint.ahead.ready, sprint.ahead.dropped) == (2, 2, 0)
    # One slot: the model never saw two sessions at once.
    ordered = sorted(spans(model.requests).items(), key=lambda kv: kv[1][0])
    assert [t for t, _ in ordered] == tasks  # in turn
    for (_, (_, end)), (_, (start, _)) in zip(ordered, ordered[1:], strict=False):
        assert start >= end
    # A held agent asks the model right after the one before ended: no Codex start-up.
    for before, after in (("one", "two"), ("two", "three")):
        gap = spans(model.requests)[after][0] - spans(model.requests)[before][1]
        print(f"idle gap {before} -> {after} (held start): {gap:.3f}s")
        assert gap < 1.0, gap
    # Its time counts from the grant: two responses of 1.5 s, not the wait before.
    two = sprint.results["two"].outcome
    assert two is not None and two.duration_s < 3.0 + 2.5, two.duration_s


def test_cancelling_a_sprint_while_an_agent_is_held_leaves_no_process(
    make_repo, model: ScriptedModelServer, env: dict[str, str], tmp_path: Path
) -> None:
    model.set_script(script(["busy", "held"], delay_s=30))
    repo = make_repo()
    with SprintMeter(None, lambda _: None) as meter:
        sprint = Sprint(repo, tmp_path / "work", env, meter)
        sprint.run("busy")
        wait_for(lambda: model.requests, timeout=60, what="the busy agent's request")
        sprint.run("held")
        wait_for(lambda: meter.proxy.start_gates.arrived("held#1") is not None, timeout=60,
                   what="the held agent's first request at the proxy")
        stopped = time.monotonic()
        sprint.control.stop(grace_s=2)
        sprint.join(timeout_s=30)
        took = time.monotonic() - stopped

    held = sprint.results["held"]
    assert held.reason == "stopped while waiting for an agent slot"
    assert held.outcome is None and held.tokens == 0  # no agent run counted
    assert not [r for r in model.requests if r.rule == "held"]  # never reached the model
    assert (sprint.ahead.started, sprint.ahead.dropped) == (1, 1)
    for task in ("busy", "held"):
        for info in sprint.spawned[task]:
            if info.pid:
                assert find_processes(pgid=info.pgid, marker=info.marker) == [], task
    assert processes_under(tmp_path / "work") == []
    assert took < 20


def test_an_agent_held_too_long_is_stopped_and_started_again_at_its_grant(
    make_repo, model: ScriptedModelServer, env: dict[str, str], tmp_path: Path
) -> None:
    model.set_script(script(["long", "late"], delay_s=2))
    repo = make_repo()
    with SprintMeter(None, lambda _: None) as meter:
        sprint = Sprint(repo, tmp_path / "work", env, meter, max_hold_s=1)
        sprint.run("long")
        wait_for(lambda: model.requests, timeout=60, what="the first agent's request")
        sprint.run("late")
        sprint.join()

    assert all(sprint.results[t].succeeded for t in ("long", "late"))
    assert (sprint.ahead.started, sprint.ahead.dropped, sprint.ahead.ready) == (1, 1, 0)
    assert any("still no agent slot after 1s" in line for line in sprint.logs["late"])
    (long_end, late_start) = spans(model.requests)["long"][1], spans(model.requests)["late"][0]
    assert late_start >= long_end
    # One Codex session of "late" reached the model: the held one never did.
    assert len({r.thread_id for r in model.requests if r.rule == "late"}) == 1
