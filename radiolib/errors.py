"""Exceptions the study raises for bad input, so callers can catch the study's own errors."""


class RadiolibError(Exception):
    """Base class of radiolib's errors."""


class CohortError(RadiolibError, ValueError):
    """Input data is missing or malformed; the message names the patient and the file."""


class TrainingError(RadiolibError, RuntimeError):
    """Training cannot go on (a non-finite loss, an unusable checkpoint)."""


class StaleRunError(TrainingError):
    """A run folder holds a checkpoint made with other settings or other data."""


class OutputError(RadiolibError, ValueError):
    """An output path cannot be written without damaging what is already there."""


class MissingRunError(TrainingError):
    """A trained run that an analysis reads is missing, unfinished or made with other settings;
    the message names the run and what trains it."""


class SynthesisError(RadiolibError, ValueError):
    """A synthesis request cannot be served; the message names the input that is wrong."""
