"""ATen ops a program runs on host, in numpy: the host fallback of ops with no TT-NN lowering yet.

A program runs where torch is not installed (beside the real ttnn), so an op the lowering leaves on host must run
without it. Each function here takes the op's arguments as ATen names and orders them (tensors as numpy arrays)
and returns a numpy array; `run` looks the op up by its ATen name. An op missing here still runs through torch
(runtime/device.host_call), and lowering warns that such a program needs torch where it runs.

This file is saved beside every program as meshdit_host_ops.py: it imports numpy only.
"""

from __future__ import annotations

import string

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

HOST_OPS = {}


def host_op(*names):
    def register(fn):
        for name in names:
            HOST_OPS[name] = fn
        return fn
    return register


def run(op_name: str, args: list, kwargs: dict):
    return HOST_OPS[op_name](*args, **kwargs)


def numpy_dtype(name: str):
    """A torch dtype name ("int64", "torch.bool", "bfloat16") as numpy holds it (no bfloat16 on host: float32)."""
    name = name.replace("torch.", "")
    return {"bool": np.bool_, "bfloat16": np.float32, "float16": np.float32}.get(name) or np.dtype(name)


def _per_dim(value, n):
    return tuple(value) * (n if len(value) == 1 else 1) if isinstance(value, (list, tuple)) else (value,) * n


# --- lookups and scatters ------------------------------------------------------------------------------------------
@host_op("aten.embedding.default")
def embedding(weight, indices, padding_idx=-1, scale_grad_by_freq=False, sparse=False):
    return weight[indices.astype(np.int64)]


@host_op("aten.index.Tensor")
def index(self, indices):
    return self[tuple(slice(None) if i is None else i for i in indices)]


@host_op("aten.index_put.default")
def index_put(self, indices, values, accumulate=False):
    out, where = self.copy(), tuple(slice(None) if i is None else i for i in indices)
    if accumulate:
        np.add.at(out, where, values)
    else:
        out[where] = values
    return out


@host_op("aten.index_select.default")
def index_select(self, dim, index):
    return np.take(self, index.astype(np.int64), axis=dim)


@host_op("aten.index_copy.default")
def index_copy(self, dim, index, source):
    out = self.copy()
    out[(slice(None),) * (dim % self.ndim) + (index.astype(np.int64),)] = source
    return out


@host_op("aten.scatter_add.default")
def scatter_add(self, dim, index, src):
    out = self.copy()
    where = list(np.indices(index.shape))
    where[dim] = index.astype(np.int64)
    np.add.at(out, tuple(where), src[tuple(slice(0, n) for n in index.shape)])
    return out


@host_op("aten.one_hot.default")
def one_hot(self, num_classes=-1):
    classes = int(self.max()) + 1 if num_classes < 0 else num_classes
    return (self[..., None] == np.arange(classes)).astype(np.int64)


@host_op("aten.bucketize.Tensor")
def bucketize(self, boundaries, out_int32=False, right=False):
    # torch: right=False puts x in bucket i where boundaries[i-1] < x <= boundaries[i] (numpy's side="left")
    out = np.searchsorted(boundaries, self, side="right" if right else "left")
    return out.astype(np.int32 if out_int32 else np.int64)


# --- reshaping ---------------------------------------------------------------------------------------------------
@host_op("aten.flip.default")
def flip(self, dims):
    return np.flip(self, axis=tuple(dims)).copy()


@host_op("aten.diag_embed.default")
def diag_embed(self, offset=0, dim1=-2, dim2=-1):
    n = self.shape[-1]
    size = n + abs(offset)
    out = np.zeros(self.shape[:-1] + (size, size), dtype=self.dtype)
    i = np.arange(n)
    out[..., i + max(-offset, 0), i + max(offset, 0)] = self
    rank = out.ndim
    return np.moveaxis(out, [-2, -1], [dim1 % rank, dim2 % rank])


