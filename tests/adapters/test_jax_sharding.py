"""gpuops.jax ops on a JAX mesh of 4 CPU devices (``--xla_force_host_platform_device_count``: the sharding
semantics without GPUs), in a fresh process (the flag must precede JAX's first import).

Batch-parallel use is ``jax.shard_map`` over the batch axis (docs/architecture.md, "Several devices"):
each device's callback sees its own shard only — the compiled program has no all-gather — and the
values and gradients (replicated weights' gradients summed over the devices by shard_map's transpose)
equal the single-device ones.
"""
import os
import subprocess
import sys

import pytest

pytest.importorskip("jax")

_SCRIPT = r'''
import numpy as np
import jax
import jax.numpy as jnp
from jax.sharding import Mesh, PartitionSpec as P
import gpuops.jax as gj

assert len(jax.devices()) == 4, jax.devices()
mesh = Mesh(np.array(jax.devices()), ("batch",))
rng = np.random.default_rng(0)
u = lambda *shape: jnp.asarray(rng.uniform(-1, 1, shape), jnp.float64)

# (name, function of (batched, replicated) arrays, batched arrays, replicated arrays)
CASES = [
    ("conv2d_depthwise", lambda b, r: gj.conv2d_depthwise(b[0], r[0], r[1], padding=1),
     [u(8, 4, 6, 7)], [u(4, 1, 3, 3), u(4)]),
    ("correlation", lambda b, r: gj.correlation(b[0], b[1], pad_size=2, kernel_size=1, max_displacement=2),
     [u(8, 3, 6, 7), u(8, 3, 6, 7)], []),
    ("involution", lambda b, r: gj.involution(b[0], b[1], padding=1),
     [u(8, 4, 5, 6), u(8, 2, 3, 3, 5, 6)], []),
    ("weighted_filter", lambda b, r: gj.weighted_filter(b[0], b[1], r[0]),
     [u(8, 3, 5, 6), u(8, 9, 5, 6)], [u(3)]),
    ("corr_lookup", lambda b, r: gj.corr_lookup(b[0], b[1], b[2], radius=1, num_levels=2),
     [u(8, 3, 6, 5), u(8, 3, 6, 5), jnp.asarray(rng.integers(-1, 6, (8, 2, 6, 5)) + 0.5, jnp.float64)], []),
]

for name, fn, batched, replicated in CASES:
    nb = len(batched)
    sharded = jax.shard_map(lambda *a: fn(a[:nb], a[nb:]), mesh=mesh,
                            in_specs=(P("batch"),) * nb + (P(),) * len(replicated), out_specs=P("batch"))
    args = (*batched, *replicated)
    want = fn(batched, replicated)
    got = jax.jit(sharded)(*args)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-12, atol=1e-12, err_msg=name)
    assert got.sharding.spec == P("batch"), (name, got.sharding)
    hlo = jax.jit(sharded).lower(*args).compile().as_text()
    assert "all-gather" not in hlo, name                   # each device's callback gets its own shard

    def loss(f, *a):
        return (f(*a) ** 2).sum()
    grads = jax.jit(jax.grad(lambda *a: loss(sharded, *a), argnums=tuple(range(len(args)))))(*args)
    wants = jax.grad(lambda *a: loss(lambda *b: fn(b[:nb], b[nb:]), *a), argnums=tuple(range(len(args))))(*args)
    for i, (g, w) in enumerate(zip(grads, wants)):
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=1e-10, atol=1e-10, err_msg=f"{name} grad {i}")
    print("ok", name)
print("SHARDING-OK")
'''


def test_shard_map_over_the_batch_axis_runs_each_shard_on_its_device():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_ENABLE_X64="1",
               JAX_PLATFORMS="cpu")
    result = subprocess.run([sys.executable, "-c", _SCRIPT], env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0 and "SHARDING-OK" in result.stdout, (result.stdout + result.stderr)[-4000:]
