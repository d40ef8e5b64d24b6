"""User-facing errors: bad config, data, model or run directory. The CLI prints one line, no traceback, and exits
with the class's exit_code (2 unless a subclass says otherwise: storage 74, busy run directory 75)."""


class UserError(Exception):
    """An error the user can fix by editing a file or a flag; printed as one line."""

    exit_code = 2


class ConfigError(UserError):
    """A config key is unknown, has the wrong type, or an invalid value."""


class LoadError(UserError):
    """A model or tokenizer the config names cannot be loaded (no such directory, hub id not cached offline)."""


class DataError(UserError):
    """A data file is missing, malformed, empty, or holds a value the task cannot use."""

    def __init__(self, path, line, message):
        where = f"{path}:{line}" if line else str(path)
        super().__init__(f"{where}: {message}")
