"""Conformance: emitted programs run on the real ttnn 0.81.1 (mock-cluster mode, Python 3.12 environment).

Tiny SD3, Flux, Mochi and Motif (head dims a multiple of the 32-wide tile, as ttnn's attention kernels need) on a
mocked N150 (1x1), T3K (2x4) and Galaxy (4x8), in the seeds' parallel configs, bf16 activations with bfp8 weights as
TT-DiT runs them. Every op call must be accepted by real ttnn; the real allocator's figures are printed. The mock
computes no values (the simulated mesh checks PCC), and trace capture crashes in mock mode, so these runs are
untraced: the printed summary says so.

The first run builds the environment (a venv with ttnn from the package registry, about a minute), then it is
cached under ~/.cache/meshdit (or $MESHDIT_TTNN_ENV).
"""

from __future__ import annotations

import re
import warnings

import pytest
import torch

import meshdit
from meshdit import conformance, model_zoo
from meshdit.sharding import AttentionStrategy
from meshdit.sharding.mesh_config import MeshConfig
from conftest import CONFORMANCE_LOG

pytestmark = pytest.mark.slow

CASES = [(name, mesh) for name in ("sd3-tiny-tt", "flux-tiny-tt", "mochi-tiny-tt", "motif-tiny-tt")
         for mesh in ("1x1", "2x4", "4x8")]


def _lower_seed_config(name: str, mesh_key: str, inputs: dict | None = None, check=False):
    entry = model_zoo.entry(name)
    if mesh_key == "1x1":
        mesh = MeshConfig.parse("1x1")
    else:
        mesh = MeshConfig.from_tuples(tuple(int(d) for d in mesh_key.split("x")), entry.parallel[mesh_key])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        inputs = inputs or model_zoo.example_inputs(name, batch=mesh.cfg.factor)
        program = meshdit.lower(model_zoo.build(name), mesh, inputs,
                                dtype="bf16", weight_dtype="bfp8", static_inputs=entry.static_inputs, check=check)
    return program, mesh


@pytest.mark.parametrize("name,mesh_key", CASES)
def test_seed_config_runs_on_real_ttnn(name, mesh_key):
    program, mesh = _lower_seed_config(name, mesh_key)
    report = conformance.run_on_mock(program)
    CONFORMANCE_LOG.append(f"{name:14s} {str(mesh):24s} {report.summary()}")
    assert report.cluster == {"1x1": "n150", "2x4": "t3k", "4x8": "galaxy"}[mesh_key]
    assert report.trace_note.startswith("untraced")
    # forward ran to its return (every line of it went through real ttnn) with the program's output shapes
    assert report.device_operations > 0
    assert report.raw["outputs"] == [list(program.ir.tensors[o.name].shape) for o in program.ir.outputs]
    # the allocator saw the weights: at least the program's own per-device weight bytes (ttnn pads to pages)
    assert report.weights_bytes >= 0.9 * program.ir.weight_bytes()
    assert report.fits


def test_flux_schnell_on_galaxy(pcc_log):
    """Flux.1-schnell (no guidance embedding, 256 prompt tokens at full size) in Flux's Galaxy config: right on the
    simulated mesh, accepted by real ttnn."""
    program, mesh = _lower_seed_config("flux-schnell-tiny-tt", "4x8", check=True)
    result = program.pcc_report()[0]
    pcc_log("flux-schnell-tiny-tt", f"{mesh} bf16 bfp8", result)
    assert result.ok
    report = conformance.run_on_mock(program)
    CONFORMANCE_LOG.append(f"{'flux-schnell':14s} {str(mesh):24s} {report.summary()}")
    assert report.cluster == "galaxy" and report.fits


def test_padded_sequence_runs_on_real_ttnn():
    """100 image tokens over sp4: 32 per device (padded to 128), a pad before the partition, logical_n=100 in the
    ring, a slice after the gather; real ttnn must accept each."""
    inputs = model_zoo.example_inputs("sd3-tiny-tt", batch=2)
    inputs["hidden_states"] = inputs["hidden_states"][..., :20, :20].contiguous()
    program, mesh = _lower_seed_config("sd3-tiny-tt", "4x8", inputs)
    assert any(op.fn == "ttnn.pad" for op in program.ir.ops)
    report = conformance.run_on_mock(program)
    CONFORMANCE_LOG.append(f"{'sd3-tiny-tt':14s} {str(mesh) + ' N=100':24s} {report.summary()}")
    assert report.raw["outputs"] == [list(program.ir.tensors[o.name].shape) for o in program.ir.outputs]


