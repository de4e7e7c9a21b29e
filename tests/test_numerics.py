import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from meshdit.runtime import device as _device
from meshdit.runtime.numerics import round_bfloat8_b, round_to
from meshdit.runtime.pcc import pcc

device_path = _device.__file__


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


def test_pcc_is_one_function():
    """One PCC: the torch-free one in the device runtime (saved programs use it), re-exported for meshdit."""
    from meshdit.runtime import device

    assert pcc is device.pcc


def test_pcc_takes_tensors_and_arrays():
    x = torch.randn(100, generator=torch.Generator().manual_seed(0))
    y = x + 0.1 * torch.randn(100, generator=torch.Generator().manual_seed(1))
    figure = pcc(x, y)
    assert 0.9 < figure < 1.0
    assert pcc(x.numpy(), y.numpy()) == figure == pcc(x, y.numpy())
    assert abs(pcc(x.to(torch.bfloat16), y) - figure) < 1e-2  # any dtype, e.g. a bf16 output
    with pytest.raises(ValueError, match="different shapes"):
        pcc(x, y[:50])


def test_pcc_edge_cases():
    x = torch.randn(100)
    assert abs(pcc(x, -x) + 1.0) < 1e-12
    # identical arrays correlate perfectly, also constant ones (whose correlation is otherwise undefined)
    assert pcc(x, x) == 1.0
    assert pcc(torch.ones(4), torch.ones(4)) == 1.0
    assert pcc(np.zeros((2, 3)), torch.zeros(2, 3)) == 1.0


def test_pcc_of_non_finite_values_is_nan():
    x = torch.randn(100)
    bad = x.clone()
    bad[3] = float("nan")
    assert math.isnan(pcc(x, bad)) and math.isnan(pcc(bad, x)) and math.isnan(pcc(bad, bad))
    bad[3] = float("inf")
    assert math.isnan(pcc(bad, bad))  # identical, but not a finite output: never a pass


def test_pcc_of_a_constant_against_a_different_array_is_nan():
    """A correlation with a constant is undefined (zero variance): nan, which fails every threshold, not 0.0."""
    x = torch.randn(100)
    assert math.isnan(pcc(torch.ones(100), x)) and math.isnan(pcc(x, torch.zeros(100)))
    assert math.isnan(pcc(torch.zeros(100), torch.ones(100)))


def test_device_pcc_runs_without_torch():
    """device.py is copied beside saved programs and runs where torch is not installed."""
    code = ("import importlib.util, sys; sys.modules['torch'] = None\n"
            f"spec = importlib.util.spec_from_file_location('meshdit_device', {device_path!r})\n"
            "device = importlib.util.module_from_spec(spec); spec.loader.exec_module(device)\n"
            "import numpy as np; x = np.arange(10.0)\n"
            "assert device.pcc(x, x) == 1.0 and abs(device.pcc(x, -x) + 1) < 1e-12\n"
            "assert 'torch' not in sys.modules or sys.modules['torch'] is None\n")
    subprocess.run([sys.executable, "-c", code], check=True)
