"""gpuops.jax ops on a JAX mesh of 4 CPU devices (``--xla_force_host_platform_device_count``: the sharding
semantics without GPUs), in a fresh process (the flag must precede JAX's first import).

Two ways across devices (docs/architecture.md, "Several devices"), each checked for values, float64
gradients (replicated weights' gradients summed over the devices) and a compiled program without an
all-gather (each device's callback sees its own shard only):

* the user's own ``jax.shard_map`` over the batch axis;
* plain ``jax.jit`` on arrays placed with a batch-sharded ``NamedSharding``, for every op whose
  declaration names its batch axes (`OpSpec.batch`): the adapter runs the call per shard itself.
  Ops declared unsplittable still give the right values (their inputs are gathered).
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
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P
from gpuops import _ops
import gpuops.jax as gj

assert len(jax.devices()) == 4, jax.devices()
mesh = Mesh(np.array(jax.devices()), ("batch",))
rng = np.random.default_rng(0)
u = lambda *shape: jnp.asarray(rng.uniform(-1, 1, shape), jnp.float64)


def close(got, want, what, tol=1e-10):
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=tol, atol=tol, err_msg=what)


def loss(out):
    return sum((o ** 2).sum() for o in jax.tree.leaves(out))


def along_batch(sharding):
    spec = tuple(sharding.spec)
    return spec[:1] in (("batch",), (("batch",),)) and all(e is None for e in spec[1:])


# --- the user's shard_map ------------------------------------------------------------------------
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
    compiled = jax.jit(sharded).lower(*args).compile()
    got = compiled(*args)
    close(got, fn(batched, replicated), name, 1e-12)
    assert along_batch(got.sharding), (name, got.sharding)
    assert "all-gather" not in compiled.as_text(), name

    argnums = tuple(range(len(args)))
    grads = jax.jit(jax.grad(lambda *a: loss(sharded(*a)), argnums=argnums))(*args)
    wants = jax.grad(lambda *a: loss(fn(a[:nb], a[nb:])), argnums=argnums)(*args)
    close(grads, wants, f"{name} grads")
    print("shard_map ok", name)
print("SHARD-MAP-OK")


# --- plain jit on batch-sharded NamedSharding arrays: every splittable op, from its declaration -----
def placed(spec, arrays, on):
    """``arrays`` on the mesh: those the declaration batches sharded along axis 0, the others replicated."""
    def put(a, batched):
        return jax.device_put(jnp.asarray(a), NamedSharding(on, P("batch") if batched else P()))
    return tuple(tuple(put(e, b) for e in a) if isinstance(a, tuple) else put(a, b)
                 for a, b in zip(arrays, spec.batch))


def unplaced(arrays):
    return tuple(tuple(map(jnp.asarray, a)) if isinstance(a, tuple) else jnp.asarray(a) for a in arrays)


splittable = [s for s in _ops.ops().values() if s.batch is not None]
assert {s.name for s in splittable} >= {"gsmelu", "ncrelu", "conv2d_depthwise", "im2col", "col2im", "involution",
                                        "spatial_correlation_sample", "correlation", "patch_correlate",
                                        "corr_lookup", "weighted_filter", "corr_pyramid", "corr_pyramid_lookup"}
for spec in splittable:
    arrays, params = spec.example(np.random.default_rng(1), 8)
    f = getattr(gj, spec.name)
    fn = lambda *a: f(*a, **params)
    local, args = unplaced(arrays), placed(spec, arrays, mesh)
    want = fn(*local)

    compiled = jax.jit(fn).lower(*args).compile()
    got = compiled(*args)
    close(got, want, spec.name, 1e-12)
    for g in jax.tree.leaves(got):
        assert along_batch(g.sharding), (spec.name, g.sharding)
    assert "all-gather" not in compiled.as_text(), spec.name

    argnums = tuple(range(len(args)))
    grad = jax.grad(lambda *a: loss(fn(*a)), argnums=argnums)
    compiled = jax.jit(grad).lower(*args).compile()
    grads = compiled(*args)
    close(grads, grad(*local), f"{spec.name} grads")
    hlo = compiled.as_text()
    assert "all-gather" not in hlo, spec.name
    if not all(spec.batch):                  # a replicated weight's gradient: each shard's part, all-reduced
        assert "all-reduce" in hlo, spec.name
    for g, a, b in zip(grads, args, spec.batch):
        for ge in jax.tree.leaves(g):
            assert ge.sharding.is_fully_replicated != b, (spec.name, ge.sharding)
    print("named ok", spec.name)

# eager calls on sharded arrays split too
spec = _ops.REGISTRY["conv2d_depthwise"]
arrays, params = spec.example(np.random.default_rng(2), 8)
got = gj.conv2d_depthwise(*placed(spec, arrays, mesh), **params)
close(got, gj.conv2d_depthwise(*unplaced(arrays), **params), "eager", 1e-12)
assert along_batch(got.sharding), got.sharding

# a 3-D im2col input: axis 0 is the channels, independent too
x = u(8, 7, 6)
xs = jax.device_put(x, NamedSharding(mesh, P("batch")))
got = jax.jit(lambda x: gj.im2col(x, 3, padding=1))(xs)
close(got, gj.im2col(x, 3, padding=1), "im2col 3-D", 1e-12)
assert along_batch(got.sharding), got.sharding

# under vmap the unbatched call splits: a vmapped axis in front of the sharded batch stays as it is
x, w = u(3, 8, 4, 6, 7), u(4, 1, 3, 3)
vconv = lambda x, w: (jax.vmap(lambda x: gj.conv2d_depthwise(x, w, padding=1))(x) ** 2).sum()
xs = jax.device_put(x, NamedSharding(mesh, P(None, "batch")))
compiled = jax.jit(jax.grad(vconv, (0, 1))).lower(xs, w).compile()
close(compiled(xs, w), jax.grad(vconv, (0, 1))(x, w), "vmap grads")
assert "all-gather" not in compiled.as_text()

# Explicit mesh axes: the sharding is in the types; a sharded weight is gathered, the batch stays split
explicit = jax.make_mesh((4,), ("batch",), axis_types=(AxisType.Explicit,))
x, w, b = u(8, 4, 6, 7), u(4, 1, 3, 3), u(4)
conv = lambda x, w, b: gj.conv2d_depthwise(x, w, b, padding=1)
put = lambda a, s: jax.device_put(a, NamedSharding(explicit, s))
args = (put(x, P("batch")), put(w, P("batch")), put(b, P()))
compiled = jax.jit(conv).lower(*args).compile()
got = compiled(*args)
close(got, conv(x, w, b), "explicit", 1e-12)
assert along_batch(got.sharding), got.sharding
assert all("f64[8," not in line for line in compiled.as_text().splitlines() if "all-gather" in line)
grads = jax.jit(jax.grad(lambda *a: loss(conv(*a)), argnums=(0, 1, 2)))(*args)
close(grads, jax.grad(lambda *a: loss(conv(*a)), argnums=(0, 1, 2))(x, w, b), "explicit grads")
got = conv(*args)                                          # eagerly
close(got, conv(x, w, b), "explicit eager", 1e-12)
assert along_batch(got.sharding), got.sharding

# a mesh of two Auto axes: the batch (6) splits over as many of them as divide it
mesh2 = Mesh(np.array(jax.devices()).reshape(2, 2), ("data", "model"))
x = u(6, 3, 4, 5)
xs = jax.device_put(x, NamedSharding(mesh2, P("data")))
compiled = jax.jit(gj.ncrelu).lower(xs).compile()
got = compiled(xs)
close(got, gj.ncrelu(x), "two axes", 1e-12)
assert "all-gather" not in compiled.as_text()

# an op declared unsplittable (dgmm: a matrix, no batch axis) is gathered, and right
a, d = u(8, 5), u(5)
got = jax.jit(lambda a, d: gj.dgmm(a, d, side="right"))(jax.device_put(a, NamedSharding(mesh, P("batch"))), d)
close(got, gj.dgmm(a, d, side="right"), "dgmm", 1e-12)
print("NAMED-OK")
'''


@pytest.fixture(scope="module")
def run():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_ENABLE_X64="1",
               JAX_PLATFORMS="cpu")
    result = subprocess.run([sys.executable, "-c", _SCRIPT], env=env, capture_output=True, text=True, timeout=900)
    return result.stdout, (result.stdout + result.stderr)[-4000:]


def test_shard_map_over_the_batch_axis_runs_each_shard_on_its_device(run):
    stdout, tail = run
    assert "SHARD-MAP-OK" in stdout, tail


def test_plain_jit_on_batch_sharded_arrays_runs_each_shard_on_its_device(run):
    stdout, tail = run
    assert "NAMED-OK" in stdout, tail
