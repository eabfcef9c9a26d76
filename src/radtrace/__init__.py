"""radtrace: chest X-ray draft reports from a reasoning VLM, with an immutable audit trail."""

from __future__ import annotations

__all__ = ["__version__"]


def __getattr__(name: str) -> str:
    """``radtrace.__version__``, looked up on first use.

    Not at import: importlib.metadata costs tens of milliseconds, and the ``radtrace`` console script imports this
    package before anything can turn Ctrl-C into one line (:mod:`radtrace.cli.interrupt`).
    """
    if name != "__version__":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib.metadata import PackageNotFoundError, version

    try:
        found = version("radtrace")
    except PackageNotFoundError:  # running from a source tree without an install
        found = "0.0.0+unknown"
    globals()["__version__"] = found
    return found
