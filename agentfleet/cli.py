"""The ``agentfleet`` command line: the edge where arguments become domain calls.

One ``cmd_<name>(args) -> int`` per sub-command, registered in ``build_parser``;
``main`` turns every ``AgentfleetError`` into its message on stderr and its
exit status, without a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from agentfleet.checking import (  # noqa: F401 - re-exported: the CLI's names stay
    CheckedPlan,
    check_plan_data,
    check_reading,
    load_and_check,
    render_plan,
)
from agentfleet.errors import (
    AgentfleetError,
    ConfigError,
    PlanError,
    ProposalRejected,
    ServerUnreachable,
    SprintInterrupted,
)
from agentfleet.plan import plan_json_schema
from agentfleet.plan_blocks import BlockLoaders
from agentfleet.startup import long_lived_imports

if TYPE_CHECKING:
    from agentfleet.leases import PoolSlot
    from agentfleet.results import SprintReport

Command = Callable[[argparse.Namespace], int]


def saved_blocks() -> BlockLoaders:
    """Loaders of the saved blocks a plan names; Prefect is imported only when one is named.

    Against ``PREFECT_API_URL``, else the embedded server (started on this thread first,
    so that it dies with the command).
    """
    from agentfleet.settings import AgentfleetSettings

    def on_server(loader: str) -> Callable[[str], Any]:
        def load(name: str) -> Any:
            import flows.params
            from flows.embedded import start_embedded_server

            start_embedded_server()
            return getattr(flows.params, loader)(name)
        return load

    return BlockLoaders(agent=on_server("load_agent_block"),
                        repository=on_server("load_repository_block"),
                        settings=AgentfleetSettings())


def _secret_env(block: str | None) -> dict[str, str]:
    """The agent block's secret environment (its API key), for the planner agent only."""
    if block is None:
        return {}
    from blocks.agent import agent_secret_env

    return agent_secret_env(block)


def machine_mirror() -> Callable[[str, str | None], Path]:
    """Fetching a plan's remote repo into its mirror under this machine's work dir."""
    from tasks.remote import machine_mirror

    return machine_mirror()


def cmd_plan(args: argparse.Namespace) -> int:
    """``agentfleet plan PLAN``: check a plan and show what would run together, without running."""
    checked = load_and_check(Path(args.plan), saved_blocks(), mirror=machine_mirror())
    for warning in checked.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    from agentfleet.settings import AgentfleetSettings

    sys.stdout.write(render_plan(checked, AgentfleetSettings().default_models))
    return 0


def _fetch_once(
    mirror: Callable[[str, str | None], Path],
) -> Callable[[str, str | None], Path]:
    """``mirror`` fetching each remote once: a command checks its plan more than once."""
    fetched: dict[tuple[str, str | None], Path] = {}

    def fetch(location: str, block: str | None = None) -> Path:
        if (location, block) not in fetched:
            fetched[location, block] = mirror(location, block)
        return fetched[location, block]

    return fetch


