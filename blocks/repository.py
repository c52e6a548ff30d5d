"""The ``agentfleet-repository`` Block: where a repository lives, and its token."""

from __future__ import annotations

from collections.abc import Mapping

from prefect.blocks.core import Block
from pydantic import ConfigDict, Field, SecretStr, model_validator

from agentfleet.block_refs import REPOSITORY_BLOCK_TYPE, RepositorySource
from agentfleet.git_credentials import DEFAULT_TOKEN_USER, credential_env, credential_secrets

_FIELDS = RepositorySource.model_fields


class RepositoryBlock(Block):
    """A git repository for agentfleet: a folder on the worker or a git URL, its base
    branch, and for a URL an optional token.

    A plan names it as `repo: {block: NAME}`; the plan's own `base` overrides
    `base_branch`. The token is never written into a URL, a file or a log: git gets it
    as an HTTP header through its environment (`git_env`).
    """

    # A validation error must not print the input: it holds the secret in clear.
    model_config = ConfigDict(hide_input_in_errors=True)

    _block_type_name = "agentfleet repository"
    _block_type_slug = REPOSITORY_BLOCK_TYPE
    _description = (
        "A git repository for agentfleet sprints: a local path or a git URL, the base "
        "branch, and for an https URL an optional access token (stored encrypted)."
    )

    path: str | None = Field(None, description=_FIELDS["path"].description)
    url: str | None = Field(None, description=_FIELDS["url"].description)
    base_branch: str | None = Field(None, description=_FIELDS["base_branch"].description)
    token: SecretStr | None = Field(
        None,
        description="An access token for an https `url`, stored encrypted; git receives it "
        "as an Authorization header scoped to the URL's host.",
    )
    token_username: str = Field(
        DEFAULT_TOKEN_USER,
        description="The user name sent with the token (Basic auth); GitHub ignores it, "
        "GitLab accepts any, Bitbucket wants `x-token-auth`.",
    )

    @model_validator(mode="after")
    def _converts(self) -> RepositoryBlock:
        self.to_source()
        return self

    def _has_token(self) -> bool:
        return self.token is not None and bool(self.token.get_secret_value())

    def to_source(self) -> RepositorySource:
        """The block as plain data for ``agentfleet.block_refs``: everything but the token."""
        return RepositorySource(
            path=self.path or None,
            url=self.url or None,
            base_branch=self.base_branch or None,
            has_token=self._has_token(),
        )

    def git_env(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """Variables to lay over ``base`` for git to reach ``url`` with the token (unwrapped now).

        For git's own clone, fetch and push only, never an agent's environment; {} when
        the block has no token.
        """
        if not self._has_token() or self.url is None:
            return {}
        assert self.token is not None
        return credential_env(
            self.url, self.token.get_secret_value(), username=self.token_username, base=base
        )

    def secret_values(self) -> list[str]:
        """What to mask in git's output while ``git_env`` is in use."""
        if not self._has_token():
            return []
        assert self.token is not None
        return credential_secrets(self.token.get_secret_value(), self.token_username)
