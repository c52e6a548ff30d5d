"""The demo's sprint with its attempts in Docker containers: a Docker work pool's check.

    .venv/bin/pip install prefect-docker
    docker build -t agentfleet-worker .       # the Dockerfile; --build-arg BASE=... offline
    .venv/bin/python -m tests.support.docker_pool [--image agentfleet-worker] [--keep]

Not part of ``make test``: it needs a Docker engine and the image, which the suite does not
set up (README, "Attempts on many workers"). What it does: the sample service as a bare
repository (the remote), a Prefect server on PostgreSQL, the scripted model, a Docker work
pool with prefect.yaml's ``attempt`` deployment on it (the image, host networking, the
remote, the bucket folder and the Codex home mounted, the seccomp option Codex's sandbox
needs), a Docker worker, and ``agentfleet run`` of the eight-ticket plan with
``placement: pool``. It exits 0 when all eight land on the remote's target and no container
is left behind; otherwise 1, saying what did not hold.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from agentfleet.sample import build_sample_repo, sample_plan, sample_script, write_plan
from agentfleet.testing import ScriptedModelServer
from tests.support.attempt_pool import AGENTFLEET, PREFECT, ROOT, pool_env, prefect
from tests.support.prefect_server import start_prefect_server

POOL = "agentfleet-docker"
TASKS = 8


def _containers(image: str) -> list[str]:
    """Containers of ``image``, running or stopped."""
    out = subprocess.run(["docker", "ps", "-aq", "--filter", f"ancestor={image}"],
                         capture_output=True, text=True, check=True).stdout
    return out.split()


def _deploy(env: dict[str, str], root: Path, job_variables: dict[str, object]) -> None:
    """The Docker pool, and prefect.yaml's ``attempt`` deployment on it."""
    prefect("work-pool", "create", POOL, "--type", "docker", "--overwrite", env=env)
    config = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    config["deployments"] = [d for d in config["deployments"] if d["name"] == "attempt"]
    pool = config["deployments"][0]["work_pool"]
    pool["name"] = POOL
    pool["job_variables"] = {**pool.get("job_variables", {}), **job_variables}
    pinned = root / "prefect-docker.yaml"
    pinned.write_text(yaml.safe_dump(config))
    prefect("--no-prompt", "deploy", "--all", "--prefect-file", str(pinned), env=env)


def check(root: Path, image: str) -> list[str]:
    """Run the sprint on a Docker pool under ``root``; what did not hold (none: it passed)."""
    seed = build_sample_repo(root / "seed")
    remote = root / "remote.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(seed), str(remote)], check=True)
    bucket = root / "bucket"
    bucket.mkdir()
    plan = write_plan(root / "sprint.yaml",
                      sample_plan(repo=f"file://{remote}", placement="pool"))
    (root / "prefect").mkdir()
    server = start_prefect_server(root / "prefect")
    worker: subprocess.Popen | None = None
    try:
        with ScriptedModelServer(sample_script(delay_s=0.3)) as model:
            home = model.write_codex_home(root / "codex-home")
            agent = model.agent_env(home)
            env = pool_env(server, root, POOL, agent)
            _deploy(env, root, {
                "image": image, "image_pull_policy": "Never", "auto_remove": True,
                "network_mode": "host",  # the server, the model, the sprint's proxy: loopback
                "volumes": [f"{p}:{p}" for p in (remote, bucket, home)],
                "env": {"PREFECT_RESULTS_LOCAL_STORAGE_PATH": str(bucket), **agent},
                # Codex's sandbox (bubblewrap) makes namespaces; Docker's default seccomp
                # profile refuses them, and every patch would fail.
                "container_create_kwargs": {
                    "security_opt": ["seccomp=unconfined", "apparmor=unconfined"]},
            })
            worker = subprocess.Popen(
                [*PREFECT, "worker", "start", "--pool", POOL, "--type", "docker",
                 "--limit", "3"], env=env, cwd=root, stdout=(root / "worker.log").open("w"),
                stderr=subprocess.STDOUT, start_new_session=True)
            started = time.monotonic()
            run = subprocess.run([*AGENTFLEET, "run", str(plan)], env=env, cwd=root,
                                 capture_output=True, text=True, timeout=900)
            seconds = time.monotonic() - started
            (root / "run.log").write_text(run.stdout + run.stderr)
            print(run.stdout[-1500:])
            print(f"agentfleet run: exit {run.returncode} in {seconds:.1f}s; "
                  f"{len(model.requests)} model requests")
    finally:
        if worker is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(worker.pid, signal.SIGTERM)
            worker.wait(timeout=30)
        server.stop()
    landed = subprocess.run(
        ["git", "-C", str(remote), "rev-list", "--count", "main..agentfleet/orders-v2"],
        capture_output=True, text=True).stdout.strip()
    problems = []
    if run.returncode != 0:
        problems.append(f"agentfleet run exited {run.returncode} (its output: {root}/run.log)")
    if landed != str(TASKS):
        problems.append(f"the remote's agentfleet/orders-v2 holds {landed or 'no'} commits "
                        f"over main, not {TASKS}")
    if left := _containers(image):
        problems.append(f"{len(left)} container(s) of {image} left behind")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.support.docker_pool",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--image", default="agentfleet-worker")
    parser.add_argument("--keep", action="store_true", help="keep the run's folder")
    args = parser.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="agentfleet-docker-"))
    try:
        problems = check(root, args.image)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    for problem in problems:
        print(f"FAILED: {problem}", file=sys.stderr)
    if not problems:
        print(f"passed: {TASKS}/{TASKS} on the remote's target, no container left")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
