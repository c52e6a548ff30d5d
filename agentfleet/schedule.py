"""The sprint's graph scheduler: pure bookkeeping, no threads, no Prefect.

A task starts as soon as everything it waits for has finished and a slot is
free. Waiting comes in two kinds: ``depends_on`` (a failure blocks the waiter)
and overlapping paths (the waiter still runs, from whatever did succeed).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from enum import StrEnum


class TaskState(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    BLOCKED = "blocked"
    DONE_BEFORE = "done_before"  # applied on target by an earlier run

    @property
    def finished(self) -> bool:
        return self not in (TaskState.PENDING, TaskState.RUNNING)


class Scheduler:
    """Hands out ready tasks in apply order, never more than ``concurrency`` at once."""

    def __init__(
        self,
        order: list[str],
        waits_on: Mapping[str, Iterable[str]],
        depends_on: Mapping[str, Iterable[str]],
        concurrency: int,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.order = list(order)
        self.waits_on = {t: set(waits_on.get(t, ())) for t in order}
        self.depends_on = {t: set(depends_on.get(t, ())) for t in order}
        self._dependents: dict[str, list[str]] = {t: [] for t in order}
        self._position = {t: i for i, t in enumerate(order)}
        for t in order:  # in apply order, so blocking reports them in that order
            for d in self.depends_on[t]:
                if d in self._dependents:
                    self._dependents[d].append(t)
        self.concurrency = concurrency
        self.state: dict[str, TaskState] = {t: TaskState.PENDING for t in order}
        # Every failed task that blocks a task, in apply order: a task depending on two
        # failures names both, whichever failed first.
        self.blocked_by: dict[str, list[str]] = {}
        self._stopped = False

    @property
    def running(self) -> list[str]:
        return [t for t in self.order if self.state[t] is TaskState.RUNNING]

    def mark_done_before(self, task: str) -> None:
        """A task an earlier run already applied: it counts as succeeded, runs no agent."""
        self.state[task] = TaskState.DONE_BEFORE

    def take_ready(self) -> list[str]:
        """Mark as running and return the tasks that may start now."""
        if self._stopped:
            return []
        ready: list[str] = []
        free = self.concurrency - len(self.running)
        for task in self.order:
            if free <= 0:
                break
            if self.state[task] is TaskState.PENDING and all(
                self.state[w].finished for w in self.waits_on[task]
            ):
                self.state[task] = TaskState.RUNNING
                ready.append(task)
                free -= 1
        return ready

    def finish(self, task: str, succeeded: bool) -> list[str]:
        """Record a finished task; return the tasks its failure blocks (transitively)."""
        self.state[task] = TaskState.SUCCEEDED if succeeded else TaskState.FAILED
        return [] if succeeded else self._block_dependents_of(task, root=task)

    def _block_dependents_of(self, failed: str, root: str) -> list[str]:
        """Block what depends on ``failed`` (transitively); tasks already blocked learn of
        ``root`` too. Returns the newly blocked tasks."""
        # Depth first without recursion: a chain of thousands of tasks is deeper than the stack.
        newly: list[str] = []
        work = [iter(self._dependents[failed])]
        while work:
            for task in work[-1]:
                state = self.state[task]
                if state is TaskState.PENDING:
                    self.state[task] = TaskState.BLOCKED
                    newly.append(task)
                elif state is not TaskState.BLOCKED:
                    continue
                roots = self.blocked_by.setdefault(task, [])
                if root in roots:
                    continue
                roots.append(root)
                roots.sort(key=self._position.__getitem__)
                work.append(iter(self._dependents[task]))
                break
            else:
                work.pop()
        return newly

    def stop(self) -> None:
        """Hand out nothing more (an interrupt): pending tasks stay pending."""
        self._stopped = True

    @property
    def done(self) -> bool:
        """Nothing runs and nothing more can start."""
        if self.running:
            return False
        return self._stopped or all(s.finished for s in self.state.values())
