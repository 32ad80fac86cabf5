"""Prepared launches of repeated calls (`gpuops._core.launch`) and the elementwise plans on them, without a
GPU: a fake CUDA array kind stands in for device arrays and a recorder for `Kernel.prepare`.  The real
packed launch is tests/core/test_launch_packing.py; tests/gpu runs the whole path on a device."""
import numpy as np
import pytest

import gpuops
from gpuops import _core, elementwise


class FakeCuda:
    """A device array as far as the core can tell: numpy memory at a chosen address on cuda:0."""

    def __init__(self, shape, dtype="float32", ptr=0x10000):
        self.array, self.ptr = np.zeros(shape, dtype), ptr
        self.shape, self.dtype = self.array.shape, self.array.dtype


class _FakeKind(_core._Kind):
    name = "fake_cuda"

    def __init__(self):
        self.pointer_reads, self.streams = 0, iter(range(100, 200))

    def wrap(self, obj, name):
        return _core.Arr(obj, self, obj.shape, _core.dtype_name(obj.dtype), 0, name)

    def contiguous(self, arr):
        return arr

    def is_contiguous(self, arr):
        return True

    def empty(self, arr, shape, dtype):
        return self.wrap(FakeCuda(shape, dtype, ptr=0x20000), "out")

    def data_ptr(self, arr):
        self.pointer_reads += 1
        return arr.obj.ptr

    def stream(self, arr):
        return next(self.streams)                   # the caller's current stream changes between calls


class _Kernel:
    def __init__(self, name, prepared, launched):
        self.name, self.prepared, self.launched = name, prepared, launched

    def prepare(self, dtype, device, layouts, grid, block, shmem=0):
        self.prepared.append((self.name, dtype, device, [(lay.shape, lay.strides) for lay in layouts], grid, block))
        return lambda stream, *args: self.launched.append((self.name, stream, args))


@pytest.fixture
def fake(monkeypatch):
    kind = _FakeKind()
    monkeypatch.setitem(_core._KIND_BY_TYPE, FakeCuda, kind)
    monkeypatch.setattr(_core, "_PREPARED", {})
    prepared, launched = [], []
    for name in ("gsmelu_forward", "gsmelu_forward_words", "gsmelu_backward", "gsmelu_backward_words",
                 "ncrelu_forward", "ncrelu_backward"):
        monkeypatch.setitem(_core._CUDA_KERNELS, ("elementwise", name), _Kernel(name, prepared, launched))
    return kind, prepared, launched


def test_gsmelu_prepares_once_and_reads_each_pointer_once(fake):
    kind, prepared, launched = fake
    x = FakeCuda((4, 256))
    for _ in range(3):
        gpuops.gsmelu(x, slope=1.3)
    assert prepared == [("gsmelu_forward_words", "float32", 0, [((1024,), (4,))] * 2, (1,), (256,))]
    assert [stream for _, stream, _ in launched] == [100, 101, 102]     # the current stream, every call
    assert kind.pointer_reads == 2 * 3                                    # x and out, once a call each
    scalars = elementwise._forward_scalars(1.3, 0.01, 0.1, 0.1, 0.0)
    assert launched[0][2] == (0x10000, 0x20000, *scalars)


def test_gsmelu_word_kernel_only_when_every_array_allows_it(fake):
    _, prepared, launched = fake
    gpuops.gsmelu(FakeCuda(1024, ptr=0x10004))                           # misaligned input
    gpuops.gsmelu(FakeCuda(1023))                                         # not whole words
    gpuops.gsmelu_backward(FakeCuda(1024, ptr=0x30004), FakeCuda(1024))   # misaligned grad_out
    gpuops.gsmelu_backward(FakeCuda(1024), FakeCuda(1024), stream=7)
    assert [(p[0], p[4]) for p in prepared] == [
        ("gsmelu_forward", (1,)), ("gsmelu_forward", (1,)), ("gsmelu_backward", (1,)), ("gsmelu_backward_words", (1,))]
    assert launched[-1][1] == 7


def test_ncrelu_plans_by_shape(fake):
    _, prepared, launched = fake
    x = FakeCuda((2, 3, 5))
    gpuops.ncrelu(x)
    gpuops.ncrelu(x)
    gpuops.ncrelu_backward(FakeCuda((2, 6, 5)), x)
    assert [p[0] for p in prepared] == ["ncrelu_forward", "ncrelu_backward"]
    assert [shape for shape, _ in prepared[0][3]] == [(2, 15), (2, 2, 15)]
    assert [shape for shape, _ in prepared[1][3]] == [(2, 2, 15), (2, 15), (2, 15)]
    assert prepared[0][4] == (1, 2) and len(launched) == 3


