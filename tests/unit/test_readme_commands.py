"""The README's commands work as written from a fresh clone (after `make setup`)."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"


def shell_lines() -> list[str]:
    blocks = re.findall(r"```sh\n(.*?)```", README.read_text(), flags=re.S)
    return [line.strip() for block in blocks for line in block.splitlines() if line.strip()]


def test_commands_use_the_project_s_virtualenv() -> None:
    # `prefect`, `pip` and `agentfleet` are installed in .venv/bin only.
    bare = [line for line in shell_lines()
            if re.match(r"(prefect|pip|agentfleet)\b", line.removeprefix("PREFECT_UI_API_URL="))]
    assert bare == []
    # Inline commands in the prose too.
    inline = re.findall(r"`prefect (?:server start|flow-run|block|automation|deployment)[^`]*`",
                        README.read_text())
    assert inline == []


def test_the_deployment_section_says_what_a_non_default_port_needs() -> None:
    text = README.read_text()
    section = text[text.index("### As a deployment"):text.index("## Watching a sprint")]
    assert "PREFECT_UI_API_URL" in section and "export PREFECT_API_URL=" in section


def test_the_command_agent_s_prompt_channels_are_documented() -> None:
    text = README.read_text()
    assert "AGENTFLEET_PROMPT_FILE" in text and "64 KiB" in text and "--redo TASK" in text
