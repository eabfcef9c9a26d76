"""radtrace: chest X-ray draft reports from a reasoning VLM, with an immutable audit trail."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("radtrace")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
