"""The one exception type for user mistakes: the CLI prints its message without a traceback."""


class CftError(ValueError):
    """Bad input from the user: a wrong argument, file or field. The message says what to fix."""