@host_op("aten.pad_sequence.default")
def pad_sequence(sequences, batch_first=False, padding_value=0.0, padding_side="right"):
    longest = max(s.shape[0] for s in sequences)
    out = np.full((len(sequences), longest) + sequences[0].shape[1:], padding_value, dtype=sequences[0].dtype)
    for i, s in enumerate(sequences):
        if padding_side == "left":
            out[i, longest - s.shape[0]:] = s
        else:
            out[i, :s.shape[0]] = s
    return out if batch_first else np.swapaxes(out, 0, 1)


@host_op("aten.pad.default")
def pad(self, pad, mode="constant", value=None):
    """torch's pad list runs from the last dim backwards, (before, after) per dim; negative entries crop."""
    widths = [(0, 0)] * self.ndim
    for i in range(len(pad) // 2):
        widths[self.ndim - 1 - i] = (pad[2 * i], pad[2 * i + 1])
    crop = tuple(slice(-lo if lo < 0 else 0, hi if hi < 0 else None) for lo, hi in widths)
    x = self[crop]
    grow = [(max(lo, 0), max(hi, 0)) for lo, hi in widths]
    modes = {"constant": "constant", "reflect": "reflect", "replicate": "edge", "circular": "wrap"}
    if mode == "constant":
        return np.pad(x, grow, mode="constant", constant_values=0 if value is None else value)
    return np.pad(x, grow, mode=modes[mode])


# --- elementwise and reductions ----------------------------------------------------------------------------------
@host_op("aten.softplus.default")
def softplus(self, beta=1, threshold=20):
    scaled = self * beta
    return np.where(scaled > threshold, self, np.log1p(np.exp(np.minimum(scaled, threshold))) / beta)


@host_op("aten.any.dim")
def any_dim(self, dim, keepdim=False):
    return np.any(self, axis=dim, keepdims=keepdim)


@host_op("aten.linalg_norm.default")
def linalg_norm(self, ord=None, dim=None, keepdim=False, dtype=None):
    axes = tuple(dim) if isinstance(dim, (list, tuple)) else (tuple(range(self.ndim)) if dim is None else (dim,))
    x = np.abs(self.astype(np.float64 if dtype is None else numpy_dtype(dtype)))
    if ord is None or ord == "fro" or (ord == 2 and len(axes) == 1):
        out = np.sqrt((x * x).sum(axis=axes, keepdims=keepdim))
    elif len(axes) == 1 and ord == float("inf"):
        out = x.max(axis=axes, keepdims=keepdim)
    elif len(axes) == 1 and isinstance(ord, (int, float)) and ord > 0:
        out = (x ** ord).sum(axis=axes, keepdims=keepdim) ** (1.0 / ord)
    else:
        raise NotImplementedError(f"linalg_norm on host: ord={ord!r} over dims {axes} (vector p-norms and the "
                                  "Frobenius norm only)")
    return out.astype(np.float32)


# --- convolutions and pooling --------------------------------------------------------------------------------------
def _windows(x, kernel, stride, dilation):
    """[N, C, *spatial] -> [N, C, *out, *kernel]: each output position's input window, strided and dilated."""
    nd = len(kernel)
    extent = [d * (k - 1) + 1 for k, d in zip(kernel, dilation)]
    win = sliding_window_view(x, extent, axis=tuple(range(2, 2 + nd)))
    picks = tuple(slice(None, None, s) for s in stride) + tuple(slice(None, None, d) for d in dilation)
    return win[(slice(None), slice(None)) + picks]


def _conv(x, weight, bias, stride, padding, dilation, groups):
    nd = weight.ndim - 2
    stride, padding, dilation = (_per_dim(v, nd) for v in (stride, padding, dilation))
    x = np.pad(x, [(0, 0), (0, 0)] + [(p, p) for p in padding])
    win = _windows(x, weight.shape[2:], stride, dilation)  # [N, C, *out, *kernel]
    n, channels = win.shape[:2]
    out_shape = win.shape[2:2 + nd]
    win = win.reshape((n, groups, channels // groups) + win.shape[2:])
    w = weight.reshape((groups, weight.shape[0] // groups) + weight.shape[1:])
    outs, kern = string.ascii_lowercase[:nd], string.ascii_lowercase[nd:2 * nd]
    y = np.einsum(f"NGC{outs}{kern},GOC{kern}->NGO{outs}", win, w, optimize=True)
    y = y.reshape((n, weight.shape[0]) + out_shape)
    return y if bias is None else y + bias.reshape((1, -1) + (1,) * nd)


@host_op("aten.conv1d.default", "aten.conv2d.default", "aten.conv3d.default")
def conv(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    if isinstance(padding, str):
        raise NotImplementedError(f"convolution on host with padding={padding!r} (integer padding only)")
    return _conv(input, weight, bias, stride, padding, dilation, groups)


@host_op("aten.conv_transpose1d.default", "aten.conv_transpose2d.input", "aten.conv_transpose3d.input")
def conv_transpose(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
    """As a convolution: the input spread out by the stride (zeros between), padded by dilation*(k-1)-padding
    (plus output_padding after), convolved with the kernel flipped and its in/out channels swapped per group."""
    nd = weight.ndim - 2
    stride, padding, output_padding, dilation = (_per_dim(v, nd) for v in (stride, padding, output_padding,
                                                                             dilation))
    spread = np.zeros(input.shape[:2] + tuple((n - 1) * s + 1 for n, s in zip(input.shape[2:], stride)),
                      dtype=input.dtype)
    spread[(slice(None), slice(None)) + tuple(slice(None, None, s) for s in stride)] = input
    kernel = weight.shape[2:]
    edges = [(d * (k - 1) - p, d * (k - 1) - p + op) for k, d, p, op in zip(kernel, dilation, padding, output_padding)]
    spread = spread[(slice(None), slice(None)) + tuple(slice(-lo if lo < 0 else 0, hi if hi < 0 else None)
                                                        for lo, hi in edges)]
    spread = np.pad(spread, [(0, 0), (0, 0)] + [(max(lo, 0), max(hi, 0)) for lo, hi in edges])
    c_in, c_out = weight.shape[0], weight.shape[1]
    w = weight.reshape((groups, c_in // groups, c_out) + kernel)
    w = np.swapaxes(w, 1, 2).reshape((groups * c_out, c_in // groups) + kernel)
    w = np.flip(w, axis=tuple(range(2, 2 + nd)))
    return _conv(spread, w, bias, 1, 0, dilation, groups)


def _avg_pool(nd):
    def avg_pool(self, kernel_size, stride=(), padding=0, ceil_mode=False, count_include_pad=True,
                 divisor_override=None):
        if ceil_mode:
            raise NotImplementedError("avg_pool on host with ceil_mode=True")
        kernel = _per_dim(kernel_size, nd)
        stride = _per_dim(stride, nd) if stride else kernel
        batched = self.reshape((-1, 1) + self.shape[-nd:])
        widths = [(0, 0), (0, 0)] + [(p, p) for p in _per_dim(padding, nd)]
        window_sum = lambda x: _windows(np.pad(x, widths), kernel, stride, (1,) * nd).sum(axis=tuple(range(-nd, 0)))  # noqa
        sums = window_sum(batched)
        if divisor_override:
            count = divisor_override
        elif count_include_pad:
            count = float(np.prod(kernel))
        else:  # windows over the padding count only the input they cover
            count = window_sum(np.ones((1, 1) + self.shape[-nd:], dtype=self.dtype))
        return (sums / count).reshape(self.shape[:-nd] + sums.shape[-nd:])
    return avg_pool


for _nd in (1, 2, 3):
    host_op(f"aten.avg_pool{_nd}d.default")(_avg_pool(_nd))
