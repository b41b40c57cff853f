"""Build DeepSpeed's CPU shared-memory communication op ahead of a multi-rank CPU run.

DeepSpeed compiles it when the first rank initialises its communication; several ranks compiling
into the same cache at once can fail, so the launcher builds it once first (`python -m pipeline.training.cpu_ops`).
A later build finds it in the torch extensions cache and returns at once.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

# A build of the op takes a minute or two; a lock file this old was left by a build that was killed (Ctrl-C, a
# timeout), and torch would wait on it for ever.
STALE_LOCK_S = 15 * 60


def remove_stale_lock(build_directory: Path, max_age_s: float = STALE_LOCK_S) -> bool:
    """Delete the build directory's lock file when it is older than `max_age_s`; True when one was deleted."""
    lock = build_directory / "lock"
    try:
        age = time.time() - lock.stat().st_mtime
    except FileNotFoundError:
        return False
    if age < max_age_s:
        return False
    print(
        f"removing {lock}, left {age / 60:.0f} minutes ago by a build of DeepSpeed's CPU communication op that did "
        f"not finish",
        file=sys.stderr,
        flush=True,
    )
    lock.unlink(missing_ok=True)
    return True


def build_shared_memory_op() -> bool:
    """True when the op is available (built now or before); False where DeepSpeed does not offer it."""
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    import deepspeed.ops
    from deepspeed.accelerator import get_accelerator

    builder = get_accelerator().create_op_builder("ShareMemCommBuilder")
    if builder is None or not deepspeed.ops.__compatible_ops__.get(builder.NAME, False):
        return False
    from torch.utils.cpp_extension import _get_build_directory

    build_directory = Path(_get_build_directory(builder.name, verbose=False))
    remove_stale_lock(build_directory)
    if not (build_directory / f"{builder.name}.so").exists():
        print(
            "building DeepSpeed's CPU communication op (once per machine; a minute or more on a small one)",
            file=sys.stderr,
            flush=True,
        )
    builder.load(verbose=False)
    return True


if __name__ == "__main__":
    build_shared_memory_op()
