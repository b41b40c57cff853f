"""Build DeepSpeed's CPU shared-memory communication op ahead of a multi-rank CPU run.

DeepSpeed compiles it when the first rank initialises its communication; several ranks compiling
into the same cache at once can fail, so the launcher builds it once first (`python -m pipeline.training.cpu_ops`).
A later build finds it in the torch extensions cache and returns at once, but only after importing DeepSpeed
(seconds on a small machine, at every launch): so each build also leaves a stamp naming this Python, the
versions and the library it built, and the launcher skips the step while the stamp still describes the
library on disk (`built_before`).

torch builds extensions into one directory per Python version by default, shared by every environment of the
machine; an op built by one environment (whose paths are in the compiler's command line) is built again by the
next one, for a minute at each switch, and replaced under the runs of the other. CPU runs here build into a
directory of their environment's own instead (`extensions_directory`), unless TORCH_EXTENSIONS_DIR names one.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from collections.abc import Mapping, MutableMapping
from importlib import metadata
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


def cache_directory(env: Mapping[str, str]) -> Path:
    return Path(env.get("XDG_CACHE_HOME") or str(Path(env.get("HOME") or Path.home()) / ".cache"))


def stamp_path(env: Mapping[str, str]) -> Path:
    return cache_directory(env) / "bertpipe" / "deepspeed_cpu_op.json"


def extensions_directory(env: Mapping[str, str]) -> str:
    """TORCH_EXTENSIONS_DIR when set, else a directory of this Python environment's own (named after a digest of
    its prefix) in the user's cache."""
    if env.get("TORCH_EXTENSIONS_DIR"):
        return env["TORCH_EXTENSIONS_DIR"]
    digest = hashlib.sha256(sys.prefix.encode()).hexdigest()[:12]
    return str(cache_directory(env) / "torch_extensions" / f"bertpipe-{digest}")


def use_own_extensions_directory(env: MutableMapping[str, str]) -> None:
    """Points torch's extension builds of this process (with os.environ) at `extensions_directory`. Each rank
    and the build step call it themselves, rather than the launcher for them, so that a rank on another node
    finds the directory of its own environment there."""
    env["TORCH_EXTENSIONS_DIR"] = extensions_directory(env)


def build_identity(env: Mapping[str, str]) -> dict[str, str]:
    """What the op's build depends on, as far as the launcher can tell without importing torch: the environment
    prefix (its paths are in the compiler's command line), the versions, and where the extensions are cached."""
    return {
        "prefix": sys.prefix,
        "torch": metadata.version("torch"),
        "deepspeed": metadata.version("deepspeed"),
        "torch_extensions_dir": extensions_directory(env),
    }


def built_before(env: Mapping[str, str]) -> bool:
    """True when the last build from this environment left the library that is on disk now: unchanged since
    (same modification time), so no other environment rebuilt it in between."""
    try:
        stamp = json.loads(stamp_path(env).read_text(encoding="utf-8"))
        library = Path(stamp["library"])
        return stamp["identity"] == build_identity(env) and library.stat().st_mtime_ns == stamp["mtime_ns"]
    except (OSError, ValueError, KeyError, TypeError, metadata.PackageNotFoundError):
        return False


def write_stamp(library: Path, env: Mapping[str, str]) -> None:
    path = stamp_path(env)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        record = {"identity": build_identity(env), "library": str(library), "mtime_ns": library.stat().st_mtime_ns}
        partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
        partial.write_text(json.dumps(record), encoding="utf-8")
        partial.replace(path)
    except OSError:  # no stamp: the next launch checks the build again, which is only slower
        pass


def build_shared_memory_op() -> bool:
    """True when the op is available (built now or before); False where DeepSpeed does not offer it."""
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    use_own_extensions_directory(os.environ)
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
    write_stamp(build_directory / f"{builder.name}.so", os.environ)
    return True


if __name__ == "__main__":
    build_shared_memory_op()
