"""``make bench`` keeps working: every measure runs at a tiny size (``--smoke``).

Real Codex, the scripted model, Prefect's embedded server and a running ``prefect
server`` on PostgreSQL, as the full bench uses them. Only the shape of
``results.json`` is checked, and that each measure produced a ratio: no timing is
asserted, a loaded CI machine decides those.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.__main__ import GROUPS
from tests.support.prefect_server import PrefectServer

pytestmark = [pytest.mark.codex, pytest.mark.server]

ROOT = Path(__file__).resolve().parents[2]
MACHINE_FACTS = {"date", "cores", "python", "git", "codex", "prefect", "load_average"}
ROW_KEYS = {"name", "title", "baseline_label", "baseline_s", "agentfleet_s", "ratio",
            "ratio_of", "goal", "met", "status", "notes", "details"}


@pytest.mark.timeout(900)
@pytest.mark.parametrize("group", list(GROUPS))
def test_every_measure_runs_at_smoke_size_and_gives_a_ratio(
    group: str, tmp_path: Path, prefect_server: PrefectServer
) -> None:
    # One group per test, so the suite's workers share them; the session's server
    # stands in for the bench's own (timings don't matter here).
    out = tmp_path / "results.json"
    env = {**os.environ, "BENCH_PREFECT_API_URL": prefect_server.api_url}
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--only", group, "--out", str(out),
         "--work-dir", str(tmp_path / "work")],
        cwd=ROOT, capture_output=True, text=True, timeout=850, stdin=subprocess.DEVNULL,
        env=env,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    results = json.loads(out.read_text())

    assert results["smoke"] is True and results["failed"] == {}
    assert MACHINE_FACTS <= results["machine"].keys()
    assert results["machine"]["codex"].startswith("codex-cli")
    rows = {row["name"]: row for row in results["measures"]}
    assert list(rows) == list(GROUPS[group].ROWS)
    for name, row in rows.items():
        assert row.keys() == ROW_KEYS, name
        if row["status"] == "not measurable yet":
            assert row["ratio"] is None and row["notes"], name
            continue
        assert row["status"] == "measured", name
        assert isinstance(row["ratio"], float) and row["ratio"] > 0, name
        assert isinstance(row["agentfleet_s"], float) and row["agentfleet_s"] > 0, name
        if row["goal"] != "—":
            assert isinstance(row["met"], bool), name
    if group == "gap":  # handoffs across and within the two sprints, read from the model's log
        details = rows["idle-gap-across-sprints"]["details"]
        assert details["across_s"] and details["within_s"], details
    if group == "cache":
        assert rows["cached-rerun"]["details"]["rerun_requests"] == 0
    if group == "pool":  # each run's flow-run processes, timed from their workers' logs
        details = rows["pool-speedup"]["details"]
        assert all(details[run]["process_start_s"] > 0 for run in details), details
        # Where the CPU went: the sprint's process, the rest (workers, Codex), the machine.
        assert all(0 < details[run]["cpu"]["sprint_s"] < details[run]["cpu"]["busy_s"]
                   and details[run]["cpu"]["rest_s"] > 0 for run in details), details
    # The table went to stdout, one line per row.
    for name in rows:
        assert f"\n{name} " in done.stdout, name
