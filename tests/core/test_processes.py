"""Tier 1: the CPU path across processes and threads (issue #14).

Each scenario runs in a fresh interpreter: the bugs are about what a new process finds (numba's disk
cache, the threading layer it starts, the modules it imports), and a crash or a hang must fail one test
instead of killing or blocking the run.  The child code is one script (``CHILD``), run with a scenario.
"""
import importlib
import os
import pkgutil
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import gpuops

CHILD = textwrap.dedent('''
    import sys

    import numpy as np

    import gpuops
    from gpuops import reference as ref


    def ops(variant):
        """name -> call, for every function of gpuops.__all__ on tiny float64 inputs.  Variants a and b take
        different CPU kernels (tiled / direct depthwise and weight gradient, left / right dgmm, strides 1,
        2 and 4, dilations, bias, channel multiplier, gather / splat filter, dot / L1 lookup, 2 / 4 levels, of the
        lookups and the pyramid).
        Backward ops get grad_out from the numpy reference, so that each call can be the first parallel code
        of its process."""
        r = np.random.default_rng(ord(variant))
        b = variant == "b"
        x = r.standard_normal((2, 3, 16, 16))
        el = dict(alpha=0.3 if b else 0.1, beta=0.2)
        m = 2 if b else 1
        w, bias = r.standard_normal((3 * m, 1, 3, 3)), r.standard_normal(3 * m) if b else None
        convs = [dict(stride=1, padding=1), dict(stride=(2, 1), padding=1)] if b else [
            dict(stride=4, padding=1), dict(stride=(1, 64), padding=1, dilation=2)]
        cols = dict(kernel_size=3, stride=1, padding=1) if b else dict(kernel_size=(2, 3), stride=2, dilation=2)
        c = ref.im2col(x, **cols)
        p1, p2 = r.standard_normal((2, 4, 9, 9)), r.standard_normal((2, 4, 9, 9))
        sp = dict(kernel_size=3, patch_size=3, padding=1) if b else dict(patch_size=5, stride=2, dilation_patch=2)
        cp = dict(pad_size=2, max_displacement=2, stride2=2) if b else dict(pad_size=1, kernel_size=3,
                                                                            max_displacement=1, stride1=2)
        side = "right" if b else "left"
        A, v = r.standard_normal((5, 7)), r.standard_normal(7 if b else 5)
        Z, z = r.standard_normal((5, 7, 2)), r.standard_normal((7 if b else 5, 2))
        xi = r.standard_normal((2, 4, 9, 8))
        inv = dict(stride=(2, 1), padding=1, dilation=(1, 2)) if b else dict(padding=1)
        wi = r.standard_normal((2, 2, 3, 3, 5, 6) if b else (2, 2, 3, 3, 9, 8))
        kw, kb = r.standard_normal((2, 9, 16, 16)), r.standard_normal(3) if b else None
        f1, f2 = r.standard_normal((2, 3, 8, 8)), r.standard_normal((2, 3, 8, 8))
        xy = r.uniform(-3, 10, (2, 8, 8, 2))
        pc = dict(radius=2, l1=b)
        lk = dict(radius=1, num_levels=4 if b else 2)
        f2c, xyc = f2[..., :5, :7], xy.transpose(0, 3, 1, 2)
        pk = dict(num_levels=lk["num_levels"])
        pyr = ref.corr_pyramid(f1, f2, **pk)
        return {
            "gsmelu": lambda: gpuops.gsmelu(x, **el),
            "gsmelu_backward": lambda: gpuops.gsmelu_backward(x[::-1], x, **el),
            "ncrelu": lambda: gpuops.ncrelu(x),
            "ncrelu_backward": lambda: gpuops.ncrelu_backward(np.concatenate([x, -x], 1), x),
            "conv2d_depthwise": lambda: [gpuops.conv2d_depthwise(x, w, bias, **k) for k in convs],
            "conv2d_depthwise_backward": lambda: [gpuops.conv2d_depthwise_backward(
                np.cos(ref.conv2d_depthwise(x, w, bias, **k)), x, w, bias, **k) for k in convs],
            "im2col": lambda: gpuops.im2col(x, **cols),
            "im2col_backward": lambda: gpuops.im2col_backward(c, (16, 16), **cols),
            "col2im": lambda: gpuops.col2im(c, input_size=(16, 16), **cols),
            "col2im_backward": lambda: gpuops.col2im_backward(x, **cols),
            "spatial_correlation_sample": lambda: gpuops.spatial_correlation_sample(p1, p2, **sp),
            "spatial_correlation_sample_backward": lambda: gpuops.spatial_correlation_sample_backward(
                np.cos(ref.spatial_correlation_sample(p1, p2, **sp)), p1, p2, **sp),
            "correlation": lambda: gpuops.correlation(p1, p2, **cp),
            "correlation_backward": lambda: gpuops.correlation_backward(
                np.cos(ref.correlation(p1, p2, **cp)), p1, p2, **cp),
            "dgmm": lambda: gpuops.dgmm(A, v, side=side),
            "dgmm_backward": lambda: gpuops.dgmm_backward(A[::-1], A, v, side=side),
            "cdgmm": lambda: gpuops.cdgmm(Z, z, side=side),
            "cdgmm_backward": lambda: gpuops.cdgmm_backward(Z[::-1], Z, z, side=side),
            "involution": lambda: gpuops.involution(xi, wi, **inv),
            "involution_backward": lambda: gpuops.involution_backward(
                np.cos(ref.involution(xi, wi, **inv)), xi, wi, **inv),
            "weighted_filter": lambda: gpuops.weighted_filter(x, kw, kb, splat=b),
            "weighted_filter_backward": lambda: gpuops.weighted_filter_backward(
                np.cos(ref.weighted_filter(x, kw, kb, splat=b)), x, kw, kb, splat=b),
            "patch_correlate": lambda: gpuops.patch_correlate(f1, f2c, xy, **pc),
            "patch_correlate_backward": lambda: gpuops.patch_correlate_backward(
                np.cos(ref.patch_correlate(f1, f2c, xy, **pc)), f1, f2c, xy, **pc),
            "corr_lookup": lambda: gpuops.corr_lookup(f1, f2, xyc, **lk),
            "corr_lookup_backward": lambda: gpuops.corr_lookup_backward(
                np.cos(ref.corr_lookup(f1, f2, xyc, **lk)), f1, f2, xyc, **lk),
            "corr_pyramid": lambda: gpuops.corr_pyramid(f1, f2, **pk),
            "corr_pyramid_backward": lambda: gpuops.corr_pyramid_backward(
                tuple(np.cos(v) for v in pyr), f1, f2, **pk),
            "corr_pyramid_lookup": lambda: gpuops.corr_pyramid_lookup(pyr, xyc, radius=1),
            "corr_pyramid_lookup_backward": lambda: gpuops.corr_pyramid_lookup_backward(
                np.cos(ref.corr_lookup(f1, f2, xyc, **lk)), pyr, xyc, radius=1),
        }


    def flat(result):
        """A list of arrays (nested lists and tuples flattened, None gradients dropped)."""
        if result is None:
            return []
        if isinstance(result, (list, tuple)):
            return [a for part in result for a in flat(part)]
        return [np.asarray(result)]


    def small_op(i):
        x = np.linspace(-2, 2, 4 * 3 * 8 * 8).reshape(4, 3, 8, 8) + i
        w = np.linspace(-1, 1, 27).reshape(3, 1, 3, 3)
        return float(gpuops.conv2d_depthwise(gpuops.gsmelu(x), w, padding=1).sum())


    def workers(mode):
        """A CPU op in this process first (that starts numba's thread pool), then in children or threads."""
        serial = [small_op(i) for i in range(4)]
        if mode in ("fork", "spawn"):
            import multiprocessing
            with multiprocessing.get_context(mode).Pool(2) as pool:
                got = pool.map_async(small_op, range(4)).get(timeout=30)   # a dead worker hangs the pool
        elif mode == "dataloader":
            import torch.utils.data

            class Ops(torch.utils.data.Dataset):
                def __len__(self):
                    return 4

                def __getitem__(self, i):
                    return small_op(i)

            got = [float(t) for t in torch.utils.data.DataLoader(Ops(), num_workers=2, timeout=30)]
        else:
            from concurrent.futures import ThreadPoolExecutor
            with ThreadPoolExecutor(4) as ex:
                got = list(ex.map(lambda i: small_op(i % 4), range(16)))
            serial = serial * 4
        assert got == serial, (got, serial)


    if __name__ == "__main__":
        mode = sys.argv[1]
        if mode == "ops":                   # ops OUT.npz VARIANTS [NAME ...]: save every result
            results = {}
            for variant in sys.argv[3]:
                calls = ops(variant)
                for name in sys.argv[4:] or calls:
                    for i, a in enumerate(flat(calls[name]())):
                        results[f"{variant} {name} {i}"] = a
            np.savez(sys.argv[2], **results)
        elif mode == "toolchain":          # numba.cuda only on first use of a CUDA name
            from gpuops._toolchain import CPU_JIT, SIMULATOR, njit, prange  # noqa: F401
            assert "numba.cuda" not in sys.modules
            from gpuops._toolchain import cuda, intrinsic, libdevice, nt, overload  # noqa: F401
            import numba.cuda.extending
            assert cuda is sys.modules["numba.cuda"] and overload is numba.cuda.extending.overload
            assert hasattr(np, "row_stack")       # the numpy >= 2.5 shim numba-cuda needs
        elif mode == "no-cuda":
            for variant in "ab":
                for call in ops(variant).values():
                    call()
            assert "numba.cuda" not in sys.modules, sorted(m for m in sys.modules if m.startswith("numba.cuda"))
        else:
            workers(mode)
            import numba
            print("layer", numba.threading_layer())
''')


