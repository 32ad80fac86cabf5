"""PyTorch ops and modules (see gpuops/adapters/torch.py).  Importing this imports torch."""
from gpuops.adapters.torch import *  # noqa: F401,F403
from gpuops.adapters.torch import __all__  # noqa: F401
