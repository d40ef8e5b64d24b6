"""User-facing errors: bad config or bad data. The CLI turns them into exit code 2 and one line, no traceback."""


class UserError(Exception):
    """An error the user can fix by editing a file or a flag; printed as one line."""

    exit_code = 2


class ConfigError(UserError):
    """A config key is unknown, has the wrong type, or an invalid value."""


class DataError(UserError):
    """A data file is missing, malformed, empty, or holds a value the task cannot use."""

    def __init__(self, path, line, message):
        where = f"{path}:{line}" if line else str(path)
        super().__init__(f"{where}: {message}")
