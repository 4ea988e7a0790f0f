"""The one exception type for user mistakes: the CLI prints its message without a traceback."""


class CftError(ValueError):
    """Bad input from the user: a wrong argument, file or field. The message says what to fix."""


class FieldError(CftError):
    """A bad value of one config field, raised by a config's own checks: `from_dict` prefixes where the config
    sits ("data.concepts") so the message names the field as the user writes it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field} {message}")
        self.field, self.message = field, message
