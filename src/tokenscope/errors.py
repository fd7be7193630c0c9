"""The one error type for failures a user can cause and fix: bad config, input, model or device.

Rule scripts print a TokenscopeError as one line (the key, file, line or model it names) and let
every other exception show its traceback, since those are bugs.
"""

from __future__ import annotations


class TokenscopeError(Exception):
    """A failure the user can fix; the message is one line naming the key, file, line or model."""


class ConfigError(TokenscopeError):
    """A config value is invalid; the message names the key."""


class PromptSetError(TokenscopeError):
    """A prompt set file is malformed; the message names the file and the line."""


class ModelError(TokenscopeError):
    """A model cannot be resolved, loaded or run as configured; the message names the model."""


class TokenizerMismatchError(TokenscopeError):
    """Models compared token by token have different tokenizers; the message names both."""


class ResultFileError(TokenscopeError):
    """A results file an earlier run wrote no longer fits (another schema, missing columns); the
    message names the file and the job that rewrites it."""
