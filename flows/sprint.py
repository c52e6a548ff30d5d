"""The ``sprint`` flow: plan -> decompose -> fan-out -> sequential apply -> verified target.

Attempts are scheduled as a graph, not in waves: a task starts as soon as what it
waits for has finished and one of ``limits.concurrency`` slots is free. Each
attempt is a task run named ``<task>#<k>``; landing is one ``sequential-apply``
task run. The flow run ends Failed whenever ``agentfleet run`` would exit 1.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

from prefect import flow, get_run_logger
from prefect.futures import PrefectFuture, as_completed
from prefect.states import Completed, Failed
from prefect.task_runners import ThreadPoolTaskRunner

from agentfleet import apply as gitapply
from agentfleet.attempt import AttemptSpec
from agentfleet.best_of_n import EARLY_STOP, chosen, select, stopped_result
from agentfleet.block_refs import RepositoryBlockRef
from agentfleet.checking import CheckedPlan, load_and_check, render_plan
from agentfleet.clean import reap_orphans
from agentfleet.codex.cli import find_codex
from agentfleet.codex.outcome import Usage
from agentfleet.control import RunControl
from agentfleet.errors import AgentfleetError, SprintInterrupted
from agentfleet.guardrails import in_flight
from agentfleet.landing import AttemptRequest, Landing, LandingRequest, policy_of, report_for
from agentfleet.leases import lease_dir
from agentfleet.locks import SprintLock, repo_key
from agentfleet.metering.sprint import SprintMeter
from agentfleet.naming import attempt_branch
from agentfleet.plan import Plan
from agentfleet.preflight import check_run, redo_closure
from agentfleet.requests import check_sprint_request
from agentfleet.results import AttemptResult, SprintReport, TaskReport
from agentfleet.review import Decision
from agentfleet.schedule import Scheduler
from agentfleet.selection import Selection
from agentfleet.settings import PROJECT_ROOT, AgentfleetSettings
from agentfleet.start_ahead import StartAhead
from agentfleet.submission import Prior, RunPlace, attempt_spec, decide_start, start_line
from agentfleet.verified import verified_dir
from agentfleet.worktree_pool import worktree_pool
from flows.embedded import start_embedded_server
from flows.heartbeat import beaten_here, heartbeat
from flows.params import saved_blocks, sprint_run_name
from flows.shared_tls import share
from tasks.abandoned import mend_abandoned, sprint_lock
from tasks.api_url import server_unreachable
from tasks.apply import sequential_apply
from tasks.attempt import attempt
from tasks.blocked import blocked
from tasks.cache import agent_version, prefetch_agent_version, settle
from tasks.decompose import decompose_stage, planned
from tasks.limits import give_back_slot, guarded
from tasks.observe import SprintProgress, name_task_run_lines, sprint_finished
from tasks.pool import check_attempt_deployment, key_codex, pooled_attempt
from tasks.remote import machine_mirror
from tasks.review import ReviewDesk, terminal_prompt
from tasks.runtime import open_run
from tasks.select import select_candidate

# The scheduler caps attempts under way at limits.concurrency + limits.checks; the
# thread pool only needs to be at least that large (Prefect's default is unbounded).
MAX_POOL = 64

# A plan already loaded and checked by the caller in this process (``run_and_report``):
# the flow takes it instead of reading the file again. A deployment run has none.
_PRECHECKED: contextvars.ContextVar[tuple[Path, CheckedPlan] | None] = contextvars.ContextVar(
    "agentfleet_prechecked", default=None
)


@contextlib.contextmanager
def prechecked(plan: Path, checked: CheckedPlan) -> Iterator[None]:
    """Hand a checked plan to the ``sprint`` flow called in this context."""
    token = _PRECHECKED.set((Path(plan).resolve(), checked))
    try:
        yield
    finally:
        _PRECHECKED.reset(token)


def checked_plan(plan: Any, plan_path: str | None, repository: Any = None) -> CheckedPlan:
    """The checked plan of this run: handed over by the caller, else checked now."""
    handed = _PRECHECKED.get()
    if (handed is not None and plan is None and repository is None and plan_path is not None
            and handed[0] == Path(plan_path).resolve()):
        return handed[1]
    return check_sprint_request(plan, plan_path, repository, blocks=saved_blocks(),
                                cwd=Path.cwd(), mirror=machine_mirror(get_run_logger().info))


def run_name() -> str:
    """``sprint <plan name>``: the handed plan's name, without reading its file again."""
    from prefect.runtime import flow_run

    handed = _PRECHECKED.get()
    path = (flow_run.parameters or {}).get("plan_path")
    if handed is not None and path is not None and handed[0] == Path(path).resolve():
        return f"sprint {handed[1].plan.name}"
    return sprint_run_name()


