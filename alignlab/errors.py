"""Every error alignlab raises on purpose, in one torch-free module: the CLI turns each into a one-line
message and an exit code instead of a traceback. Each message names the file, line or key and the fix."""
from __future__ import annotations


class ConfigError(ValueError):
    """A config that cannot run: unknown key, bad value, sizes that do not divide, a missing dependency."""


class DataError(ValueError):
    """Bad input data; the message names the file and line and says what to do."""


class TrainingDiverged(RuntimeError):
    """The loss or gradient became NaN/inf; nothing was saved from the bad step."""


class CheckpointError(RuntimeError):
    """A checkpoint could not be written or read; the message says which and what is intact."""


class WatchdogStop(TrainingDiverged):
    """A training.watchdog check fired with action=stop; the message names the check and what it saw."""


class AnalysisError(ValueError):
    """Bad input to an analysis command: the message names what is wrong and the fix."""
