"""What a `bertpipe` process prints: the project's own lines at INFO, the engines' (Beam, DeepSpeed, MLflow,
transformers) at WARNING, known third-party noise not at all, and no progress bars from the engines. With
`--verbose` or BERTPIPE_VERBOSE=1 everything is shown at DEBUG.

The settings that must reach the processes a job starts (DeepSpeed's ranks, Beam's workers, MLflow's
uploads) travel as environment variables, which those processes inherit."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import warnings
from collections.abc import Iterator

OWN_LOGGERS = ("pipeline", "preprocessing", "model")
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# For the engines that configure their own logging, and their progress bars (in a log file each bar is one
# long line of carriage returns).
QUIET_ENVIRONMENT = {
    "MLFLOW_LOGGING_LEVEL": "WARNING",  # MLflow sets its own loggers' level from this when it is imported
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "BERTPIPE_QUIET_ENGINES": "1",  # read by the Beam workers (preprocessing.beam_worker)
}
# Warnings about the engines' own internals, which a user can do nothing about (message regex, category).
KNOWN_NOISE = (
    (r".*`torch\.distributed\.all_gather_into_tensor` is deprecated", FutureWarning),
    (r".*`torch\.distributed\.reduce_scatter_tensor` is deprecated", FutureWarning),
    (r".*The 'noload' loader strategy is deprecated", Warning),
)
# Log messages of the same kind (logger prefix, message text).
KNOWN_NOISE_LOGS = (
    ("", "apitools not found"),  # Beam without its GCP extras, which local runs do not need
    ("apache_beam", "No semi_persistent_directory found"),
    ("apache_beam", "If direct_num_workers is not equal to 1"),
)


def verbose_requested(flag: bool = False) -> bool:
    return flag or os.environ.get("BERTPIPE_VERBOSE", "") not in ("", "0")


class KnownNoise(logging.Filter):
    """Drops the known noise, also where Beam relays a worker's record to the job (inside a longer message)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(record.name.startswith(prefix) and text in message for prefix, text in KNOWN_NOISE_LOGS)


def quiet_engines() -> None:
    """Engine loggers at WARNING, the known noise filtered, in this process and (by the environment) in the
    processes it starts. Also what a Beam worker calls for itself."""
    for name, value in QUIET_ENVIRONMENT.items():
        os.environ.setdefault(name, value)
    logging.getLogger().setLevel(logging.WARNING)
    for name in OWN_LOGGERS:
        logging.getLogger(name).setLevel(logging.INFO)
    # Beam's worker harness sets the root logger to INFO while it starts; its own loggers stay quiet.
    for name in ("apache_beam", "DeepSpeed", "mlflow", "alembic", "urllib3", "transformers", "torch"):
        logging.getLogger(name).setLevel(logging.WARNING)
    noise = KnownNoise()
    logging.getLogger().addFilter(noise)  # records logged on the root logger itself
    for handler in logging.getLogger().handlers:
        handler.addFilter(noise)  # and everything that propagates to its handlers
    for message, category in KNOWN_NOISE:
        warnings.filterwarnings("ignore", message=message, category=category)


def configure(verbose: bool = False) -> None:
    """The logging of a `bertpipe` process; call before the engines are imported."""
    verbose = verbose_requested(verbose)
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format=FORMAT)
    if verbose:
        os.environ["BERTPIPE_VERBOSE"] = "1"  # the ranks and workers this process starts
        return
    quiet_engines()


PHASES = logging.getLogger("pipeline.phase")


def announce(message: str) -> None:
    """What a run starts doing next, said once (by rank 0) before it begins it: no silent minutes. The demo
    echoes these lines (logger `pipeline.phase`) while a step runs."""
    if os.environ.get("RANK", "0") == "0":
        PHASES.info("%s", message)


@contextlib.contextmanager
def prints_to_debug(logger: logging.Logger) -> Iterator[None]:
    """What an engine prints (stdout and stderr: steps of its work, progress bars) while the block runs goes to
    `logger` at DEBUG instead of the output."""
    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(printed):
            yield
    finally:
        if printed.getvalue().strip():
            logger.debug("%s", printed.getvalue().strip())