def cmd_decompose(args: argparse.Namespace) -> int:
    """``agentfleet decompose GOAL``: the planner proposes a checked plan; write it, show waves."""
    from agentfleet.codex.cli import find_codex
    from agentfleet.foreach import sanitize_id_part
    from agentfleet.locks import repo_key
    from agentfleet.planner import PlannerRequest, plan_yaml, propose, usage_line
    from agentfleet.remote import remote_location
    from agentfleet.settings import PROJECT_ROOT, AgentfleetSettings

    settings = AgentfleetSettings()
    out = Path(args.output).resolve() if args.output else None
    plan_path = out if out is not None else Path.cwd() / "plan.yaml"
    header: dict[str, Any] = {}
    repo_dir = Path(args.repo or ".").resolve()
    # A remote (URL, bare repository) goes into the written plan as it is, fetched once.
    remote: Any = remote_location(args.repo, Path.cwd()) if args.repo else None
    mirror = _fetch_once(machine_mirror())
    goal = args.goal
    if args.plan:
        # A plan file's keys (agent, planner, verify, limits ...) go into the written plan.
        source = Path(args.plan).resolve()
        given = load_and_check(source, saved_blocks(), mirror=mirror)
        if given.plan.goal is None:
            raise ConfigError(f"{args.plan} has tasks already; decompose needs a plan with goal:")
        header = {k: v for k, v in (yaml.safe_load(source.read_text()) or {}).items()
                  if k not in ("goal", "tasks")}
        goal = goal or given.plan.goal
        if args.repo is None and given.remote is not None:
            # Its own words when a block names it (the block holds the token).
            remote = header["repo"] if isinstance(header.get("repo"), dict) \
                else given.remote.location
        repo_dir = given.repo.path.resolve() if args.repo is None else repo_dir
    if not goal or not goal.strip():
        raise ConfigError("say what to decompose: agentfleet decompose GOAL (or --plan FILE "
                          "with goal:)")
    header.setdefault("name", args.name or sanitize_id_part(goal)[:40].strip("-") or "sprint")
    if args.name:
        header["name"] = args.name
    repo = remote or os.path.relpath(repo_dir, plan_path.parent)
    header.pop("repo", None)
    if repo != ".":
        header = {"name": header.pop("name"), "repo": repo, **header}
    if args.base:
        header["base"] = args.base
    # The goal plan first: a bad repository or base costs no tokens (exit 2).
    blocks = saved_blocks()
    start = check_plan_data({**header, "goal": goal}, plan_path, source=args.plan or "decompose",
                            blocks=blocks, mirror=mirror)
    agent = start.plan.planner_agent
    if args.model:
        agent = agent.model_copy(update={"model": args.model})

    def check(tasks: list[dict[str, Any]], ask: int) -> CheckedPlan:
        return check_plan_data({**header, "tasks": tasks}, plan_path, source=f"answer {ask}",
                               blocks=blocks, mirror=mirror)

    proposal = propose(PlannerRequest(
        goal=goal, repo=start.repo.root, base_sha=start.repo.base_sha, agent=agent,
        check=check, env={**os.environ, **_secret_env(start.blocks.agent_block)},
        work_root=settings.work_dir / "planner" / repo_key(start.repo.root),
        timeout_s=start.plan.timeout_seconds,
        codex_path=find_codex(start.blocks.codex_path or settings.codex_path, PROJECT_ROOT,
                              os.environ.get("PATH")),
        grace_s=settings.stop_grace_s, log=lambda line: print(line, file=sys.stderr),
    ))
    print(usage_line(proposal), file=sys.stderr)
    if not proposal.accepted or proposal.checked is None:
        print(f"the planner's answer still has problems after {proposal.asks} asks:",
              file=sys.stderr)
        raise ProposalRejected(proposal.problems, proposal.asks)
    text = plan_yaml(header, proposal.checked, proposal.reasons, goal=goal)
    summary = render_plan(proposal.checked)
    if out is not None:
        out.write_text(text, encoding="utf-8")
        sys.stdout.write(summary)
        print(f"\nwrote {out}: edit it as you like, then `agentfleet run {args.output}`")
    else:
        sys.stdout.write(text)
        sys.stderr.write(summary)
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    """``agentfleet schema``: print the plan file's JSON Schema."""
    print(json.dumps(plan_json_schema(), indent=2))
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    """Start this process's warm engine, then run ``prefect worker start`` in it (one pid:
    the engine ends with the worker; the worker's `python -m flows.engine` runs fork from
    it, the first one too). Returns Prefect's worker's exit status."""
    import runpy
    import time

    from agentfleet.settings import AgentfleetSettings
    from flows.engine import PRELOAD  # the standard library only: start-up stays short
    from flows.warm import SWITCH, prestart
    from tasks.api_url import require_api_url

    # Before the engine starts: a worker with no server to take runs from is of no use.
    require_api_url("agentfleet worker", "to take runs from, the one the sprints use")
    pool = args.pool or AgentfleetSettings().attempt_pool
    command = ["prefect", "worker", "start", "--pool", pool]
    command += ["--limit", str(args.limit)] if args.limit is not None else []
    command += ["--name", args.name] if args.name else []
    started = time.monotonic()
    if prestart(os.getpid(), PRELOAD):
        print(f"agentfleet: warm engine ready in {time.monotonic() - started:.1f}s; this "
              f"worker's `python -m flows.engine` runs fork from it", file=sys.stderr)
    else:
        print(f"agentfleet: no warm engine ({SWITCH}=0, or it could not start): this "
              "worker's runs start cold", file=sys.stderr)
    with long_lived_imports():  # Prefect's worker: a long life
        import prefect.cli  # noqa: F401 - what `python -m prefect` (below) imports first

        from flows import pickup, worker_stop
        from flows.shared_tls import share

        share()  # the worker's API clients: one TLS context, not one each
        pickup.install()  # runs taken as they are scheduled, not at the next poll
        worker_stop.install()  # a stop request that gets lost is made again
    sys.argv = [*command, *args.prefect_args]
    try:
        runpy.run_module("prefect", run_name="__main__", alter_sys=True)
    except SystemExit as exit_:  # Prefect's CLI ends this way, also when all went well
        if exit_.code is None or isinstance(exit_.code, int):
            return exit_.code or 0
        print(exit_.code, file=sys.stderr)
        return 1
    return 0


