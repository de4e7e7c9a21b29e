"""Linears as TT-DiT's ttnn.experimental.minimal_matmul where the cost model says so (ir/matmul.py: how ttnn.linear
and minimal_matmul spread a matmul over the grid; ttnn.linear's activation is a second op), and the simulated mesh
refusing the minimal_matmul configs ttnn 0.81.1 refuses."""

import pytest
import torch

import meshdit
from meshdit.cost import calibration, systems
from meshdit.cost.ops import linear_choice
from meshdit.ir import matmul as mm
from meshdit.runtime import sim


class Mlp(torch.nn.Module):
    def __init__(self, width=256, hidden=1024):
        super().__init__()
        self.up, self.down = torch.nn.Linear(width, hidden), torch.nn.Linear(hidden, width)
        self.act = torch.nn.GELU()

    def forward(self, x):
        return self.down(self.act(self.up(x)))


def fns(program):
    return [op.fn for op in program.ir.ops]


@pytest.mark.parametrize("dtype, weight_dtype, threshold", [("bf16", None, 0.999), ("bf16", "bfp8", 0.99)])
def test_a_linear_with_an_activation_becomes_one_minimal_matmul(dtype, weight_dtype, threshold):
    """ttnn.linear runs its activation as a second op over the output (seen in ttnn's graph capture on the mock);
    minimal_matmul fuses it, so the up projection with its GELU is one op."""
    torch.manual_seed(0)
    program = meshdit.lower(Mlp().eval(), "1x1", {"x": torch.randn(1, 2048, 256)}, dtype=dtype,
                            weight_dtype=weight_dtype)
    up = program.ir.ops[0]
    assert up.fn == "ttnn.experimental.minimal_matmul"
    assert "GELU, 0.0" in up.kwargs["fused_activation"].text and "bias_tensor" in up.kwargs
    assert "MinimalMatmulConfig(M_block_size=8, K_block_size=8, N_block_size=8" in program.ir.configs[
        up.kwargs["config"].text]
    result = program.pcc_report()[0]
    print(f"minimal_matmul MLP {dtype} weights {weight_dtype or dtype}: PCC {result.pcc:.6f}")
    assert result.pcc > threshold


def test_float32_programs_keep_ttnn_linear():
    program = meshdit.lower(Mlp().eval(), "1x1", {"x": torch.randn(1, 2048, 256)})
    assert "ttnn.experimental.minimal_matmul" not in fns(program)
    assert program.pcc_report()[0].pcc > 0.9999


def test_the_choice_follows_how_each_op_spreads_its_tiles():
    """A few rows (adaLN's [1, C] vectors): ttnn.linear's 1-D layout spreads N over every core, minimal_matmul's
    2-D grid leaves all but one row of cores idle. Batch 2 of 64 tile rows and 96 output tiles on T3K's 8x7 grid:
    ttnn.linear loops the batch on each core (10 x 12 tiles per core, twice: 240), minimal_matmul folds it into M
    (128 tiles over the 8 columns, 96 over the 7 rows: 16 x 14 = 224)."""
    grid = systems.T3K.grid
    assert mm.linear_split(1, 1, 96, grid).layout == "1-D wide"
    assert mm.minimal_split(1, 96, grid).busiest_tiles > 4 * mm.linear_split(1, 1, 96, grid).busiest_tiles
    args = (systems.T3K, calibration.FITTED, "HiFi2")
    assert linear_choice(*args, 1, 1, 96, 96, 8, False, 0.0, 0.0) == "linear"
    assert mm.linear_split(2, 64, 96, grid) == mm.Split(240, 56, "2-D")
    assert mm.minimal_split(128, 96, grid) == mm.Split(224, 56, "minimal")
    assert linear_choice(*args, 2, 64, 96, 96, 8, False, 0.0, 0.0) == "minimal"
    # the same spread (10 x 12 tiles per core) either way: a tie keeps ttnn.linear, unless it has an activation to
    # run as a second op over the output
    assert mm.linear_split(1, 64, 96, grid).busiest_tiles == mm.minimal_split(64, 96, grid).busiest_tiles == 120
    assert linear_choice(*args, 1, 64, 96, 96, 8, False, 0.0, 0.0) == "linear"
    assert linear_choice(*args, 1, 64, 96, 96, 8, True, 0.0, 64 * 96 * 2048) == "minimal"


# (M, K, N blocks, weight dtype, bias) -> "grow to N B" ttnn 0.81.1 reported on the mocked N150 (fp32 accumulation)
TTNN_REFUSED = [((16, 16, 16), "bfloat16", False, 4300128), ((8, 16, 8), "bfloat16", False, 1678688),
                ((10, 10, 10), "bfloat16", True, 1764704), ((16, 8, 16), "bfloat8_b", False, 3005792),
                ((12, 8, 12), "bfloat8_b", True, 1912160), ((24, 4, 24), "bfloat16", True, 5660000)]
TTNN_ACCEPTED = [((8, 8, 8), "bfloat16", True), ((4, 32, 4), "bfloat16", True), ((8, 16, 8), "bfloat8_b", True)]


@pytest.mark.parametrize("blocks, weight, bias, grows_to", TTNN_REFUSED)
def test_l1_model_matches_ttnn(blocks, weight, bias, grows_to):
    config = mm.MinimalConfig(*blocks, 2, 2)
    assert mm.l1_bytes(config, weight, "bfloat16" if bias else None, fp32_acc=True) == grows_to
    assert "beyond max L1" in mm.minimal_refusal(config, (8, 8), (8, 8), weight, "bfloat16" if bias else None, True)


