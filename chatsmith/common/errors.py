"""The one exception type that means "the user gave us something we cannot use".

The CLI prints its message as a single line and exits non-zero, without a traceback;
every other exception is a bug and keeps its traceback.
"""

import sys


class ChatsmithError(Exception):
    """A problem with the user's input, files or configuration."""


def print_error(e: ChatsmithError) -> int:
    """The one-line form every command prints for a user's mistake; returns the exit code."""
    print(f"chatsmith: error: {e}", file=sys.stderr)
    return 2
