"""Sequential apply: attempts land one at a time on a scratch ref, like a merge queue.

Nothing here touches a working tree or an index. Merges are ``git merge-tree
--write-tree``, commits are ``git commit-tree``, refs move with ``git update-ref``
(the target only with its old value as a guard). Each applied task becomes one
commit whose only parent is the previous head, so the target's history reads one
commit per task, each carrying these trailers::

    Agentfleet-Sprint: <sprint>
    Agentfleet-Task: <task id>
    Agentfleet-Attempt: <attempt branch>
    Agentfleet-Prompt: <digest of the task's prompt in the plan>

which is how a rerun finds what is already applied (:func:`applied_tasks`), and
whether the plan's prompt changed since. :func:`drop_commits` takes tasks' commits
out of a target again (``--redo``), replaying what came after them.
"""

from __future__ import annotations

import hashlib
import subprocess
import tempfile
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from pydantic import ConfigDict

from agentfleet.errors import ConflictError, GitError
from agentfleet.gitcmd import compose_message, git, git_error, identity_args, is_oid, run_git
from agentfleet.naming import scratch_ref
from agentfleet.text import JsonSafeModel
from agentfleet.worktrees import diffstat, list_worktrees, resolve_commit

SPRINT_TRAILER = "Agentfleet-Sprint"
TASK_TRAILER = "Agentfleet-Task"
ATTEMPT_TRAILER = "Agentfleet-Attempt"
PROMPT_TRAILER = "Agentfleet-Prompt"
TRAILER_KEYS = (SPRINT_TRAILER, TASK_TRAILER, ATTEMPT_TRAILER, PROMPT_TRAILER)


def prompt_digest(prompt: str) -> str:
    """A short digest of a plan's prompt; spacing and line breaks do not change it."""
    return hashlib.sha256(" ".join(prompt.split()).encode("utf-8", "surrogatepass")).hexdigest()[
        :16
    ]


class ApplyResult(JsonSafeModel):
    """What applying one attempt did: a new commit, a conflict, or nothing to apply."""

    model_config = ConfigDict(frozen=True)

    applied: bool
    commit: str | None = None
    conflicts: list[str] = []
    empty: bool = False
    overwritten: list[str] = []  # conflicting files where this attempt's version won


class AppliedCommit(JsonSafeModel):
    """A task's commit found on a ref, and the attempt branch it came from."""

    model_config = ConfigDict(frozen=True)

    sha: str
    attempt_branch: str
    prompt_digest: str | None = None  # None: applied before agentfleet recorded it


# ---------------------------------------------------------------- small plumbing


def rev_parse(repo: Path, rev: str) -> str | None:
    """The commit ``rev`` names, or None when it names none (e.g. a missing branch)."""
    done = run_git(
        repo, "rev-parse", "--verify", "--quiet", "--end-of-options", f"{rev}^{{commit}}"
    )
    if done.returncode == 0:
        return done.stdout.strip()
    if done.stderr.strip():  # not "no such ref" but a real failure (no repository, ...)
        raise git_error(repo, ("rev-parse", "--verify", rev), done.returncode, done.stderr)
    return None


def tree_of(repo: Path, commit: str) -> str:
    """The tree object of ``commit``."""
    return git(repo, "rev-parse", "--verify", "--end-of-options", f"{commit}^{{tree}}").strip()


def is_ancestor(repo: Path, ancestor: str, descendant: str) -> bool:
    """Whether ``ancestor`` is reachable from ``descendant`` (or the same commit)."""
    done = run_git(repo, "merge-base", "--is-ancestor", ancestor, descendant)
    if done.returncode not in (0, 1):
        raise git_error(repo, ("merge-base", "--is-ancestor"), done.returncode, done.stderr)
    return done.returncode == 0


def commit_tree(repo: Path, tree: str, parents: list[str], message: str) -> str:
    """Write a commit object by agentfleet (no ref moves) and return its sha."""
    args = ["commit-tree", tree]
    for parent in parents:
        args += ["-p", parent]
    sha = git(repo, *identity_args(), *args, "-F", "-", input=message).strip()
    if is_oid(tree) and all(is_oid(p) for p in parents):
        _remember(repo, Commit(sha, tree, tuple(parents)))
    return sha


@dataclass(frozen=True)
class Commit:
    """A commit object's id, tree and parents: facts that never change for that id."""

    sha: str
    tree: str
    parents: tuple[str, ...]


