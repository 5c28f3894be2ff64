"""Errors a user can act on.

Anything raised as a TalkerError is printed as one line (no traceback) by the CLI and
exits non-zero; the message must say what was wrong and what to do about it.
"""


class TalkerError(Exception):
    """A problem the user can fix: bad input, missing engine, wrong config."""


class InputError(TalkerError):
    """A portrait, audio file or text that cannot be used."""


class EngineUnavailable(TalkerError):
    """An engine named in config cannot run on this machine (doctor says why)."""


class ServiceDown(EngineUnavailable):
    """A remote engine's server cannot be reached at all (refused, timed out): an outage that
    passes, not an error in the request. Whoever waits on it should wait, not give up."""


class ConfigError(TalkerError):
    """config.toml is invalid; the message names the file and line."""
