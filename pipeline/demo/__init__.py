"""`make demo` (`python -m pipeline.demo`): every step of the pipeline on the bundled corpus on CPU
(`steps`, run as the commands a user would type), the runs' directory layout (`layout`), the downstream
comparison (`downstream`) and the report it ends with (`report`). It reads the other subpackages' outputs
and may import any of them; nothing imports it.
"""
