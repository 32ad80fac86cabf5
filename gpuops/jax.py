"""JAX ops (see gpuops/adapters/jax.py).  Importing this imports jax."""
from gpuops.adapters.jax import *  # noqa: F401,F403
from gpuops.adapters.jax import __all__  # noqa: F401
from gpuops.adapters.jax_raft import CorrBlock  # noqa: F401

__all__ = [*__all__, "Involution", "CorrBlock"]


def __getattr__(name):
    """Flax modules, imported on first use (Flax comes with the jax extra, but plain JAX works without it)."""
    if name == "Involution":
        from gpuops.adapters.flax_perpixel import Involution
        return Involution
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
