import os
import sys

sys.path.insert(0, os.path.dirname(__file__))     # `import helpers` from every tier

# numba's on-disk cache index is written without a lock: parallel test workers that compile the same
# function for different signatures can corrupt it (a CPU mirror then runs the wrong machine code).
# Give every xdist worker its own cache; a single process keeps numba's default location.
if os.environ.get("PYTEST_XDIST_WORKER") and "NUMBA_CACHE_DIR" not in os.environ:
    import tempfile
    os.environ["NUMBA_CACHE_DIR"] = os.path.join(tempfile.gettempdir(), "gpuops-numba-cache",
                                                 os.environ["PYTEST_XDIST_WORKER"])