# (repository, commit id) -> the commit: what applying a stack learns or makes, so the
# next result needs no `git` to know it (a stack of 100 is 100 commits deep).
_known: dict[tuple[str, str], Commit] = {}
_KNOWN_MAX = 100_000


def _remember(repo: Path, commit: Commit) -> None:
    if len(_known) >= _KNOWN_MAX:
        _known.clear()
    _known[(str(repo), commit.sha)] = commit


def commits(repo: Path, revs: Sequence[str]) -> list[Commit]:
    """The commits ``revs`` name, in order; one ``git cat-file --batch`` for those not
    known yet (a full id agentfleet made or read before is). ``GitError`` if one is none."""
    found: list[Commit | None] = [
        _known.get((str(repo), rev)) if is_oid(rev) else None for rev in revs
    ]
    ask = [i for i, c in enumerate(found) if c is None]
    if ask:
        query = "".join(f"{revs[i]}^{{commit}}\n" for i in ask)
        if any("\n" in revs[i] for i in ask):
            raise GitError(f"not a revision: {next(r for r in revs if chr(10) in r)!r}")
        try:
            # Names come on stdin: a rev starting with "-" is never taken for an option.
            done = subprocess.run(["git", "-C", str(repo), "cat-file", "--batch"],
                                  input=query.encode("utf-8", "surrogateescape"),
                                  capture_output=True, check=False)
        except FileNotFoundError as e:
            raise GitError("git is not installed (or not on PATH)") from e
        if done.returncode != 0:
            raise git_error(repo, ("cat-file", "--batch"), done.returncode,
                            done.stderr.decode("utf-8", "replace"))
        out, pos = done.stdout, 0
        for i in ask:
            end = out.index(b"\n", pos)
            header = out[pos:end].decode("utf-8", "surrogateescape").split(" ")
            pos = end + 1
            if len(header) != 3 or header[1] != "commit":
                resolve_commit(repo, revs[i])  # raises, with git's words for what is wrong
                raise GitError(f"{revs[i]!r} does not name a commit in {repo}")
            size = int(header[2])
            body, pos = out[pos:pos + size], pos + size + 1
            tree, parents = "", []
            for line in body.split(b"\n"):
                if not line:
                    break  # the headers end at the first empty line
                if line.startswith(b"tree "):
                    tree = line[5:].decode()
                elif line.startswith(b"parent "):
                    parents.append(line[7:].decode())
            found[i] = commit = Commit(header[0], tree, tuple(parents))
            _remember(repo, commit)
    return [c for c in found if c is not None]


def _start_is_merge_base(repo: Path, onto: Commit, head: Commit, start: Commit) -> bool:
    """Whether git's merge base of ``onto`` and ``head`` is ``start`` alone, known without
    git: ``head`` a child of ``start`` only, ``onto`` ``start`` or a known single-parent
    descendant of it (a stack applied on it), ``head`` not on the way."""
    if head.parents != (start.sha,):
        return False
    current: Commit | None = onto
    for _ in range(len(_known) + 1):
        if current is None or current.sha == head.sha:
            return False
        if current.sha == start.sha:
            return True
        if len(current.parents) != 1:
            return False
        current = _known.get((str(repo), current.parents[0]))
    return False


def _ours(
    repo: Path, onto: Commit, head: Commit, start: Commit | None, names: tuple[str, str | None]
) -> str:
    """What to merge ``head`` into so that only ``start..head`` is applied onto ``onto``
    (``names``: how the caller named head and start, for the error)."""
    if start is None:
        return onto.sha
    if start.sha not in head.parents and not is_ancestor(repo, start.sha, head.sha):
        raise GitError(f"{names[0]} ({head.sha[:10]}) does not descend from its start {names[1]}")
    if _start_is_merge_base(repo, onto, head, start):
        return onto.sha  # what the stand-in below would give, one commit fewer
    # git 2.39's merge-tree takes no merge base; a stand-in commit with onto's tree on
    # top of start makes start the only (hence the best) common ancestor.
    return commit_tree(repo, onto.tree, [start.sha], f"agentfleet: stand-in for {onto.sha}\n")


