"""The packed fast launch without a GPU: the bytes it hands cuLaunchKernel (one 8-byte slot per flattened
ABI parameter), its fall-back to cuda.core.launch, launcher selection and context-loss retry.  The
driver call itself is replaced by a recorder; tests/gpu runs the real thing."""
import ctypes

import numpy as np
import pytest

from gpuops import _launch as L
from gpuops._toolchain import SIMULATOR, nt

pytestmark = pytest.mark.skipif(SIMULATOR, reason="the fast launch is off under the simulator")
driver = pytest.importorskip("cuda.bindings.driver")

SIG = (nt.Array(nt.float32, 1, "C"), nt.Array(nt.float32, 2, "C"), nt.float32, nt.float64, nt.int32, nt.boolean)


class _FakeKernel:
    handle = driver.CUkernel(0x1234)


def _entry():
    conv = tuple(None if isinstance(t, nt.Array) else L._SCALAR_TYPES[t] for t in SIG)
    return L._Compiled(_FakeKernel(), conv, True, SIG)


def _kernel(entry, device=0):
    k = L.Kernel(lambda *a: None, lambda d: SIG, dtypes=("float32",))
    L.KERNELS.remove(k)
    k._compiled[("float32", device)] = entry
    return k


def _args():
    a = L.DeviceArray(0x7000, (6,), (4,), 4, "<f4")
    b = L.DeviceArray(0x9008, (2, 3), (12, 4), 4, "<f4")
    return a, b, 0.1, 0.1, -7, True


def _read_slots(params, n):
    pointers = (ctypes.c_void_p * n).from_address(params)
    return [ctypes.string_at(p, 8) for p in pointers]


@pytest.fixture
def recorder(monkeypatch):
    calls = []

    def launch(function, gx, gy, gz, bx, by, bz, shmem, stream, params, extra):
        calls.append(dict(function=int(function), dims=(gx, gy, gz, bx, by, bz), shmem=shmem, stream=int(stream),
                          slots=_read_slots(params, 5 + 2 + 5 + 4 + 4), extra=extra))
        return (driver.CUresult.CUDA_SUCCESS,)

    monkeypatch.setattr(L, "_cu_launch", launch)
    monkeypatch.setattr(L, "_make_current", lambda d: setattr(L._THREAD, "device", d))
    monkeypatch.setattr(L, "_core_launch", lambda *a: calls.append(dict(core=a)))
    monkeypatch.setattr(L, "_core_stream", lambda h: h)
    monkeypatch.setattr(L, "_launch_config", lambda *a: a)
    return calls


def test_slots_hold_numba_abi(recorder):
    entry = _entry()
    assert entry.pack is not None and int(entry.function) == 0x1234
    with L.use_launcher("fast"):
        _kernel(entry).launch("float32", (3, 2), 128, 55, 0, *_args(), shmem=16)
    (call,) = recorder
    assert call["dims"] == (3, 2, 1, 128, 1, 1) and call["shmem"] == 16 and call["stream"] == 55
    assert call["extra"] == 0
    q = [int.from_bytes(s, "little", signed=True) for s in call["slots"]]
    assert q[:7] == [0, 0, 6, 4, 0x7000, 6, 4]                        # meminfo parent nitems itemsize data shape strides
    assert q[7:16] == [0, 0, 6, 4, 0x9008, 2, 3, 12, 4]
    s = call["slots"][16:]
    assert s[0][:4] == np.float32(0.1).tobytes()                        # rounded as np.float32 rounds
    assert s[1] == np.float64(0.1).tobytes()
    assert s[2][:4] == np.int32(-7).tobytes()
    assert s[3][:1] == b"\x01"


def test_unpackable_values_take_cuda_core(recorder):
    with L.use_launcher("fast"), np.errstate(over="ignore"):
        a, b, *_ = _args()
        _kernel(_entry()).launch("float32", (1,), (32,), 0, 0, a, b, 1e300, 0.0, 1, False)   # float32 overflow
    (call,) = recorder
    assert "core" in call
    assert np.isinf(call["core"][-4])                                   # numpy's conversion, as before


def test_core_launcher_selected(recorder):
    with L.use_launcher("core"):
        _kernel(_entry()).launch("float32", (1,), (32,), 0, 0, *_args())
    assert "core" in recorder[0]
    with pytest.raises(ValueError):
        with L.use_launcher("cupy"):
            pass


def test_context_loss_is_retried_then_raised(monkeypatch, recorder):
    results = [driver.CUresult.CUDA_ERROR_INVALID_CONTEXT, driver.CUresult.CUDA_SUCCESS]
    bound = []
    monkeypatch.setattr(L, "_cu_launch", lambda *a: (results.pop(0),))
    monkeypatch.setattr(L, "_make_current", lambda d: (bound.append(d), setattr(L._THREAD, "device", d)))
    with L.use_launcher("fast"):
        k = _kernel(_entry())
        k.launch("float32", (1,), (32,), 0, 0, *_args())
        assert bound[-1] == 0 and not results
        monkeypatch.setattr(L, "_cu_launch", lambda *a: (driver.CUresult.CUDA_ERROR_INVALID_VALUE,))
        with pytest.raises(RuntimeError, match="CUDA_ERROR_INVALID_VALUE"):
            k.launch("float32", (1,), (32,), 0, 0, *_args())


def test_device_array_constructor_and_layout():
    d = L.DeviceArray(0x100, [2, 3], (12, 4), 4, "<f4", owner="o")
    assert d.shape == (2, 3) and d.strides == (12, 4) and d.itemsize == 4 and d.typestr == "<f4"
    assert d.abi == (0, 0, 6, 4, 0x100, 2, 3, 12, 4) and d.owner == "o"
    e = L.device_array(0x200, d.layout)
    assert e.abi == (0, 0, 6, 4, 0x200, 2, 3, 12, 4) and e.shape == (2, 3)


