"""Where the host time of a small ``gpuops.jax`` call goes (run on a GPU machine):
``python -m benchmarks.profile_jax_callback``.

Outer rows: µs per jitted call (best of interleaved rounds) of the jnp expression, a jitted
``buffer_callback`` that does nothing, one that only reads the stream and both pointers, and
``gpuops.jax.gsmelu``; each callback also with ``command_buffer_compatible=True``.
Inner rows: µs of each step of the callback body, timed in a loop inside one real callback on XLA's
thread (so with XLA's real GPU buffers and stream).
"""
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental.buffer_callback import buffer_callback

import gpuops.jax as gj
from gpuops import _core, elementwise
from benchmarks.elementwise import jnp_gsmelu
from benchmarks.runner import host_times_us


def _inner_rows(x_host):
    rows = {}

    def callback(ctx, out, x):
        stream = ctx.stream
        xa = _core.wrap("x", x)
        steps = {
            "ctx.stream": lambda: ctx.stream,
            "x.__dlpack_device__()": lambda: x.__dlpack_device__(),
            "x.__cuda_array_interface__['data'][0]": lambda: x.__cuda_array_interface__["data"][0],
            "x.shape, x.dtype": lambda: (x.shape, x.dtype),
            "_core.wrap('x', x)": lambda: _core.wrap("x", x),
            "_core.data_ptr(wrapped)": lambda: _core.data_ptr(_core.wrap("x", x)),
            "_core.output(out, xa, shape)": lambda: _core.output(out, xa, xa.shape),
            "elementwise.gsmelu(x, out=, stream=)": lambda: elementwise.gsmelu(x, out=out, stream=stream),
        }
        for name, fn in steps.items():
            for _ in range(100):
                fn()
            t0 = time.perf_counter()
            for _ in range(2000):
                fn()
            rows[name] = (time.perf_counter() - t0) / 2000 * 1e6

    f = jax.jit(lambda t: buffer_callback(callback, jax.ShapeDtypeStruct(t.shape, t.dtype))(t))
    jax.block_until_ready(f(x_host))
    return rows


def main():
    x = jnp.asarray(np.random.default_rng(0).standard_normal(1024, dtype=np.float32))

    def noop(ctx, out, t):
        pass

    def pointers(ctx, out, t):
        ctx.stream, t.__cuda_array_interface__["data"][0], out.__cuda_array_interface__["data"][0]

    def via_callback(cb, graph):
        return jax.jit(lambda t: buffer_callback(cb, jax.ShapeDtypeStruct(t.shape, t.dtype),
                                                 command_buffer_compatible=graph)(t))

    fns = {"jnp expression": jax.jit(jnp_gsmelu), "gpuops.jax.gsmelu": jax.jit(gj.gsmelu)}
    for graph in (False, True):
        fns[f"no-op callback (graph={graph})"] = via_callback(noop, graph)
        fns[f"stream + 2 pointers (graph={graph})"] = via_callback(pointers, graph)
    state = {}
    calls = {}
    for name, f in fns.items():
        jax.block_until_ready(f(x))
        calls[name] = (lambda f=f: state.__setitem__("y", f(x)))
    times = host_times_us(list(calls.values()), lambda: jax.block_until_ready(state["y"]))
    for name, us in zip(calls, times):
        print(f"{name:45s} {us:7.2f} µs per jitted call")
    print()
    for name, us in _inner_rows(x).items():
        print(f"{name:45s} {us:7.2f} µs inside the callback")


if __name__ == "__main__":
    main()
