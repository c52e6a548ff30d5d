"""Git on a large repository: an attempt's working copy, applying results, predicting conflicts.

A repository of ``files`` files (``dNN/fNNNN.txt``) and ``results`` result branches,
each changing a different file from the base commit, is written with ``git
fast-import`` (quick, and no working tree is needed for what is measured).

- working copy: agentfleet's way of making an attempt's working copy (a run's pooled
  worktree, used by an attempt before, reset to the start: ``WorktreePool.acquire``)
  against a plain ``git worktree add -b``, median of ``reps`` each, interleaved, one
  untimed warm-up each;
- apply: ``agentfleet.apply.apply_one`` chained over every result (no working
  tree) against a ``git cherry-pick`` loop in a worktree made beforehand;
- predict: ``git merge-tree --write-tree`` of each result against the target
  (``agentfleet.apply.merge_trees``), against the absolute limit.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from agentfleet.apply import apply_one, merge_trees
from agentfleet.worktree_pool import worktree_pool
from bench.common import (
    GIT_ENV,
    Row,
    configure_repo,
    git,
    median,
    ratio_le,
    say,
    seconds_lt,
    stopwatch,
)

ROWS = ("worktree", "apply", "predict")


@dataclass(frozen=True)
class Size:
    """How big the repository and the measures are."""

    files: int
    results: int
    reps: int


FULL = Size(files=50_000, results=100, reps=3)
SMOKE = Size(files=2_000, results=5, reps=2)
PER_DIR = 1000


def file_path(i: int) -> str:
    """The i-th generated file."""
    return f"d{i // PER_DIR:02d}/f{i % PER_DIR:04d}.txt"


def generate(repo: Path, size: Size) -> str:
    """Write the base commit on ``main`` and ``result/NNN`` branches; the base sha."""
    repo.mkdir(parents=True)
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True,
                   env={**os.environ, **GIT_ENV})
    configure_repo(repo)
    ident = "Bench <bench@example.com> 1700000000 +0000"
    parts = ["commit refs/heads/main\nmark :1\n",
             f"author {ident}\ncommitter {ident}\ndata 5\nbase\n"]
    for i in range(size.files):
        body = f"file {i}\n" + "line of text\n" * 4
        parts.append(f"M 100644 inline {file_path(i)}\ndata {len(body)}\n{body}\n")
    stride = max(1, size.files // size.results)
    for k in range(size.results):
        path = file_path(k * stride)
        body = f"file {k * stride}\nchanged by result {k}\n" + "line of text\n" * 4
        msg = f"result {k}\n"
        parts.append(f"commit refs/heads/result/{k:03d}\nauthor {ident}\ncommitter {ident}\n"
                     f"data {len(msg)}\n{msg}from :1\n"
                     f"M 100644 inline {path}\ndata {len(body)}\n{body}\n")
    subprocess.run(["git", "-C", str(repo), "fast-import", "--quiet"], input="".join(parts),
                   text=True, check=True, env={**os.environ, **GIT_ENV})
    # The main worktree stays unchecked-out: nothing measured reads it, and checking out
    # 50,000 files costs most of a minute on a slow disk.
    return git(repo, "rev-parse", "main").strip()


def working_copy(repo: Path, base: str, root: Path, reps: int) -> tuple[list[float], list[float]]:
    """(plain, agentfleet) seconds per working copy, interleaved, each removed untimed.

    agentfleet's is what an attempt gets in a run: a worktree from the run's pool that
    the attempt before used (it changed, deleted and added files, built ignored ones),
    reset to the start commit (``WorktreePool.acquire``). The first pair warms caches and
    makes the pool's worktree; it is not counted.
    """
    (root / "plain").mkdir(parents=True)
    plain, ours = [], []
    with worktree_pool(repo, root / "agentfleet") as pool:
        for k in range(reps + 1):
            path = root / "plain" / f"w{k}"
            with stopwatch() as t:
                git(repo, "worktree", "add", "-q", "-b", f"plain/{k}", str(path), base)
            git(repo, "worktree", "remove", "--force", str(path))
            with stopwatch() as u:
                made = pool.acquire(f"agentfleet-attempts/bench/w/{k}", base, f"w{k}")
            _like_an_agent(made.path, k)
            pool.release(made)
            if k:
                plain.append(t[0])
                ours.append(u[0])
        if pool.stats.reused != reps:
            raise RuntimeError(f"the pool did not reuse its worktree: {pool.stats}")
    return plain, ours


def _like_an_agent(tree: Path, k: int) -> None:
    """What an attempt leaves: a few files changed, one deleted, new and ignored files."""
    for i in range(5):
        (tree / file_path(k * 7 + i)).write_text(f"changed by attempt {k}\n")
    (tree / file_path(k * 7 + 5)).unlink()
    (tree / f"new-{k}.txt").write_text("new\n")
    (tree / "build").mkdir(exist_ok=True)
    (tree / "build" / f"out-{k}.o").write_text("object\n")


def cherry_pick_loop(repo: Path, base: str, root: Path, results: int) -> float:
    """Seconds for ``git cherry-pick`` of every result, one by one, in a pre-made worktree."""
    wt = root / "pick"
    git(repo, "worktree", "add", "-q", "-b", "picked", str(wt), base)
    with stopwatch() as t:
        for k in range(results):
            git(wt, "cherry-pick", "--allow-empty", f"result/{k:03d}")
    if int(git(repo, "rev-list", "--count", f"{base}..picked")) != results:
        raise RuntimeError("the cherry-pick loop did not pick every result")
    git(repo, "worktree", "remove", "--force", str(wt))
    return t[0]


def apply_chain(repo: Path, base: str, results: int) -> float:
    """Seconds for ``apply_one`` of every result, each onto the previous one's commit."""
    onto = base
    with stopwatch() as t:
        for k in range(results):
            branch = f"result/{k:03d}"
            done = apply_one(repo, onto, branch, sprint="bench", task_id=f"r{k:03d}",
                             attempt_branch=branch, subject=f"result {k}", start=base)
            if not done.applied or done.commit is None:
                raise RuntimeError(f"apply_one did not apply {branch}: {done}")
            onto = done.commit
    if int(git(repo, "rev-list", "--count", f"{base}..{onto}")) != results:
        raise RuntimeError("the apply chain lost a result")
    return t[0]


