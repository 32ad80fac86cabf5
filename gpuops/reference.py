"""Plain numpy float64 references of every op, written from docs/ops.md: the reference backend the
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


def _pair(v):
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def _taps(kh, kw, dh, dw, sh, sw, Ho, Wo):
    """(i, j, row slice, column slice) of every kernel tap into a padded image."""
    for i in range(kh):
        for j in range(kw):
            yield i, j, slice(i * dh, i * dh + sh * (Ho - 1) + 1, sh), slice(j * dw, j * dw + sw * (Wo - 1) + 1, sw)


def _window(size, k, p, d, s):
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


def conv2d_depthwise(x, weight, bias=None, stride=1, padding=0, dilation=1):
    x, weight = np.asarray(x, np.float64), np.asarray(weight, np.float64)
    (sh, sw), (ph, pw), (dh, dw) = _pair(stride), _pair(padding), _pair(dilation)
    N, C, H, W = x.shape
    Cm, _, kh, kw = weight.shape
    Ho, Wo = _window(H, kh, ph, dh, sh), _window(W, kw, pw, dw, sw)
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))[:, np.arange(Cm) // (Cm // C)]
    out = np.zeros((N, Cm, Ho, Wo))
    for i, j, rows, cols in _taps(kh, kw, dh, dw, sh, sw, Ho, Wo):
        out += weight[None, :, 0, i, j, None, None] * xp[:, :, rows, cols]
    if bias is not None:
        out += np.asarray(bias, np.float64)[None, :, None, None]
    return out


def conv2d_depthwise_backward(grad_out, x, weight, bias=None, stride=1, padding=0, dilation=1):
    x, weight, g = np.asarray(x, np.float64), np.asarray(weight, np.float64), np.asarray(grad_out, np.float64)
    (sh, sw), (ph, pw), (dh, dw) = _pair(stride), _pair(padding), _pair(dilation)
    N, C, H, W = x.shape
    Cm, _, kh, kw = weight.shape
    m = Cm // C
    Ho, Wo = g.shape[2:]
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))[:, np.arange(Cm) // m]
    gxp = np.zeros((N, Cm) + xp.shape[2:])
    gw = np.zeros_like(weight)
    for i, j, rows, cols in _taps(kh, kw, dh, dw, sh, sw, Ho, Wo):
        gxp[:, :, rows, cols] += weight[None, :, 0, i, j, None, None] * g
        gw[:, 0, i, j] = (g * xp[:, :, rows, cols]).sum((0, 2, 3))
    gx = gxp.reshape(N, C, m, *gxp.shape[2:]).sum(2)[:, :, ph:ph + H, pw:pw + W]
    return gx, gw, (g.sum((0, 2, 3)) if bias is not None else None)


def im2col(x, kernel_size, stride=1, padding=0, dilation=1):
    x = np.asarray(x, np.float64)
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = _pair(kernel_size), _pair(stride), _pair(padding), _pair(dilation)
    H, W = x.shape[-2:]
    Ho, Wo = _window(H, kh, ph, dh, sh), _window(W, kw, pw, dw, sw)
    xp = np.pad(x, [(0, 0)] * (x.ndim - 2) + [(ph, ph), (pw, pw)])
    cols = np.zeros(x.shape[:-2] + (kh, kw, Ho, Wo))
    for i, j, rows, cs in _taps(kh, kw, dh, dw, sh, sw, Ho, Wo):
        cols[..., i, j, :, :] = xp[..., rows, cs]
    return cols


def col2im(cols, kernel_size, stride=1, padding=0, dilation=1, input_size=None):
    cols = np.asarray(cols, np.float64)
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = _pair(kernel_size), _pair(stride), _pair(padding), _pair(dilation)
    Ho, Wo = cols.shape[-2:]
    H, W = _pair(input_size) if input_size is not None else (
        (Ho - 1) * sh - 2 * ph + dh * (kh - 1) + 1, (Wo - 1) * sw - 2 * pw + dw * (kw - 1) + 1)
    lead = cols.shape[:-4]
    xp = np.zeros(lead + (H + 2 * ph + sh, W + 2 * pw + sw))
    for i, j, rows, cs in _taps(kh, kw, dh, dw, sh, sw, Ho, Wo):
        xp[..., rows, cs] += cols[..., i, j, :, :]
    return xp[..., ph:ph + H, pw:pw + W]


def _right(side, a, x):
    return side == "right" or side == "auto" and len(x) == a.shape[1]


def dgmm(a, x, side="auto"):
    a, x = np.asarray(a, np.float64), np.asarray(x, np.float64)
    return a * x[None, :] if _right(side, a, x) else x[:, None] * a


def dgmm_backward(grad_out, a, x, side="auto"):
    a, x, g = np.asarray(a, np.float64), np.asarray(x, np.float64), np.asarray(grad_out, np.float64)
    if _right(side, a, x):
        return g * x[None, :], (g * a).sum(0)
    return x[:, None] * g, (g * a).sum(1)


def _complex(z):
    """Real (re, im) pairs in the last axis as complex128; complex arrays as they are."""
    z = np.asarray(z)
    return z if np.iscomplexobj(z) else z[..., 0] + 1j * z[..., 1]


def _like(z, template):
    return z if np.iscomplexobj(template) else np.stack([z.real, z.imag], axis=-1)


def cdgmm(a, x, side="auto"):
    """Complex product, no conjugation; takes and returns complex arrays or real (re, im) pairs."""
    za, zx = _complex(a), _complex(x)
    return _like(za * zx[None, :] if _right(side, za, zx) else zx[:, None] * za, np.asarray(a))


def cdgmm_backward(grad_out, a, x, side="auto"):
    """PyTorch's complex gradient convention: grad_a = g·conj(x), grad_x = Σ g·conj(a)."""
    za, zx, g = _complex(a), _complex(x), _complex(grad_out)
    if _right(side, za, zx):
        ga, gx = g * np.conj(zx)[None, :], (g * np.conj(za)).sum(0)
    else:
        ga, gx = np.conj(zx)[:, None] * g, (g * np.conj(za)).sum(1)
    return _like(ga, np.asarray(a)), _like(gx, np.asarray(x))


