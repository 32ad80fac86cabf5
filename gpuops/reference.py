"""Plain numpy float64 references of every op, written from spec/ops.md: the reference backend the
main job (`python -m gpuops`) and the benchmarks check gpuops against.  Slow and obvious on purpose."""
import numpy as np


def gsmelu(x, slope=1.0, neg_slope=0.01, alpha=0.1, beta=0.1, delta_t=0.0):
    x = np.asarray(x, np.float64)
    with np.errstate(invalid="ignore"):
        h = np.where(x <= -alpha, 0.0, np.where(x <= beta, (x + alpha) ** 2 / (2 * (alpha + beta)),
                                                x + (alpha - beta) / 2))
    return neg_slope * x + delta_t + (slope - neg_slope) * h


def gsmelu_backward(grad_out, x, slope=1.0, neg_slope=0.01, alpha=0.1, beta=0.1, delta_t=0.0):
    x = np.asarray(x, np.float64)
    d = np.where(x <= -alpha, neg_slope,
                 np.where(x <= beta, neg_slope + (slope - neg_slope) * (x + alpha) / (alpha + beta), slope))
    return np.asarray(grad_out, np.float64) * d


def ncrelu(x):
    x = np.asarray(x, np.float64)
    return np.concatenate([np.where(x >= 0, x, 0.0), np.where(x >= 0, 0.0, x)], axis=1)


def ncrelu_backward(grad_out, x):
    x, g = np.asarray(x, np.float64), np.asarray(grad_out, np.float64)
    c = x.shape[1]
    return np.where(x >= 0, g[:, :c], g[:, c:])