def is_interrupt(exc: BaseException) -> bool:
    """Ctrl-C or a cancelled flow run (SIGTERM), not an error of the work."""
    from prefect.exceptions import TerminationSignal

    return not isinstance(exc, Exception) or isinstance(exc, TerminationSignal)


def version_codex(plan: Plan, codex: Path | None, settings: AgentfleetSettings) -> Path | None:
    """The Codex whose version keys the sprint's attempts: a pool sprint's agents run on
    workers, so its key comes from ``tasks.pool.key_codex``."""
    return key_codex(codex, settings) if plan.placement == "pool" else codex


# Parameters are checked by the plan's own checks (every problem at once, the CLI's
# words), not by Prefect's validation: the annotations give the UI its run form.
# The ignore: Prefect 3.9's own annotation of task_runner rejects its ThreadPoolTaskRunner.
@flow(name="sprint", flow_run_name=run_name, validate_parameters=False,
      task_runner=ThreadPoolTaskRunner(max_workers=MAX_POOL))  # type: ignore[arg-type]
def sprint(
    plan: Plan | None = None,
    plan_path: str | None = None,
    repository: str | RepositoryBlockRef | None = None,
    report: str | None = None,
    no_cache: bool = False,
    redo: list[str] | None = None,
) -> SprintReport:
    """Run a sprint and land the results on its target branch.

    Args:
        plan: The plan itself, with a plan file's keys (name, repo, agent, tasks...).
            Give this or plan_path.
        plan_path: A plan file (YAML) on the worker; a relative path is relative to
            repository when that is given.
        repository: A repository folder on the worker, or a saved agentfleet-repository
            block as {block: NAME}: where plan_path is looked up, and the repository of
            a plan given without repo.
        report: Also write the sprint's report (JSON) to this file on the worker.
        no_cache: Run every attempt afresh, ignoring cached results.
        redo: Tasks to run again with the tasks depending on them; their commits on the
            target are replaced by the new results.
    """
    share()  # a deployment's run: its clients from here on share one TLS context
    with heartbeat():  # agentfleet run's flow run: beaten here (flows/heartbeat.py)
        checked = checked_plan(plan, plan_path, repository)
        sprint_report = run_checked(checked, report=report, no_cache=no_cache, redo=redo or [])
    completes, summary = sprint_report.flow_end()
    if not completes:
        # No data: Prefect turns a Failed state's data into the exception a deployment run
        # raises, and a report is none ("Unexpected result for failed state"). The message
        # becomes that exception; `agentfleet run` reads the report from its file.
        return Failed(message=summary)  # type: ignore[return-value]
    return Completed(message=summary, data=sprint_report)  # type: ignore[return-value]