def cmd_clean(args: argparse.Namespace) -> int:
    """``agentfleet clean``: list (or with ``--yes`` remove) what dead runs left behind."""
    from agentfleet.clean import clean
    from agentfleet.settings import AgentfleetSettings

    settings = AgentfleetSettings()
    work_dir = Path(args.work_dir).expanduser() if args.work_dir else settings.work_dir
    if work_dir.exists() and not work_dir.is_dir():
        raise ConfigError(f"the work dir {work_dir} is not a folder")
    for line in clean(work_dir, yes=args.yes, force=args.force, grace_s=settings.stop_grace_s,
                      release_slot=_give_back_slot):
        print(line)
    return 0


def _give_back_slot(slot: PoolSlot) -> str:
    """A dead run's pool slot back to its Prefect server (Prefect imported only then)."""
    from tasks.limits import give_back_slot

    return give_back_slot(slot)


def cmd_run(args: argparse.Namespace) -> int:
    """``agentfleet run PLAN``: run the sprint flow; exit 0 only when all landed verified."""
    from agentfleet.preflight import check_run
    from agentfleet.settings import AgentfleetSettings

    plan_path = Path(args.plan).resolve()
    # Bad input: exit 2 before the flow (a remote repo is fetched now).
    checked = load_and_check(plan_path, saved_blocks(), mirror=machine_mirror())
    redo = list(args.redo or [])
    check_run(
        repo_root=checked.repo.root,
        task_ids=checked.plan.task_ids,
        work_dir=AgentfleetSettings().work_dir,
        report=args.report,
        redo=redo,
    )
    for warning in checked.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    # Prefect costs seconds to import and start: only now that the plan is good. Its
    # embedded server starts first, so that both start-ups overlap.
    from agentfleet import fast_exit

    with long_lived_imports():  # what is imported now lives as long as the process
        if checked.plan.placement == "pool":  # before any server starts: see tasks/api_url.py
            from tasks.api_url import require_pool_server

            require_pool_server()
        from flows.prestart import prestart_embedded_server

        fast_exit.arm()  # before Prefect registers its exit handlers: runs after them
        prestart_embedded_server()
        from flows.sprint import run_and_report
    if checked.plan.placement == "pool":
        # Bad input too, said in one line before any flow run (the flow checks it again
        # for a sprint started from its deployment, and warns of a pool no worker polls).
        from tasks.pool import check_attempt_deployment

        check_attempt_deployment(AgentfleetSettings().attempt_pool)
    try:
        links: list[str] = []
        report = run_and_report(plan_path, report=args.report, no_cache=args.no_cache,
                                redo=redo, checked=checked, on_flow_run=_collect_link(links))
    except ServerUnreachable as unreachable:
        if unreachable.report is not None:  # the sprint got to its report: show it
            print()
            print(unreachable.report.table())
            print(unreachable.report.summary_line())
            unreachable = ServerUnreachable(
                f"the sprint ended as above, but Prefect could not record its run: {unreachable}")
        report_error(unreachable)
        return fast_exit.abandon(unreachable.exit_code)
    except SprintInterrupted as interrupt:
        print()
        print(interrupt.report.table())
        print(
            "interrupted: every agent stopped, unfinished worktrees removed; finished results "
            "stay on their branches and in the cache: run again to finish"
        )
        return fast_exit.settle(130)
    print()
    print(report.table())
    details = report.failure_details()
    if details:
        print()
        print(details)
    for link in links:
        print(f"flow run: {link}")
    return fast_exit.settle(_print_ending(report))