def predict(repo: Path, target: str, results: int) -> float:
    """Seconds for ``git merge-tree --write-tree`` of every result against ``target``."""
    with stopwatch() as t:
        for k in range(results):
            _tree, conflicts = merge_trees(repo, target, f"result/{k:03d}")
            if conflicts:
                raise RuntimeError(f"result {k} unexpectedly conflicts: {conflicts}")
    return t[0]


def measure(ctx, work: Path) -> list[Row]:  # noqa: ANN001 - bench.sprints.Context
    """The working-copy, apply and predict rows."""
    size = SMOKE if ctx.smoke else FULL
    repo = work / "big"
    say(f"git: generating a repository of {size.files:,} files and {size.results} results")
    started = time.perf_counter()
    base = generate(repo, size)
    say(f"git: generated in {time.perf_counter() - started:.1f} s; working copies")
    plain, ours = working_copy(repo, base, work / "worktrees", size.reps)
    say("git: cherry-pick loop, then apply_one chain")
    picks = cherry_pick_loop(repo, base, work / "worktrees", size.results)
    chain = apply_chain(repo, base, size.results)
    say("git: predicting conflicts")
    predicted = predict(repo, base, size.results)
    shutil.rmtree(work / "worktrees", ignore_errors=True)
    n = size.results
    return [
        Row("worktree", f"an attempt's working copy, repository of {size.files:,} files "
            f"(median of {size.reps}; a run's pooled worktree reset to the start)",
            "git worktree add",
            median(plain), median(ours), median(ours) / median(plain),
            details={"plain_s": plain, "agentfleet_s": ours, "files": size.files}
            ).judge(ratio_le(0.10)),
        Row("apply", f"applying {n} non-conflicting results onto a target "
            f"({size.files:,} files; apply_one chained)", "cherry-pick loop", picks, chain,
            chain / picks, details={"per_result_ms": {"cherry_pick": picks / n * 1000,
                                                      "apply_one": chain / n * 1000}}
            ).judge(ratio_le(0.2)),
        Row("predict", f"predicting conflicts for those {n} (git merge-tree --write-tree each)",
            "— (limit 1 s)", None, predicted, predicted / 1.0, ratio_of="seconds / the 1 s limit",
            details={"per_result_ms": predicted / n * 1000}).judge(seconds_lt(1.0)),
    ]