def run_checked(
    checked: CheckedPlan,
    *,
    report: str | None = None,
    no_cache: bool = False,
    redo: list[str] | None = None,
    land: bool = True,
    ending: Callable[[SprintReport], tuple[bool, str]] = SprintReport.flow_end,
) -> SprintReport:
    """The body of a flow running a checked plan (``sprint``, ``best-of-n``): lock, fan out,
    select, and with ``land`` apply onto the target; the report also goes to ``report``.

    ``ending``: whether the flow run completes, and its message, from the report: kept in
    the lock's record for the next run, should the end not reach Prefect's server.
    """
    logger = get_run_logger()
    name_task_run_lines()
    settings = AgentfleetSettings()
    check_run(repo_root=checked.repo.root, task_ids=checked.plan.task_ids,
              work_dir=settings.work_dir, report=report, redo=redo or [])
    for warning in checked.warnings:
        logger.warning(warning)
    codex = codex_for(checked, settings)
    if checked.plan.placement == "pool":
        if idle := check_attempt_deployment(settings.attempt_pool):
            logger.warning(idle)
    lock = sprint_lock(settings.lock_dir, checked.repo.root, checked.plan.name)
    with open_run(checked.plan.name) as control, lock:
        mend_abandoned(lock, logger.warning)  # an earlier run's flow run left Running
        # Agents of a killed run of this sprint may still run (and spend tokens): stop
        # them and free their worktrees before starting new ones.
        reap_orphans(settings.work_dir, checked.repo.root, checked.plan.name,
                     grace_s=settings.stop_grace_s, log=logger.warning,
                     release_slot=give_back_slot)
        planner = Usage()
        if checked.plan.goal is not None:  # the planner proposes the tasks (review_plan)
            checked, planner = planned(checked, codex, settings)
        decompose_stage(checked.plan.name, render_plan(checked, settings.default_models))
        run = SprintRun(checked, settings, codex, no_cache=no_cache, redo=redo or [],
                        control=control, land=land)
        run.planner_tokens = planner.total
        try:
            # Finished attempts' worktrees are reused by the next ones (worktree_pool.py).
            with worktree_pool(checked.repo.root, run.worktree_root), \
                    guarded(checked.plan, settings, control, logger.info, logger.warning):
                if isinstance(control.meter, SprintMeter) and planner.total:
                    control.meter.count_spent("planner", "planner", planner)  # limits.tokens
                # Codex agents waiting for a slot start ahead, their requests held.
                control.ahead = StartAhead(checked.plan.limits.start_ahead_cap)
                sprint_report = run.run()
            lock.ending(*ending(sprint_report))
        except BaseException:
            if report and run.interrupted is not None:
                Path(report).write_text(run.interrupted.model_dump_json(indent=2) + "\n")
            raise
    if report:
        Path(report).write_text(sprint_report.model_dump_json(indent=2) + "\n")
    logger.info("\n" + sprint_report.table())
    logger.info(sprint_report.summary_line())
    return sprint_report


