"""PyTorch ops and modules (see gpuops/adapters/torch.py).  Importing this imports torch."""
from gpuops.adapters.torch import *  # noqa: F401,F403
from gpuops.adapters.torch import __all__ as _ops_and_modules
from gpuops.adapters.torch_perpixel import Involution, WeightedFilter  # noqa: F401
from gpuops.adapters.torch_raft import CorrBlock  # noqa: F401

__all__ = [*_ops_and_modules, "Involution", "WeightedFilter", "CorrBlock"]
