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


# --- math fidelity: what a matmul's multiplier phases read of its operands -------------------------------------------
def test_mantissa_truncation_keeps_the_leading_bits():
    from meshdit.runtime.numerics import truncate_mantissa

    x = torch.tensor([1.0, 1.9999, 1.53125, -1.53125, 3.1, 0.0])
    assert truncate_mantissa(x, 4).tolist() == [1.0, 1.9375, 1.5, -1.5, 3.0, 0.0]  # steps of 2**-4 below the lead
    assert truncate_mantissa(x, 6)[2].item() == 1.53125
    assert torch.equal(truncate_mantissa(x, 7), x)  # bfloat16's whole mantissa


@pytest.mark.parametrize("fidelity, weight_bits, activation_bits", [("LoFi", 4, 6), ("HiFi2", 7, 6), ("HiFi4", 7, 7)])
def test_simulated_matmul_reads_what_its_fidelity_reads(fidelity, weight_bits, activation_bits):
    """in0 (activations) goes to SrcB, in1 (weights) to SrcA: LoFi reads 4 mantissa bits of the weights and 6 of
    the activations (tt-metal tech_reports/matrix_engine), HiFi2 all of the weights, HiFi4 everything."""
    from meshdit.runtime import sim
    from meshdit.runtime.numerics import round_bfloat16, truncate_mantissa

    torch.manual_seed(0)
    a, b = round_bfloat16(torch.randn(32, 64)), round_bfloat16(torch.randn(64, 32))
    mesh = sim.open_mesh_device(sim.MeshShape(1, 1))
    on = lambda t: sim.Tensor(t.numpy(), data_type=sim.bfloat16, device=mesh, layout=sim.TILE_LAYOUT)  # noqa: E731
    config = sim.WormholeComputeKernelConfig(math_fidelity=getattr(sim.MathFidelity, fidelity), fp32_dest_acc_en=True)
    got = torch.from_numpy(sim.from_device(sim.linear(on(a), on(b), compute_kernel_config=config,
                                                      dtype=sim.float32)).to_numpy())
    want = truncate_mantissa(a, activation_bits) @ truncate_mantissa(b, weight_bits)
    assert torch.allclose(got, want, atol=1e-4)
    if fidelity != "HiFi4":
        assert not torch.allclose(got, a @ b, atol=1e-3)


def test_lofi_profile_is_opt_in_and_its_pcc_is_reported():
    """matmul_fidelity="LoFi" with bfp8 weights (TT-DiT's bf8_weights_lofi): every matmul's kernel config says LoFi,
    the simulated PCC is checked against the bfp8 threshold, and the cost model gives its matmuls twice the rate."""
    import meshdit
    from meshdit import model_zoo

    inputs = model_zoo.example_inputs("sd3-tiny-tt")
    programs = {f: meshdit.lower(model_zoo.build("sd3-tiny-tt"), "1x1", inputs, dtype="bf16", weight_dtype="bfp8",
                                 matmul_fidelity=f) for f in ("HiFi2", "LoFi")}
    assert "MathFidelity.LoFi" in programs["LoFi"].ir.configs["MATMUL_CONFIG"]
    assert "matmuls LoFi" in programs["LoFi"].plan().splitlines()[0]
    pccs = {f: p.pcc_report()[0].pcc for f, p in programs.items()}
    print(f"sd3-tiny-tt 1x1 bf16 bfp8: PCC HiFi2 {pccs['HiFi2']:.6f}, LoFi {pccs['LoFi']:.6f}")
    assert 0.99 <= pccs["LoFi"] < pccs["HiFi2"]
    compute = {f: p.estimate().totals["matmul"] for f, p in programs.items()}
    assert compute["LoFi"] < compute["HiFi2"]
    with pytest.raises(meshdit.ConfigError, match="matmul_fidelity='HiFi5'"):
        meshdit.lower(model_zoo.build("sd3-tiny-tt"), "1x1", inputs, matmul_fidelity="HiFi5")