def merge_trees(repo: Path, ours: str, theirs: str) -> tuple[str, list[str]]:
    """Merge two commits (merge base found by git): the merged tree and conflicted paths."""
    args = ("merge-tree", "--write-tree", "--name-only", "--no-messages", "-z", ours, theirs)
    done = run_git(repo, *args)
    parts = done.stdout.split("\0")
    # Exit 1 means "conflicts" but also "bad argument"; only the former prints a tree.
    if done.returncode not in (0, 1) or not is_oid(parts[0]):
        raise git_error(repo, args, done.returncode, done.stderr)
    conflicts = list(dict.fromkeys(p for p in parts[1:] if p))
    if done.returncode == 1 and not conflicts:
        raise git_error(repo, args, done.returncode, done.stderr or "conflict without a file")
    return parts[0], conflicts


# ---------------------------------------------------------------- combine / apply


def combine(repo: Path, base: str, heads: list[str], message: str) -> str:
    """A start commit holding ``base`` and every head's changes; ConflictError if they clash."""
    commits = list(
        dict.fromkeys([resolve_commit(repo, base), *(resolve_commit(repo, h) for h in heads)])
    )
    independent = set(git(repo, "merge-base", "--independent", *commits).split())
    # Tips reachable from another tip add nothing; keep the caller's order for the rest.
    tips = [c for c in commits if c in independent]
    if len(tips) == 1:
        return tips[0]
    current = tips[0]
    tree = tree_of(repo, current)
    for tip in tips[1:]:
        tree, conflicts = merge_trees(repo, current, tip)
        if conflicts:
            raise ConflictError(
                conflicts,
                f"cannot combine {', '.join(t[:10] for t in tips)}: conflict in "
                + ", ".join(conflicts),
            )
        # A real commit after each step, so the next merge finds its merge base in the graph.
        current = commit_tree(repo, tree, [current, tip], "agentfleet: combining\n")
    return commit_tree(repo, tree, tips, compose_message(message))


def apply_one(
    repo: Path,
    onto: str,
    attempt_head: str,
    *,
    sprint: str,
    task_id: str,
    attempt_branch: str,
    subject: str,
    body: str = "",
    start: str | None = None,
    prompt: str | None = None,
    overwrite_env: Mapping[str, str] | None = None,
) -> ApplyResult:
    """Merge ``attempt_head`` into ``onto`` as one new commit on ``onto``; no ref moves.

    With ``start`` (the commit the attempt began from) only the attempt's own change,
    ``start..attempt_head``, is applied, like a cherry-pick: right when the attempt
    started from other tasks' results and edited their lines. Without it git picks
    the merge base, which for such an attempt is older and makes those edits conflict.
    """
    # One git for the three (none for those a stack already knows), and no stand-in
    # commit when the merge base already is the start (agentfleet's own attempt commits).
    onto_c, head_c, *rest = commits(repo, [onto, attempt_head, *([start] if start else [])])
    onto_sha, head_sha = onto_c.sha, head_c.sha
    ours = _ours(repo, onto_c, head_c, rest[0] if rest else None, (attempt_head, start))
    tree, conflicts = merge_trees(repo, ours, head_sha)
    overwritten: list[str] = []
    if conflicts and overwrite_env is None:
        return ApplyResult(applied=False, conflicts=conflicts)
    if conflicts and overwrite_env is not None:
        # The seed's "Overwrite": this attempt's version of each conflicting file wins.
        tree = replace_paths(repo, tree, head_sha, conflicts, env=overwrite_env)
        overwritten = conflicts
    if tree == onto_c.tree:
        return ApplyResult(applied=False, empty=True)
    commit = commit_task(
        repo, onto_sha, tree, sprint=sprint, task_id=task_id, attempt_branch=attempt_branch,
        subject=subject, body=body, prompt=prompt,
    )  # fmt: skip
    return ApplyResult(applied=True, commit=commit, overwritten=overwritten)


def commit_task(
    repo: Path,
    onto: str,
    tree: str,
    *,
    sprint: str,
    task_id: str,
    attempt_branch: str,
    subject: str,
    body: str = "",
    prompt: str | None = None,
) -> str:
    """A task's commit of ``tree`` on ``onto``, with agentfleet's trailers; no ref moves."""
    title = " ".join(subject.split()) or f"agentfleet: {task_id}"
    text = title + ("\n\n" + body.strip() if body.strip() else "")
    trailers = {SPRINT_TRAILER: sprint, TASK_TRAILER: task_id, ATTEMPT_TRAILER: attempt_branch}
    if prompt is not None:
        trailers[PROMPT_TRAILER] = prompt_digest(prompt)
    return commit_tree(repo, tree, [onto], compose_message(text, trailers))


