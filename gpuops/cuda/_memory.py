"""Element loads and stores that hide the storage dtype from kernel code.

``load(a, i)`` returns the element in the compute type (float32 for float16/bfloat16/float32,
float64 for float64); ``store(a, i, v)`` rounds a compute-type value into the array's storage type.
bfloat16 arrays arrive as uint16 (see gpuops._dtypes): load shifts the 16 bits into the high half
of a float32, store rounds to nearest-even (NaN stays NaN).  On the GPU the rounding is the one
``cvt.rn.bf16.f32`` instruction of sm_80+ (the integer recipe cost about six instructions and a branch per
value, which made bfloat16 kernels instruction-bound); the simulator and CPU mirrors use the recipe.

Each function has two bodies: the plain-Python one runs under the CUDA simulator (where arrays are
numpy arrays), the ``@overload`` is what the CUDA compiler inlines.
"""
import numpy as np

from llvmlite import ir

from gpuops._toolchain import intrinsic, libdevice, nt, overload


def load(a, i):
    v = a[i]
    if a.dtype == np.uint16:
        return np.array(np.uint32(v) << np.uint32(16), dtype=np.uint32).view(np.float32)[()]
    if a.dtype == np.float16:
        return np.float32(v)
    return v


def load4(a, i):
    """``a[i:i + 4]`` as four compute-type values.  For float32 arrays the CUDA body is one 16-byte vector
    load, so ``i`` must be a multiple of 4 and the array's data 16-byte aligned (callers pass offsets into
    freshly allocated buffers, which every GPU allocator aligns to at least 256 bytes); other dtypes load
    element by element."""
    return load(a, i), load(a, i + 1), load(a, i + 2), load(a, i + 3)


def zero(a):
    """0 in ``a``'s compute type (a start for sums: ``a[i] * 0`` would be NaN for a non-finite a[i])."""
    return np.float64(0) if a.dtype == np.float64 else np.float32(0)


def store(a, i, v):
    if a.dtype == np.uint16:
        a[i] = _round_bf16_bits(np.array(v, dtype=np.float32).view(np.uint32)[()])
    else:
        a[i] = v


def _round_bf16_bits(bits):
    if (bits & np.uint32(0x7FFFFFFF)) > np.uint32(0x7F800000):
        return np.uint16(0x7FC0)
    rounded = (bits + np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16)
    return np.uint16(rounded & np.uint32(0xFFFF))


@overload(load, target="cuda")
def _load_cuda(a, i):
    if a.dtype == nt.uint16:
        def impl(a, i):
            return libdevice.int_as_float(nt.int32(nt.uint32(a[i]) << nt.uint32(16)))
        return impl
    if a.dtype == nt.float16:
        def impl(a, i):
            return nt.float32(a[i])
        return impl

    def impl(a, i):
        return a[i]
    return impl


@intrinsic
def _load_float32x4(typingctx, a, i):
    """Four float32 values from ``a.data + i`` (16-byte aligned) in one vector load."""
    def codegen(context, builder, sig, args):
        data = context.make_array(sig.args[0])(context, builder, args[0]).data
        vector = ir.VectorType(ir.FloatType(), 4)
        loaded = builder.load(builder.bitcast(builder.gep(data, [args[1]]), vector.as_pointer()), align=16)
        values = [builder.extract_element(loaded, ir.Constant(ir.IntType(32), k)) for k in range(4)]
        return context.make_tuple(builder, sig.return_type, values)
    return nt.UniTuple(nt.float32, 4)(a, i), codegen


@overload(load4, target="cuda")
def _load4_cuda(a, i):
    if a.dtype == nt.float32:
        return lambda a, i: _load_float32x4(a, i)
    return lambda a, i: (load(a, i), load(a, i + 1), load(a, i + 2), load(a, i + 3))


@overload(zero, target="cuda")
def _zero_cuda(a):
    if a.dtype == nt.float64:
        return lambda a: nt.float64(0)
    return lambda a: nt.float32(0)


@intrinsic
def _bf16_bits(typingctx, v):
    """The bfloat16 bits of float32 ``v``, rounded to nearest-even by the hardware (NaN gives a NaN)."""
    def codegen(context, builder, sig, args):
        cvt = ir.InlineAsm(ir.FunctionType(ir.IntType(16), [ir.FloatType()]), "cvt.rn.bf16.f32 $0, $1;", "=h,f")
        return builder.call(cvt, args)
    return nt.uint16(nt.float32), codegen


@overload(store, target="cuda")
def _store_cuda(a, i, v):
    if a.dtype == nt.uint16:
        def impl(a, i, v):
            a[i] = _bf16_bits(nt.float32(v))
        return impl
    if a.dtype == nt.float16:
        def impl(a, i, v):
            a[i] = nt.float16(v)
        return impl

    def impl(a, i, v):
        a[i] = v
    return impl