def cmd_review(args: argparse.Namespace) -> int:
    """``agentfleet review SPRINT``: list the reviews a paused sprint waits for, and answer."""
    from agentfleet.review import parse_answers, read_choice
    from agentfleet.settings import AgentfleetSettings

    with long_lived_imports():
        from tasks.review import answer, find_waiting

    api_url = os.environ.get("PREFECT_API_URL") or None
    waiting = find_waiting(args.sprint, AgentfleetSettings().work_dir, api_url)
    if waiting is None:
        where = api_url or "this machine's runs"
        print(f"error: no run of sprint {args.sprint} waits for review ({where})",
              file=sys.stderr)
        return 1
    print(waiting.description.rstrip())
    if not args.answer and not args.auto:
        if not sys.stdin.isatty():
            print(f"\nanswer with: agentfleet review {args.sprint} --answer TASK=CHOICE ... "
                  "(or --auto: the automatic choices)")
            return 0
        pairs = []
        for key, (choices, default) in waiting.fields.items():
            while (choice := read_choice(
                    input(f"{key} [{'/'.join(choices)}] (Enter: {default}): "),
                    choices, default)) is None:
                print(f"  not one of {', '.join(choices)}")
            pairs.append(f"{key}={choice}")
        args.answer = pairs
    answers = parse_answers(args.answer or [], waiting.fields, auto=args.auto)
    answer(waiting, answers)
    print("answered: " + ", ".join(f"{k}={v}" for k, v in answers.items()))
    return 0


def _collect_link(links: list[str]) -> Callable[[Any], None]:
    """A callback putting the flow run's UI link (when a server with a UI runs) in ``links``."""

    def collect(flow_run_id: Any) -> None:
        from flows.watching import flow_run_link

        link = flow_run_link(flow_run_id) if flow_run_id else None
        if link:
            links.append(link)

    return collect


def cmd_status(args: argparse.Namespace) -> int:
    """``agentfleet status``: the recent sprints on the Prefect server, newest first."""
    import asyncio

    from agentfleet.watching import status_table

    with long_lived_imports():
        from flows.embedded import start_embedded_server
        from flows.watching import now, recent_sprints

    start_embedded_server()  # no PREFECT_API_URL: PREFECT_HOME's database, as `run` used
    sys.stdout.write(status_table(asyncio.run(recent_sprints(args.limit)), now()))
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    """``agentfleet show SPRINT [TASK]``: a sprint's attempts, or one task's in full."""
    import asyncio

    from agentfleet.watching import attempt_number, parse_task_ref, show_attempt, show_sprint

    with long_lived_imports():
        from flows.embedded import start_embedded_server
        from flows.watching import now, sprint_attempts

    task, k = parse_task_ref(args.task) if args.task else (None, None)
    start_embedded_server()
    run, attempts = asyncio.run(sprint_attempts(args.sprint, task))
    if run is None and not attempts:
        raise ConfigError(f"no sprint {args.sprint!r} on this Prefect server "
                          "(`agentfleet status` lists the recent ones)")
    if task is None:
        sys.stdout.write(show_sprint(args.sprint, run, attempts, now()))
        return 0
    numbered = sorted(((n, a) for a in attempts
                       if (n := attempt_number(a.key, args.sprint, task)) is not None
                       and (k is None or n == k)), key=lambda pair: pair[0])
    if not numbered:
        raise ConfigError(f"sprint {args.sprint!r} has no attempt {args.task!r} on this server "
                          f"(`agentfleet show {args.sprint}` lists its attempts)")
    sys.stdout.write("\n".join(show_attempt(a) for _, a in numbered))  # a blank line between
    return 0