class SprintRun:
    """One run of one sprint: schedules attempts, then lands them."""

    def __init__(
        self,
        checked: CheckedPlan,
        settings: AgentfleetSettings,
        codex: Path | None,
        *,
        no_cache: bool = False,
        redo: list[str] | None = None,
        control: RunControl | None = None,
        land: bool = True,
    ) -> None:
        self.land = land  # False: choose only, apply nothing (best-of-n without a target)
        self.codex = codex
        self.control = control or RunControl(checked.plan.name)
        # Part of every Codex attempt's cache key; asked once per run.
        self.agent_version = agent_version(version_codex(checked.plan, codex, settings),
                                           settings.work_dir)
        self.no_cache = no_cache  # True: run every attempt afresh (and overwrite its cache)
        self.plan = checked.plan
        self.repo = checked.repo
        self.remote = checked.remote  # a remote repo: self.repo is its mirror
        self.dec = checked.decomposition
        # Run again, whatever is on the target or in the cache: named tasks and dependents.
        self.redo = redo_closure(self.dec, redo or [])
        self.settings = settings
        self.root = self.repo.root
        self.worktree_root = settings.worktree_root(repo_key(self.root), self.plan.name)
        self.target = self.plan.target_branch
        self.results: dict[str, AttemptResult] = {}  # per task: the result that stands for it
        self.attempts: dict[str, dict[int, AttemptResult]] = {}  # per task: every attempt's
        self.expected: dict[str, int] = {}  # per task: how many attempts it has
        self.selections: dict[str, Selection] = {}
        self.pending: deque[AttemptSpec] = deque()  # attempts waiting for a slot
        self.running: dict[PrefectFuture, AttemptSpec] = {}
        self.specs: dict[tuple[str, int], AttemptSpec] = {}  # (task, k) -> its spec
        self.early_stopped: set[str] = set()
        self.planner_tokens = 0  # a goal plan's planner: counted in the report
        self.desk = ReviewDesk(checked.plan, settings.work_dir, get_run_logger())
        self.interrupted: SprintReport | None = None  # what finished, when stopped midway
        self.logger = get_run_logger()
        self.started = time.monotonic()
        # Attempts under way: the agents' slots plus the checks' (the attempts themselves
        # wait for a slot of the kind they need next, agentfleet/guardrails.py).
        self.in_flight = in_flight(self.plan.limits.concurrency, self.plan.limits.checks_cap)
        if self.plan.placement == "pool":
            # Attempts on a pool's workers hold none of this run's slots: at most
            # limits.concurrency of them under way, as before.
            self.in_flight = self.plan.limits.concurrency
        self.place = RunPlace(
            repo=self.root,
            worktree_root=self.worktree_root,
            codex_path=codex,
            grace_s=settings.stop_grace_s,
            backoff_initial_s=settings.retry_backoff_s,
            lease_dir=lease_dir(settings.work_dir, repo_key(self.root), self.plan.name),
            agent_block=checked.blocks.agent_block,
            models=settings.default_models,
        )

    def run(self) -> SprintReport:
        """Fan out, then land; on an interrupt stop every agent and report what finished."""
        done_before = self._already_applied()
        depends = {t.id: list(t.depends_on) for t in self.plan.tasks}
        sched = Scheduler(self.dec.order, self.dec.waits_on, depends, self.in_flight)
        for task_id in done_before:
            sched.mark_done_before(task_id)
            self.logger.info(f"{task_id}: already applied on {self.target}, not run again")
        progress = SprintProgress(self.plan.name, sched.state)
        if isinstance(self.control.meter, SprintMeter):  # tokens against budget, live
            progress.tokens_line = self.control.meter.total_line
            self.control.meter.on_total = progress.refresh
        try:
            while not sched.done:
                ready = sched.take_ready()
                for task_id in ready:
                    try:
                        self._start(task_id, done_before)
                    except Exception as exc:  # noqa: BLE001 - that task's failure, not a stop
                        if is_interrupt(exc):
                            raise
                        self._finish(sched, progress, task_id, self._crashed(task_id, exc))
                self._submit_pending()
                if not self.running:
                    if ready and not sched.done:
                        continue  # a start that failed may free tasks to run now
                    if self.desk.waiting:  # nothing else can run: pause for the reviews
                        self._reviewed(sched, progress, self.desk.wait())
                        continue
                    break
                try:
                    future = next(as_completed(list(self.running),
                                               timeout=self.desk.seconds_left()))
                except TimeoutError:  # a review's time ran out while attempts run
                    self._reviewed(sched, progress, self.desk.expired())
                    continue
                spec = self.running.pop(future)
                self._record(spec, self._result_of(future, spec))
                task_id = spec.task_id
                if len(self.attempts[task_id]) == self.expected[task_id]:
                    result = self._select(task_id)
                    if not self.desk.hold(task_id, self.selections.get(task_id),
                                          self.attempts[task_id]):
                        self._finish(sched, progress, task_id, result)
            progress.close()  # the artifact shows the final count before landing starts
            # Every blocked task gets a task run of its own, naming all that blocked it
            # (known only now: a second failed dependency may come later than the first).
            for task_id in self.dec.order:
                if task_id in sched.blocked_by and task_id not in self.results:
                    blocked(task_id, sched.blocked_by[task_id], return_state=True)
        except BaseException:
            # Ctrl-C, or a cancelled flow run (SIGTERM): stop every agent, let the attempt
            # tasks remove their worktrees, keep what finished. Errors of one task never
            # get here (they are that task's failure).
            self.logger.warning("interrupted: stopping every agent of this sprint")
            progress.close(timeout_s=1)
            sched.stop()
            self.control.stop(self.settings.stop_grace_s)
            for future, spec in list(self.running.items()):
                try:
                    future.wait(timeout=self.settings.stop_grace_s + 30)
                    self._record(spec, self._result_of(future, spec))
                except BaseException:  # noqa: BLE001 - already on the way out
                    pass
            for task_id, done in self.attempts.items():
                if task_id not in self.results and len(done) == self.expected[task_id]:
                    self.results[task_id] = self._chosen_quietly(task_id)
            self.interrupted = self._report(
                [report_for(t, self.results.get(t), sched.blocked_by) for t in self.dec.order],
                interrupted=True,
            )
            sprint_finished(self.interrupted, self.results)
            raise
        if not self.land:
            sprint_report = self._report(
                [report_for(t, self.results.get(t), sched.blocked_by) for t in self.dec.order]
            )
            sprint_finished(sprint_report, self.results)
            return sprint_report
        try:
            landing = sequential_apply(
                LandingRequest(
                    repo=self.root,
                    sprint=self.plan.name,
                    base_sha=self.repo.base_sha,
                    target=self.target,
                    order=self.dec.order,
                    results=self.results,
                    blocked_by=sched.blocked_by,
                    final_verify=self.plan.final_verify,
                    verify_timeout_s=self.plan.timeout_s,
                    worktree_root=self.worktree_root,
                    redo=self.redo,
                    prompts={t.id: t.prompt for t in self.plan.tasks},
                    lease_dir=lease_dir(self.settings.work_dir, repo_key(self.root),
                                        self.plan.name),
                    policy=policy_of(self.plan, remote=self.remote is not None),
                    depends_on=self.dec.depends_on,
                ),
                run_attempt=self._run_attempt,
                remote=self.remote,
                # A tree that passed final_verify before, in this environment, is not
                # verified again; --no-cache verifies (agentfleet/verified.py).
                verified_dir=verified_dir(self.settings.work_dir, repo_key(self.root)),
                reuse_verified=not self.no_cache,
            )
        except Exception as exc:  # noqa: BLE001 - every ending gets its summary and report
            self.logger.error(f"landing failed: {exc}")
            landing = Landing(
                tasks=[report_for(t, self.results.get(t), sched.blocked_by)
                       for t in self.dec.order],
                target_sha=gitapply.rev_parse(self.root, f"refs/heads/{self.target}"),
                note=f"landing failed: {exc}; {self.target} not moved",
            )
        sprint_report = self._report(
            landing.tasks,
            final_verify=landing.final_verify,
            target_moved=landing.target_moved,
            target_up_to_date=landing.target_up_to_date,
            target_sha=landing.target_sha,
            target_note=landing.note,
            push_failed=landing.pushed is False,
        )
        sprint_finished(sprint_report, self.results)
        return sprint_report

    def _report(self, tasks: list[TaskReport], **fields: object) -> SprintReport:
        return SprintReport(
            sprint=self.plan.name,
            repo=self.remote.shown if self.remote else str(self.root),
            base=self.repo.base,
            target=self.target,
            tasks=[with_candidates(t, self.selections.get(t.task)) for t in tasks],
            planner_tokens=self.planner_tokens,
            duration_s=time.monotonic() - self.started,
            **fields,
        )

    def _already_applied(self) -> dict[str, gitapply.AppliedCommit]:
        if not self.repo.target_exists:
            return {}
        found = gitapply.applied_tasks(self.root, f"refs/heads/{self.target}", self.plan.name)
        for task_id in self.redo:
            if found.pop(task_id, None) is not None:
                self.logger.info(f"{task_id}: on {self.target}, run again (--redo)")
        return found

    def _start(self, task_id: str, done_before: dict[str, gitapply.AppliedCommit]) -> None:
        """Decide a task's start and queue its attempts (they share it)."""
        priors = self._priors(task_id, done_before)
        decision = decide_start(self.plan, task_id, self.dec.waits_on.get(task_id, []), priors)
        start = self.repo.base_sha
        if decision.heads:
            start = gitapply.combine(
                self.root, self.repo.base_sha, decision.heads, f"agentfleet: start of {task_id}"
            )
        n = self.plan.task_attempts(task_id)
        self.expected[task_id] = n
        self.attempts[task_id] = {}
        line = start_line(start, decision.used, decision.left_out)
        self.logger.info(f"{task_id}: {line}" + (f"; {n} attempts" if n > 1 else ""))
        for k in range(1, n + 1):
            spec = attempt_spec(self.plan, task_id, k, start_sha=start,
                                predecessors=decision.predecessors, place=self.place)
            self.specs[(task_id, k)] = spec
            self.pending.append(spec)

    def _submit_pending(self) -> None:
        """Start queued attempts while there is room (agents and checks wait for their slots)."""
        while self.pending and len(self.running) < self.in_flight:
            spec = self.pending.popleft()
            fresh = self.no_cache or spec.task_id in self.redo
            self.running[self._submit(spec, fresh)] = spec

    def _submit(self, spec: AttemptSpec, fresh: bool) -> PrefectFuture:
        """Start an attempt: a task run here, or with ``placement: pool`` a pool's flow run."""
        if self.plan.placement == "pool" and self.remote is not None:
            limits = self.plan.limits  # the worker takes the shared pool's slot
            return pooled_attempt.submit(spec, self.remote, no_cache=fresh, pool=limits.pool,
                                         starts_per_minute=limits.starts_per_minute,
                                         agent_version=self.agent_version)
        # --no-cache: computed afresh, and the cache overwritten; else Prefect's setting.
        run = attempt.with_options(refresh_cache=True) if fresh else attempt
        return run.submit(spec, agent_version=self.agent_version)

    def _record(self, spec: AttemptSpec, result: AttemptResult) -> None:
        """Keep an attempt's result; the first to pass may stop its siblings (early stop)."""
        task_id = spec.task_id
        self.attempts.setdefault(task_id, {})[spec.attempt] = result
        if (result.succeeded and task_id not in self.early_stopped
                and self.expected.get(task_id, 1) > 1
                and self.plan.task_early_stop(task_id) == "first_pass"
                and not self.plan.task_score(task_id)):
            self.early_stopped.add(task_id)
            self.logger.info(f"{task_id}#{spec.attempt} passed first: early stop of the others")
            for other in [s for s in self.pending if s.task_id == task_id]:
                self.pending.remove(other)
                self.attempts[task_id][other.attempt] = stopped_result(
                    task_id, other.attempt, other.branch, other.start_sha, started=False)
            for other in [s for s in self.running.values() if s.task_id == task_id]:
                # Not waited for here: the attempt's task removes its worktree and reports.
                self.control.stop_attempt(f"{task_id}#{other.attempt}", EARLY_STOP,
                                          self.settings.stop_grace_s, wait=False)

    def _select(self, task_id: str) -> AttemptResult:
        """The result that stands for a finished task: its only attempt's, or the chosen one."""
        done = self.attempts[task_id]
        if self.expected[task_id] == 1:
            return done[1]
        selection = select_candidate(
            self.plan.name, task_id, [done[k] for k in sorted(done)],
            scored=bool(self.plan.task_score(task_id)),
            goal=self.plan.task_score_goal(task_id),
        )
        self.selections[task_id] = selection
        return chosen(selection, done.values(), sprint=self.plan.name, task_id=task_id)

    def _chosen_quietly(self, task_id: str) -> AttemptResult:
        """As ``_select``, without a task run (on the way out of an interrupt)."""
        done = self.attempts[task_id]
        if self.expected[task_id] == 1:
            return done[1]
        selection = select(done.values(), scored=bool(self.plan.task_score(task_id)),
                           goal=self.plan.task_score_goal(task_id))
        self.selections[task_id] = selection
        return chosen(selection, done.values(), sprint=self.plan.name, task_id=task_id)

    def _run_attempt(self, request: AttemptRequest) -> AttemptResult:
        """A rerun or resolver attempt landing asks for: a task run ``<task>#<k>``."""
        # Past the task's own best-of-N attempts: landing counts its reruns from 2.
        k = request.attempt + self.expected.get(request.task_id, 1) - 1
        update: dict[str, object] = {
            "attempt": k,
            "branch": attempt_branch(self.plan.name, request.task_id, k),
            "start_sha": request.start_sha,
            "prompt": request.prompt,
            "merge": request.merge,  # a resolver's: the merge in progress in its worktree
        }
        if request.kind == "resolve":
            update["agent"] = self.plan.resolver_agent(request.task_id)
        # A rerun or resolver starts from the chosen candidate's spec (its variant too).
        spec = self.specs[(request.task_id, self.results[request.task_id].attempt)].model_copy(
            update=update
        )
        return settle(self._submit(spec, self.no_cache), spec, self.logger.info)

    def _priors(
        self, task_id: str, done_before: dict[str, gitapply.AppliedCommit]
    ) -> dict[str, Prior]:
        """What each task ``task_id`` waits for left: on the target already, or from this run."""
        priors: dict[str, Prior] = {}
        for prior in self.dec.waits_on.get(task_id, []):
            if prior in done_before:
                sha = done_before[prior].sha
                priors[prior] = Prior(prior, sha, gitapply.message_body(self.root, sha),
                                      gitapply.diffstat_of(self.root, sha))
            elif (r := self.results.get(prior)) and r.succeeded and r.head_sha:
                final = r.outcome.final_message if r.outcome else None
                priors[prior] = Prior(prior, r.head_sha, final, r.diffstat)
        return priors

    def _reviewed(self, sched: Scheduler, progress: SprintProgress,
                  decisions: list[Decision]) -> None:
        """Finish the tasks whose reviews ended: the candidate picked, or failed."""
        for decision in decisions:
            result, selection = self.desk.outcome(decision, self.attempts[decision.key])
            if decision.key in self.selections:
                self.selections[decision.key] = selection
            self._finish(sched, progress, decision.key, result)

    def _finish(self, sched: Scheduler, progress: SprintProgress, task_id: str,
                result: AttemptResult) -> None:
        self.results[task_id] = result
        for waiter in sched.finish(task_id, result.succeeded):
            self.logger.warning(f"{waiter}: not run, blocked by failed {task_id}")
        progress.update(sched.state)

    def _crashed(self, task_id: str, exc: BaseException, k: int = 1) -> AttemptResult:
        """A task whose attempt could not start or report (a git failure, a bug, Prefect's
        server gone while the attempt ran on the pool): failed."""
        reason = f"crashed: {exc}"
        if self.plan.placement == "pool" and (unreachable := server_unreachable(exc)):
            # The attempt's run goes on on its worker; only what became of it is unknown.
            reason = (f"lost sight of: {unreachable}; its worker may finish it: once the "
                      "server is back, run the sprint again (a finished attempt is reused)")
        self.logger.error(f"{task_id}#{k}: {reason}")
        return AttemptResult(
            task_id=task_id,
            attempt=k,
            branch=attempt_branch(self.plan.name, task_id, k),
            start_sha=self.repo.base_sha,
            succeeded=False,
            reason=reason,
        )

    def _result_of(self, future: PrefectFuture, spec: AttemptSpec) -> AttemptResult:
        try:
            # A cached result comes back with its branch restored onto this run's start.
            return settle(future, spec, self.logger.info)
        except Exception as exc:  # an agentfleet bug or a git failure, not the agent's
            if is_interrupt(exc):
                raise
            return self._crashed(spec.task_id, exc, spec.attempt)


