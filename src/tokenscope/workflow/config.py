"""DAG-time config handling (torch-free): one-line messages for schema violations."""

from __future__ import annotations

import re


def config_error_message(error: Exception) -> str:
    """One line naming the config key from snakemake.utils.validate's jsonschema error."""
    cause = error.__cause__ or error.__context__
    path = getattr(cause, "absolute_path", None)
    message = getattr(cause, "message", None)
    if message is None:
        text = str(error)
        match = re.search(r"ValidationError: (.*?)(?:\n|$)", text)
        return f"invalid config: {match.group(1) if match else text.splitlines()[0]}"
    key = ".".join(str(p) for p in path) if path else "(top level)"
    if getattr(cause, "validator", None) == "additionalProperties":
        unknown = re.findall(r"'([^']+)' was unexpected", message)
        if unknown:
            prefix = f"{key}." if path else ""
            return f"invalid config: unknown key {', '.join(prefix + u for u in unknown)}"
    schema = getattr(cause, "schema", None)
    if getattr(cause, "validator", None) == "pattern" and isinstance(schema, dict) and schema.get("description"):
        # A regular expression is no answer to a user: the key's description lists the values.
        return f"invalid config at {key}: {getattr(cause, 'instance', None)!r} is not {schema['description']}"
    return f"invalid config at {key}: {message}"
