"""Errors a user can fix. ``merc`` prints a :class:`MercError` as one line (exit 2); anything else is a bug
and raises with its traceback.

Each kind also derives from the built-in exception it refines (``InputError`` is a ``ValueError``,
``MissingFileError`` a ``FileNotFoundError``, …), so ``except ValueError`` in callers keeps working.
Messages name what is wrong (file, line, value) and what to do about it.
"""
from __future__ import annotations


class MercError(Exception):
    """Base class: something the user can fix (bad input, missing package, incompatible run, …)."""


class InputError(MercError, ValueError):
    """A corpus, transcript, label or media file that cannot be read as given (file, line, value named)."""


class ConfigError(MercError, ValueError):
    """An option or combination of options that cannot work (e.g. an unknown encoder or modality)."""


class MissingFileError(MercError, FileNotFoundError):
    """A file or folder the user pointed at does not exist."""


class OutputExistsError(MercError, FileExistsError):
    """An output that would be overwritten without being asked to (``--overwrite`` / ``--resume``)."""


class MissingDependencyError(MercError, ImportError):
    """An optional package (or model weights) needed for the requested feature is not installed."""


class IncompatibleRunError(MercError, ValueError):
    """A run directory that is damaged or does not fit the data / encoders it is used with."""


# Why an encoder cannot use one utterance's input: the only exceptions a stage-1 encoder turns into an absent row
# (with the message as its reason); anything else it raises is a bug and propagates with its traceback.


class UnusableInput(InputError):
    """An utterance's input an encoder cannot use, for an expected reason (one of the subclasses)."""


class MissingMedia(UnusableInput):
    """No media path, or the file is missing or empty."""


class CorruptMedia(UnusableInput):
    """The file cannot be decoded (truncated, wrong format, unknown duration, …)."""


class NoAudioStream(UnusableInput):
    """The file has no audio stream, or no audio samples in the requested segment."""


class TooLittleSpeech(UnusableInput):
    """Too little audio to measure (shorter than the encoder's minimum)."""


class NoFace(UnusableInput):
    """No (usable) face: none detected, too small, a blank image, no speaker track from QC."""


class NonFiniteFeatures(UnusableInput):
    """The encoder gave NaN or infinite values for this input (e.g. functionals of near-silent audio)."""


__all__ = ["MercError", "InputError", "ConfigError", "MissingFileError", "OutputExistsError",
           "MissingDependencyError", "IncompatibleRunError", "UnusableInput", "MissingMedia", "CorruptMedia",
           "NoAudioStream", "TooLittleSpeech", "NoFace", "NonFiniteFeatures", "an"]


def an(word: str) -> str:
    """``word`` with its indefinite article, for messages: "an audio", "a face"."""
    return f"{'an' if str(word)[:1].lower() in 'aeio' else 'a'} {word}"
