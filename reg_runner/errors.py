"""User-facing errors: one line naming the key, the value and what is allowed.

Anything a user can get wrong (a config value, a data folder, a resume path) raises
``UserError``; the CLI prints its message on one line and exits with ``EXIT_USER_ERROR``.
Every other exception is a bug in reg_runner and keeps its traceback.
"""

EXIT_USER_ERROR = 2


class UserError(Exception):
    """A mistake the user can fix; the message says what to do."""


class ConfigError(UserError):
    def __init__(self, key: str, value, allowed: str):
        self.key, self.value, self.allowed = key, value, allowed
        super().__init__(f"{key}={value!r} is not allowed: {allowed}")


class DataError(UserError):
    """Data that is missing, unreadable or not what it claims to be."""
