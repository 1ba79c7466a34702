"""The one exception root of the toolkit, and its family.

Every error the toolkit raises on purpose is a :class:`ZorError`. Catch that to
catch them all; catch a subclass to handle one kind. Errors about bad values also
derive from :class:`ValueError` (bad types from :class:`TypeError`, missing files
from :class:`FileNotFoundError`), so generic handlers keep working.

Each class carries the exit code a command-line tool ends with when it stops on that
error (``exit_code``, as click does): 2 for a usage error, something the user can fix
in what they passed (a bad value, a missing or foreign file, an unknown device, an
unwritable output); 1 for a failure of the work itself (a verification or
quantization past its budget, an unsupported layer). :func:`zor.common.cli.cli_errors`
applies the rule in every CLI.

This module imports nothing: the engine, the exporter, the runtime and the device
profiles all raise from it, on machines with and without torch.

Hierarchy (exit code)::

    ZorError                                     1
    ├── ConfigError            (ValueError)      2  a layer or network configuration is invalid
    ├── InputError             (ValueError)      2  data handed to a model is wrong
    │   ├── ShapeError                           2  wrong rank or width, missing input name
    │   ├── DTypeError         (TypeError)       2  wrong element type
    │   └── NonFiniteError                       2  NaN or inf values
    ├── CheckpointError        (ValueError)      2  a checkpoint is missing, truncated or foreign
    │   └── FormatVersionError                   2  written by a newer, unknown format version
    ├── DataError              (ValueError)      2  a data set is corrupt or malformed
    │   └── DataNotFoundError  (FileNotFoundError) 2  a data set is not on this machine
    ├── ExportError                              1  export to ONNX failed
    │   ├── UnsupportedLayerError                1  no converter for a layer kind
    │   ├── VerificationError                    1  ONNX output differs from the engine past tolerance
    │   └── QuantizationError                    1  int8 drops the task metric past the budget
    ├── ModelFileError         (ValueError)      2  a file is not ONNX, truncated, or not a Zor export
    │   └── WeightFileError                      2  external weights missing, short or changed
    ├── DeviceError            (ValueError)      2  unknown device profile or a profile it cannot use
    ├── StateError                               2  a stream used with a stateless model, or state misuse
    ├── OutputPathError        (OSError)         2  an output file cannot be written (missing folder, ...)
    └── DistributedError                         1  a data-parallel run lost a rank or timed out

    ZorWarning                 (UserWarning) not an error: a setting that will likely train badly
"""

from __future__ import annotations

__all__ = [
    "ZorError",
    "ConfigError",
    "InputError",
    "ShapeError",
    "DTypeError",
    "NonFiniteError",
    "CheckpointError",
    "FormatVersionError",
    "DataError",
    "DataNotFoundError",
    "ExportError",
    "UnsupportedLayerError",
    "NirGraphError",
    "VerificationError",
    "QuantizationError",
    "ModelFileError",
    "WeightFileError",
    "DeviceError",
    "StateError",
    "OutputPathError",
    "DistributedError",
    "LearningDivergedError",
    "UnsupportedLearnableError",
    "ZorWarning",
]


class ZorError(Exception):
    """Root of every error the toolkit raises on purpose."""

    exit_code: int = 1          # a failure of the work itself; usage errors override it with 2


class ConfigError(ZorError, ValueError):
    """A layer or network configuration is invalid (e.g. an empty layer list)."""

    exit_code = 2


class InputError(ZorError, ValueError):
    """Data handed to a model does not fit it."""

    exit_code = 2


class ShapeError(InputError):
    """An input has the wrong rank or width, or a named input is missing."""


class DTypeError(InputError, TypeError):
    """An input has the wrong element type."""


class NonFiniteError(InputError):
    """An input holds NaN or infinite values."""


class CheckpointError(ZorError, ValueError):
    """A checkpoint is missing, truncated, foreign or inconsistent."""

    exit_code = 2


class FormatVersionError(CheckpointError):
    """A file was written by a newer format version than this code reads."""


class DataError(ZorError, ValueError):
    """A data set is corrupt or malformed."""

    exit_code = 2


class DataNotFoundError(DataError, FileNotFoundError):
    """A data set is not on this machine; the message says how to get it."""


class ExportError(ZorError):
    """Export to ONNX failed."""


class UnsupportedLayerError(ExportError):
    """No converter is registered for a layer kind."""


class NirGraphError(ExportError, ValueError):
    """A NIR graph that cannot be imported: unreadable file, unknown node type, missing or non-finite
    parameters, shapes that do not meet along an edge, dangling edges, dt ≤ 0."""

    exit_code = 2


class VerificationError(ExportError):
    """The exported graph's outputs differ from the engine's past tolerance.

    ``report`` holds the full verification report (a dict) when there is one.
    """

    def __init__(self, message: str, report: dict | None = None) -> None:
        super().__init__(message)
        self.report = report


class QuantizationError(ExportError):
    """Quantization would drop the task metric past the allowed budget."""

    def __init__(self, message: str, report: dict | None = None) -> None:
        super().__init__(message)
        self.report = report


class ModelFileError(ZorError, ValueError):
    """A model file is not ONNX, is truncated, or is not a Zor export."""

    exit_code = 2


class WeightFileError(ModelFileError):
    """A model's external weight file is missing, too short, or changed under it."""


class DeviceError(ZorError, ValueError):
    """An unknown device profile name, or a profile that cannot be used here."""

    exit_code = 2


class StateError(ZorError):
    """State misuse: a stream on a stateless model, or state of the wrong shape."""

    exit_code = 2


class OutputPathError(ZorError, OSError):
    """An output file cannot be written: its folder is missing or not writable."""

    exit_code = 2


class DistributedError(ZorError):
    """A data-parallel run failed in a collective: another rank died or did not answer in time."""


class LearningDivergedError(ZorError):
    """On-device learning produced non-finite weights: the step was refused, the last good state kept.

    Exit 2: what the user passed (data out of scale, the model's baked learning rate) drove it there."""

    exit_code = 2


class UnsupportedLearnableError(UnsupportedLayerError):
    """``--learnable`` asked of a layer kind or setting the learning-step graph cannot express (bad input)."""

    exit_code = 2


class ZorWarning(UserWarning):
    """A setting that works but will likely train badly (e.g. a forward signal that dies out)."""
