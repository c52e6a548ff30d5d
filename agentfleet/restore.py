"""Recreate an attempt branch from its persisted patch: no worktree, no checkout.

A cached attempt result carries its commit as a binary patch (:class:`CommitPatch`).
When the result is reused, its branch may be gone (deleted, a fresh clone, another
machine) or may point at something else. :func:`restore_branch` makes the branch
hold the result again: the patch is applied to the start tree in a temporary index
(``git apply --cached``), the tree written, a commit made with ``commit-tree``, and
the branch moved with ``update-ref``. The user's working tree and index are never
touched. Prefect-free; the caller passes the environment git runs in.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from pathlib import Path

from pydantic import BaseModel

from agentfleet.apply import checked_out_in, commit_tree, rev_parse, tree_of
from agentfleet.errors import GitError
from agentfleet.gitcmd import git, run_git
from agentfleet.results import CommitPatch

# The patch must not depend on the user's diff settings (no prefixes, an external
# diff tool, textconv, colour, a relative root): it is applied elsewhere later.
_DIFF_ARGS = (
    "-c", "diff.noprefix=false", "-c", "diff.mnemonicPrefix=false", "-c", "color.ui=never",
    "diff", "--binary", "--full-index", "--no-ext-diff", "--no-textconv", "--no-color",
    "--no-relative", "--src-prefix=a/", "--dst-prefix=b/",
)  # fmt: skip


class Restored(BaseModel):
    """Where an attempt branch points after :func:`restore_branch`."""

    head_sha: str
    start_sha: str  # the head's parent: the start commit, or one with the same tree
    restored: bool  # False: the branch already held the result and was kept


# A larger patch is not kept in the result (which is persisted, read and copied whole):
# the attempt branch alone holds such a commit.
MAX_PATCH_BYTES = 8 * 1024 * 1024


def changed_blob_bytes(repo: Path, start: str, head: str) -> int:
    """The size of the blobs a diff ``start..head`` shows, both sides: a patch's size, about.

    Asked of git's object store, so a 200 MB file is never read to learn it is too large.
    """
    raw = git(repo, "diff", "--raw", "-z", "--no-abbrev", "--no-renames", start, head, "--")
    shas = {
        sha
        for entry in raw.split("\0")
        if entry.startswith(":")
        for sha in entry.split()[2:4]
        if sha.strip("0")
    }
    if not shas:
        return 0
    sizes = git(repo, "cat-file", "--batch-check=%(objectsize)", input="\n".join(sorted(shas)))
    return sum(int(n) for n in sizes.split() if n.isdigit())


def capture(
    repo: Path, start: str, head: str, *, max_bytes: int = MAX_PATCH_BYTES
) -> CommitPatch:
    """The commit ``head`` (over ``start``) as a persistable patch with its message.

    A patch larger than ``max_bytes`` is left out (``omitted_bytes``): the branch holds it.
    """
    message = git(repo, "log", "-1", "--format=%B", head).rstrip() + "\n"
    tree = tree_of(repo, head)
    size = changed_blob_bytes(repo, start, head)
    if size > max_bytes:
        return CommitPatch(diff="", message=message, tree=tree, omitted_bytes=size)
    diff = git(repo, *_DIFF_ARGS, start, head, "--")
    # git() decodes with surrogateescape: encoding back gives git's exact bytes.
    patch = CommitPatch.of(diff.encode("utf-8", "surrogateescape"), message)
    patch.tree = tree
    return patch


def _megabytes(size: int) -> str:
    return f"{size / (1024 * 1024):,.1f} MB"


def patched_tree(repo: Path, start: str, patch: CommitPatch, *, env: Mapping[str, str]) -> str:
    """The tree of ``start`` with ``patch`` applied, built in a temporary index."""
    data = patch.data()
    base = tree_of(repo, start)
    if not data.strip():
        return base
    with tempfile.TemporaryDirectory(prefix="agentfleet-restore-") as tmp:
        index_env = {**env, "GIT_INDEX_FILE": str(Path(tmp) / "index")}
        git(repo, "read-tree", base, env=index_env)
        done = run_git(
            repo, "apply", "--cached", "--binary", "--whitespace=nowarn", "-",
            input=data.decode("utf-8", "surrogateescape"), env=index_env,
        )  # fmt: skip
        if done.returncode != 0:
            raise GitError(
                f"the cached patch does not apply to {start[:10]} in {repo}: "
                f"{done.stderr.strip() or '(no message)'}"
            )
        return git(repo, "write-tree", env=index_env).strip()


def restore_branch(
    repo: Path, branch: str, start: str, patch: CommitPatch, *, env: Mapping[str, str]
) -> Restored:
    """Make ``branch`` hold ``start`` plus ``patch``; keep it when it already does.

    Kept when the branch's commit has the patched tree and its parent has ``start``'s
    tree (a start commit rebuilt by another run has new dates but the same tree).
    Otherwise a new commit on ``start`` replaces it. A branch checked out in some
    worktree is never moved (``GitError``).
    """
    ref = f"refs/heads/{branch}"
    if patch.tree and (kept := _holding(repo, ref, patch.tree, start)) is not None:
        return kept  # the usual rerun: one git call, no patch applied
    current = rev_parse(repo, ref)
    if patch.omitted_bytes is not None:
        # Too large to keep: only a branch that still holds the commit can serve it.
        raise GitError(
            f"its patch ({_megabytes(patch.omitted_bytes)}) was too large to keep in the result "
            f"and the branch {branch} that held it is "
            + ("gone" if current is None else "changed")
        )
    tree = patched_tree(repo, start, patch, env=env)
    if current is not None and tree_of(repo, current) == tree:
        parent = rev_parse(repo, f"{current}^1")
        if parent is not None and tree_of(repo, parent) == tree_of(repo, start):
            return Restored(head_sha=current, start_sha=parent, restored=False)
    holders = checked_out_in(repo, branch)
    if holders:
        raise GitError(
            f"cannot restore {branch} from the cache: it is checked out at {holders[0]}"
        )
    head = commit_tree(repo, tree, [start], patch.message or f"agentfleet: {branch}\n")
    # Guarded by the value seen above ("" = must not exist), like every ref agentfleet moves.
    # --no-deref: a symbolic ref left in its place is replaced, never written through.
    git(repo, "update-ref", "--no-deref", "-m", "agentfleet: restored from the cache", ref, head,
        current or "")
    return Restored(head_sha=head, start_sha=start, restored=True)


def _holding(repo: Path, ref: str, tree: str, start: str) -> Restored | None:
    """``ref`` as it is, when it holds the result: its commit has ``tree`` and a parent
    with ``start``'s tree (a start commit rebuilt by another run has new dates, same tree).

    One ``cat-file`` for the five names (read from stdin: none is taken for an option);
    None when any is missing or they differ.
    """
    names = [f"{ref}^{{commit}}", f"{ref}^1^{{commit}}", f"{ref}^{{tree}}",
             f"{ref}^1^{{tree}}", f"{start}^{{tree}}"]
    done = run_git(repo, "cat-file", "--batch-check=%(objectname)", input="\n".join(names) + "\n")
    found = done.stdout.split("\n")[: len(names)]
    if done.returncode != 0 or len(found) != len(names) or any(
            len(sha) not in (40, 64) or " " in sha for sha in found):
        return None
    head, parent, head_tree, parent_tree, start_tree = found
    if head_tree != tree or parent_tree != start_tree:
        return None
    return Restored(head_sha=head, start_sha=parent, restored=False)
