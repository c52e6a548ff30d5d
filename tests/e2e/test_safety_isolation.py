"""Each agent kept to its own worktree: the real Codex CLI's sandbox, with what agentfleet adds.

Worktrees (under ``AGENTFLEET_WORK_DIR``) and the user's repository both sit under /tmp
here, which ``workspace-write`` would let any agent write.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from agentfleet.testing import Rule, Script, ScriptedModelServer
from agentfleet.testing.script import Response
from tests.conftest import run_git
from tests.e2e.conftest import run_agentfleet

pytestmark = pytest.mark.codex


def calls(model: ScriptedModelServer, rule: str) -> dict[str, str]:
    """Each command the agent ran (as the model asked for it) -> what Codex reported back."""
    last = model.requests_for(rule)[-1].body["input"]
    asked = {i["call_id"]: json.loads(i["arguments"])["cmd"]
             for i in last if i.get("type") == "function_call"}
    return {asked[i["call_id"]]: str(i["output"])
            for i in last if i.get("type") == "function_call_output"}


def exit_code(output: str) -> int:
    found = re.search(r"exited with code (\d+)", output)
    assert found, output
    return int(found.group(1))


def test_an_agent_cannot_write_into_a_sibling_worktree_or_the_users_repository(
    sample, sprint_env, model: ScriptedModelServer, tmp_path: Path
) -> None:
    repo = tmp_path / "orders-service"
    assert str(repo).startswith("/tmp/") and sprint_env["AGENTFLEET_WORK_DIR"].startswith("/tmp/")
    # The victim waits (bounded) for the intruder's sibling worktree, and stays until the
    # intruder is done with it, so that the target of each write exists.
    wait_for = "for i in $(seq 300); do [ -e {0} ] && break; sleep 0.1; done; "
    into_sibling = wait_for.format("../victim-1") + "echo pwned > ../victim-1/pwned.txt"
    into_repo = f"echo pwned > {repo}/pwned.txt"
    own_tmp = ('mkdir -p intruder && echo "$TMPDIR" > intruder/tmpdir.txt'
               ' && echo scratch > "$TMPDIR/s.txt" && cat "$TMPDIR/s.txt" >> intruder/tmpdir.txt')
    # The victim's own work comes first; then it stays until the intruder has been through
    # its writes (its last file exists, or its worktree came and went), keeping its own
    # worktree there as the sibling to write into.
    victim_work = (
        "mkdir -p victim && echo mine > victim/v.txt; "
        + wait_for.format("../intruder-1")
        + "for i in $(seq 300); do { [ -e ../intruder-1/intruder/tmpdir.txt ] "
        "|| [ ! -e ../intruder-1 ]; } && break; sleep 0.1; done"
    )
    model.set_script(Script(rules=[
        Rule(name="intruder", match="[intruder]", responses=[
            Response(steps=[{"do": "exec", "cmd": into_sibling}]),
            Response(steps=[{"do": "exec", "cmd": into_repo}]),
            Response(steps=[{"do": "exec", "cmd": own_tmp}]),
            Response(steps=[{"do": "message", "text": "Tried."}]),
        ]),
        Rule(name="victim", match="[victim]", responses=[
            # Codex waits for the command to end (not its default 10 s yield time).
            Response(steps=[{"do": "exec", "cmd": victim_work, "yield_time_ms": 60000}]),
            Response(steps=[{"do": "message", "text": "Mine."}]),
        ]),
    ]))
    tasks = [{"id": name, "prompt": f"[{name}] Work.", "paths": [f"{name}/**"]}
             for name in ("intruder", "victim")]
    repo, plan = sample(name="isolation", tasks=tasks)

    run = run_agentfleet("run", str(plan), env=sprint_env)

    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-4000:]
    ran = calls(model, "intruder")
    # Both writes outside the worktree failed inside the sandbox, and left no file.
    for cmd in (into_sibling, into_repo):
        assert exit_code(ran[cmd]) != 0 and "Read-only file system" in ran[cmd], ran[cmd]
    assert not (repo / "pwned.txt").exists()
    target = "agentfleet/isolation"
    files = run_git(repo, "ls-tree", "-r", "--name-only", target).split()
    assert "victim/v.txt" in files and not any("pwned" in f for f in files)
    # The agent's own worktree and its private TMPDIR were writable.
    assert exit_code(ran[own_tmp]) == 0
    tmpdir, scratch = run_git(repo, "show", f"{target}:intruder/tmpdir.txt").splitlines()
    assert scratch == "scratch"
    work = Path(sprint_env["AGENTFLEET_WORK_DIR"]).resolve()
    assert Path(tmpdir).name == "intruder-1.tmp" and Path(tmpdir).is_relative_to(work)
    assert not Path(tmpdir).exists()  # removed with the attempt
    assert "agentfleet adds -c sandbox_workspace_write.exclude_slash_tmp=true" in out