def test_dtypes_and_sizes_get_their_own_launch(fake):
    _, prepared, _ = fake
    for x in (FakeCuda(64), FakeCuda(64, "float64"), FakeCuda(128), FakeCuda(64)):
        gpuops.gsmelu(x)
    assert [(p[1], p[3][0][0]) for p in prepared] == [("float32", (64,)), ("float64", (64,)), ("float32", (128,))]


def test_scalar_memo_keeps_types_and_signed_zeros():
    forward = elementwise._forward_scalars
    assert elementwise._scalars(forward, 1.0, 0.01, 0.1, 0.1, 0.0) == forward(1.0, 0.01, 0.1, 0.1, 0.0)
    assert elementwise._scalars(forward, 1, 0.01, 0.1, 0.1, 0.0) == forward(1.0, 0.01, 0.1, 0.1, 0.0)
    with pytest.raises(TypeError, match="slope must be a real number, got bool"):
        elementwise._scalars(forward, True, 0.01, 0.1, 0.1, 0.0)              # True == 1 == 1.0
    assert np.signbit(elementwise._scalars(forward, 1.0, 0.01, 0.1, 0.1, -0.0)[1])
    assert not np.signbit(elementwise._scalars(forward, 1.0, 0.01, 0.1, 0.1, 0.0)[1])
    assert elementwise._scalars(forward, np.float32(0.1), 0.01, 0.1, 0.1, 0.0)[4] == np.float32(0.1) - 0.01
    for bad in ("1", None, 1j):
        with pytest.raises(TypeError, match="slope must be a real number"):
            elementwise._scalars(forward, bad, 0.01, 0.1, 0.1, 0.0)
    for _ in range(2):                                                         # a failure is never memoised
        with pytest.raises(ValueError, match="alpha \\+ beta must be > 0"):
            elementwise._scalars(forward, 1.0, 0.01, -0.1, 0.1, 0.0)


# ---------------------------------------------------------------------------------------------
# recorded launches replayed on new pointers (the JAX adapter's callbacks)


def _forward_words(x_ptr, out_ptr, stream, slope=1.3):
    return ("gsmelu_forward_words", stream, (x_ptr, out_ptr, *elementwise._forward_scalars(slope, 0.01, 0.1, 0.1, 0.0)))


def test_record_replays_the_launches_on_other_pointers(fake):
    _, prepared, launched = fake
    x, out = FakeCuda(1024, ptr=0x10000), FakeCuda(1024, ptr=0x20000)
    replay = _core.record(lambda: gpuops.gsmelu(x, out=out, stream=5, slope=1.3), [0x20000, 0x10000])
    assert isinstance(replay, _core.Replay)
    assert launched == [_forward_words(0x10000, 0x20000, 5)]
    assert replay(9, [0x50000, 0x40000]) is True                          # buffers in the recorded order
    assert launched[-1] == _forward_words(0x40000, 0x50000, 9)
    assert len(prepared) == 1


def test_replay_refuses_buffers_of_another_alignment(fake):
    _, _, launched = fake
    x, out = FakeCuda(1024, ptr=0x10000), FakeCuda(1024, ptr=0x20000)
    replay = _core.record(lambda: gpuops.gsmelu(x, out=out, stream=5), [0x20000, 0x10000])
    assert replay(9, [0x50000, 0x40004]) is False                          # would need the non-word kernel
    assert len(launched) == 1


@pytest.mark.parametrize("case", ["allocates", "aliased buffers", "launch on an unknown pointer"])
def test_record_gives_none_where_a_replay_would_be_wrong(fake, case):
    _, _, launched = fake
    x, out = FakeCuda(1024, ptr=0x10000), FakeCuda(1024, ptr=0x20000)
    body, pointers = (lambda: gpuops.gsmelu(x, out=out, stream=5)), [0x20000, 0x10000]
    if case == "allocates":
        body = lambda: gpuops.gsmelu(x, stream=5)                          # noqa: E731 (out allocated)
        pointers = [0x30000, 0x10000]
    elif case == "aliased buffers":
        pointers = [0x20000, 0x10000, 0x10000]
    else:
        pointers = [0x20000, 0x10100]
    assert _core.record(body, pointers) is None
    assert len(launched) == 1                                              # the body still ran, once
    assert _core._RECORDING.launches is None


def test_record_leaves_no_state_behind_when_the_body_raises(fake):
    with pytest.raises(ValueError, match="out must be float32"):
        _core.record(lambda: gpuops.gsmelu(FakeCuda(8), out=FakeCuda(9), stream=1), [1, 2])
    assert _core._RECORDING.launches is None and _core._RECORDING.replayable


