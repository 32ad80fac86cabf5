"""The main job: ``python -m gpuops`` checks every op on the present device against the reference
backend (gpuops.reference) and prints op, backend, dtype, max error and time per call.

Uses the GPU when torch sees one (torch CUDA tensors), else the CPU mirrors (numpy and torch CPU).
Exit status 1 if any op disagrees with its reference.
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np

import gpuops
from gpuops import _core, _ops

#: max |error| relative to the largest |reference| value (sums over many terms round in 16 bits)
TOLERANCE = {"float16": 5e-3, "bfloat16": 3e-2, "float32": 2e-5, "float64": 1e-12}


#: sizes of the demo inputs: the declaration's example, with this batch
_BATCH = 4


def _map(fn, a):
    """``fn`` of every array of an argument (a sequence argument, or several gradients, stays a tuple)."""
    return tuple(_map(fn, e) for e in a) if isinstance(a, (tuple, list)) else fn(a)


def _cases(only):
    """(row name, spec, backward?, params, float64 inputs) for every declared op and its gradient."""
    rng = np.random.default_rng(0)
    rows = []
    for spec in _ops.ops().values():
        arrays, params = spec.example(rng, _BATCH)
        rows.append((spec.name, spec, False, params, arrays))
        if spec.backward is not None:
            shape = spec.output_shape([_map(lambda a, n=n: _core.wrap(n, a), a)
                                       for n, a in zip(spec.array_names, arrays)], params)
            grad = tuple(rng.uniform(-1, 1, s) for s in shape) if spec.multi_output else rng.uniform(-1, 1, shape)
            rows.append((f"{spec.name}_backward", spec, True, params, (grad, *arrays)))
    chosen = [row for row in rows if only is None or only in row[0]]
    if not chosen:
        raise SystemExit(f"--only {only!r} matches no op; ops: {', '.join(row[0] for row in rows)}")
    return chosen


def _calls(spec, backward, params, kind):
    """(the gpuops call of this row for ``kind``, the reference call)."""
    if backward:
        reference = lambda *a: spec.reference_backward(*a, **params)  # noqa: E731
    else:
        reference = lambda *a: spec.reference(*a, **params)  # noqa: E731
    if kind != "jax":
        core = spec.backward if backward else spec.forward
        return (lambda *a: core(*a, **params)), reference
    import jax
    import gpuops.jax as gj
    fn = getattr(gj, spec.name)
    if backward:
        def vjp(grad, *arrays):
            return jax.vjp(lambda *t: fn(*t, **params), *arrays)[1](grad)
        call = jax.jit(vjp)
    else:
        call = jax.jit(lambda *a: fn(*a, **params))
    return (lambda *a: _block(call(*a))), reference


def _block(y):
    import jax
    return jax.block_until_ready(y)


def _backends():
    try:
        import torch
    except ImportError:
        torch = None
    if torch is not None and torch.cuda.is_available():
        name = torch.cuda.get_device_name()
        return [(f"cuda ({name})", "torch-cuda", ("float16", "bfloat16", "float32", "float64")),
                (f"cuda ({name})", "jax", ("float32",))]
    backends = [("cpu", "numpy", ("float32", "float64"))]
    if torch is not None:
        backends.append(("cpu", "torch-cpu", ("bfloat16", "float32")))
    backends.append(("cpu", "jax", ("float32",)))
    return backends


def _convert(a, kind, dtype):
    if isinstance(a, tuple):
        return tuple(_convert(e, kind, dtype) for e in a)
    if kind == "numpy":
        return a.astype(dtype)
    if kind == "jax":
        import jax.numpy as jnp
        return jnp.asarray(a.astype(dtype))
    import torch
    device = "cuda" if kind == "torch-cuda" else "cpu"
    return torch.from_numpy(a).to(device=device, dtype=getattr(torch, dtype))


def _host(y):
    """float64 numpy of one result, or of a tuple of results stacked flat (backward ops)."""
    if isinstance(y, tuple):
        return np.concatenate([_host(part).ravel() for part in y if part is not None])
    if hasattr(y, "detach"):
        return y.detach().double().cpu().numpy()
    return np.asarray(y, np.float64)


def _jax_available():
    try:
        import jax  # noqa: F401
    except ImportError:
        return False
    return True


def _time_ms(fn, kind):
    """Median wall time of single calls (synchronised on a GPU)."""
    sync = lambda: None  # noqa: E731
    if kind == "torch-cuda":
        import torch
        sync = torch.cuda.synchronize
    times = []
    for _ in range(25):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)) * 1e3


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m gpuops", description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="run ops whose name contains this")
    args = parser.parse_args(argv)
    cases = _cases(args.only)
    print(f"gpuops {gpuops.__version__}")
    print(f"{'op':36s} {'backend':24s} {'kind':10s} {'dtype':9s} {'max error':>10s} {'ms/call':>9s}  ok")
    failed = checked = 0
    for device, kind, dtypes in _backends():
        if kind == "jax" and not _jax_available():
            continue
        for name, spec, backward, params, inputs in cases:
            op, ref = _calls(spec, backward, params, kind)
            for dtype in dtypes:
                arrays = [_convert(a, kind, dtype) for a in inputs]
                expected = _host(ref(*[_map(_host, a) for a in arrays])).ravel()  # the reference sees the rounded inputs
                got = _host(op(*arrays)).ravel()
                scale = max(1.0, float(np.nanmax(np.abs(expected))))
                error = float(np.nanmax(np.abs(got - expected))) / scale
                ok = error <= TOLERANCE[dtype]
                failed += not ok
                checked += 1
                ms = _time_ms(lambda: op(*arrays), kind)
                print(f"{name:36s} {device:24s} {kind:10s} {dtype:9s} {error:10.2e} {ms:9.3f}  "
                      f"{'yes' if ok else 'NO'}", flush=True)
    print(f"all {checked} checks agree with the reference" if not failed else f"{failed} of {checked} checks FAILED")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
