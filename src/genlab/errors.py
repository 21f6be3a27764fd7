"""Exceptions meant for people: each message names the problem and the fix."""


class GenlabError(Exception):
    """Base class of every error genlab raises on purpose. The CLI prints these as one line."""


class ConfigError(GenlabError, ValueError):
    """A config field has an unknown name or an impossible value."""


class DataError(GenlabError, ValueError):
    """Data is missing, malformed, or does not fit the model."""


class TrainingError(GenlabError, RuntimeError):
    """Training cannot go on (a non-finite loss, a run directory that cannot be resumed)."""


class TrainingWarning(UserWarning):
    """Training goes on but has gone wrong in a known way (e.g. a GAN's discriminator overpowers its
    generator). `genlab.fit` prints these above the progress bar and appends them to the run
    directory's warnings.log."""
