"""The one exception family the CLI turns into a one-line message instead of a traceback."""


class VgglabError(Exception):
    """A problem the user can fix; the message says what was wrong and what to do."""


class Terminated(KeyboardInterrupt):
    """A stop asked for by a signal other than Ctrl-C (SIGTERM from ``timeout``, docker, systemd or a
    batch scheduler; SIGHUP from a closed terminal). A KeyboardInterrupt, so that everything that
    cleans up after Ctrl-C (temporary files, the run lock, the tracked run) does the same for it."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum
