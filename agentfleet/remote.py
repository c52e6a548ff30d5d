"""Remote repositories: a bare mirror per remote under the work dir, fetched before each run.

A plan's ``repo`` (or a repository block's ``url``) may name a remote: a git URL
(``https://``, ``ssh://``, ``git@host:path``, ``file://``) or the folder of a bare
repository. agentfleet never works in the remote itself. It keeps one bare clone per
remote, ``<work dir>/remotes/<name>-<hash>``, fetches into it before each run, and
from there on everything (worktrees, attempts, landing) works on the mirror exactly as
on a local repository; landing then pushes the target and the applied attempt branches
back to the remote (``origin`` in the mirror), leased on what the remote held.

Refs: the remote's branches and tags become the mirror's own, pruned, so the mirror's
target and base are the remote's. Attempt branches (``agentfleet-attempts/``) are left
out of the prune: they are made in the mirror and pushed from it.

Credentials: git's own (credential helpers, ssh keys, ``~/.netrc``), or a repository
block's token laid over the environment as an HTTP header (``git_credentials``). The
URL kept in the mirror's config and shown in logs is the one given, which may not hold
a password: such a URL is refused. git never prompts (``GIT_TERMINAL_PROMPT=0``): a
missing credential fails the fetch instead of waiting for a person.

Prefect-free; the environment is passed in by the edge.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import shutil
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field

from agentfleet.errors import GitError
from agentfleet.git_credentials import is_url, redact_url
from agentfleet.gitcmd import run_git
from agentfleet.masking import Masker
from agentfleet.naming import ATTEMPTS_NAMESPACE

REMOTE_NAME = "origin"  # the remote's name in its mirror
MIRRORS = "remotes"  # the work dir's folder of mirrors

# Mirrored from the remote, pruned: every branch but the attempts', and every tag.
FETCH_REFSPECS = (
    "+refs/heads/*:refs/heads/*",
    f"^refs/heads/{ATTEMPTS_NAMESPACE}*",
    "+refs/tags/*:refs/tags/*",
)

Log = Callable[[str], None]


class RemoteRepository(BaseModel):
    """A remote repository as a run uses it: where it is and where its mirror is.

    Holds no secret: the token (if any) stays in its block, named by ``block``.
    """

    model_config = ConfigDict(frozen=True)

    location: str = Field(description="The URL or bare repository's folder, as git is given it.")
    mirror: Path = Field(description="The bare mirror under the work dir that runs work on.")
    block: str | None = Field(
        None, description="The repository block whose token git needs, if any."
    )

    @property
    def shown(self) -> str:
        """The location, safe to print."""
        return redact_url(self.location)


@dataclass(frozen=True)
class GitAccess:
    """The environment git reaches a remote with, and what to mask in what git says.

    ``env`` is git's whole environment (the machine's, plus a block's token header when
    there is one); it is for git's own fetch, ls-remote and push, never an agent's.
    """

    env: Mapping[str, str]
    secrets: Sequence[str] = ()
    mask: Masker = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "mask", Masker(self.secrets))

    @classmethod
    def of(
        cls,
        base: Mapping[str, str],
        credential_env: Mapping[str, str] | None = None,
        secrets: Sequence[str] = (),
    ) -> GitAccess:
        """``base`` with ``credential_env`` laid over it, prompts off."""
        return cls(
            env={**base, **(credential_env or {}), "GIT_TERMINAL_PROMPT": "0"},
            secrets=tuple(secrets),
        )


def location_problem(location: str) -> str | None:
    """Why ``location`` (a URL) cannot be a plan's ``repo``, or None.

    A password or token written into the URL would be stored in the mirror's config
    and shown in logs; git's credential helper or a repository block's token carry it.
    """
    if not location.strip() or location != location.strip():
        return "must be a URL or folder without surrounding spaces"
    if "://" in location:
        parts = urlsplit(location)
        if parts.scheme not in ("https", "http", "ssh", "git", "file"):
            return f"'{parts.scheme}://' is not a git transport (https, ssh, git, file)"
        if parts.scheme != "file" and not parts.hostname:
            return "has no host"
        if parts.password is not None:
            return (
                "holds a password or token: keep it out of the URL (git's credential helper, "
                "or an agentfleet-repository block's `token`, supplies it)"
            )
    return None


def is_bare_repository(path: Path) -> bool:
    """Whether ``path`` is a bare git repository's folder (not a working tree, not inside one)."""
    path = Path(path)
    if not path.is_dir() or (path / ".git").exists() or not (path / "HEAD").is_file():
        return False
    done = run_git(path, f"--git-dir={path}", "rev-parse", "--is-bare-repository")
    return done.returncode == 0 and done.stdout.strip() == "true"


