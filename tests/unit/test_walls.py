"""``tests.support.walls``: a process that sees, of a folder, only the folders it keeps."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.support.walls import walled_in


def test_the_process_sees_only_the_kept_folders_and_writes_through_to_them(
    tmp_path: Path,
) -> None:
    root = tmp_path / "machine"
    for name in ("mine", "shared", "theirs"):
        (root / name).mkdir(parents=True)
    (root / "theirs" / "secret").write_text("not yours\n")
    (root / "plan.yaml").write_text("tasks: []\n")
    script = ('ls "$1"; pwd; cat "$1/theirs/secret" 2>/dev/null || echo hidden; '
              'echo made > "$1/shared/made"')

    done = subprocess.run(
        walled_in(["sh", "-c", script, "sh", str(root)], root,
                  [root / "mine", root / "shared"], cwd=root / "mine"),
        capture_output=True, text=True, timeout=30)

    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["mine", "shared", str(root / "mine"), "hidden"]
    # Writes to a kept folder land in the real one; outside, nothing changed.
    assert (root / "shared" / "made").read_text() == "made\n"
    assert (root / "theirs" / "secret").read_text() == "not yours\n"
    assert sorted(p.name for p in root.iterdir()) == ["mine", "plan.yaml", "shared", "theirs"]


def test_a_kept_folder_must_exist_and_lie_under_the_folder(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="must exist"):
        walled_in(["true"], tmp_path, [tmp_path / "missing"], cwd=tmp_path)
    with pytest.raises(ValueError):
        walled_in(["true"], tmp_path / "a", [tmp_path / "b"], cwd=tmp_path)
