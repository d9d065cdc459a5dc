"""The one exception type that carries a user-facing message."""


class StmaError(Exception):
    """A problem with the user's input or environment, reported as one line without a traceback.

    The message names the file (or setting) at fault and says what is wrong.
    """