def remote_location(repo: str | None, plan_folder: Path) -> str | None:
    """The remote a plan's ``repo`` names (a URL, or a bare repository's absolute folder),
    or None when it names a local working tree (or nothing that exists)."""
    if repo is None:
        return None
    if is_url(repo):
        return repo
    path = (Path(plan_folder) / repo).resolve()
    return str(path) if is_bare_repository(path) else None


def mirror_path(work_dir: Path, location: str) -> Path:
    """The mirror of ``location`` under ``work_dir``: the remote's name and a hash of it."""
    shown = redact_url(location).rstrip("/")
    name = re.split(r"[/:]", shown)[-1].removesuffix(".git")
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip(".-") or "repo"
    digest = hashlib.sha256(shown.encode()).hexdigest()[:10]
    return Path(work_dir).expanduser().resolve() / MIRRORS / f"{name}-{digest}.git"


@contextlib.contextmanager
def _mirror_lock(mirror: Path) -> Iterator[None]:
    """One process at a time clones or fetches a mirror (another sprint may share it)."""
    mirror.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(mirror.with_name(mirror.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing drops the lock


# What git says when the remote wants credentials it does not have.
_AUTH_FAILURES = ("could not read Username", "could not read Password",
                  "Authentication failed", "Permission denied (publickey")
AUTH_HINT = (
    "git has no credentials for it that work: configure git's own (a credential helper, "
    "an ssh key) on this machine, or give the agentfleet-repository block a `token`"
)


def _git(where: Path, access: GitAccess, *args: str, what: str) -> str:
    done = run_git(where, *args, env=access.env)
    if done.returncode != 0:
        said = access.mask(done.stderr.strip() or done.stdout.strip() or "(no message)")
        said = " ".join(said.split())
        if any(f in said for f in _AUTH_FAILURES):
            # Running again cannot help until someone supplies a credential.
            raise GitError(f"{what} failed: {AUTH_HINT} (git said: {said})", retryable=False)
        raise GitError(f"{what} failed (exit {done.returncode}): {said}", retryable=True)
    return done.stdout


def sync_mirror(
    location: str, mirror: Path, access: GitAccess, *, log: Log = lambda _: None
) -> Path:
    """Bring ``mirror`` up to date with ``location``: clone it the first time, else fetch.

    A first clone is made beside the mirror and renamed into place, so that a failed
    one leaves nothing behind. Raises ``GitError`` (git's words, secrets masked).
    """
    problem = location_problem(location)
    if problem:
        raise GitError(f"repository {redact_url(location)!r}: {problem}")
    shown = redact_url(location)
    with _mirror_lock(mirror):
        if not (mirror / "HEAD").is_file():
            _clone(location, mirror, access, log)
        else:
            # The location may be given differently (a block's URL changed); same mirror key.
            _git(mirror, access, "config", f"remote.{REMOTE_NAME}.url", location,
                 what=f"setting the remote of {mirror}")
        log(f"fetching {shown} into {mirror}")
        _git(mirror, access, "fetch", "--quiet", "--prune", "--no-write-fetch-head",
             "--end-of-options", REMOTE_NAME, *FETCH_REFSPECS,
             what=f"fetching {shown}")
        _follow_default_branch(mirror, access, shown)
    return mirror


def _follow_default_branch(mirror: Path, access: GitAccess, shown: str) -> None:
    """Point the mirror's HEAD where the remote's points: a plan's default ``base``."""
    out = _git(mirror, access, "ls-remote", "--symref", "--end-of-options", REMOTE_NAME, "HEAD",
               what=f"reading the default branch of {shown}")
    for line in out.splitlines():
        head, _, name = line.partition("\t")
        if name == "HEAD" and head.startswith("ref: refs/heads/"):
            _git(mirror, access, "symbolic-ref", "HEAD", head.removeprefix("ref: "),
                 what="setting the mirror's HEAD")
            return


def _clone(location: str, mirror: Path, access: GitAccess, log: Log) -> None:
    shown = redact_url(location)
    log(f"cloning {shown} into {mirror}")
    scratch = mirror.with_name(f"{mirror.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        # --no-local: objects are copied, never hardlinked into the remote's own folder.
        _git(mirror.parent, access, "clone", "--quiet", "--bare", "--no-local",
             "--end-of-options", location, str(scratch), what=f"cloning {shown}")
        # A bare clone has no fetch refspec; the runs' fetch names its own (FETCH_REFSPECS).
        _git(scratch, access, "config", "gc.auto", "0", what="configuring the mirror")
        scratch.rename(mirror)
    finally:
        if scratch.exists():
            shutil.rmtree(scratch, ignore_errors=True)


def start_ref(sprint: str, task_id: str, attempt: int) -> str:
    """The ref an attempt's start commit is pushed to, for a worker elsewhere to fetch."""
    return f"refs/agentfleet/starts/{sprint}/{task_id}/{attempt}"


def _branch_ref(name: str) -> str:
    return name if name.startswith("refs/") else f"refs/heads/{name}"


def fetch_refs(remote: RemoteRepository, refs: Sequence[str], access: GitAccess) -> None:
    """Fetch ``refs`` (branches by name, or full refs) from the remote into the mirror, forced.

    For what others pushed: attempt branches made by workers, a start commit made by
    the sprint.
    """
    if not refs:
        return
    specs = [f"+{_branch_ref(r)}:{_branch_ref(r)}" for r in refs]
    with _mirror_lock(remote.mirror):
        _git(remote.mirror, access, "fetch", "--quiet", "--no-write-fetch-head",
             "--end-of-options", REMOTE_NAME, *specs, what=f"fetching from {remote.shown}")


def push_refs(remote: RemoteRepository, refs: Mapping[str, str], access: GitAccess) -> None:
    """Push ``{ref or branch: commit}`` from the mirror to the remote, forced and atomic.

    Only for refs agentfleet owns (attempt branches, start refs): the target is pushed
    by landing, leased.
    """
    if not refs:
        return
    specs = [f"+{sha}:{_branch_ref(ref)}" for ref, sha in refs.items()]
    _git(remote.mirror, access, "push", "--quiet", "--atomic", "--end-of-options",
         REMOTE_NAME, *specs, what=f"pushing to {remote.shown}")


def delete_remote_refs(remote: RemoteRepository, refs: Sequence[str], access: GitAccess) -> None:
    """Delete ``refs`` on the remote (start refs once their attempt is over)."""
    if refs:
        _git(remote.mirror, access, "push", "--quiet", "--atomic", "--end-of-options",
             REMOTE_NAME, *(f":{_branch_ref(r)}" for r in refs),
             what=f"deleting refs on {remote.shown}")


def push_branches(remote: RemoteRepository, branches: Sequence[str], access: GitAccess) -> None:
    """Push ``branches`` of the mirror as they are there to the remote, forced."""
    push_refs(remote, {b: _branch_ref(b) for b in branches}, access)


AccessFor = Callable[[str, "str | None"], GitAccess]
"""How git reaches a location: (location, the repository block holding its token) -> access."""


def mirrors(
    work_dir: Path, access: GitAccess | AccessFor, *, log: Log = lambda _: None
) -> Callable[[str, str | None], Path]:
    """What plan checking takes to reach a remote: fetch it into its mirror under ``work_dir``.

    ``access``: one for every remote, or a function of the location and block.
    """

    def sync(location: str, block: str | None = None) -> Path:
        how = access if isinstance(access, GitAccess) else access(location, block)
        return sync_mirror(location, mirror_path(work_dir, location), how, log=log)

    return sync
