"""Prefect Blocks: configuration shared between runs or secret (agent profiles with their
API keys, repository credentials). A Block only validates and converts to a plain domain
model; it never runs workflow logic. None yet: per-machine settings live in
``agentfleet.settings``, and secrets reach agents through their environment.
"""