def predict(repo: Path, onto: str, attempt_head: str, start: str | None) -> list[str]:
    """The files that would conflict applying ``start..attempt_head`` onto ``onto``."""
    onto_c, head_c, *rest = commits(repo, [onto, attempt_head, *([start] if start else [])])
    ours = _ours(repo, onto_c, head_c, rest[0] if rest else None, (attempt_head, start))
    return merge_trees(repo, ours, head_c.sha)[1]


def replace_paths(
    repo: Path, tree: str, source: str, paths: Collection[str], *, env: Mapping[str, str]
) -> str:
    """``tree`` with each of ``paths`` as it is in commit ``source`` (absent there: removed).

    Uses a temporary index file, never the repository's. ``env`` is git's whole environment.
    """
    with tempfile.TemporaryDirectory(prefix="agentfleet-index-") as tmp:
        index_env = {**env, "GIT_INDEX_FILE": str(Path(tmp) / "index")}
        git(repo, "read-tree", tree, env=index_env)
        for path in paths:
            entry = git(repo, "ls-tree", "-z", "--end-of-options", source, "--", path)
            head, _, name = entry.rstrip("\0").partition("\t")
            if name:
                mode, _kind, oid = head.split()
                git(repo, "update-index", "--add", "--cacheinfo", f"{mode},{oid},{path}",
                    env=index_env)
            else:
                git(repo, "update-index", "--force-remove", "--", path, env=index_env)
        return git(repo, "write-tree", env=index_env).strip()


def has_conflict_markers(repo: Path, commit: str, paths: Collection[str]) -> list[str]:
    """Which of ``paths`` hold a conflict marker line in ``commit``."""
    if not paths:
        return []
    done = run_git(
        repo, "grep", "-l", "-E", "^(<<<<<<<|>>>>>>>)( |$)", commit, "--", *paths
    )
    if done.returncode not in (0, 1):
        raise git_error(repo, ("grep",), done.returncode, done.stderr)
    return [line.partition(":")[2] for line in done.stdout.splitlines() if line]


def applied_tasks(repo: Path, ref: str, sprint: str) -> dict[str, AppliedCommit]:
    """Tasks of ``sprint`` already applied on ``ref``, by their trailers (newest wins)."""
    fields = "%x00".join(f"%(trailers:key={key},valueonly,separator=%x1f)" for key in TRAILER_KEYS)
    out = git(
        repo,
        "-c", "log.showSignature=false",
        "log", f"--format=%H%x00{fields}%x1e",
        # git filters by message text cheaply; the trailers below decide.
        "--fixed-strings", f"--grep={SPRINT_TRAILER}: {sprint}",
        "--end-of-options", ref, "--",
    )  # fmt: skip
    found: dict[str, AppliedCommit] = {}
    for record in out.split("\x1e"):
        parts = record.strip().split("\0")
        if len(parts) != 1 + len(TRAILER_KEYS):
            continue
        sha, sprints, tasks, attempts, digest = (p.split("\x1f")[0].strip() for p in parts)
        if sprints == sprint and tasks and tasks not in found:
            found[tasks] = AppliedCommit(
                sha=sha, attempt_branch=attempts, prompt_digest=digest or None
            )
    return found