@pytest.fixture(scope="module")
def child(tmp_path_factory):
    """Runs CHILD with a scenario in a fresh interpreter; all share one fresh numba cache directory."""
    root = tmp_path_factory.mktemp("processes")
    script = root / "child.py"
    script.write_text(CHILD)
    env = dict(os.environ, NUMBA_CACHE_DIR=str(root / "numba-cache"))

    def run(*args, timeout=240):
        proc = subprocess.run([sys.executable, str(script), *map(str, args)], env=env, capture_output=True,
                              text=True, timeout=timeout, cwd=str(root))
        assert proc.returncode == 0, f"{args}: rc {proc.returncode}\n{proc.stdout}\n{proc.stderr[-3000:]}"
        return proc.stdout

    run.root = root
    return run


def test_every_op_from_the_disk_cache_in_fresh_processes(child):
    """Issue #14.1: an njit function calling a parallel one segfaulted in a fresh process when it was
    compiled against the parallel one loaded from the cache, then itself loaded from the cache and run
    before any other parallel code (numba#8578).  Process a compiles variant a's kernels, process b
    variant b's (loading the shared ones); then each op runs first in a process of its own, variant b
    first, loading everything from the cache: all must exit 0 with the values of the processes that
    compiled."""
    child("ops", child.root / "a.npz", "a")
    child("ops", child.root / "b.npz", "b")
    first = {}
    for variant in "ab":
        with np.load(child.root / f"{variant}.npz") as got:
            first.update(got)
    assert {key.split()[1] for key in first} == set(gpuops.__all__)

    def alone(name):                # only reads the cache: two at a time is safe
        path = child.root / f"{name}.npz"
        child("ops", path, "ba", name)      # b first: its kernels were compiled against cached ones
        with np.load(path) as got:
            return dict(got)

    with ThreadPoolExecutor(2) as ex:
        for name, got in zip(gpuops.__all__, ex.map(alone, gpuops.__all__)):
            assert got.keys() == {k for k in first if k.split()[1] == name}
            for key, value in got.items():
                np.testing.assert_array_equal(value, first[key], err_msg=key)


