"""The worker processes of the local runner: Beam's SDK harness, started as `python -m preprocessing.beam_worker`
so that its logs follow the job's (the engine's start-up chatter, relayed twice to the job's log, stays out
unless BERTPIPE_VERBOSE=1). What runs in the worker is Beam's own harness, unchanged."""

from __future__ import annotations

import os
import sys


def main() -> None:
    if os.environ.get("BERTPIPE_QUIET_ENGINES") and os.environ.get("BERTPIPE_VERBOSE", "") in ("", "0"):
        import logging

        from pipeline.logs import FORMAT, quiet_engines

        logging.basicConfig(format=FORMAT)  # the worker's stderr handler, which quiet_engines filters
        quiet_engines()
    from apache_beam.runners.worker import sdk_worker_main

    sdk_worker_main.main(sys.argv)


if __name__ == "__main__":
    main()
