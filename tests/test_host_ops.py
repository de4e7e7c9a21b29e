"""The numpy host fallback (runtime/host_ops.py) against torch's own ATen ops, one sample call per registered op.

A program runs beside the real ttnn without torch, so every op lowering leaves on host needs a numpy form here; a
new one without a sample below fails test_every_host_op_has_a_sample.
"""

import numpy as np
import pytest
import torch

from meshdit.runtime import host_ops

g = torch.Generator().manual_seed(0)


def rand(*shape):
    return torch.randn(*shape, generator=g)


def ints(high, *shape):
    return torch.randint(0, high, shape, generator=g)


# ATen name -> list of (args, kwargs) sample calls (torch tensors; converted to numpy for the host op)
SAMPLES = {
    "aten.embedding.default": [((rand(10, 8), ints(10, 2, 5)), {})],
    "aten.index.Tensor": [((rand(4, 6, 5), [None, ints(6, 3)]), {}),
                          ((rand(4, 6), [torch.tensor([True, False, True, True])]), {})],
    "aten.index_put.default": [((rand(6, 4), [ints(6, 3)], rand(3, 4)), {}),
                               ((rand(6, 4), [torch.tensor([1, 1, 2])], rand(3, 4), True), {})],
    "aten.index_select.default": [((rand(4, 6, 5), 1, ints(6, 3)), {})],
    "aten.index_copy.default": [((rand(4, 6), 1, torch.tensor([5, 0]), rand(4, 2)), {})],
    "aten.scatter_add.default": [((rand(3, 5), 1, ints(5, 3, 4), rand(3, 6)), {})],
    "aten.one_hot.default": [((ints(5, 7),), {"num_classes": 6}), ((torch.tensor([0, 3, 1]),), {})],
    "aten.bucketize.Tensor": [((rand(9), torch.tensor([-1.0, 0.0, 0.5])), {}),
                              ((torch.tensor([0.0, 0.5, 2.0]), torch.tensor([-1.0, 0.0, 0.5])), {"right": True})],
    "aten.flip.default": [((rand(2, 3, 4), [0, 2]), {})],
    "aten.diag_embed.default": [((rand(2, 4),), {}), ((rand(2, 3),), {"offset": 1, "dim1": 0, "dim2": 2})],
    "aten.pad_sequence.default": [(([rand(3, 2), rand(5, 2)],), {"batch_first": True, "padding_value": -1.0}),
                                  (([rand(3, 2), rand(5, 2)],), {"padding_side": "left"})],
    "aten.pad.default": [((rand(1, 2, 5, 6), [1, 2, 0, 3]), {"value": 0.5}),
                         ((rand(1, 2, 5, 6), [2, 2, 1, 1]), {"mode": "reflect"}),
                         ((rand(1, 2, 3, 5, 6), [1, 1, 2, 0, 1, 1]), {"mode": "replicate"}),
                         ((rand(1, 2, 5, 6), [-1, 2]), {})],
    "aten.softplus.default": [((rand(4, 5) * 30,), {}), ((rand(4, 5),), {"beta": 2, "threshold": 1})],
    "aten.any.dim": [((rand(3, 4) > 1,), {"dim": 1}), ((rand(3, 4) > 0,), {"dim": 0, "keepdim": True})],
    "aten.linalg_norm.default": [((rand(3, 4),), {"dim": [-1]}), ((rand(3, 4),), {}),
                                 ((rand(3, 4), 1), {"dim": [0], "keepdim": True})],
    "aten.conv1d.default": [((rand(2, 4, 9), rand(6, 2, 3), rand(6), [2], [1], [1], 2), {})],
    "aten.conv2d.default": [((rand(1, 8, 7, 6), rand(8, 1, 3, 3), rand(8), [1, 1], [1, 1], [1, 1], 8), {}),
                            ((rand(2, 3, 9, 8), rand(5, 3, 3, 2), None, [2, 1], [0, 1], [2, 1], 1), {})],
    "aten.conv3d.default": [((rand(1, 2, 5, 6, 6), rand(4, 2, 2, 3, 3), rand(4), [1, 2, 2], [0, 1, 1]), {})],
    "aten.conv_transpose1d.default": [((rand(2, 4, 7), rand(4, 3, 4), rand(3), [2], [1], [1]), {}),
                                      ((rand(1, 4, 5), rand(4, 2, 3), None, [3], [0], [0], 2, [2]), {})],
    "aten.conv_transpose2d.input": [((rand(1, 2, 4, 5), rand(2, 3, 3, 2), rand(3), [2, 1], [1, 0]), {})],
    "aten.conv_transpose3d.input": [((rand(1, 2, 3, 4, 4), rand(2, 2, 2, 2, 2), None, [1, 2, 2]), {})],
    "aten.avg_pool1d.default": [((rand(2, 3, 9), [3], [2], [1]), {})],
    "aten.avg_pool2d.default": [((rand(1, 2, 6, 7), [2, 3], [2, 2], [1, 1], False, False), {})],
    "aten.avg_pool3d.default": [((rand(1, 2, 4, 6, 6), [2, 2, 2]), {}),
                                ((rand(1, 2, 4, 6, 6), [1, 3, 3], [1, 2, 2], [0, 1, 1]), {"count_include_pad": False})],
}


def test_every_host_op_has_a_sample():
    assert sorted(host_ops.HOST_OPS) == sorted(SAMPLES)


def _numpy(value):
    if isinstance(value, torch.Tensor):
        return value.numpy()
    if isinstance(value, (list, tuple)):
        return type(value)(_numpy(v) for v in value)
    return value


def _aten(name):
    op = torch.ops.aten
    for part in name.split(".")[1:]:
        op = getattr(op, part)
    return op


@pytest.mark.parametrize("name,args,kwargs", [(n, a, k) for n, calls in SAMPLES.items() for a, k in calls])
def test_host_op_matches_torch(name, args, kwargs):
    expected = _aten(name)(*args, **kwargs)
    got = host_ops.run(name, _numpy(list(args)), kwargs)
    assert tuple(got.shape) == tuple(expected.shape), name
    np.testing.assert_allclose(np.asarray(got, dtype=np.float64), expected.double().numpy(), rtol=1e-5, atol=1e-5)
