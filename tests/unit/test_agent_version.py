"""``codex --version`` is asked once per binary: the answer is kept in the work dir.

The binary here is a small executable that counts its runs (the record's logic is the
same for any program); the real Codex answers in the second test.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from agentfleet.settings import PROJECT_ROOT
from tasks import cache

CODEX = PROJECT_ROOT / "node_modules" / ".bin" / "codex"


@pytest.fixture(autouse=True)
def fresh_process_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts as a new process would: nothing asked yet."""
    monkeypatch.setattr(cache, "_versions", {})


def tool(path: Path, version: str, runs: Path) -> Path:
    path.write_text(f"#!/bin/sh\necho run >> {runs}\necho '{version}'\n")
    path.chmod(0o755)
    return path


def test_a_later_run_reads_the_version_and_a_changed_binary_is_asked_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runs = tmp_path / "runs.log"
    binary = tool(tmp_path / "codex", "codex-cli 1.0.0", runs)
    work = tmp_path / "work"

    assert cache.agent_version(binary, work) == "codex-cli 1.0.0"
    monkeypatch.setattr(cache, "_versions", {})  # a new process
    assert cache.agent_version(binary, work) == "codex-cli 1.0.0"
    assert runs.read_text().count("run") == 1
    record = json.loads((work / cache.VERSION_RECORD).read_text())
    assert record[str(binary.resolve())]["version"] == "codex-cli 1.0.0"

    # Upgraded in place (new content, new mtime): asked again.
    tool(binary, "codex-cli 1.1.0", runs)
    os.utime(binary, ns=(1, 1))
    monkeypatch.setattr(cache, "_versions", {})
    assert cache.agent_version(binary, work) == "codex-cli 1.1.0"
    assert runs.read_text().count("run") == 2
    # Without a work dir nothing is read or kept: asked once per process, as before.
    monkeypatch.setattr(cache, "_versions", {})
    assert cache.agent_version(binary) == "codex-cli 1.1.0"
    assert runs.read_text().count("run") == 3


def test_a_failed_answer_is_not_kept(tmp_path: Path) -> None:
    broken = tmp_path / "codex"
    broken.write_text("#!/bin/sh\nexit 3\n")
    broken.chmod(0o755)

    assert cache.agent_version(broken, tmp_path) == "unknown (exit 3)"
    assert not (tmp_path / cache.VERSION_RECORD).exists()


def test_the_real_codex_answer_is_recorded_under_its_resolved_path(tmp_path: Path) -> None:
    version = cache.agent_version(CODEX, tmp_path)

    assert version.startswith("codex-cli ")
    record = json.loads((tmp_path / cache.VERSION_RECORD).read_text())
    assert record[str(CODEX.resolve())]["version"] == version
