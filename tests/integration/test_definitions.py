"""Every deployment in prefect.yaml points at a flow that loads, with the parameters CI passes."""

from __future__ import annotations

from pathlib import Path

import yaml
from prefect.flows import load_flow_from_entrypoint

ROOT = Path(__file__).resolve().parents[2]


def test_every_prefect_yaml_entrypoint_loads() -> None:
    deployments = yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"]
    assert {d["name"] for d in deployments} == {"sprint", "apply", "best-of-n", "attempt",
                                                "nightly-sprint"}
    # sprint: one of plan (data) and plan_path (a file), neither required on its own.
    required = {"sprint": [], "apply": ["repo", "target", "branches"],
                "best-of-n": ["prompt"], "attempt": ["spec", "remote", "start_ref"]}
    for deployment in deployments:
        # Module paths: a worker imports them from the installed package, from any folder.
        flow = load_flow_from_entrypoint(deployment["entrypoint"])
        assert flow.name == deployment["name"].removeprefix("nightly-")
        assert flow.parameters.required == required[flow.name]
        # Plans are judged by their own checks (all problems, agentfleet's words), not by
        # the server's schema check, which refuses the run with its first problem only.
        if flow.name in ("sprint", "best-of-n"):
            assert deployment["enforce_parameter_schema"] is False
    apply = load_flow_from_entrypoint(str(ROOT / "flows/apply.py:apply"))
    assert {"final_verify", "on_conflict", "resolver", "on_final_verify_failure", "push"} <= set(
        apply.parameters.properties
    )
    sprint = load_flow_from_entrypoint(str(ROOT / "flows/sprint.py:sprint"))
    assert {"plan", "plan_path", "repository", "no_cache", "report"} <= set(
        sprint.parameters.properties
    )
    best = load_flow_from_entrypoint(str(ROOT / "flows/best_of_n.py:best_of_n"))
    assert {"prompt", "repo", "attempts", "verify", "score", "score_goal", "paths", "variants",
            "target"} <= set(best.parameters.properties)