def _print_ending(report: SprintReport) -> int:
    """The lines after the table (``final_verify``, the summary); the exit status."""
    if report.final_verify is not None:
        fv = report.final_verify
        print(f"final_verify: {'passed' if fv.passed else 'FAILED'} ({fv.command})")
        if not fv.passed and fv.output_tail:
            print(fv.output_tail.rstrip())
    print(report.summary_line())
    return report.exit_status


def _repo_arg(repo: str) -> str:
    """A ``--repo`` as a flow takes it: a remote (a git URL, a bare repository) as given or
    made absolute, a local folder made absolute."""
    from agentfleet.remote import remote_location

    return remote_location(repo, Path.cwd()) or str(Path(repo).resolve())


def cmd_apply(args: argparse.Namespace) -> int:
    """``agentfleet apply --target T BRANCH...``: the apply flow; exit statuses as ``run``."""
    import json

    from agentfleet.standalone import check_apply

    resolver = json.loads(args.resolver) if args.resolver else None
    check_apply(args.on_conflict, resolver)  # bad input: exit 2 before Prefect starts
    with long_lived_imports():
        from flows.apply import apply_and_report

    report = apply_and_report(
        repo=_repo_arg(args.repo), target=args.target, branches=args.branches,
        final_verify=args.final_verify, on_conflict=args.on_conflict, resolver=resolver,
        on_final_verify_failure=args.on_final_verify_failure, push=args.push, base=args.base,
    )  # fmt: skip
    print()
    print(report.table())
    return _print_ending(report)


