"""The demo's sample sprint: a small orders service, eight tickets, a scripted model.

In the spirit of the seed's two-week sprint: an endpoint, database indexes,
integration tests, docs, with real dependencies and overlapping paths. The same
sprint drives the end-to-end tests, so the demo is tested too.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

from agentfleet.testing.script import Script

HERE = Path(__file__).resolve().parent


def build_sample_repo(path: Path) -> Path:
    """Create the sample service as a git repository with one commit on ``main``."""
    src = HERE / "repo"
    for file in sorted(src.rglob("*")):
        if file.is_file():
            dest = path / file.relative_to(src)
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(file.read_bytes())
    ident = ["-c", "user.name=Sample Dev", "-c", "user.email=dev@example.com"]
    steps = (["init", "-q", "-b", "main"], ["add", "-A"], [*ident, "commit", "-qm", "Orders"])
    for args in steps:
        subprocess.run(["git", "-C", str(path), *args], check=True, capture_output=True)
    return path


def sample_plan(**overrides: object) -> dict:
    """The eight-ticket plan as data; ``overrides`` replace plan-level keys."""
    plan = yaml.safe_load((HERE / "plan.yaml").read_text())
    plan.update(overrides)
    return plan


def write_plan(path: Path, plan: dict) -> Path:
    """Write a plan file."""
    path.write_text(yaml.safe_dump(plan, sort_keys=False))
    return path


def sample_script(delay_s: float | None = None) -> Script:
    """What the scripted model does for each ticket; ``delay_s`` slows every response."""
    script = Script.model_validate(yaml.safe_load((HERE / "script.yaml").read_text()))
    if delay_s is not None:
        for rule in script.rules:
            for response in rule.responses:
                response.delay_s = delay_s
    return script