class FakeXlaBuffer(FakeCuda):
    """A jax buffer_callback buffer as far as the adapter can tell."""

    def __init__(self, shape, ptr, device_type=2):
        super().__init__(shape, ptr=ptr)
        self.device_type = device_type

    def __dlpack_device__(self):
        return self.device_type, 0

    @property
    def __cuda_array_interface__(self):
        return {"data": (self.ptr, False), "shape": self.shape, "typestr": "<f4", "version": 3}


@pytest.fixture
def gsmelu_callback(fake, monkeypatch):
    """The JAX adapter's callback over a core gsmelu (slope 1.3), on fake XLA buffers; it notes the stream
    of each call that ran the core function."""
    from types import SimpleNamespace

    from gpuops.adapters import jax as gj
    kind, prepared, launched = fake
    monkeypatch.setitem(_core._KIND_BY_TYPE, FakeXlaBuffer, kind)
    bodies = []

    def body(stream, out, x):
        bodies.append(stream)
        gpuops.gsmelu(x, out=out, stream=stream, slope=1.3)

    callback = gj._replaying(body)

    def call(stream, n, out_ptr, x_ptr):
        callback(SimpleNamespace(stream=stream), FakeXlaBuffer(n, out_ptr), FakeXlaBuffer(n, x_ptr))
    return call, bodies, prepared, launched


def test_jax_callback_runs_the_core_once_then_replays(gsmelu_callback):
    call, bodies, prepared, launched = gsmelu_callback
    for i, stream in enumerate((11, 12, 13)):
        call(stream, 1024, 0x100000 * (i + 2), 0x100000 * (i + 5))
    assert bodies == [11]
    assert launched == [_forward_words(0x500000, 0x200000, 11), _forward_words(0x600000, 0x300000, 12),
                        _forward_words(0x700000, 0x400000, 13)]
    call(14, 512, 0x100000, 0x200000)
    assert bodies == [11, 14] and len(prepared) == 2                      # a new shape: the core again
    call(15, 1024, 0x100000, 0x100000)
    assert bodies == [11, 14, 15]                                         # aliased: the core, not a replay
    assert launched[-1] == _forward_words(0x100000, 0x100000, 15)


def test_jax_callback_on_cpu_buffers_always_runs_the_core(fake, monkeypatch):
    from gpuops.adapters import jax as gj
    bodies = []
    callback = gj._replaying(lambda stream, out, x: bodies.append(stream))
    for _ in range(2):
        callback(None, FakeXlaBuffer(8, 0x1000, device_type=1), FakeXlaBuffer(8, 0x2000, device_type=1))
    assert bodies == [None, None]


def test_jax_callback_keeps_its_replay_after_a_one_off_aliased_call(gsmelu_callback):
    call, bodies, _, launched = gsmelu_callback
    for stream, (out_ptr, x_ptr) in zip((1, 2, 3), ((0x100000, 0x100000), (0x200000, 0x300000), (0x400000, 0x500000))):
        call(stream, 64, out_ptr, x_ptr)
    assert bodies == [1, 2]                                               # aliased first call: not recorded
    assert launched[-1] == _forward_words(0x500000, 0x400000, 3)


# ---------------------------------------------------------------------------------------------
# the depthwise forward on prepared launches


class _ShmemKernel(_Kernel):
    def prepare(self, dtype, device, layouts, grid, block, shmem=0):
        launch = super().prepare(dtype, device, layouts, grid, block, shmem)
        self.prepared[-1] += (shmem,)
        return launch


@pytest.fixture
def fake_conv(fake, monkeypatch):
    kind, prepared, launched = fake
    for name in ("dw_tile_3", "dw_fast_3_2"):
        monkeypatch.setitem(_core._CUDA_KERNELS, ("conv", name), _ShmemKernel(name, prepared, launched))
    return fake


def test_depthwise_forward_prepares_once_per_shape(fake_conv):
    from gpuops import conv
    _, prepared, launched = fake_conv
    x, w, b = FakeCuda((2, 4, 20, 20), ptr=0x1000), FakeCuda((4, 1, 3, 3), ptr=0x2000), FakeCuda(4, ptr=0x3000)
    out = FakeCuda((2, 4, 20, 20), ptr=0x4000)
    for stream in (5, 6):
        gpuops.conv2d_depthwise(x, w, b, padding=1, out=out, stream=stream)
    assert conv.tile_shape(3, 20, 20) == (20, 3)                                  # 20 columns × 3 strips of 8 rows
    assert prepared == [("dw_tile_3", "float32", 0, [((3200,), (4,)), ((36,), (4,)), ((4,), (4,)), ((3200,), (4,))],
                         (8, 1, 1), (64,), conv._tile_smem(3, 20, 3))]
    assert len(prepared) == 1 and [stream for _, stream, _ in launched] == [5, 6]
    assert launched[0][2][:5] == (0x1000, 0x2000, 0x3000, 0x4000, 1)              # pointers, has_bias
    gpuops.conv2d_depthwise(x, w, None, stride=2, padding=1, out=FakeCuda((2, 4, 10, 10), ptr=0x5000), stream=7)
    assert prepared[-1][0] == "dw_fast_3_2" and prepared[-1][-1] == 0
    assert launched[-1][2][:5] == (0x1000, 0x2000, 0x2000, 0x5000, 0)             # weights stand in for bias