def test_no_njit_function_calls_a_parallel_one():
    """The rule that keeps #14.1 fixed for future mirrors: a parallel function is called from Python only."""
    from numba.core.registry import CPUDispatcher
    import gpuops.cpu

    def names(code):
        for const in code.co_consts:
            if hasattr(const, "co_names"):
                yield from names(const)
        yield from code.co_names

    for info in pkgutil.iter_modules(gpuops.cpu.__path__):
        module = importlib.import_module(f"gpuops.cpu.{info.name}")
        for caller in vars(module).values():
            if not isinstance(caller, CPUDispatcher):
                continue
            for name in names(caller.py_func.__code__):
                callee = getattr(module, name, None)
                assert not (isinstance(callee, CPUDispatcher) and callee.targetoptions.get("parallel")), \
                    f"{module.__name__}.{caller.__name__} calls the parallel function {name}"


@pytest.mark.parametrize("mode", ["fork", "spawn", "dataloader", "threads"])
def test_cpu_ops_in_children_and_threads(child, mode):
    """Issue #14.2: after a CPU op, forked children aborted (GNU OpenMP is not fork-safe), so a fork Pool
    hung and DataLoader(num_workers=2) failed.  Children (fork, spawn, DataLoader workers) and 4 threads
    at once must give the serial values, on the TBB layer (fork- and thread-safe)."""
    if mode == "dataloader":
        pytest.importorskip("torch")
    out = child(mode, timeout=120)
    assert "layer tbb" in out, out


def test_toolchain_imports_numba_cuda_lazily(child):
    """Issue #14.3: gpuops._toolchain, which every CPU mirror imports, imported numba.cuda (about 0.75 s)."""
    child("toolchain")


def test_cpu_path_does_not_import_numba_cuda(child):
    """Issue #14.3: a CPU-only call of every op imports no numba.cuda, which it does not use."""
    child("no-cuda")
