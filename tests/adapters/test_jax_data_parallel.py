"""A JAX data-parallel training step (issue 18, item 2) of benchmarks/data_parallel_jax.py's small model
(depthwise, involution, correlation, RAFT lookup between jax.lax convolutions) on a mesh of 4 CPU devices, in a
fresh process (the device-count flag must precede JAX's first import): plain jit on batch-sharded NamedSharding
inputs and shard_map both give one device's float64 gradients, and neither compiled step gathers the batch."""
import os
import subprocess
import sys

import pytest

pytest.importorskip("jax")

_SCRIPT = r'''
import jax, numpy as np
from jax.sharding import Mesh
from benchmarks import data_parallel_jax as dp
assert len(jax.devices()) == 4
mesh = Mesh(np.array(jax.devices()), ("batch",))
errors = dp.check(mesh, 8)
assert max(errors) < 1e-10, errors
fns, args = dp.data_parallel_grads(mesh, dp.init(), dp.batch(8))
for fn in fns:
    hlo = fn.lower(*args).compile().as_text()
    assert "all-gather" not in hlo and "all-reduce" in hlo
print("DATA-PARALLEL-OK", errors)
'''


def test_jax_data_parallel_step_matches_one_device():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_ENABLE_X64="1",
               JAX_PLATFORMS="cpu")
    result = subprocess.run([sys.executable, "-c", _SCRIPT], env=env, capture_output=True, text=True, timeout=600,
                            cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    assert "DATA-PARALLEL-OK" in result.stdout, (result.stdout + result.stderr)[-4000:]
