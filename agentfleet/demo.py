"""``make demo``: the sample sprint with the real Codex CLI and an offline, scripted model.

Builds the sample repository and its eight-ticket plan under ``.demo/``, starts the
packaged scripted model server on 127.0.0.1, points Codex at it through a
temporary ``CODEX_HOME``, and runs ``agentfleet run`` on it.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from agentfleet import cli
from agentfleet.sample import build_sample_repo, sample_plan, sample_script, write_plan
from agentfleet.settings import PROJECT_ROOT
from agentfleet.testing import ScriptedModelServer

BANNER = """\
agentfleet demo: an eight-ticket sprint on a sample orders service.
The model is OFFLINE and SCRIPTED: the real Codex CLI talks to agentfleet's scripted
Responses-API server on {url}, which plays the model. Git, worktrees, Codex, its sandbox
and Prefect are real. To use a real model, see "With a real model" in README.md.
"""


def main(root: Path = PROJECT_ROOT / ".demo") -> int:
    """Build the sample, run the sprint, return ``agentfleet run``'s exit status."""
    shutil.rmtree(root, ignore_errors=True)
    repo = build_sample_repo(root / "orders-service")
    plan = write_plan(root / "sprint.yaml", sample_plan(repo="orders-service"))
    with ScriptedModelServer(sample_script(delay_s=0.3)) as server:
        os.environ.update(server.agent_env(server.write_codex_home(root / "codex-home")))
        os.environ.setdefault("AGENTFLEET_WORK_DIR", str(root / "work"))
        # A fresh result cache each time: a second demo would otherwise replay the first
        # from Prefect's cache and run no agent at all.
        os.environ["PREFECT_RESULTS_LOCAL_STORAGE_PATH"] = str(root / "results")
        if "PREFECT_API_URL" not in os.environ:
            # A demo of its own on the embedded server: nothing mixes with your Prefect home.
            os.environ["PREFECT_HOME"] = str(root / "prefect-home")
            os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
        print(BANNER.format(url=server.base_url))
        status = cli.main(["plan", str(plan)])
        if status == 0:
            print()
            status = cli.main(["run", str(plan), "--report", str(root / "report.json")])
        print(f"\n{len(server.requests)} model requests served. Look around: "
              f"git -C {repo} log --oneline agentfleet/orders-v2")
    return status


if __name__ == "__main__":
    sys.exit(main())