def with_candidates(report: TaskReport, selection: Selection | None) -> TaskReport:
    """A task's summary row with every candidate and the winner, when it had several."""
    if selection is None:
        return report
    return report.model_copy(update={
        "candidates": selection.candidates,
        "votes": selection.votes,
        "winner": selection.winner_k,
        "criterion": str(selection.criterion) if selection.criterion else None,
        "selection": selection.sentence,
    })


def codex_for(checked: CheckedPlan, settings: AgentfleetSettings) -> Path | None:
    """The Codex CLI the plan's codex agents will run here; ``AgentNotFound`` (exit 2) if none."""
    plan = checked.plan
    if plan.placement == "pool":
        # The agents run on the workers: each finds Codex there (the block's path, else its
        # own AGENTFLEET_CODEX_PATH); this machine needs none.
        return checked.blocks.codex_path
    if plan.goal is None and all(plan.task_agent(t).kind != "codex" for t in plan.tasks):
        return None
    # The agent block's Codex path wins over AGENTFLEET_CODEX_PATH (block > settings).
    configured = checked.blocks.codex_path or settings.codex_path
    return find_codex(configured, PROJECT_ROOT, os.environ.get("PATH"))


def _is_terminal(stream: object) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def run_and_report(
    plan: Path,
    *,
    report: str | None,
    no_cache: bool,
    redo: list[str] | None = None,
    checked: CheckedPlan | None = None,
    on_flow_run: Callable[[UUID | None], None] | None = None,
) -> SprintReport:
    """Run the flow in this process (``agentfleet run``) and return its report.

    ``on_flow_run``: called with the flow run's id once it ended (for its UI link).

    ``checked``: the plan as the caller already loaded and checked it; the flow takes
    it as it is (the plan is read once per run). Errors that stop the flow before it
    reports (a bad plan, a held lock, no Codex) come back as the ``AgentfleetError``
    they are, so the CLI exits with their status.
    """
    if checked is None:
        checked = load_and_check(plan, saved_blocks(), mirror=machine_mirror())
    settings = AgentfleetSettings()
    check_run(repo_root=checked.repo.root, task_ids=checked.plan.task_ids,
              work_dir=settings.work_dir, report=report, redo=redo or [])
    # Asked while Prefect starts (or read from the work dir, as an earlier run found it).
    codex = codex_for(checked, settings)
    prefetch_agent_version(version_codex(checked.plan, codex, settings), settings.work_dir)
    with SprintLock(settings.lock_dir, checked.repo.root, checked.plan.name, probe=True):
        pass  # refuse a second run at once, before Prefect's start-up; the flow locks again
    share()  # one TLS context for all of Prefect's clients here, not one each
    # On the main thread, before any API call: the embedded server (if any) dies with us.
    start_embedded_server()
    with tempfile.TemporaryDirectory(prefix="agentfleet-report-") as tmp:
        path = Path(report) if report else Path(tmp) / "report.json"
        path.unlink(missing_ok=True)
        try:
            # beaten_here: no second lost waiting for Prefect's heartbeat thread at the end.
            with prechecked(plan, checked), terminal_prompt(_is_terminal(sys.stdin)), \
                    beaten_here():
                state = sprint(plan_path=str(plan), report=str(path), no_cache=no_cache,
                               redo=redo or [], return_state=True)
            if on_flow_run is not None:
                on_flow_run(state.state_details.flow_run_id)
        except KeyboardInterrupt as interrupt:
            if path.exists():
                report_ = SprintReport.model_validate_json(path.read_text())
                raise SprintInterrupted(report_) from interrupt
            raise
        except Exception as exc:
            if (unreachable := server_unreachable(exc)) is None:
                raise
            # Prefect's server went away: the sprint may have run to its report before
            # its run's end could not be recorded.
            if path.exists():
                unreachable.report = SprintReport.model_validate_json(path.read_text())
            raise unreachable from exc
        if path.exists():
            return SprintReport.model_validate_json(path.read_text())
        error = state.result(raise_on_failure=False)
        if isinstance(error, BaseException):
            raise error
        raise AgentfleetError(
            f"the sprint flow ended {state.name} without a report: {state.message}"
        )