def test_ring_with_a_partial_last_k_chunk_runs_on_real_ttnn(pcc_log):
    """784 image tokens over sp2: 416 keys per device (392 padded to tiles), 6.5 k chunks of 64. The kernel masks
    the last chunk's tail (ring_joint_sdpa.cpp's local mask), so the chunk is chosen by the cost model rather than
    by divisibility; right on the simulated mesh, accepted by real ttnn."""
    inputs = model_zoo.example_inputs("sd3-tiny-tt", batch=2)
    inputs["hidden_states"] = torch.randn(2, 4, 56, 56, generator=torch.Generator().manual_seed(0))
    program, mesh = _lower_seed_config("sd3-tiny-tt", "2x4", inputs, check=True)
    ring = next(op for op in program.ir.ops if op.fn.endswith("ring_joint_scaled_dot_product_attention"))
    local_keys = program.ir.tensors[ring.args[1].name].shape[2]
    k_chunk = int(re.search(r"k_chunk_size=(\d+)", program.ir.configs[ring.kwargs["program_config"].text]).group(1))
    assert local_keys % k_chunk
    result = program.pcc_report()[0]
    pcc_log("sd3-tiny-tt", f"{mesh} N=784 k chunk {k_chunk} over {local_keys} keys", result)
    assert result.ok
    report = conformance.run_on_mock(program)
    CONFORMANCE_LOG.append(f"{'sd3-tiny-tt':14s} {str(mesh) + ' N=784':24s} {report.summary()}")
    assert report.raw["outputs"] == [list(program.ir.tensors[o.name].shape) for o in program.ir.outputs]


@pytest.mark.parametrize("name", ["flux-tiny-tt", "motif-tiny-tt"])
def test_linear_with_gated_residual_runs_on_real_ttnn(name, pcc_log):
    """bfloat16 weights (TT-DiT's default): a linear whose output the gate multiplies into the residual runs as one
    dit_minimal_matmul_addcmul_fused on a single chip (no reduction between them); right on the simulated mesh and
    accepted by real ttnn."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = meshdit.lower(model_zoo.build(name), "1x1", model_zoo.example_inputs(name), dtype="bf16",
                                weight_dtype="bf16", static_inputs=model_zoo.entry(name).static_inputs)
    fused = [op for op in program.ir.ops if op.fn == "ttnn.experimental.dit_minimal_matmul_addcmul_fused"]
    assert fused and "ttnn.addcmul" not in [op.fn for op in program.ir.ops[program.ir.calls[0].start:
                                                                           program.ir.calls[0].end]]
    for result in program.pcc_report():
        pcc_log(name, "1x1 bf16 weights, linear + addcmul fused", result)
        assert result.pcc >= 0.999
    report = conformance.run_on_mock(program)
    CONFORMANCE_LOG.append(f"{name:14s} {'1x1 matmul+addcmul':24s} {report.summary()}")
    assert report.raw["outputs"] == [list(program.ir.tensors[o.name].shape) for o in program.ir.outputs]
    assert report.fits


def test_row_major_view_chains_run_on_real_ttnn():
    """Patchify and unpatchify of a 128x128 latent run row-major (lowering/rules/views.py narrow_views): untilize,
    6-D reshape and permute, tilize; real ttnn must accept each."""
    from test_fused_ops import Patchify

    program = meshdit.lower(Patchify().eval(), "1x1", {"x": torch.randn(1, 16, 128, 128)}, dtype="bf16",
                            check=False)
    assert sum(op.fn == "ttnn.to_layout" for op in program.ir.ops) == 4
    report = conformance.run_on_mock(program)
    CONFORMANCE_LOG.append(f"{'patchify':14s} {'1x1 row-major views':24s} {report.summary()}")
    assert report.raw["outputs"] == [list(program.ir.tensors[o.name].shape) for o in program.ir.outputs]


HYBRID_CASES = [("flux-tiny-tt", "2x4 sp4@1 ulysses2@0"), ("sd3-tiny-tt", "4x8 cfg2@0 sp8@1 ulysses2@0"),
                ("mochi-tiny-tt", "2x4 sp4@1 ulysses2@0")]


@pytest.mark.parametrize("name,mesh", HYBRID_CASES)
def test_hybrid_ulysses_x_ring_runs_on_real_ttnn(name, mesh):
    """The hybrid: all_to_all_async_generic on the ulysses axis, ring_joint_sdpa on the sp axis, token shards nested
    over both axes (host uploads shard the outer axis, mesh_partition cuts the inner one, also for constants such
    as rotary tables); real ttnn must accept each call."""
    config = MeshConfig.parse(mesh)
    entry = model_zoo.entry(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = meshdit.lower(model_zoo.build(name), config, model_zoo.example_inputs(name, batch=config.cfg.factor),
                                dtype="bf16", weight_dtype="bfp8", static_inputs=entry.static_inputs, check=False)
    assert program.graph.sharding.attention_counts()[AttentionStrategy.HYBRID] >= 2
    report = conformance.run_on_mock(program)
    CONFORMANCE_LOG.append(f"{name:14s} {mesh:24s} {report.summary()}")
    assert report.raw["outputs"] == [list(program.ir.tensors[o.name].shape) for o in program.ir.outputs]
    assert report.fits


HEAD_DIM_CASES = [(name, "1x1") for name in ("sd3-tiny", "flux-tiny", "mochi-tiny")] + [
    ("sd3-tiny", "2x4 cfg2@1 sp2@0 tp2@1"), ("flux-tiny", "1x4 sp4@1 ulysses4"), ("mochi-tiny", "2x4 sp4@1 ulysses2@0")]


@pytest.mark.parametrize("name,mesh", HEAD_DIM_CASES)
def test_head_dim_not_whole_tiles_runs_on_real_ttnn(name, mesh):
    """Head dims 16 and 24: ttnn's attention refuses a padded head dim, so the lowering zero-pads q/k/v to 32 and
    slices the output back (PCC unchanged: the simulated-mesh tests run these models), in plain, ring, ulysses and
    hybrid attention. Mochi passes an explicit scale, 1/sqrt(24), which ttnn's binding takes only as a
    float32-exact value."""
    config = MeshConfig.parse(mesh)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = meshdit.lower(model_zoo.build(name), config, model_zoo.example_inputs(name, batch=config.cfg.factor),
                                dtype="bf16", weight_dtype="bfp8", static_inputs=model_zoo.entry(name).static_inputs,
                                check=False)
    attention = [op for op in program.ir.ops if "scaled_dot_product_attention" in op.fn]
    assert attention and all(program.ir.tensors[op.args[0].name].shape[-1] == 32 for op in attention)
    report = conformance.run_on_mock(program)
    CONFORMANCE_LOG.append(f"{name:14s} {mesh + ' head_dim < 32':24s} {report.summary()}")
    assert report.raw["outputs"] == [list(program.ir.tensors[o.name].shape) for o in program.ir.outputs]


def test_rejected_call_is_reported_with_ttnns_error(tmp_path):
    """A program real ttnn rejects fails with ttnn's own message, not a bare exit code."""
    program, _ = _lower_seed_config("sd3-tiny-tt", "1x1")
    program.save(tmp_path)
    source = (tmp_path / "program.py").read_text()
    # break one reshape: a target shape whose volume differs from its input's
    broken = re.sub(r"ttnn\.reshape\((\w+), \[[^\]]*\]\)", r"ttnn.reshape(\1, [1, 7, 3])", source, count=1)
    assert broken != source
    (tmp_path / "program.py").write_text(broken)
    with pytest.raises(conformance.ConformanceError, match="TT_FATAL|TT_THROW"):
        conformance.run_on_mock(tmp_path)


