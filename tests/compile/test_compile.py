"""Tier 3: every registered (kernel, dtype) compiles for sm_80 (PTX) and sm_90 (LTO-IR linked to a
cubin) without a GPU; the kernel ABI matches what the fast launcher flattens; ptxas reports no spills
and a register budget.

Runs in its own process, without the simulator (``make test-compile``).
"""
import contextlib
import importlib
import pkgutil
import re
import types

import pytest

import gpuops.cuda
from gpuops._launch import KERNELS
from gpuops._toolchain import SIMULATOR, cuda, nt

pytestmark = pytest.mark.skipif(SIMULATOR, reason="compile checks need the real numba-cuda compiler")

for _mod in pkgutil.iter_modules(gpuops.cuda.__path__):
    importlib.import_module(f"gpuops.cuda.{_mod.name}")
gpuops.cuda.conv.build_nhwc()          # the channels-last depthwise kernels load on first use otherwise

REGISTER_BUDGET = 128                  # leaves >= 2 blocks of 256 threads per SM at full occupancy
CASES = [(k, d) for k in KERNELS for d in k.dtypes]


@contextlib.contextmanager
def _fake_device(cc):
    """compile_device() asks the driver for the current device's compute capability; CI has none."""
    import numba.cuda.dispatcher as dispatcher
    saved = dispatcher.get_current_device
    dispatcher.get_current_device = lambda: types.SimpleNamespace(compute_capability=cc)
    try:
        yield
    finally:
        dispatcher.get_current_device = saved


def _abi_params(sig):
    return sum(5 + 2 * t.ndim if isinstance(t, nt.Array) else 1 for t in sig)


def test_registry_is_populated():
    names = {k.name.rsplit(".", 1)[-1] for k in KERNELS}
    assert {"_gsmelu_forward", "_gsmelu_backward", "_ncrelu_forward", "_ncrelu_backward"} <= names


def test_conv_nhwc_kernels_are_checked():
    """The channels-last depthwise kernels are rows of the checks below: the general ones for every dtype,
    the generated ones per (K, stride) for the dtypes of their word width (2 float32 / 4 16-bit values)."""
    from gpuops.cuda import _conv_source, conv
    cases = {(k.name.rsplit(".", 1)[-1], d) for k, d in CASES}
    for name in ("_dw_nhwc_direct", "_dw_nhwc_grad_x", "_dw_nhwc_wgrad"):
        assert {(name, d) for d in ("float16", "bfloat16", "float32", "float64")} <= cases
    assert {("_dw_nhwc_wgrad_final_f32", d) for d in ("float16", "bfloat16", "float32")} <= cases
    assert ("_dw_nhwc_wgrad_final_f64", "float64") in cases
    entries = _conv_source.nhwc_kernels()
    assert len(entries) == sum(len(t) * 2 for t in (conv.DW_NHWC_FAST, conv.DW_NHWC_GRAD_X_FAST,
                                                    conv.DW_NHWC_WGRAD_FAST))
    for _, (k, s, v), function, _ in entries:
        assert {(function, d) for d in {2: ("float32",), 4: ("float16", "bfloat16")}[v]} <= cases


@pytest.mark.parametrize("kernel,dtype", CASES, ids=[f"{k.name.rsplit('.', 1)[-1]}-{d}" for k, d in CASES])
def test_ptx_sm80_and_abi(kernel, dtype):
    """PTX for sm_80 (Ampere, the oldest bf16 GPU); sm_90 is built by the resource check below."""
    cc = (8, 0)
    sig = tuple(kernel.signature(dtype))
    with _fake_device(cc):
        ptx, _ = cuda.compile_ptx(kernel.pyfunc, sig, cc=cc, **_ptx_options(kernel))
    entry = re.search(r"\.entry\s+\S+\(([^)]*)\)", ptx, re.S)
    assert entry, "no kernel entry in the PTX"
    params = entry.group(1).count(".param")
    assert params == _abi_params(sig), "kernel ABI differs from gpuops._launch's flattening"


def _ptx_options(kernel):
    # a register cap is a link-time (ptxas) option: the sm_90 check applies it through the linker
    return {k: v for k, v in kernel.jit_options.items() if k in ("fastmath", "lineinfo")}


@pytest.mark.parametrize("kernel,dtype", CASES, ids=[f"{k.name.rsplit('.', 1)[-1]}-{d}" for k, d in CASES])
def test_registers_and_spills_sm90(kernel, dtype):
    from cuda.core import Linker, LinkerOptions, ObjectCode
    cc = (9, 0)
    with _fake_device(cc):
        options = _ptx_options(kernel)
        codes, _ = cuda.compile_all(kernel.pyfunc, tuple(kernel.signature(dtype)), device=False, abi="numba",
                                    output="ltoir", cc=cc, **options)
    objects = [ObjectCode.from_ltoir(c) if isinstance(c, bytes) else c for c in codes]
    # compile_all takes no register cap: the linker applies it, as the launch-time link does
    cap = kernel.jit_options.get("max_registers")
    linker = Linker(*objects, options=LinkerOptions(arch="sm_90", link_time_optimization=True, verbose=True,
                                                    **({"max_register_count": cap} if cap else {})))
    linker.link("cubin")
    log = linker.get_info_log()
    registers = int(re.search(r"Used (\d+) registers", log).group(1))
    spills = [int(v) for v in re.findall(r"(\d+) bytes spill", log)]
    assert registers <= getattr(kernel, "register_budget", REGISTER_BUDGET), log
    assert max(spills, default=0) <= getattr(kernel, "spill_budget", 0), log       # bytes; 0 unless measured


@pytest.mark.parametrize("name", ["WINDOW_FORWARD", "WINDOW_GRAD_COORDS", "WINDOW_GRAD_BASE", "WINDOW_GRAD_MAP_PARTIAL"])
def test_raft_window_kernels_load_channel_quads(name):
    """The RAFT window kernels read float32 channels four at a time in one 16-byte load (`load4`): their
    channel loops are bound by load instructions."""
    from gpuops.cuda import raft
    kernel = getattr(raft, name)
    with _fake_device((9, 0)):
        ptx, _ = cuda.compile_ptx(kernel.pyfunc, tuple(kernel.signature("float32")), cc=(9, 0),
                                  **_ptx_options(kernel))
    assert "ld.global.v4.f32" in ptx
