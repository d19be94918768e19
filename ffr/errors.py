"""The one exception type for user mistakes.

Anything a user can get wrong (a config value, a path, a name) raises :class:`FFRError` with a message
that names the bad value and what was expected. The CLI prints it as a single line and exits 2; every
other exception is a bug and keeps its traceback.
"""


class FFRError(ValueError):
    """A user-facing error: bad config value, unknown registry name, missing or corrupt input."""
