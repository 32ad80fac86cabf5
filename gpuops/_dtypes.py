"""The floating dtypes gpuops computes in, named the same on every framework.

Kernels never see bfloat16 as such: ``__cuda_array_interface__`` cannot express it (torch exports
it as ``<f2``, JAX as ``<V2``), so bf16 data travels as its raw 16 bits (uint16) and kernels
convert with `gpuops.cuda._memory.load`/`store`.  16-bit types compute in float32.
"""
FLOAT_DTYPES = ("float16", "bfloat16", "float32", "float64")

#: storage dtype name -> (numpy storage dtype, itemsize, compute dtype name)
STORAGE = {
    "float16": ("float16", 2, "float32"),
    "bfloat16": ("uint16", 2, "float32"),
    "float32": ("float32", 4, "float32"),
    "float64": ("float64", 8, "float64"),
}

#: dtype name on the CPU path: 16-bit inputs are upcast (docs/ops.md, conventions)
CPU_COMPUTE = {"float16": "float32", "bfloat16": "float32", "float32": "float32", "float64": "float64"}


def dtype_name(dtype) -> str:
    """'float32', 'bfloat16', ... for a numpy / torch / jax / ml_dtypes / cupy dtype object."""
    name = getattr(dtype, "name", None)
    if isinstance(name, str):          # numpy, ml_dtypes, jax dtypes
        return name
    text = str(dtype)                  # torch.float32 -> 'torch.float32'
    return text.rsplit(".", 1)[-1]


def compute_dtype(name: str) -> str:
    return STORAGE[name][2]
