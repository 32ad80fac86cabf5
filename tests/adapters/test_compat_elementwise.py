"""The drop-ins reproduce the originals' observable behaviour (research/originals.md §1, §4.4)."""
import pytest

torch = pytest.importorskip("torch")
from gpuops.compat import pyinn, pytorch_cuda_ops  # noqa: E402


def _original_gsmelu_oracle(x, gp, gm, a, b, dt):
    # the seed's own closed form (originals.md §1), with its piecewise constants a/b/c
    t = -gm * a + dt
    qa = (gp - gm) / (2 * (a + b))
    qb = (a * gp + b * gm) / (a + b)
    qc = t + (a * a * (gp + gm) + 2 * a * b * gm) / (2 * (a + b))
    return torch.where(x <= -a, gm * x + t + gm * a,
                       torch.where(x <= b, qa * x * x + qb * x + qc, gp * x + t + (a + b) / 2 * gm + (a - b) / 2 * gp))


def test_gsmelu_positional_signature_and_values():
    x = torch.linspace(-1, 1, 101, dtype=torch.float64)
    args = (1.3, 0.05, 0.2, 0.4, 0.1)
    torch.testing.assert_close(pytorch_cuda_ops.gsmelu(x, *args), _original_gsmelu_oracle(x, *args))


def test_gsmelu_module_uses_negative_slope_keyword():
    m = pytorch_cuda_ops.GSmeLU(slope=2.0, negative_slope=0.5, alpha=0.3, beta=0.1)
    x = torch.linspace(-2, 2, 41, dtype=torch.float64)
    torch.testing.assert_close(m(x), _original_gsmelu_oracle(x, 2.0, 0.5, 0.3, 0.1, 0.0))


def test_pyinn_ncrelu():
    x = torch.randn(2, 3, 4, 5, dtype=torch.float64, requires_grad=True)
    y = pyinn.ncrelu(x)
    torch.testing.assert_close(y, torch.cat([x.clamp(min=0), x.clamp(max=0)], 1))
    g = torch.randn_like(y)
    y.backward(g)
    torch.testing.assert_close(x.grad, torch.where(x >= 0, g[:, :3], g[:, 3:]))
