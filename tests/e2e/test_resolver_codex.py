"""A Codex resolver finds a real `git merge` in progress and finishes it (no Prefect).

Landing calls a ``run_attempt`` that runs the real Codex CLI against the scripted model;
what the model saw of ``git status`` is in its request log.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from agentfleet.agent_config import AgentConfig
from agentfleet.attempt import AttemptSpec, run_attempt
from agentfleet.landing import AttemptRequest, LandingPolicy
from agentfleet.naming import attempt_branch
from agentfleet.results import AttemptResult, TaskOutcome
from agentfleet.testing import Response, Rule, Script, ScriptedModelServer
from tests.support.git_env import sh, user_repo
from tests.unit.test_landing import SPRINT, TARGET, do_land
from tests.unit.test_merge_queue import two_conflicting

pytestmark = [pytest.mark.codex, pytest.mark.timeout(90),
              pytest.mark.usefixtures("no_git_identity")]

CODEX = Path(__file__).resolve().parents[2] / "node_modules" / ".bin" / "codex"

SCRIPT = Script(rules=[
    Rule(name="resolver", match="A `git merge` is in progress", responses=[
        Response(steps=[{"do": "exec", "cmd": "git status --porcelain"}]),
        Response(steps=[{"do": "exec", "cmd": "printf 'line by a\\nline by b\\n' > shared.txt"}]),
        Response(steps=[{"do": "message", "text": "Kept both lines."}]),
    ]),
])


def test_a_codex_resolver_sees_git_status_of_the_merge_and_resolves_it(tmp_path: Path):
    repo = user_repo(tmp_path / "repo", {"README.md": "hello\n"})
    base, results = two_conflicting(repo)
    with ScriptedModelServer(SCRIPT) as model:
        env = {**os.environ, "LANG": "C.UTF-8",
               **model.agent_env(model.write_codex_home(tmp_path / "codex-home"))}

        def resolve(request: AttemptRequest) -> AttemptResult:
            spec = AttemptSpec(
                sprint=SPRINT, task_id=request.task_id, attempt=request.attempt,
                branch=attempt_branch(SPRINT, request.task_id, request.attempt), repo=repo,
                worktree_root=tmp_path / "wt", start_sha=request.start_sha,
                prompt=request.prompt, paths=None, agent=AgentConfig(), timeout_s=60,
                codex_path=CODEX, merge=request.merge, retries=0,
            )  # fmt: skip
            return run_attempt(spec, env=env)

        landing = do_land(repo, tmp_path, ["a", "b"], results, base_sha=base,
                          policy=LandingPolicy(default="resolve"), run_attempt=resolve)
        seen = model.requests_for("resolver")
        model.assert_complete()  # all three turns: status, the fix, the final message
    b = next(t for t in landing.tasks if t.task == "b")
    assert b.outcome is TaskOutcome.APPLIED, b.detail
    assert b.tokens > 0  # the resolver's tokens count for the task
    # The model saw git's own account of the merge: both sides modified shared.txt.
    assert "UU shared.txt" in json.dumps(seen[1].body)
    assert sh(repo, "show", f"{TARGET}:shared.txt") == "line by a\nline by b\n"
