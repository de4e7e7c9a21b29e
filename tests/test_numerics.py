import torch

from meshdit.runtime.numerics import round_bfloat8_b, round_to
from meshdit.runtime.pcc import pcc


def test_bfloat16_matches_torch_rounding():
    x = torch.randn(1000)
    assert torch.equal(round_to(x, "bfloat16"), x.to(torch.bfloat16).float())


def test_bfloat8_shares_one_exponent_per_16_values():
    x = torch.full((1, 32), 1e-3)
    x[0, 0] = 100.0  # dominates the first group of 16: its small values flush to zero
    y = round_bfloat8_b(x)
    assert y[0, 0] == 100.0
    assert torch.all(y[0, 1:16] == 0)
    assert torch.allclose(y[0, 16:], x[0, 16:], rtol=1e-2)  # second group keeps its own exponent


def test_bfloat8_error_is_bounded_by_7_mantissa_bits():
    x = torch.randn(64, 64)
    y = round_bfloat8_b(x)
    block_max = x.abs().reshape(64, 4, 16).amax(-1, keepdim=True).expand(64, 4, 16).reshape(64, 64)
    assert torch.all((y - x).abs() <= block_max / 2**5 + 1e-6)
    assert pcc(x, y) > 0.999


def test_pcc_edge_cases():
    x = torch.randn(100)
    assert pcc(x, x) == 1.0
    assert abs(pcc(x, -x) + 1.0) < 1e-12
    assert pcc(torch.ones(4), torch.ones(4)) == 1.0
