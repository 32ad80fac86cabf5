"""JAX ops (see gpuops/adapters/jax.py).  Importing this imports jax."""
from gpuops.adapters.jax import *  # noqa: F401,F403
from gpuops.adapters.jax import __all__  # noqa: F401
