"""A client of ``flows.warm`` and the job it has forked, for ``tests/unit/test_warm_engine``.

``python -m tests.support.warm_jobs``: run ``job`` in the worker's warm engine (its
preload: this module and the modules ``$WARM_PRELOAD`` names), or here, cold, printing
"cold". ``job`` writes what its process looks like to ``$WARM_OUT`` as JSON, says hello on
stdout, then does ``$WARM_DO``: ``exit:N``, ``die:SIG`` (kill itself with SIG) or ``wait``
(until SIGTERM: exit 3).
"""

from __future__ import annotations

import gc
import json
import logging
import os
import signal
import sys
import time
from pathlib import Path

from agentfleet.files import write_atomically
from flows import warm

IMPORTED_BY = os.getpid()  # in a forked job: the warm engine, which imported this module


def job() -> None:
    def terminated(_sig: int, _frame: object) -> None:
        Path(os.environ["WARM_OUT"] + ".term").write_text("TERM")
        sys.exit(3)

    signal.signal(signal.SIGTERM, terminated)
    # Whole or not at all: a test that sees the file exist reads it at once.
    write_atomically(Path(os.environ["WARM_OUT"]), json.dumps({
        "pid": os.getpid(), "group": os.getpgrp(), "cwd": os.getcwd(), "argv": sys.argv,
        "run": os.environ.get("WARM_RUN"), "engine": IMPORTED_BY, "worker": warm.worker_pid(),
        "frozen": gc.get_freeze_count(),
        # Prefect's logger, when the preload imported Prefect: configured as this
        # run's environment says.
        "prefect_level": logging.getLevelName(logging.getLogger("prefect").level)
        if "prefect" in sys.modules else None,
    }))
    print(f"hello from {os.environ.get('WARM_RUN')}", flush=True)
    what, _, arg = os.environ.get("WARM_DO", "exit:0").partition(":")
    if what == "exit":
        sys.exit(int(arg))
    if what == "die":
        os.kill(os.getpid(), int(arg))
    time.sleep(120)


if __name__ == "__main__":
    more = [name for name in os.environ.get("WARM_PRELOAD", "").split(",") if name]
    code = warm.run_warm("tests.support.warm_jobs:job", ["tests.support.warm_jobs", *more])
    if code is not None:
        sys.exit(code)
    print("cold", flush=True)
    job()