def drop_commits(repo: Path, head: str, drop: Collection[str], *, env: Mapping[str, str]) -> str:
    """``head`` without the commits ``drop``, everything after them replayed; no ref moves.

    The dropped commits must lie on ``head``'s first-parent line. Commits after them
    (agentfleet's and anyone else's) keep their message, author and date; the new
    history starts from the parent of the oldest one dropped. A later commit that no
    longer applies, or a merge among them, raises ``GitError`` naming it. ``env`` is
    git's whole environment (the author of a replayed commit is added to it).
    """
    wanted = set(drop)
    if not wanted:
        return resolve_commit(repo, head)
    later: list[tuple[str, list[str]]] = []
    bottom: str | None = None
    log = git(repo, "rev-list", "--first-parent", "--parents", "--end-of-options", head, "--")
    for line in log.splitlines():
        sha, *parents = line.split()
        later.append((sha, parents))
        wanted.discard(sha)
        if not wanted:
            if not parents:
                raise GitError(f"cannot take out {sha[:10]}: it is the first commit of {head}")
            bottom = parents[0]
            break
    if bottom is None:
        shown = ", ".join(sorted(c[:10] for c in wanted))
        raise GitError(f"commits {shown} are not on the history of {head}")
    current = bottom
    for sha, parents in reversed(later):
        if sha in drop:
            continue
        if len(parents) > 1:
            raise GitError(
                f"cannot take tasks' commits out of {head}: {sha[:10]}, which comes after "
                "them, is a merge; rebuild the target by hand or delete it and run again"
            )
        # The replayed commit's own change only (parent..sha), as apply_one does.
        ours = commit_tree(
            repo, tree_of(repo, current), [parents[0]], f"agentfleet: stand-in for {current}\n"
        )
        tree, conflicts = merge_trees(repo, ours, sha)
        if conflicts:
            raise ConflictError(
                conflicts,
                f"cannot take tasks' commits out of {head}: {sha[:10]}, which comes after "
                f"them, then conflicts in {', '.join(conflicts)}",
            )
        current = _recommit(repo, sha, tree, current, env)
    return current


def _recommit(repo: Path, sha: str, tree: str, parent: str, env: Mapping[str, str]) -> str:
    """``sha`` again with ``tree`` on ``parent``: its message, author and date kept."""
    raw = git(repo, "cat-file", "commit", sha)
    message = raw.partition("\n\n")[2]
    name, email, date = git(
        repo, "log", "-1", "--format=%an%x00%ae%x00%ad", "--date=raw", "--end-of-options", sha,
        "--",
    ).rstrip("\n").split("\0")
    author = {"GIT_AUTHOR_NAME": name, "GIT_AUTHOR_EMAIL": email, "GIT_AUTHOR_DATE": date}
    return git(
        repo, *identity_args(), "commit-tree", tree, "-p", parent, "-F", "-",
        input=message, env={**env, **author},
    ).strip()  # fmt: skip


# ---------------------------------------------------------------- the scratch ref


def start(repo: Path, sprint: str, target: str, base: str) -> str:
    """Point the sprint's scratch ref at ``target`` (if that branch exists) or ``base``."""
    head = rev_parse(repo, _branch_ref(target)) or resolve_commit(repo, base)
    # --no-deref on the scratch ref: it is agentfleet's, whatever an agent made of it.
    git(repo, "update-ref", "--no-deref", "-m", f"agentfleet: start {sprint}", scratch_ref(sprint),
        head)
    return head


def set_scratch(repo: Path, sprint: str, sha: str, expected_old: str | None = None) -> None:
    """Advance the scratch ref to ``sha`` (guarded by ``expected_old`` when given)."""
    args = ["update-ref", "--no-deref", scratch_ref(sprint), sha]
    if expected_old is not None:
        args.append(expected_old)
    git(repo, *args)


def scratch_head(repo: Path, sprint: str) -> str | None:
    """Where the sprint's scratch ref points, or None when there is none."""
    return rev_parse(repo, scratch_ref(sprint))


def finish(repo: Path, sprint: str, target: str, expected_old: str | None) -> None:
    """Move ``target`` to the scratch head if it still is at ``expected_old``; drop scratch.

    ``expected_old=None`` means the target must not exist yet. A target checked out in
    any worktree (the user's included) is never moved: GitError, scratch kept.
    """
    head = scratch_head(repo, sprint)
    if head is None:
        raise GitError(f"sprint {sprint!r} has no scratch ref {scratch_ref(sprint)} in {repo}")
    branch = _branch_ref(target)
    holders = checked_out_in(repo, target)
    if holders:
        raise GitError(
            f"{target} is checked out at {holders[0]}; agentfleet does not move a checked-out "
            f"branch. The result stays on {scratch_ref(sprint)} ({head[:10]})"
        )
    # update-ref compares and swaps under the ref's lock; "" means "must not exist".
    args = ("update-ref", "-m", f"agentfleet: sprint {sprint}", branch, head, expected_old or "")
    done = run_git(repo, *args)
    if done.returncode != 0:
        now = rev_parse(repo, branch)
        was = expected_old[:10] if expected_old else "absent"
        raise GitError(
            f"{target} moved while sprint {sprint!r} ran (expected {was}, now "
            f"{now[:10] if now else 'absent'}); not moved. The result stays on "
            f"{scratch_ref(sprint)} ({head[:10]}). git said: {done.stderr.strip()}"
        )
    git(repo, "update-ref", "--no-deref", "-d", scratch_ref(sprint), head)


