"""A data-parallel training step in JAX of the small optical-flow-like model of benchmarks/data_parallel.py
(issue 18, item 2): gpuops.jax depthwise convolution, involution, FlowNet correlation and RAFT lookup between
plain `jax.lax` convolutions, the batch split over every device of the host.

    python -m benchmarks.data_parallel_jax [--steps 10]                       # every GPU of the host
    XLA_FLAGS=--xla_force_host_platform_device_count=4 JAX_PLATFORMS=cpu python -m benchmarks.data_parallel_jax

Two data-parallel forms, each checked (float64, one step) against the gradient on one device, then timed
(float32): plain ``jax.jit`` on batch-sharded ``NamedSharding`` inputs, and ``jax.shard_map`` of the gradient
of the shards' mean loss (``jax.lax.pmean``).
"""
import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

import gpuops.jax as gj

CHANNELS = 16


def init(dtype=jnp.float64, seed=0):
    rng = np.random.default_rng(seed)

    def w(*shape):
        return jnp.asarray(rng.standard_normal(shape) / np.sqrt(np.prod(shape[1:])), dtype)
    return dict(stem=w(CHANNELS, 3, 3, 3), depthwise=w(CHANNELS, 1, 3, 3), depthwise_bias=w(CHANNELS),
                span=w(9, CHANNELS, 1, 1), flow0=w(2, CHANNELS, 1, 1), head=w(2, 25 + 2 * 9, 1, 1))


def _conv(x, w, padding):
    return jax.lax.conv_general_dilated(x, w, (1, 1), [(padding, padding)] * 2,
                                        dimension_numbers=("NCHW", "OIHW", "NCHW"))


def features(p, x):
    h = jax.nn.relu(_conv(x, p["stem"], 1))
    h = jax.nn.relu(gj.conv2d_depthwise(h, p["depthwise"], p["depthwise_bias"], padding=1))
    n, _, height, width = h.shape
    kernels = _conv(h, p["span"], 0).reshape(n, 1, 3, 3, height, width)      # one involution group
    return gj.involution(h, kernels, padding=1)


def forward(p, a, b):
    fa, fb = features(p, a), features(p, b)
    cost = gj.correlation(fa, fb, pad_size=2, kernel_size=1, max_displacement=2)
    _, _, height, width = fa.shape
    ys, xs = jnp.meshgrid(jnp.arange(height, dtype=fa.dtype), jnp.arange(width, dtype=fa.dtype), indexing="ij")
    coords = jnp.stack([xs, ys])[None] + _conv(fa, p["flow0"], 0)
    lookup = gj.corr_lookup(fa, fb, coords, radius=1, num_levels=2)
    return _conv(jnp.concatenate([cost, lookup], 1), p["head"], 0)


def loss(p, a, b, target):
    return jnp.mean((forward(p, a, b) - target) ** 2)


def batch(size, dtype=jnp.float64, seed=1, hw=(16, 20)):
    rng = np.random.default_rng(seed)
    return tuple(jnp.asarray(rng.standard_normal((size, c, *hw)), dtype) for c in (3, 3, 2))


def data_parallel_grads(mesh, params, arrays):
    """The gradient functions over ``mesh``'s "batch" axis (plain jit on NamedSharding inputs; shard_map) and
    their arguments (parameters replicated, data batch-sharded)."""
    shard = NamedSharding(mesh, P("batch"))
    sharded = tuple(jax.device_put(a, shard) for a in arrays)
    replicated = jax.device_put(params, NamedSharding(mesh, P()))
    named = jax.jit(jax.grad(loss))
    # the gradient of the mean of the shards' losses: the replicated parameters' cotangents are summed over
    # the shards by shard_map's transpose (taking pmean of per-shard gradients would count them n times)
    per_shard = jax.jit(jax.shard_map(jax.grad(lambda p, *a: jax.lax.pmean(loss(p, *a), "batch")), mesh=mesh,
                                      in_specs=(P(),) + (P("batch"),) * 3, out_specs=P()))
    return (named, per_shard), (replicated,) + sharded


def check(mesh, global_batch):
    """Max relative difference of each data-parallel form's float64 gradients from one device's."""
    params, arrays = init(), batch(global_batch)
    want = jax.jit(jax.grad(loss))(params, *arrays)            # uncommitted arrays: the default device
    fns, args = data_parallel_grads(mesh, params, arrays)
    errors = []
    for fn in fns:
        got = fn(*args)
        errors.append(max(float(jnp.linalg.norm((got[k] - want[k]).ravel()) / jnp.linalg.norm(want[k].ravel()))
                          for k in want))
    return errors


def throughput(mesh, global_batch, steps):
    """Samples per second of each form (float32, gradients only, after two warm-up steps)."""
    fns, args = data_parallel_grads(mesh, init(jnp.float32), batch(global_batch, jnp.float32))
    rates = []
    for fn in fns:
        for _ in range(2):
            jax.block_until_ready(fn(*args))
        start = time.perf_counter()
        for _ in range(steps):
            out = fn(*args)
        jax.block_until_ready(out)
        rates.append(global_batch * steps / (time.perf_counter() - start))
    return rates


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=16, help="global batch (a multiple of the device count)")
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    jax.config.update("jax_enable_x64", True)
    devices = jax.devices()
    mesh = Mesh(np.array(devices), ("batch",))
    named, per_shard = check(mesh, args.batch)
    rate_named, rate_shard = throughput(mesh, args.batch, args.steps)
    print(f"{len(devices)} {devices[0].platform} device(s): gradients vs one device, max relative difference "
          f"{named:.1e} (jit on NamedSharding) / {per_shard:.1e} (shard_map); {rate_named:.1f} / {rate_shard:.1f} "
          f"samples/s (global batch {args.batch})")


if __name__ == "__main__":
    main()