def cmd_best_of_n(args: argparse.Namespace) -> int:
    """``agentfleet best-of-n PROMPT``: N attempts, the best chosen; exit 0 winner, 1 none."""
    from agentfleet.best_of_n import best_of_n_plan
    from agentfleet.selection import Selection, candidates_markdown

    agent: dict[str, Any] = {}
    if args.run:
        agent = {"kind": "command", "run": args.run}
    if args.model:
        agent["model"] = args.model
    options: dict[str, Any] = dict(
        repo=_repo_arg(args.repo), base=args.base, attempts=args.attempts, verify=args.verify,
        score=args.score, score_goal=args.score_goal, paths=args.paths or None,
        agent=agent or None, target=args.target, name=args.name,
    )
    # Bad input: exit 2 before Prefect even starts (a remote repo is fetched now).
    best_of_n_plan(args.prompt, **options, mirror=machine_mirror())
    with long_lived_imports():
        from flows.best_of_n import BestOfNResult, best_of_n
        from flows.embedded import start_embedded_server

    start_embedded_server()
    import tempfile

    with tempfile.TemporaryDirectory(prefix="agentfleet-best-of-n-") as tmp:
        answer_path = Path(tmp) / "answer.json"
        state = best_of_n(args.prompt, **options, no_cache=args.no_cache,
                          answer=str(answer_path), return_state=True)
        if not answer_path.exists():
            error = state.result(raise_on_failure=False)
            if isinstance(error, BaseException):
                raise error
            raise AgentfleetError(f"best-of-n ended {state.name} without an answer")
        answer = BestOfNResult.model_validate_json(answer_path.read_text())
    candidates = answer.judged
    winner = next((c for c in candidates if c.k == answer.winner), None)
    print(candidates_markdown(Selection(candidates=candidates, winner=winner, criterion=None,
                                        sentence=answer.sentence)), end="")
    if winner is None:
        print("no candidate passed: every branch is kept")
        return 1
    print(f"winner: k={winner.k} {winner.branch}")
    if args.target:
        print(f"applied to {args.target}" if answer.applied else f"NOT applied to {args.target}")
        return 0 if answer.report.exit_status == 0 else 1
    return 0


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("agentfleet")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    """The argument parser; each sub-command sets ``func`` to its ``cmd_<name>``."""
    parser = argparse.ArgumentParser(
        prog="agentfleet",
        description="Run a sprint of coding-agent tasks in parallel git worktrees and land "
        "the results on a verified branch.",
    )
    parser.add_argument("--version", action="version", version=f"agentfleet {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    plan = sub.add_parser(
        "plan",
        help="check a plan and show what would run together (runs nothing)",
        description="Check a plan file and its repository; print the waves of tasks that "
        "may run together, why tasks are serialized, and the apply order. Runs nothing.",
    )
    plan.add_argument("plan", metavar="PLAN", help="the plan file (YAML)")
    plan.set_defaults(func=cmd_plan)

    run = sub.add_parser(
        "run",
        help="run a sprint and land the results on its target branch",
        description="Run the sprint flow: against the Prefect server in PREFECT_API_URL, else "
        "on Prefect's embedded server. Exit 0: every task applied, final_verify passed, target "
        "moved; 1: anything less; 2: invalid plan or configuration; 130: interrupted.",
    )
    run.add_argument("plan", metavar="PLAN", help="the plan file (YAML)")
    run.add_argument("--report", metavar="FILE", help="also write the summary as JSON to FILE")
    run.add_argument(
        "--no-cache", action="store_true", help="run every agent afresh, ignoring cached results"
    )
    run.add_argument(
        "--redo",
        action="append",
        metavar="TASK",
        help="run TASK again (and the tasks depending on it) and replace its commit on the "
        "target; repeatable",
    )
    run.set_defaults(func=cmd_run)

    app = sub.add_parser(
        "apply",
        help="apply branches made elsewhere onto a target, as a merge queue",
        description="Run the apply flow: each BRANCH (in order) is checked against the target "
        "with git merge-tree, applied (on_conflict: resolve, overwrite or skip), verified with "
        "--final-verify (a failing stack is bisected) and the target moves by compare-and-swap. "
        "Exit statuses as `run`.",
    )
    app.add_argument("branches", nargs="+", metavar="BRANCH", help="branches to apply, in order")
    app.add_argument("--repo", default=".",
                     help="the git repository: a folder, or a remote (git URL or bare "
                     "repository: fetched first, the target pushed back) (default: .)")
    app.add_argument("--target", required=True,
                     help="the branch to land them on (missing: created from --base)")
    app.add_argument("--base", help="where a missing target starts (default: HEAD)")
    app.add_argument("--final-verify", metavar="CMD", help="shell command run on the result")
    app.add_argument("--on-conflict", choices=["resolve", "overwrite", "skip", "rerun"],
                     default="skip", help="what a conflicting branch does (default: skip)")
    app.add_argument("--resolver", metavar="JSON",
                     help="with --on-conflict resolve: the resolver agent as a JSON mapping")
    app.add_argument("--on-final-verify-failure", choices=["bisect", "fail"], default="bisect")
    app.add_argument("--push", metavar="REMOTE",
                     help="push the moved target to REMOTE (a remote --repo: to it)")
    app.set_defaults(func=cmd_apply)

    dec = sub.add_parser(
        "decompose",
        help="let the planner agent propose a checked plan for a goal",
        description="Run Codex read-only in a temporary worktree of the base to split GOAL "
        "into tasks, following the seed's decision tree. The answer gets the same checks as "
        "a plan file; the planner is asked again with the problems, at most twice. Exit 0: "
        "the plan is written (with a comment per task on why it runs in parallel or waits) "
        "and its waves shown; 1: still refused after three asks; 2: bad repository or base.",
    )
    dec.add_argument("goal", metavar="GOAL", nargs="?",
                     help="what the sprint should achieve, in words (default: --plan's goal)")
    dec.add_argument("--plan", metavar="FILE",
                     help="a plan with goal: whose keys (agent, planner, verify, limits ...) "
                     "the planner and the written plan use")
    dec.add_argument("--repo", help="the git repository: a folder, or a remote (git URL or "
                     "bare repository, fetched first) (default: --plan's, else .)")
    dec.add_argument("--base", help="the branch to plan from (default: the current branch)")
    dec.add_argument("-o", "--output", metavar="FILE",
                     help="write the plan to FILE (default: print it)")
    dec.add_argument("--name", help="the sprint's name (default: from the goal)")
    dec.add_argument("--model", help="the planner's model (default: Codex's configured one)")
    dec.set_defaults(func=cmd_decompose)

    bon = sub.add_parser(
        "best-of-n",
        help="run one prompt N times and choose the best candidate",
        description="Run N attempts of PROMPT, each in its own worktree and branch; judge "
        "them (passes, score, consensus, smaller diff, fewer tokens, lower k) and print the "
        "candidates table and the winner's branch. Applies nothing unless --target. Exit 0: "
        "a winner; 1: no candidate passed; 2: bad input.",
    )
    bon.add_argument("prompt", metavar="PROMPT", help="what every attempt should do")
    bon.add_argument("--repo", default=".",
                     help="the git repository: a folder, or a remote (git URL or bare "
                     "repository: fetched first; the winner lands there, or without "
                     "--target the candidates' branches are pushed there) (default: .)")
    bon.add_argument("--base", help="the branch to start from (default: the current branch)")
    bon.add_argument("--attempts", type=int, default=3, help="how many attempts (1-8; 3)")
    bon.add_argument("--verify", metavar="CMD", help="shell command a candidate must pass")
    bon.add_argument("--score", metavar="CMD",
                     help="shell command whose last output line (a number) ranks candidates")
    bon.add_argument("--score-goal", choices=("min", "max"), default="min",
                     help="which score is better (default: min)")
    bon.add_argument("--paths", nargs="+", metavar="GLOB",
                     help="the only files a candidate may change (gitignore style)")
    bon.add_argument("--target", help="land the winner on this branch (default: apply nothing)")
    bon.add_argument("--model", help="the Codex model (default: Codex's configured one)")
    bon.add_argument("--run", metavar="CMD",
                     help="a shell command as the agent instead of Codex (kind: command)")
    bon.add_argument("--name", default="best-of-n", help="names the branches (best-of-n)")
    bon.add_argument("--no-cache", action="store_true", help="run every attempt afresh")
    bon.set_defaults(func=cmd_best_of_n)

    rev = sub.add_parser(
        "review",
        help="list and answer the reviews a paused sprint waits for",
        description="Find the paused run of SPRINT (noted in the work dir by a run on this "
        "machine, else on PREFECT_API_URL), print every review it waits for (candidates with "
        "diffstat, verify, score, votes, and the automatic choice), and answer: pick a "
        "candidate (k=N) or reject, per task; approve or reject a proposed plan. Without "
        "--answer on a terminal, asks; elsewhere only lists. Exit 0: answered or listed; "
        "1: nothing waits; 2: an answer that does not fit.",
    )
    rev.add_argument("sprint", metavar="SPRINT", help="the sprint's name (the plan's name:)")
    rev.add_argument("--answer", action="append", metavar="TASK=CHOICE",
                     help="e.g. api=k=2, api=2, api=reject, plan=approve; repeatable")
    rev.add_argument("--auto", action="store_true",
                     help="reviews not answered take their automatic choice")
    rev.set_defaults(func=cmd_review)

    status = sub.add_parser(
        "status",
        help="list recent sprints on the Prefect server",
        description="List the newest sprint flow runs from the Prefect API (PREFECT_API_URL, "
        "else the embedded server's database in PREFECT_HOME): outcome, tasks applied, "
        "tokens, duration and the flow run's UI link.",
    )
    status.add_argument("--limit", type=int, default=10, help="how many runs (default: 10)")
    status.set_defaults(func=cmd_status)

    show = sub.add_parser(
        "show",
        help="print what the agents of a sprint did, from its artifacts",
        description="Without TASK: the sprint's latest run and one line per attempt. With "
        "TASK (or TASK#K for one attempt): each attempt's prompt as sent, final message, "
        "files changed and the tail of verify's output.",
    )
    show.add_argument("sprint", metavar="SPRINT", help="the sprint's name (the plan's name:)")
    show.add_argument("task", metavar="TASK", nargs="?", help="a task id, or TASK#K")
    show.set_defaults(func=cmd_show)

    schema = sub.add_parser("schema", help="print the plan file's JSON Schema")
    schema.set_defaults(func=cmd_schema)

    clean = sub.add_parser(
        "clean",
        help="list (--yes: remove) worktrees and agents that dead runs left behind",
        description="List what runs that are no longer alive left under the work dir, in "
        "every sprint and repository: their agents' processes, their worktrees, and "
        "worktrees kept for inspection (keep_failed_worktrees). With --yes, stop and remove "
        "them. Never touches a live run; a worktree with uncommitted changes only with "
        "--force.",
    )
    clean.add_argument("--yes", action="store_true", help="remove them (default: only list)")
    clean.add_argument(
        "--force", action="store_true", help="also remove worktrees with uncommitted changes"
    )
    clean.add_argument(
        "--work-dir", metavar="DIR", help="the work dir to clean (default: AGENTFLEET_WORK_DIR)"
    )
    clean.set_defaults(func=cmd_clean)

    worker = sub.add_parser(
        "worker",
        help="start a Prefect process worker for pool attempts, its warm engine ready first",
        description="Run `prefect worker start` on the attempt pool in this process, "
        "after starting its warm engine: a process that imported Prefect's engine and the "
        "attempt flow once, from which every `python -m flows.engine` run of the worker "
        "is forked, its first one too (flows/warm.py). Arguments after `--` go to "
        "`prefect worker start` as they are.",
    )
    worker.add_argument("--pool", metavar="POOL",
                        help="the work pool (default: AGENTFLEET_ATTEMPT_POOL)")
    worker.add_argument("--limit", type=int, metavar="N",
                        help="at most N flow runs at once on this worker")
    worker.add_argument("--name", metavar="NAME", help="the worker's name")
    worker.add_argument("prefect_args", nargs="*", metavar="-- PREFECT_ARGS",
                        help="more `prefect worker start` options, after `--`")
    worker.set_defaults(func=cmd_worker)
    return parser


def report_error(error: AgentfleetError) -> None:
    """Print an error for a user: one ``error:`` line per problem, no traceback."""
    if isinstance(error, PlanError) and error.problems:
        for problem in error.problems:
            print(f"error: {problem}", file=sys.stderr)
    else:
        for line in str(error).splitlines() or [type(error).__name__]:
            print(f"error: {line}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits on --help, --version and usage errors
        return exc.code if isinstance(exc.code, int) else 2
    func: Command | None = getattr(args, "func", None)
    if func is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return func(args)
    except AgentfleetError as exc:
        report_error(exc)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - a bug of ours: one line, not a traceback
        from agentfleet import fast_exit
        from tasks.api_url import server_unreachable

        if (unreachable := server_unreachable(exc)) is not None:
            report_error(unreachable)
            return fast_exit.abandon(unreachable.exit_code)
        print(
            f"error: agentfleet failed unexpectedly: {type(exc).__name__}: {exc} "
            "(a bug in agentfleet; please report it with the command that caused it)",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
