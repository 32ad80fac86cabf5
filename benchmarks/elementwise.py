"""Workloads of the elementwise family: bandwidth at 2**28 elements and small-call host overhead.

The peers are the expressions a user would otherwise write (torch, jnp); benchmarks.cpu_mirrors and
benchmarks.profile_jax_callback time the same ones."""
import numpy as np

from benchmarks.runner import workload

N = 1 << 28


def torch_gsmelu(x, slope=1.0, neg_slope=0.01, alpha=0.1, beta=0.1, delta_t=0.0):
    import torch
    h = torch.where(x <= -alpha, 0.0, torch.where(x <= beta, (x + alpha) ** 2 / (2 * (alpha + beta)),
                                                  x + (alpha - beta) / 2))
    return neg_slope * x + delta_t + (slope - neg_slope) * h


def _gsmelu_slope_expr(g, x, slope=1.0, neg_slope=0.01, alpha=0.1, beta=0.1):
    import torch
    return g * torch.where(x <= -alpha, neg_slope, torch.where(x <= beta, neg_slope + (slope - neg_slope)
                                                               * (x + alpha) / (alpha + beta), slope))


def torch_ncrelu(x):
    import torch
    return torch.cat([x.clamp(min=0), x.clamp(max=0)], 1)


def jnp_gsmelu(t, slope=1.0, neg_slope=0.01, alpha=0.1, beta=0.1):
    import jax.numpy as jnp
    h = jnp.where(t <= -alpha, 0.0, jnp.where(t <= beta, (t + alpha) ** 2 / (2 * (alpha + beta)),
                                              t + (alpha - beta) / 2))
    return neg_slope * t + (slope - neg_slope) * h


def _tol(dtype):
    return {"float32": 1e-5, "float16": 2e-3, "bfloat16": 2e-2}[dtype]


for _dtype in ("float32", "float16", "bfloat16"):
    def _fwd(dtype=_dtype):
        import torch

        import gpuops
        x = torch.randn(N, device="cuda", dtype=getattr(torch, dtype))
        peer = torch.compile(torch_gsmelu)

        def check():
            return torch.allclose(gpuops.gsmelu(x).float(), peer(x).float(), rtol=_tol(dtype), atol=_tol(dtype))
        return dict(gpuops=lambda: gpuops.gsmelu(x), peer=lambda: peer(x), peer_name="torch.compile expr",
                    check=check, bytes=2 * x.numel() * x.element_size())

    def _bwd(dtype=_dtype):
        import torch

        import gpuops
        x = torch.randn(N, device="cuda", dtype=getattr(torch, dtype))
        g = torch.randn_like(x)
        peer = torch.compile(_gsmelu_slope_expr)

        def check():
            return torch.allclose(gpuops.gsmelu_backward(g, x).float(), peer(g, x).float(), rtol=_tol(dtype),
                                  atol=_tol(dtype))
        return dict(gpuops=lambda: gpuops.gsmelu_backward(g, x), peer=lambda: peer(g, x),
                    peer_name="torch.compile expr", check=check, bytes=3 * x.numel() * x.element_size())

    workload("gsmelu", "2^28 fwd", _dtype)(_fwd)
    workload("gsmelu", "2^28 bwd", _dtype)(_bwd)


@workload("ncrelu", "2^27 (N=64) fwd", "float32")
def _ncrelu():
    import torch

    import gpuops
    x = torch.randn(64, N // 128, 2, device="cuda")
    peer = torch.compile(torch_ncrelu)
    return dict(gpuops=lambda: gpuops.ncrelu(x), peer=lambda: peer(x), peer_name="torch.compile cat/clamp",
                check=lambda: torch.equal(gpuops.ncrelu(x), peer(x)), bytes=3 * x.numel() * 4)


@workload("copy", "2^28 device copy (reference)", "float32")
def _copy():
    import torch
    a = torch.randn(N, device="cuda")
    b = torch.empty_like(a)
    return dict(gpuops=lambda: b.copy_(a), peer=lambda: b.copy_(a), peer_name="same", check=lambda: True,
                bytes=2 * a.numel() * 4)


@workload("gsmelu", "1024 elements, gpuops.torch vs torch.mul", "float32", kind="host")
def _small_torch():
    import torch

    import gpuops.torch as gt
    x = torch.randn(1024, device="cuda")
    return dict(gpuops=lambda: gt.gsmelu(x), peer=lambda: torch.mul(x, 2.0), peer_name="torch.mul",
                check=lambda: torch.allclose(gt.gsmelu(x), torch_gsmelu(x)))


@workload("gsmelu", "1024 elements, gpuops.torch fwd+bwd vs torch expr", "float32", kind="host")
def _small_torch_grad():
    import torch

    import gpuops.torch as gt
    x = torch.randn(1024, device="cuda", requires_grad=True)
    return dict(gpuops=lambda: gt.gsmelu(x).sum().backward(), peer=lambda: torch_gsmelu(x).sum().backward(),
                peer_name="torch expr", check=lambda: True)


@workload("gsmelu", "1024 elements, gpuops.jax under jit vs jnp expr", "float32", kind="host")
def _small_jax():
    import jax
    import jax.numpy as jnp

    import gpuops.jax as gj
    x = jnp.asarray(np.random.default_rng(0).standard_normal(1024, dtype=np.float32))
    ours = jax.jit(gj.gsmelu)
    peer = jax.jit(jnp_gsmelu)
    state = {}

    def run_ours():
        state["y"] = ours(x)

    def run_peer():
        state["y"] = peer(x)
    return dict(gpuops=run_ours, peer=run_peer, peer_name="jnp expr under jit",
                check=lambda: bool(jnp.allclose(ours(x), peer(x), rtol=1e-5, atol=1e-6)),
                sync=lambda: state["y"].block_until_ready() if "y" in state else None)
