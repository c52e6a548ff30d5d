"""Passing ``final_verify`` runs, kept so that landing the same tree again needs no second run.

A rerun of a sprint whose attempts all come from the cache builds the same target
tree as the run before it (new commits, new dates, the same tree). When that tree
already passed ``final_verify`` with the same command in the same environment,
running it again can only repeat the answer, as a cached attempt's ``verify`` does.
Landing then reuses the earlier pass and says so, naming the run it comes from.

The record's key: the tree, the command and a digest of the environment the command
runs in (every variable, names and values, but for the few that name a shell session
rather than what a command sees: ``VOLATILE``). Values are never stored, only their
digest, and no output (it may show a secret). Only passes are kept (a failure, perhaps
flaky, is always run again), and a pass is reused only if it took no longer than the
current timeout allows. A different tree, command or environment, or ``--no-cache``,
verifies again (and records the new pass). Records live on this machine, under the
work dir (``verified/<repo>/``): another machine's tools may differ in ways no
variable shows.

Prefect-free: the caller passes the folder, the environment and the run's name.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
from collections.abc import Mapping
from pathlib import Path

from agentfleet.files import write_atomically
from agentfleet.results import CheckResult
from agentfleet.text import JsonSafeModel

# Variables that describe the shell agentfleet was started from, not the command's world;
# PREFECT__FLOW_RUN_ID and its kind are set per flow run by a worker.
VOLATILE = frozenset({"_", "PWD", "OLDPWD", "SHLVL"})
VOLATILE_PREFIXES = ("PREFECT__",)
# Bump when what a record means changes, so that older records are not reused.
RECORD_VERSION = 1


class VerifiedTree(JsonSafeModel):
    """One passing ``final_verify``: of which tree, with which command, where and when."""

    version: int = RECORD_VERSION
    tree: str
    command: str
    env_digest: str
    duration_s: float
    run: str  # the run that verified it, as the report names it
    at: str  # when it finished (UTC, ISO 8601)

    def label(self) -> str:
        """``<run> at <time>``: where the reused pass comes from, for the report."""
        return f"{self.run} at {self.at}"


def env_digest(env: Mapping[str, str]) -> str:
    """A digest of the environment a command runs in, session-only variables left out."""
    pairs = sorted(
        (k, v) for k, v in env.items()
        if k not in VOLATILE and not k.startswith(VOLATILE_PREFIXES)
    )
    return hashlib.sha256(json.dumps(pairs).encode("utf-8", "surrogateescape")).hexdigest()


def verified_dir(work_dir: Path, repo_key: str) -> Path:
    """The folder of one repository's verification records."""
    return Path(work_dir) / "verified" / repo_key


class VerifiedTrees:
    """The passing verifications of one repository: looked up and added by landing.

    ``reuse=False`` (``--no-cache``): nothing is found, every pass is still recorded.
    """

    def __init__(self, folder: Path, env: Mapping[str, str], run: str, *,
                 reuse: bool = True) -> None:
        self.folder = Path(folder)
        self.digest = env_digest(env)
        self.run = run
        self.reuse = reuse

    def _path(self, tree: str, command: str) -> Path:
        key = hashlib.sha256(f"{tree}\0{command}\0{self.digest}".encode()).hexdigest()
        return self.folder / f"{key}.json"

    def find(self, tree: str, command: str, timeout_s: float | None) -> VerifiedTree | None:
        """An earlier pass of ``command`` on ``tree`` in this environment, within the timeout."""
        if not self.reuse:
            return None
        try:
            record = VerifiedTree.model_validate_json(self._path(tree, command).read_text())
        except (OSError, ValueError):
            return None
        if (record.version != RECORD_VERSION or record.tree != tree
                or record.command != command or record.env_digest != self.digest):
            return None
        if timeout_s is not None and record.duration_s > timeout_s:
            return None
        return record

    def keep(self, tree: str, check: CheckResult) -> None:
        """Record a pass for later runs; best effort (without it they verify again)."""
        if not check.passed or check.reused_from is not None:
            return
        record = VerifiedTree(
            tree=tree, command=check.command, env_digest=self.digest,
            duration_s=check.duration_s, run=self.run,
            at=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        )  # fmt: skip
        path = self._path(tree, check.command)
        # A run reading it at the same time sees all or nothing.
        with contextlib.suppress(OSError):
            write_atomically(path, record.model_dump_json(indent=1) + "\n")

    @staticmethod
    def reused(record: VerifiedTree) -> CheckResult:
        """The check result a reused pass stands for."""
        return CheckResult(
            command=record.command, passed=True, exit_status=0, duration_s=0.0,
            reused_from=record.label(),
        )  # fmt: skip
