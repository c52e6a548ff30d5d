"""API keys reach the agent through its environment only, and nothing a run produces holds them.

A sentinel key is the scripted model's key, saved in the agent block the plan names
(Codex sends it as the Authorization header, which proves it was delivered) and a second
sentinel sits in the machine's ``OPENAI_API_KEY``. After a
sprint, and a rerun served from the cache, every place the run wrote to is searched
for both: Prefect's database (``pg_dump``: logs, artifacts, events, flow and task
runs, states), the result storage, Prefect's home, agentfleet's work folder, the
repository (every object of every ref, reflogs, config), the report, the CLI output.
"""

from __future__ import annotations

import re
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from prefect.settings import PREFECT_API_URL, temporary_settings

from agentfleet.sample import sample_plan, sample_script
from agentfleet.testing import ScriptedModelServer
from blocks import AgentBlock
from tests.e2e.conftest import AGENTFLEET, ROOT, run_agentfleet

pytestmark = pytest.mark.codex

TASKS = ("validation", "auth-strict")


def psql(database: str, sql: str) -> str:
    return subprocess.run(
        ["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", database, "-Atc", sql],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip


def files_under(folder: Path) -> list[tuple[Path, bytes]]:
    return [(p, p.read_bytes()) for p in folder.rglob("*") if p.is_file() and not p.is_symlink()]


def test_no_key_is_found_anywhere_a_sprint_wrote(
    sample, sprint_env, model: ScriptedModelServer, prefect_server, tmp_path: Path
) -> None:
    model.set_script(sample_script(delay_s=0.05))
    key = f"sk-sentinel-{uuid.uuid4().hex}"
    openai_key = f"sk-sentinel-{uuid.uuid4().hex}"
    # The model's key comes from a saved agent block the plan names, delivered in the
    # variable the scripted provider reads; the other key is the machine's own.
    block = f"sentinel-{uuid.uuid4().hex[:8]}"
    with temporary_settings({PREFECT_API_URL: prefect_server.api_url}):
        AgentBlock(api_key=key, api_key_env=model.env_key).save(block)
    env = {**sprint_env, "OPENAI_API_KEY": openai_key}
    env.pop(model.env_key)
    # A command agent that prints its whole environment (and says the key outright), with a
    # verify that does the same: its output is logged, published, persisted and reported.
    printer = {
        "id": "env-printer", "prompt": "Print the environment.", "paths": ["printed.txt"],
        "agent": {"kind": "command",
                  "run": f'env; echo "key: ${model.env_key}" >&2; echo "the key is '
                         '$OPENAI_API_KEY"; echo printed > printed.txt; echo done'},
        "verify": f'env; echo "verify sees ${model.env_key}"',
    }
    repo, plan = sample(tasks=[t for t in sample_plan()["tasks"] if t["id"] in TASKS] + [printer],
                        agent={"block": block},
                        final_verify='env; echo "final sees $OPENAI_API_KEY"; '
                                     'python3 -m unittest discover -s tests -t . -q')
    report = tmp_path / "report.json"

    # While the sprint runs, every command line on the machine is read again and again.
    running = subprocess.Popen(
        [AGENTFLEET, "run", str(plan), "--report", str(report)], env=env, cwd=ROOT,
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    seen_codex, on_command_line = False, False
    while running.poll() is None:
        for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
            try:
                data = cmdline.read_bytes()
            except OSError:
                continue
            seen_codex |= b"exec" in data and b"--json" in data
            on_command_line |= key.encode() in data or openai_key.encode() in data
        time.sleep(0.02)
    out, err = running.communicate()
    first = subprocess.CompletedProcess(running.args, running.returncode, out, err)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert seen_codex and not on_command_line
    subprocess.run(["git", "-C", str(repo), "branch", "-D", "agentfleet/orders-v2"], check=True,
                   capture_output=True)  # fmt: skip
    cached = run_agentfleet("run", str(plan), "--report", str(report), env=env)
    assert cached.returncode == 0, cached.stdout[-3000:] + cached.stderr[-3000:]
    assert "#1: cached" in cached.stdout + cached.stderr

    # The block's key was used: Codex sent it to the model, from its environment.
    assert model.requests and all(r.authorization == f"Bearer {key}" for r in model.requests)

    # Prefect writes events in batches: wait until both flow runs' ends are in the database.
    output = first.stdout + first.stderr + cached.stdout + cached.stderr
    runs = re.findall(r"/runs/flow-run/([0-9a-f-]{36})", output)
    assert len(set(runs)) == 2, output[-2000:]
    ids = ", ".join(f"'prefect.flow-run.{r}'" for r in set(runs))
    deadline = time.monotonic() + 30
    sql = (f"select count(distinct resource_id) from events where resource_id in ({ids}) "
           "and event like 'prefect.flow-run.%' and event not like '%Running'")  # fmt: skip
    while psql(prefect_server.database, sql).strip() != "2":
        assert time.monotonic() < deadline, "the runs' events never reached the database"
        time.sleep(0.3)
    assert int(psql(prefect_server.database, "select count(*) from log").strip()) > 0

    places: list[tuple[str, bytes]] = [
        ("agentfleet output", output.encode()),
        ("report", report.read_bytes()),
        ("prefect database", subprocess.run(
            ["pg_dump", "-h", "127.0.0.1", "-U", "postgres", "--data-only",
             prefect_server.database], check=True, capture_output=True).stdout),
        ("git objects", subprocess.run(
            ["git", "-C", str(repo), "cat-file", "--batch-all-objects", "--batch"],
            check=True, capture_output=True).stdout),
    ]  # fmt: skip
    results = Path(env["PREFECT_RESULTS_LOCAL_STORAGE_PATH"])
    for folder in (results, Path(env["AGENTFLEET_WORK_DIR"]), prefect_server.home, repo):
        places += [(str(p), data) for p, data in files_under(folder)]

    # The agent did print the keys: masked where agentfleet wrote them.
    assert b"the key is ****" in places[1][1] or b"the key is ****" in places[2][1]
    # The searches can see what they look for: this run's results are there, readable.
    assert any(b"def validate_order" in data for name, data in places if name.startswith(
        str(results)))
    assert any(b"agentfleet-attempts/orders-v2/auth-strict/1" in data
               for name, data in places if name == "prefect database")
    for secret in (key, openai_key):
        leaks = [name for name, data in places if secret.encode() in data]
        assert not leaks, f"{secret[:16]}... found in {leaks}"
