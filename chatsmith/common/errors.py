"""The one exception type that means "the user gave us something we cannot use".

The CLI prints its message as a single line and exits non-zero, without a traceback;
every other exception is a bug and keeps its traceback.
"""


class ChatsmithError(Exception):
    """A problem with the user's input, files or configuration."""