class _GeneralityFeatures(torch.nn.Module):
    """What diffusers DiTs do that real ttnn refused before meshdit handled it: a depthwise conv (Sana's; no lowering,
    so it runs on host in numpy), an RMS norm over a tp-sharded rank-3 hidden dim (Wan's q/k norms: ttnn's
    distributed norm takes rank 4 only), a cross-attention from sequence-sharded queries to a short prompt (the ring
    kernel needs as many keys as queries per device), a prompt mask padded in front (Motif's: ttnn pads tiles at the
    end only) and a clamped integer token count (LongCat's: unary kernels refuse integers)."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(64, 64, 3, padding=1, groups=64)
        self.q, self.k, self.v, self.out = (torch.nn.Linear(64, 64) for _ in range(4))
        self.norm_q = torch.nn.RMSNorm(64, eps=1e-6)

    def forward(self, x, prompt, prompt_mask):
        image = x.transpose(1, 2).reshape(1, 64, 8, 8)
        x = x + self.conv(image).reshape(1, 64, 64).transpose(1, 2)
        q = self.norm_q(self.q(x)).reshape(1, 64, 2, 32).permute(0, 2, 1, 3)
        k, v = (proj(prompt).reshape(1, 16, 2, 32).permute(0, 2, 1, 3) for proj in (self.k, self.v))
        keep = torch.nn.functional.pad(prompt_mask[:, 4:], (4, 0), value=1).bool()[:, None, None, :]
        y = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=keep)
        count = prompt_mask.sum(1).clamp(min=1).to(x.dtype)
        return self.out(y.permute(0, 2, 1, 3).reshape(1, 64, 64)) / count[:, None, None]


def test_generality_features_run_on_real_ttnn(pcc_log):
    torch.manual_seed(0)
    model = _GeneralityFeatures().eval()
    mask = torch.ones(1, 16, dtype=torch.long)
    mask[0, 12:] = 0
    inputs = {"x": torch.randn(1, 64, 64), "prompt": torch.randn(1, 16, 64), "prompt_mask": mask}
    mesh = "2x2 sp2@0 tp2@1"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        exact = meshdit.lower(model, mesh, inputs)  # fp32 on the simulated mesh: checked against torch
        program = meshdit.lower(model, mesh, inputs, dtype="bf16", check=False)
    result = exact.pcc_report()[0]
    pcc_log("generality features", mesh, result)
    assert result.pcc >= 0.9999
    assert list(program.coverage()["host"]) == ["aten.conv2d.default"]
    device_ops = program.coverage()["device"]
    assert "ttnn.rms_norm_pre_all_gather" in device_ops and "ttnn.to_layout" in device_ops
    assert "ttnn.transformer.scaled_dot_product_attention" in device_ops  # not the ring kernel
    report = conformance.run_on_mock(program)
    CONFORMANCE_LOG.append(f"{'features':14s} {mesh:24s} {report.summary()}")
    assert report.raw["outputs"] == [list(program.ir.tensors[o.name].shape) for o in program.ir.outputs]
