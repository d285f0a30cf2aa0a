"""The one exception family the CLI turns into a one-line message instead of a traceback."""


class VgglabError(Exception):
    """A problem the user can fix; the message says what was wrong and what to do."""