# the fused addcmul (dit_minimal_matmul_addcmul_fused, bfloat16 residual and gate): "grow to" on the mocked N150,
# (M, K, N blocks, fp32 accumulation, bias) -> bytes
TTNN_ADDCMUL_REFUSED = [((16, 16, 16), True, False, 4857184), ((24, 8, 24), True, True, 7675232),
                        ((20, 8, 20), True, False, 5553504), ((12, 12, 12), False, True, 2514272),
                        ((16, 24, 16), False, False, 5381472)]


@pytest.mark.parametrize("blocks, fp32_acc, bias, grows_to", TTNN_ADDCMUL_REFUSED)
def test_l1_model_of_the_fused_addcmul_matches_ttnn(blocks, fp32_acc, bias, grows_to):
    config, addcmul = mm.MinimalConfig(*blocks, 2, 2), ("bfloat16", "bfloat16")
    assert mm.l1_bytes(config, "bfloat16", "bfloat16" if bias else None, fp32_acc, addcmul=addcmul) == grows_to
    assert mm.minimal_refusal(mm.MinimalConfig(8, 8, 8, 2, 2), (8, 8), (8, 8), "bfloat16", None, True,
                              addcmul=addcmul) is None
    assert "ternary_a_tile_size" in mm.minimal_refusal(mm.MinimalConfig(8, 8, 8, 2, 2), (8, 8), (8, 8),
                                                       "bfloat8_b", None, True, addcmul=addcmul)


@pytest.mark.parametrize("blocks, weight, bias", TTNN_ACCEPTED)
def test_what_ttnn_accepted_is_not_refused(blocks, weight, bias):
    assert mm.minimal_refusal(mm.MinimalConfig(*blocks, 2, 2), (8, 8), (8, 8), weight,
                              "bfloat16" if bias else None, True) is None


def _device(x, device, dtype=None):
    return sim.from_torch(x, dtype=dtype or sim.bfloat16, layout=sim.TILE_LAYOUT, device=device)


def test_simulated_minimal_matmul_refuses_what_ttnn_refuses():
    device = sim.open_mesh_device(sim.MeshShape(1, 1))
    a, w = _device(torch.randn(64, 64), device), _device(torch.randn(64, 64), device)
    fp32_acc = sim.WormholeComputeKernelConfig(math_fidelity="HiFi2", fp32_dest_acc_en=True)

    def config(m=2, k=2, n=2, h=1, w_=1, grid=(8, 7)):
        return sim.MinimalMatmulConfig(M_block_size=m, K_block_size=k, N_block_size=n, subblock_h=h, subblock_w=w_,
                                       compute_with_storage_grid_size=sim.CoreCoord(*grid))
    for bad, match in ((config(h=4, w_=4, m=4, n=4), "max_dest_volume"), (config(m=3, h=2), "M_block_size"),
                       (config(grid=(1, 1)), "at least 2x2"), (config(grid=(9, 8)), "within the device grid"),
                       (config(16, 16, 16, 2, 2), "beyond max L1")):
        with pytest.raises(RuntimeError, match=match):
            sim.experimental.minimal_matmul(a, w, config=bad, compute_kernel_config=fp32_acc)
    out = sim.experimental.minimal_matmul(a, w, config=config(), compute_kernel_config=fp32_acc,
                                          fused_activation=sim.UnaryWithParam(sim.UnaryOpType.GELU, 0.0))
    assert out.shape == (64, 64) or list(out.shape) == [64, 64]
    sim.close_mesh_device(device)


def test_simulated_matmul_addcmul_follows_ttnn():
    """residual + s * (A @ W + b) * gate, one rounding at the output; refusals as the mock's."""
    torch.manual_seed(0)
    device = sim.open_mesh_device(sim.MeshShape(1, 1))
    x, w, b = torch.randn(1, 64, 96), torch.randn(96, 128) / 10, torch.randn(1, 128)
    residual, gate = torch.randn(1, 64, 128), torch.randn(1, 1, 128)
    fp32_acc = sim.WormholeComputeKernelConfig(math_fidelity="HiFi4", fp32_dest_acc_en=True)
    args = [_device(t, device) for t in (x, w)]
    out = sim.experimental.dit_minimal_matmul_addcmul_fused(*args, 0.5, _device(residual, device),
                                                            _device(gate, device), _device(b, device),
                                                            compute_kernel_config=fp32_acc)
    round_bf16 = lambda t: t.to(torch.bfloat16).float()  # noqa: E731
    want = residual + 0.5 * (round_bf16(x) @ round_bf16(w) + round_bf16(b)) * round_bf16(gate)
    got = torch.from_numpy(sim.from_device(out).to_numpy())
    assert torch.corrcoef(torch.stack([got.flatten(), want.flatten()]))[0, 1] > 0.9999
    with pytest.raises(RuntimeError, match="ternary_a_tile_size"):
        sim.experimental.dit_minimal_matmul_addcmul_fused(args[0], _device(w, device, sim.bfloat8_b), 1.0,
                                                          _device(residual, device), _device(gate, device))
    with pytest.raises(RuntimeError, match="one row"):
        sim.experimental.dit_minimal_matmul_addcmul_fused(*args, 1.0, _device(residual, device),
                                                          _device(residual, device))
    sim.close_mesh_device(device)
