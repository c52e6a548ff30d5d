"""A process that sees, of a folder, only the parts it is given: a worker standing for a
machine of its own (``placement: pool``'s proof: no access to the other workers' files, the
sprint's work dir or its repository, only to the remote and the shared result storage).

Linux mount namespaces, with the ``unshare`` and ``mount`` of util-linux: in a namespace of
the process's own, a tmpfs holding bind mounts of the kept folders is moved over the
folder, so the rest of it is not there at all (not merely unreadable: root reads
anything). Nothing changes outside the process and its children, and paths stay the same
inside and out (the test reads the worker's processes' working folders from ``/proc``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

# $1 the folder, $2 an empty folder beside it for the view, $3 where the command starts,
# then the kept folders (relative to $1), "--" and the command. The move's -n: in a user
# namespace (not root), util-linux moves the mount, then fails to record it and exits 32.
_WALL = """set -e
root=$1 view=$2 home=$3; shift 3
mount -t tmpfs -o mode=0755 agentfleet-walls "$view"
while [ "$1" != -- ]; do mkdir -p "$view/$1"; mount --bind "$root/$1" "$view/$1"; shift; done
shift
mount -n --move "$view" "$root"
cd "$home"
exec "$@"
"""


def walled_in(command: Sequence[str], root: Path, keep: Sequence[Path], cwd: Path) -> list[str]:
    """``command`` run so that, for it and its children, ``root`` holds ``keep`` alone
    (existing folders under ``root``); it starts in ``cwd``. As root, a mount namespace;
    otherwise a user namespace too, the user mapped to itself."""
    kept = [str(Path(k).relative_to(root)) for k in keep]
    for k in keep:
        if not Path(k).is_dir():
            raise FileNotFoundError(f"{k}: a kept folder must exist before the process starts")
    view = root.parent / f"{root.name}.view-{cwd.name}"
    view.mkdir(exist_ok=True)  # stays empty outside the namespace
    unshare = ["unshare", "--mount", "--propagation", "private"]
    if os.geteuid() != 0:
        # The user stays the user (mapped to root, Codex found its own folders "not
        # user-owned") and mounts with the namespace's capabilities, which the command then
        # drops: bubblewrap, Codex's sandbox, refuses capabilities it was not given by setuid.
        unshare[1:1] = ["--user", "--map-current-user", "--keep-caps"]
        command = ["setpriv", "--inh-caps=-all", "--ambient-caps=-all", "--", *command]
    return [*unshare, "sh", "-c", _WALL, "walls", str(root), str(view), str(cwd), *kept,
            "--", *command]
