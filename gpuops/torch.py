"""PyTorch ops and modules (see gpuops/adapters/torch.py).  Importing this imports torch."""
from gpuops.adapters.torch import *  # noqa: F401,F403
from gpuops.adapters.torch import __all__  # noqa: F401
from gpuops.adapters.torch_perpixel import Involution, WeightedFilter  # noqa: E402,F401

__all__ = [*__all__, "Involution", "WeightedFilter"]
from gpuops.adapters.torch_raft import CorrBlock  # noqa: E402,F401

__all__ = [*__all__, "CorrBlock"]
