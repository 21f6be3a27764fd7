"""Exceptions meant for people: each message names the problem and the fix."""


class GenlabError(Exception):
    """Base class of every error genlab raises on purpose. The CLI prints these as one line."""


class ConfigError(GenlabError, ValueError):
    """A config field has an unknown name or an impossible value."""


class DataError(GenlabError, ValueError):
    """Data is missing, malformed, or does not fit the model."""


class TrainingError(GenlabError, RuntimeError):
    """Training cannot go on (a non-finite loss, a run directory that cannot be resumed)."""


class ArgumentTypeError(GenlabError, TypeError):
    """An argument of the wrong kind (a model name where a model is needed, a number for a path)."""


class DataNotFoundError(DataError, FileNotFoundError):
    """No file or folder at the data path given."""


class RunError(GenlabError, ValueError):
    """A run directory is damaged, or does not hold what the command needs (weights of another
    shape, a checkpoint that is not genlab's, a config.yaml that is not a mapping)."""


class RunNotFoundError(GenlabError, FileNotFoundError):
    """No run directory (or no genlab run) at the path given."""


class TrainingWarning(UserWarning):
    """Training goes on but has gone wrong in a known way (e.g. a GAN's discriminator overpowers its
    generator). `genlab.fit` prints these above the progress bar and appends them to the run
    directory's warnings.log."""