def _sampler_terms(shape, kernel_size, patch_size, stride, padding, dilation, dilation_patch):
    """Every (ph, pw, i, j) term of spec §7 as slices into both inputs padded by ``margin``."""
    (kH, kW), (pH, pW), (sH, sW) = _pair(kernel_size), _pair(patch_size), _pair(stride)
    (padH, padW), (dH, dW), (dpH, dpW) = _pair(padding), _pair(dilation), _pair(dilation_patch)
    H, W = shape[2:]
    oH, oW = _window(H, kH, padH, dH, sH), _window(W, kW, padW, dW, sW)
    margin = max(abs(padH), abs(padW)) + max(pH * dpH, pW * dpW) + max(kH * dH, kW * dW) + max(sH, sW)
    terms = []
    for ph in range(pH):
        for pw in range(pW):
            sy, sx = (ph - (pH - 1) // 2) * dpH, (pw - (pW - 1) // 2) * dpW
            for i in range(kH):
                for j in range(kW):
                    y0, x0 = margin - padH + i * dH, margin - padW + j * dW
                    r1 = slice(y0, y0 + sH * (oH - 1) + 1, sH)
                    c1 = slice(x0, x0 + sW * (oW - 1) + 1, sW)
                    r2 = slice(y0 + sy, y0 + sy + sH * (oH - 1) + 1, sH)
                    c2 = slice(x0 + sx, x0 + sx + sW * (oW - 1) + 1, sW)
                    terms.append((ph, pw, r1, c1, r2, c2))
    return (pH, pW, oH, oW), margin, terms


def _pad(a, margin):
    return np.pad(np.asarray(a, np.float64), ((0, 0), (0, 0), (margin, margin), (margin, margin)))


def spatial_correlation_sample(input1, input2, kernel_size=1, patch_size=1, stride=1, padding=0, dilation=1,
                               dilation_patch=1):
    """spec §7: zero padding makes "a term is dropped when either position is outside" automatic."""
    (pH, pW, oH, oW), margin, terms = _sampler_terms(np.shape(input1), kernel_size, patch_size, stride, padding,
                                                     dilation, dilation_patch)
    a, b = _pad(input1, margin), _pad(input2, margin)
    out = np.zeros((a.shape[0], pH, pW, oH, oW))
    for ph, pw, r1, c1, r2, c2 in terms:
        out[:, ph, pw] += (a[:, :, r1, c1] * b[:, :, r2, c2]).sum(1)
    return out


def spatial_correlation_sample_backward(grad_out, input1, input2, kernel_size=1, patch_size=1, stride=1,
                                        padding=0, dilation=1, dilation_patch=1):
    shape = np.shape(input1)
    _, margin, terms = _sampler_terms(shape, kernel_size, patch_size, stride, padding, dilation, dilation_patch)
    a, b, g = _pad(input1, margin), _pad(input2, margin), np.asarray(grad_out, np.float64)
    ga, gb = np.zeros_like(a), np.zeros_like(b)
    for ph, pw, r1, c1, r2, c2 in terms:
        ga[:, :, r1, c1] += g[:, ph, pw, None] * b[:, :, r2, c2]
        gb[:, :, r2, c2] += g[:, ph, pw, None] * a[:, :, r1, c1]
    H, W = shape[2:]
    crop = (slice(None), slice(None), slice(margin, margin + H), slice(margin, margin + W))
    return ga[crop], gb[crop]


def _correlation_as_sampler(shape, pad_size, kernel_size, max_displacement, stride1, stride2):
    D = 2 * (max_displacement // stride2) + 1
    scale = 1.0 / (kernel_size * kernel_size * shape[1])
    return dict(kernel_size=kernel_size, patch_size=D, stride=stride1, padding=pad_size - max_displacement,
                dilation=1, dilation_patch=stride2), scale


def correlation(input1, input2, pad_size=0, kernel_size=1, max_displacement=0, stride1=1, stride2=1):
    """spec §8 through its identity with §7 (the sampler reference also takes a negative padding)."""
    p, scale = _correlation_as_sampler(np.shape(input1), pad_size, kernel_size, max_displacement, stride1, stride2)
    out = spatial_correlation_sample(input1, input2, **p) * scale
    return out.reshape(out.shape[0], -1, *out.shape[3:])


def correlation_backward(grad_out, input1, input2, pad_size=0, kernel_size=1, max_displacement=0, stride1=1,
                         stride2=1):
    p, scale = _correlation_as_sampler(np.shape(input1), pad_size, kernel_size, max_displacement, stride1, stride2)
    g = np.asarray(grad_out, np.float64)
    D = p["patch_size"]
    g = g.reshape(g.shape[0], D, D, *g.shape[2:]) * scale
    return spatial_correlation_sample_backward(g, input1, input2, **p)


def _involution_taps(x, weight, stride, padding, dilation):
    """x zero-padded, the weight per channel (N, C, kh, kw, Ho, Wo), and the taps into the padded x."""
    x, weight = np.asarray(x, np.float64), np.asarray(weight, np.float64)
    (sh, sw), (ph, pw), (dh, dw) = _pair(stride), _pair(padding), _pair(dilation)
    C = x.shape[1]
    _, G, kh, kw, Ho, Wo = weight.shape
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    per_channel = weight[:, np.arange(C) // (C // G)]
    return xp, per_channel, list(_taps(kh, kw, dh, dw, sh, sw, Ho, Wo)), (ph, pw)


def involution(x, weight, stride=1, padding=0, dilation=1):
    xp, wc, taps, _ = _involution_taps(x, weight, stride, padding, dilation)
    out = np.zeros(xp.shape[:2] + wc.shape[-2:])
    for i, j, rows, cols in taps:
        out += wc[:, :, i, j] * xp[:, :, rows, cols]
    return out


def involution_backward(grad_out, x, weight, stride=1, padding=0, dilation=1):
    xp, wc, taps, (ph, pw) = _involution_taps(x, weight, stride, padding, dilation)
    g = np.asarray(grad_out, np.float64)
    N, C, H, W = np.shape(x)
    G = np.shape(weight)[1]
    gxp, gwc = np.zeros_like(xp), np.zeros_like(wc)
    for i, j, rows, cols in taps:
        gxp[:, :, rows, cols] += wc[:, :, i, j] * g
        gwc[:, :, i, j] = g * xp[:, :, rows, cols]
    grad_w = gwc.reshape(N, G, C // G, *gwc.shape[2:]).sum(2)
    return gxp[:, :, ph:ph + H, pw:pw + W], grad_w


def _filter_parts(x, weight):
    x, weight = np.asarray(x, np.float64), np.asarray(weight, np.float64)
    K = int(round(np.sqrt(weight.shape[1])))
    return x, weight, K, K // 2


def weighted_filter(x, weight, bias=None, splat=False):
    x, w, K, r = _filter_parts(x, weight)
    N, C, H, W = x.shape
    if splat:                  # every pixel adds w·x onto its K×K neighbourhood (a padded canvas, then cropped)
        canvas = np.zeros((N, C, H + 2 * r, W + 2 * r))
        for t in range(K * K):
            fy, fx = divmod(t, K)
            canvas[:, :, fy:fy + H, fx:fx + W] += w[:, None, t] * x
        out = canvas[:, :, r:r + H, r:r + W]
    else:
        xp = np.pad(x, ((0, 0), (0, 0), (r, r), (r, r)))
        out = np.zeros_like(x)
        for t in range(K * K):
            fy, fx = divmod(t, K)
            out += w[:, None, t] * xp[:, :, fy:fy + H, fx:fx + W]
    if bias is not None:
        out = out + np.asarray(bias, np.float64)[None, :, None, None]
    return out


def weighted_filter_backward(grad_out, x, weight, bias=None, splat=False):
    x, w, K, r = _filter_parts(x, weight)
    g = np.asarray(grad_out, np.float64)
    N, C, H, W = x.shape
    grad_w = np.zeros_like(w)
    if splat:                  # out = crop(Σ_t shift_t(w_t·x)): each tap reads grad_out shifted back
        gp = np.pad(g, ((0, 0), (0, 0), (r, r), (r, r)))
        grad_x = np.zeros_like(x)
        for t in range(K * K):
            fy, fx = divmod(t, K)
            window = gp[:, :, fy:fy + H, fx:fx + W]
            grad_x += w[:, None, t] * window
            grad_w[:, t] = (window * x).sum(1)
    else:
        xp = np.pad(x, ((0, 0), (0, 0), (r, r), (r, r)))
        gxp = np.zeros_like(xp)
        for t in range(K * K):
            fy, fx = divmod(t, K)
            gxp[:, :, fy:fy + H, fx:fx + W] += w[:, None, t] * g
            grad_w[:, t] = (g * xp[:, :, fy:fy + H, fx:fx + W]).sum(1)
        grad_x = gxp[:, :, r:r + H, r:r + W]
    grad_b = None if bias is None else g.sum((0, 2, 3))
    return grad_x, grad_w, grad_b


# ---------------------------------------------------------------------------------------------
# RAFT lookups (docs/ops.md §9, §10)


def _raft_corners(coords_xy, H, W):
    """Bilinear corners of (x, y) = coords_xy[..., 0], [..., 1] on an H×W map: (valid, x0, y0, fx, fy);
    a non-finite coordinate (or beyond ±2**40) makes the query invalid (samples zeros)."""
    x, y = coords_xy[..., 0], coords_xy[..., 1]
    with np.errstate(invalid="ignore"):
        valid = (np.abs(x) <= 2.0 ** 40) & (np.abs(y) <= 2.0 ** 40)
    x, y = np.where(valid, x, 0.0), np.where(valid, y, 0.0)
    x0, y0 = np.floor(x), np.floor(y)
    return valid, x0.astype(np.int64), y0.astype(np.int64), x - x0, y - y0


def _raft_gather(img, yy, xx):
    """img (C, H, W) at integer positions (any shape), 0 outside: (C, *shape), and the in-bounds mask."""
    C, H, W = img.shape
    inside = (yy >= 0) & (yy < H) & (xx >= 0) & (xx < W)
    return np.where(inside, img[:, np.clip(yy, 0, max(H - 1, 0)), np.clip(xx, 0, max(W - 1, 0))], 0.0) \
        if H and W else np.zeros((C,) + yy.shape), inside


def _raft_offsets(radius):
    L = 2 * radius + 1
    for k in range(L * L):
        yield k, k // L - radius, k % L - radius          # channel k = (dx + r)·L + (dy + r)


def patch_correlate(base, input, coords, radius=4, l1=False):
    base, inp, coords = (np.asarray(a, np.float64) for a in (base, input, coords))
    N, C, Hg, Wg = base.shape
    L = 2 * radius + 1
    out = np.zeros((N, L * L, Hg, Wg))
    for n in range(N):
        valid, x0, y0, fx, fy = _raft_corners(coords[n], *inp.shape[2:])
        for k, dx, dy in _raft_offsets(radius):
            v00, _ = _raft_gather(inp[n], y0 + dy, x0 + dx)
            v01, _ = _raft_gather(inp[n], y0 + dy, x0 + dx + 1)
            v10, _ = _raft_gather(inp[n], y0 + dy + 1, x0 + dx)
            v11, _ = _raft_gather(inp[n], y0 + dy + 1, x0 + dx + 1)
            s = (1 - fy) * ((1 - fx) * v00 + fx * v01) + fy * ((1 - fx) * v10 + fx * v11)
            s = np.where(valid, s, 0.0)
            if l1:
                out[n, k] = np.abs(base[n] - s).sum(0) / C
            else:
                out[n, k] = (base[n] * s).sum(0) / np.sqrt(C)
    return out


def patch_correlate_backward(grad_out, base, input, coords, radius=4, l1=False):
    base, inp, coords, g = (np.asarray(a, np.float64) for a in (base, input, coords, grad_out))
    N, C, Hg, Wg = base.shape
    H2, W2 = inp.shape[2:]
    scale = 1.0 / C if l1 else 1.0 / np.sqrt(C)
    g_base, g_inp, g_coords = np.zeros_like(base), np.zeros_like(inp), np.zeros_like(coords)
    channel = np.arange(C)[:, None, None]
    for n in range(N):
        valid, x0, y0, fx, fy = _raft_corners(coords[n], H2, W2)
        for k, dx, dy in _raft_offsets(radius):
            corners = {}
            for a in (0, 1):
                for b in (0, 1):
                    yy, xx = y0 + dy + a, x0 + dx + b
                    v, inside = _raft_gather(inp[n], yy, xx)
                    corners[a, b] = (np.where(valid, v, 0.0), yy, xx, inside & valid)
            wts = {(0, 0): (1 - fy) * (1 - fx), (0, 1): (1 - fy) * fx, (1, 0): fy * (1 - fx), (1, 1): fy * fx}
            s = sum(wts[ab] * corners[ab][0] for ab in wts)
            G = scale * g[n, k]
            if l1:
                sgn = np.sign(base[n] - s)
                g_base[n] += G * sgn
                ds = -G * sgn
            else:
                g_base[n] += G * s
                ds = G * base[n]
            for ab, (v, yy, xx, inside) in corners.items():
                mask = np.broadcast_to(inside, ds.shape)
                contrib = ds * wts[ab]
                np.add.at(g_inp[n], (np.broadcast_to(channel, ds.shape)[mask], np.broadcast_to(yy, ds.shape)[mask],
                                     np.broadcast_to(xx, ds.shape)[mask]), contrib[mask])
            v00, v01, v10, v11 = (corners[ab][0] for ab in ((0, 0), (0, 1), (1, 0), (1, 1)))
            g_coords[n, ..., 0] += np.where(valid, (ds * ((1 - fy) * (v01 - v00) + fy * (v11 - v10))).sum(0), 0.0)
            g_coords[n, ..., 1] += np.where(valid, (ds * ((1 - fx) * (v10 - v00) + fx * (v11 - v01))).sum(0), 0.0)
    return g_base, g_inp, g_coords


def _avg_pool2x2(a):
    H, W = a.shape[-2] // 2, a.shape[-1] // 2
    a = a[..., :2 * H, :2 * W]
    return (a[..., 0::2, 0::2] + a[..., 0::2, 1::2] + a[..., 1::2, 0::2] + a[..., 1::2, 1::2]) / 4


def _avg_pool2x2_adjoint(g, shape):
    out = np.zeros(shape)
    H, W = g.shape[-2:]
    out[..., :2 * H, :2 * W] = np.repeat(np.repeat(g, 2, -2), 2, -1) / 4
    return out


def corr_lookup(fmap1, fmap2, coords, radius=4, num_levels=4):
    fmap1, level, coords = (np.asarray(a, np.float64) for a in (fmap1, fmap2, coords))
    nhwc = coords.transpose(0, 2, 3, 1)
    outs = []
    for i in range(num_levels):
        outs.append(patch_correlate(fmap1, level, nhwc / 2 ** i, radius))
        level = _avg_pool2x2(level)
    return np.concatenate(outs, axis=1)


def corr_lookup_backward(grad_out, fmap1, fmap2, coords, radius=4, num_levels=4):
    fmap1, fmap2, coords, g = (np.asarray(a, np.float64) for a in (fmap1, fmap2, coords, grad_out))
    nhwc = coords.transpose(0, 2, 3, 1)
    LL = (2 * radius + 1) ** 2
    levels = [fmap2]
    for _ in range(1, num_levels):
        levels.append(_avg_pool2x2(levels[-1]))
    g1, gc = np.zeros_like(fmap1), np.zeros_like(nhwc)
    g_level = np.zeros_like(levels[-1])
    for i in reversed(range(num_levels)):
        gb, gl, gci = patch_correlate_backward(g[:, i * LL:(i + 1) * LL], fmap1, levels[i], nhwc / 2 ** i, radius)
        g1 += gb
        gc += gci / 2 ** i
        g_level = gl + (_avg_pool2x2_adjoint(g_level, gl.shape) if i < num_levels - 1 else 0.0)
    return g1, g_level, gc.transpose(0, 3, 1, 2)


# ---------------------------------------------------------------------------------------------
# RAFT pyramid (docs/ops.md §10): the all-pairs volume, pooled, and lookups in it


def corr_pyramid(fmap1, fmap2, num_levels=4):
    f1, f2 = (np.asarray(a, np.float64) for a in (fmap1, fmap2))
    levels = [np.einsum("nchw,ncyx->nhwyx", f1, f2) / np.sqrt(f1.shape[1])]
    for _ in range(1, num_levels):
        levels.append(_avg_pool2x2(levels[-1]))
    return tuple(levels)


def corr_pyramid_backward(grad_out, fmap1, fmap2, num_levels=4):
    f1, f2 = (np.asarray(a, np.float64) for a in (fmap1, fmap2))
    g = [np.asarray(a, np.float64) for a in grad_out]
    acc = g[-1]
    for i in reversed(range(num_levels - 1)):           # the pooling adjoints, coarsest level first
        acc = g[i] + _avg_pool2x2_adjoint(acc, g[i].shape)
    root = np.sqrt(f1.shape[1])
    return np.einsum("nhwyx,ncyx->nchw", acc, f2) / root, np.einsum("nhwyx,nchw->ncyx", acc, f1) / root


def _plane_gather(vol, yy, xx):
    """vol (N, H, W, Hl, Wl) at vol[n, h, w, yy, xx] for yy, xx of shape (N, H, W), 0 outside; and the mask."""
    Hl, Wl = vol.shape[3:]
    inside = (yy >= 0) & (yy < Hl) & (xx >= 0) & (xx < Wl)
    if not (Hl and Wl):
        return np.zeros(yy.shape), inside
    n, h, w = np.indices(yy.shape)
    return np.where(inside, vol[n, h, w, np.clip(yy, 0, Hl - 1), np.clip(xx, 0, Wl - 1)], 0.0), inside


def corr_pyramid_lookup(pyramid, coords, radius=4):
    levels = [np.asarray(a, np.float64) for a in pyramid]
    nhwc = np.asarray(coords, np.float64).transpose(0, 2, 3, 1)
    N, H, W = levels[0].shape[:3]
    LL = (2 * radius + 1) ** 2
    out = np.zeros((N, len(levels) * LL, H, W))
    for i, vol in enumerate(levels):
        valid, x0, y0, fx, fy = _raft_corners(nhwc / 2 ** i, *vol.shape[3:])
        for k, dx, dy in _raft_offsets(radius):
            v00, v01, v10, v11 = (_plane_gather(vol, y0 + dy + a, x0 + dx + b)[0] for a in (0, 1) for b in (0, 1))
            s = (1 - fy) * ((1 - fx) * v00 + fx * v01) + fy * ((1 - fx) * v10 + fx * v11)
            out[:, i * LL + k] = np.where(valid, s, 0.0)
    return out


def corr_pyramid_lookup_backward(grad_out, pyramid, coords, radius=4):
    levels = [np.asarray(a, np.float64) for a in pyramid]
    g = np.asarray(grad_out, np.float64)
    nhwc = np.asarray(coords, np.float64).transpose(0, 2, 3, 1)
    N, H, W = levels[0].shape[:3]
    LL = (2 * radius + 1) ** 2
    grads, gc = [np.zeros_like(vol) for vol in levels], np.zeros((N, H, W, 2))
    n, h, w = np.indices((N, H, W))
    for i, vol in enumerate(levels):
        valid, x0, y0, fx, fy = _raft_corners(nhwc / 2 ** i, *vol.shape[3:])
        wts = {(0, 0): (1 - fy) * (1 - fx), (0, 1): (1 - fy) * fx, (1, 0): fy * (1 - fx), (1, 1): fy * fx}
        for k, dx, dy in _raft_offsets(radius):
            G = g[:, i * LL + k]
            corners = {}
            for (a, b), wt in wts.items():
                yy, xx = y0 + dy + a, x0 + dx + b
                corners[a, b], inside = _plane_gather(vol, yy, xx)
                m = inside & valid
                np.add.at(grads[i], (n[m], h[m], w[m], yy[m], xx[m]), (G * wt)[m])
            v00, v01, v10, v11 = (corners[ab] for ab in ((0, 0), (0, 1), (1, 0), (1, 1)))
            gc[..., 0] += np.where(valid, G * ((1 - fy) * (v01 - v00) + fy * (v11 - v10)), 0.0) / 2 ** i
            gc[..., 1] += np.where(valid, G * ((1 - fx) * (v10 - v00) + fx * (v11 - v01)), 0.0) / 2 ** i
    return tuple(grads), gc.transpose(0, 3, 1, 2)
