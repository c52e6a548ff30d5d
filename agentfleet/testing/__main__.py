"""Run the scripted model server standalone until SIGTERM or SIGINT.

    python -m agentfleet.testing --script demo.yaml --codex-home DIR [--port 0] [--log FILE.jsonl]

Prints the base URL on the first line, then the environment a Codex process
needs (``NAME=value`` lines), so a caller can read them from the pipe.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

from agentfleet.testing.script import Script
from agentfleet.testing.server import ScriptedModelServer


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, serve, and return the exit status."""
    parser = argparse.ArgumentParser(prog="python -m agentfleet.testing", description=__doc__)
    parser.add_argument("--script", type=Path, required=True, help="the script (.yaml or .json)")
    parser.add_argument("--codex-home", type=Path, required=True, help="where to write config.toml")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--log", type=Path, help="append one JSON line per finished request")
    parser.add_argument("--log-bodies", action="store_true", help="include request bodies in --log")
    parser.add_argument("--model", default="gpt-5.5")
    parser.add_argument("--request-max-retries", type=int)
    parser.add_argument("--stream-max-retries", type=int)
    parser.add_argument("--stream-idle-timeout-ms", type=int)
    args = parser.parse_args(argv)

    try:
        script = Script.from_file(args.script)
    except (OSError, ValueError) as exc:
        print(f"error: cannot load {args.script}: {exc}", file=sys.stderr)
        return 2
    server = ScriptedModelServer(
        script, args.host, args.port, log_path=args.log, log_bodies=args.log_bodies
    ).start()
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    try:
        home = server.write_codex_home(
            args.codex_home,
            model=args.model,
            request_max_retries=args.request_max_retries,
            stream_max_retries=args.stream_max_retries,
            stream_idle_timeout_ms=args.stream_idle_timeout_ms,
        )
        print(server.base_url)
        for name, value in server.agent_env(home).items():
            print(f"{name}={value}")
        sys.stdout.flush()
        stop.wait()
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