def test_threads_have_their_own_slots():
    import threading
    mine = L._THREAD.params
    other = []
    t = threading.Thread(target=lambda: other.append(L._THREAD.params))
    t.start()
    t.join()
    assert other[0] != mine


def _prepared(entry, grid=(3, 2), block=128, shmem=16):
    a, b, *_ = _args()
    return _kernel(entry).prepare("float32", 0, [a.layout, b.layout], grid, block, shmem)


def test_prepared_launch_packs_what_launch_packs(recorder):
    a, b, *scalars = _args()
    with L.use_launcher("fast"):
        _kernel(_entry()).launch("float32", (3, 2), 128, 55, 0, a, b, *scalars, shmem=16)
        _prepared(_entry())(55, a.ptr, b.ptr, *scalars)
    assert len(recorder) == 2 and recorder[0] == recorder[1]


def test_prepared_launch_takes_the_other_launchers(recorder):
    a, b, *scalars = _args()
    prepared = _prepared(_entry())
    with L.use_launcher("core"):
        prepared(55, a.ptr, b.ptr, *scalars)
    with L.use_launcher("fast"), np.errstate(over="ignore"):
        prepared(55, a.ptr, b.ptr, 1e300, 0.0, 1, False)                  # does not pack: cuda.core
    first, second = (call["core"] for call in recorder)
    assert first[0] == 55 and first[1] == ((3, 2), 128, 16)               # stream, (grid, block, shmem)
    assert first[3:] == (*a.abi, *b.abi, np.float32(0.1), np.float64(0.1), -7, True)
    assert np.isinf(second[-4])
    with L.use_fallback():
        launched = []
        k = _kernel(_entry())
        k._launch_numba = lambda entry, grid, block, stream, device, args, shmem: launched.append(args)
        k.prepare("float32", 0, [a.layout, b.layout], 1, 32)(0, a.ptr, b.ptr, *scalars)
    (args,) = launched
    assert [x.abi for x in args[:2]] == [a.abi, b.abi] and args[2:] == tuple(scalars)


def test_prepared_launch_checks_geometry_once():
    with pytest.raises(ValueError, match="grid and block"):
        _prepared(_entry(), grid=(0,))


def test_prepared_launch_retries_context_loss(monkeypatch, recorder):
    a, b, *scalars = _args()
    results = [driver.CUresult.CUDA_ERROR_INVALID_CONTEXT, driver.CUresult.CUDA_SUCCESS]
    bound = []
    monkeypatch.setattr(L, "_cu_launch", lambda *a: (results.pop(0),))
    monkeypatch.setattr(L, "_make_current", lambda d: (bound.append(d), setattr(L._THREAD, "device", d)))
    with L.use_launcher("fast"):
        _prepared(_entry())(0, a.ptr, b.ptr, *scalars)
    assert bound[-1] == 0 and not results


# ---------------------------------------------------------------------------------------------
# the kernel ABI the packers assume, checked against numba-cuda before the first compile


def test_kernel_abi_matches_installed_numba_cuda():
    assert L._abi_problems(L._cuda_target_context()) == []
    L.check_kernel_abi()


def test_changed_array_fields_fail_loudly(monkeypatch):
    monkeypatch.setattr(L, "ARRAY_FIELDS", ("meminfo", "parent", "itemsize", "nitems", "data", "shape", "strides"))
    with pytest.raises(L.KernelAbiError, match=r"array fields: expected \('meminfo', 'parent', 'itemsize'") as err:
        L.check_kernel_abi()
    message = str(err.value)
    assert "numba-cuda 0.30" in message and "GPUOPS_LAUNCHER=numba" in message
    monkeypatch.setattr(L, "ARRAY_FIELDS", L.ARRAY_FIELDS[:-1] + ("strides", "extra"))
    with pytest.raises(L.KernelAbiError, match="extra"):
        L.check_kernel_abi()


def test_changed_scalar_slots_fail_loudly(monkeypatch):
    monkeypatch.setattr(L, "_PACK_CODES", {**L._PACK_CODES, nt.float32: "d"})
    with pytest.raises(L.KernelAbiError, match="float32 argument: expected one parameter of 8 bytes"):
        L.check_kernel_abi()


def test_first_compile_checks_the_abi_before_touching_a_gpu(monkeypatch):
    monkeypatch.setattr(L, "_ABI_CHECKED", False)
    monkeypatch.setattr(L, "ARRAY_FIELDS", ("data", "shape", "strides"))
    k = L.Kernel(lambda *a: None, lambda d: SIG, dtypes=("float32",))
    L.KERNELS.remove(k)
    with L.use_launcher("fast"), pytest.raises(L.KernelAbiError):
        k._compile("float32", 0)
    assert not L._ABI_CHECKED


def _module_imports(path):
    """Every module (and ``module.name`` of from-imports) that ``path`` imports, at any depth."""
    import ast
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
    return names


def test_launcher_and_copy_kernel_do_not_import_the_core():
    """One-directional layering: gpuops._core imports the launcher (lazily), never the other way round."""
    import pathlib
    root = pathlib.Path(L.__file__).parent
    for path in (root / "_launch.py", root / "cuda" / "_copy.py"):
        # `from gpuops import _core` counts as "gpuops._core" too
        assert not [n for n in _module_imports(path) if n.startswith("gpuops._core")], path
