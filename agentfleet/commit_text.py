"""Commit messages agentfleet writes for an attempt: its own words first, the agent's last.

An agent's output is not a commit message: it may hold a secret it printed, or be
megabytes long, and a commit keeps it forever. So the subject names the task and the
attempt, the first paragraph is agentfleet's summary of the change (the diffstat's
summary line), and the agent's final message follows only masked and cut short.
"""

from __future__ import annotations

from agentfleet.masking import Masker

# The most of an agent's final message a commit body carries, in bytes of UTF-8.
NOTE_LIMIT = 2048


def change_summary(diffstat: str) -> str:
    """The summary line of a ``git diff --stat`` ("2 files changed, 3 insertions(+)")."""
    lines = [line.strip() for line in diffstat.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no file changed"


def agent_note(final_message: str | None, masker: Masker) -> str:
    """The agent's final message for a commit body: secrets masked, then cut to 2 KB."""
    # Masked before cutting: a cut through a secret would leave its start unmasked.
    text = masker((final_message or "").replace("\0", "")).strip()
    data = text.encode("utf-8", "surrogateescape")
    if len(data) <= NOTE_LIMIT:
        return text
    kept = data[:NOTE_LIMIT].decode("utf-8", "ignore").rstrip()
    return f"{kept}\n[... {len(data) - NOTE_LIMIT} more bytes of the agent's message left out]"


def attempt_message(
    task_id: str, attempt: int, diffstat: str, final_message: str | None, masker: Masker
) -> str:
    """The message of an attempt's commit on its branch."""
    text = f"agentfleet: {task_id} (attempt {attempt})\n\n{change_summary(diffstat)}"
    note = agent_note(final_message, masker)
    if note:
        text += "\n\nThe agent's final message:\n\n" + note
    return text
