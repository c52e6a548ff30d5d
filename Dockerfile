# The image a Docker or Kubernetes work pool runs agentfleet's flow runs in (README,
# "Attempts on many workers"): agentfleet with its Python packages, git, and the Codex CLI
# pinned in package.json. From this checkout:
#   docker build -t agentfleet-worker .
# BASE: any Debian bookworm image with Python 3.11 or newer and its venv module.
ARG BASE=python:3.11-slim-bookworm
FROM ${BASE}

# git for the worktrees, the fetch and the push; Node.js and npm only to install Codex
# (agentfleet starts Codex's own binary, not npm's launcher); ssh for git@ remotes.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      ca-certificates git openssh-client nodejs npm \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/agentfleet
# The dependencies first: a change to agentfleet's code rebuilds only the last layers.
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund --loglevel=error
COPY pyproject.toml README.md ./
COPY agentfleet agentfleet
COPY flows flows
COPY tasks tasks
COPY blocks blocks
# Editable, as `make setup` installs it: agentfleet finds Codex in this folder's
# node_modules, and the deployments' entrypoints (flows.attempt.attempt, ...) import from it.
RUN python3 -m venv .venv \
 && .venv/bin/pip install --no-cache-dir --quiet -e . \
 && .venv/bin/python -m compileall -q agentfleet flows tasks blocks

# The deployments' command (`python -m flows.engine`) runs agentfleet's Python.
ENV PATH=/opt/agentfleet/.venv/bin:$PATH \
    AGENTFLEET_WORK_DIR=/var/lib/agentfleet
# Runs as root by default; give the pool's job template a user of your own where that matters.
CMD ["agentfleet", "--help"]