def discard(repo: Path, sprint: str) -> None:
    """Delete the sprint's scratch ref, if there is one."""
    git(repo, "update-ref", "--no-deref", "-d", scratch_ref(sprint))


def checked_out_in(repo: Path, branch: str) -> list[Path]:
    """The worktrees, the main one included, that have ``branch`` checked out."""
    name = branch.removeprefix("refs/heads/")
    return [w.path for w in list_worktrees(repo) if w.branch == name]


# ---------------------------------------------------------------- reading applied commits


def message_body(repo: Path, sha: str) -> str | None:
    """A commit's message without its subject and agentfleet's trailers; None if empty."""
    lines = (
        git(repo, "log", "-1", "--format=%b", "--end-of-options", sha, "--").rstrip().splitlines()
    )
    while lines and lines[-1].partition(":")[0].strip() in TRAILER_KEYS:
        lines.pop()
    return "\n".join(lines).strip() or None


def diffstat_of(repo: Path, sha: str) -> str:
    """The diffstat of one commit against its first parent (or the empty tree)."""
    parent = rev_parse(repo, f"{sha}^")
    if parent is None:
        parent = git(repo, "hash-object", "-t", "tree", "--stdin", input="").strip()
    return diffstat(repo, parent, sha)


def _branch_ref(branch: str) -> str:
    return branch if branch.startswith("refs/") else f"refs/heads/{branch}"


# ---------------------------------------------------------------- push


def remote_value(repo: Path, remote: str, ref: str, *, env: Mapping[str, str]) -> str | None:
    """Where ``ref`` is on ``remote`` now (``git ls-remote``), None when it is not there."""
    done = run_git(repo, "ls-remote", "--end-of-options", remote, ref, env=env)
    if done.returncode != 0:
        raise git_error(repo, ("ls-remote", remote, ref), done.returncode, done.stderr)
    for line in done.stdout.splitlines():
        sha, _, name = line.partition("\t")
        if name == ref:
            return sha
    return None


def lease_value(repo: Path, remote: str, ref: str, *, env: Mapping[str, str]) -> str | None:
    """The value a push of ``ref`` to ``remote`` is leased on: the one last fetched.

    As ``git push --force-with-lease`` does: the remote-tracking ref
    (``refs/remotes/<remote>/<branch>``) when ``remote`` is a configured remote that has
    one; otherwise (a URL, a branch never fetched) what the remote holds now.
    """
    branch = ref.removeprefix("refs/heads/")
    if branch != ref and run_git(repo, "config", "--get", f"remote.{remote}.url").returncode == 0:
        tracking = rev_parse(repo, f"refs/remotes/{remote}/{branch}")
        if tracking is not None:
            return tracking
    return remote_value(repo, remote, ref, env=env)


def holds(repo: Path, commit: str, tips: Collection[str]) -> bool:
    """Whether ``commit`` is here and reachable from one of ``tips`` (nothing of it is lost)."""
    if run_git(repo, "cat-file", "-e", f"{commit}^{{commit}}").returncode != 0:
        return False  # never fetched: it holds commits nobody here has seen
    return any(is_ancestor(repo, commit, tip) for tip in tips)


def push_leased(
    repo: Path,
    remote: str,
    updates: Mapping[str, tuple[str, str | None]],
    *,
    env: Mapping[str, str],
) -> str | None:
    """Push ``{ref: (sha, expected)}`` to ``remote``, each leased on its expected value.

    ``expected`` is the value last seen on the remote (None: the ref must not exist
    there), so someone else's push is never overwritten. Atomic: all or nothing.
    Returns None when pushed, else what git said.
    """
    args = ["push", "--atomic", "--porcelain"]
    for ref, (_sha, expected) in updates.items():
        args.append(f"--force-with-lease={ref}:{expected or ''}")
    args += ["--end-of-options", remote, *(f"{sha}:{ref}" for ref, (sha, _) in updates.items())]
    done = run_git(repo, *args, env=env)
    if done.returncode == 0:
        return None
    said = done.stderr.strip() or done.stdout.strip() or f"git push exited {done.returncode}"
    return " ".join(said.split())[-600:]
