"""Errors that the command-line tools report as one line (file and problem), not a traceback."""


class VoxsegError(Exception):
    """Base class: a problem with the user's input, worth one clear line."""


class ConfigError(VoxsegError):
    """A config file or override is wrong: unknown key, wrong type, bad YAML, missing file."""


class DataFormatError(VoxsegError):
    """A dataset file is malformed: truncated .bin, label count mismatch, NaN coordinates..."""
