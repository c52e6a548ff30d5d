"""The domain package never imports Prefect: it is testable and usable without a server."""

from __future__ import annotations

import subprocess
import sys

CHECK = """
import importlib, pkgutil, sys
import agentfleet
names = [m.name for m in pkgutil.walk_packages(agentfleet.__path__, "agentfleet.")
         if ".sample.repo" not in m.name]
for name in names:
    importlib.import_module(name)
loaded = sorted(m for m in sys.modules if m == "prefect" or m.startswith("prefect."))
print(len(names), loaded[:5])
"""


def test_no_agentfleet_module_imports_prefect() -> None:
    done = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    count, loaded = done.stdout.split(" ", 1)
    assert int(count) >= 25
    assert loaded.strip() == "[]"