def test_depthwise_forward_is_replayable(fake_conv):
    _, _, launched = fake_conv
    x, w, b = FakeCuda((2, 4, 20, 20), ptr=0x1000), FakeCuda((4, 1, 3, 3), ptr=0x2000), FakeCuda(4, ptr=0x3000)
    out = FakeCuda((2, 4, 20, 20), ptr=0x4000)
    replay = _core.record(lambda: gpuops.conv2d_depthwise(x, w, b, padding=1, out=out, stream=5),
                          [0x4000, 0x1000, 0x2000, 0x3000])
    assert replay is not None and replay(8, [0x14000, 0x11000, 0x12000, 0x13000])
    assert launched[-1][1] == 8 and launched[-1][2][:4] == (0x11000, 0x12000, 0x13000, 0x14000)
    assert launched[-1][2][4:] == launched[0][2][4:]


# ---------------------------------------------------------------------------------------------
# `run`: every launch prepared, recorded with its scratch buffers


def _two_stage(x, out, stream):
    """A call shaped like the reductions: a first kernel writes scratch, a second reads it into ``out``."""
    x, out = _core.wrap("x", x), _core.wrap("out", out)
    partial = _core.scratch(x, (8,), "float32", stream)
    _core.run("fam", "stage1", (_core.In(x), _core.Out(partial), 3, 0.5), like=x, grid=(2,), block=(32,), stream=stream)
    _core.run("fam", "stage2", (_core.In(partial), _core.Out(out), 7), like=x, grid=(1,), block=(32,), stream=stream)
    return partial


@pytest.fixture
def two_stage(fake, monkeypatch):
    _, prepared, launched = fake
    monkeypatch.setattr(_core, "_SCRATCH", {})
    for name in ("stage1", "stage2"):
        monkeypatch.setitem(_core._CUDA_KERNELS, ("fam", name), _Kernel(name, prepared, launched))
    return prepared, launched


def test_run_prepares_once_per_geometry_with_each_array_layout(two_stage):
    prepared, launched = two_stage
    x, out = FakeCuda(16, "float64", ptr=0x10000), FakeCuda(4, "float64", ptr=0x30000)
    for _ in range(2):
        partial = _two_stage(x, out, stream=5)
    assert [p[0] for p in prepared] == ["stage1", "stage2"]                   # prepared once each
    assert prepared[0][3] == [((16,), (8,)), ((8,), (4,))]                    # each array's own dtype
    assert launched[-2:] == [("stage1", 5, (0x10000, 0x20000, 3, 0.5)), ("stage2", 5, (0x20000, 0x30000, 7))]
    assert _two_stage(x, out, stream=5) is partial                            # one scratch buffer per stream
    assert _two_stage(x, out, stream=6) is not partial


def test_record_replays_run_launches_with_their_scratch_on_its_stream(two_stage):
    _, launched = two_stage
    x, out = FakeCuda(16, "float64", ptr=0x10000), FakeCuda(4, "float64", ptr=0x30000)
    replay = _core.record(lambda: _two_stage(x, out, stream=5), [0x30000, 0x10000])
    assert isinstance(replay, _core.Replay) and len(replay.scratch) == 1
    assert replay(5, [0x70000, 0x60000]) is True
    assert launched[-2:] == [("stage1", 5, (0x60000, 0x20000, 3, 0.5)), ("stage2", 5, (0x20000, 0x70000, 7))]
    assert replay(6, [0x70000, 0x60000]) is False                             # scratch belongs to stream 5


def test_every_kernel_object_can_be_prepared():
    """`_core.run` prepares every CUDA launch: each kernel object of gpuops.cuda.* that launches must also
    prepare (a wrapper that only forwards `launch` fails on the GPU alone)."""
    import importlib
    import pkgutil

    import gpuops.cuda
    launchers = []
    for info in pkgutil.iter_modules(gpuops.cuda.__path__):
        module = importlib.import_module(f"gpuops.cuda.{info.name}")
        launchers += [(info.name, name) for name, value in vars(module).items()
                      if not isinstance(value, type) and callable(getattr(value, "launch", None))]
    assert launchers
    missing = [f"{m}.{n}" for m, n in launchers
               if not callable(getattr(vars(importlib.import_module(f"gpuops.cuda.{m}"))[n], "prepare", None))]
    assert not missing, missing
