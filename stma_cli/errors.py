"""The exception types the command line turns into one line on stderr."""


class StmaError(Exception):
    """A problem with the user's input or environment, reported as one line without a traceback.

    The message names the file (or setting) at fault and says what is wrong. The command exits 1.
    """


class UsageError(StmaError):
    """A bad option value, or one that this machine or dataset cannot honour (`--device cuda` without CUDA,
    `--sequences` naming no sequence): the command exits 2, as for Typer's own usage errors."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (from SLURM, `timeout`, docker, Kubernetes), raised in the main thread of the command line.

    It is a KeyboardInterrupt, so every clean-up that Ctrl-C runs runs for it too.
    """
