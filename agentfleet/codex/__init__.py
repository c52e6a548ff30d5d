"""What agentfleet knows of the Codex CLI (0.169), apart from running processes.

- ``cli.py``: finding ``codex``, its ``exec --json`` command line, its home folder and
  session files;
- ``events.py``: its JSON event stream, typed and parsed line by line;
- ``outcome.py``: how an attempt ended, named from Codex's own words, and its usage;
- ``lines.py``: its events as one readable log line each.

``agentfleet/agents.py`` runs it (and command agents) as a process.
"""
