"""What TT-DiT's published runs spend outside the device program meshdit's cost model predicts, per forward.

bench/cost_model.py models meshdit's program for TT-DiT's plan. TT-DiT's published denoising times are wall clock
around the whole denoising loop, so they also hold what TT-DiT's pipeline does besides its device program; left
out, the fitted efficiencies would absorb it. From TT-DiT's code (tenstorrent/tt-metal models/tt_dit:
pipelines/mochi/pipeline_mochi.py, models/transformers/transformer_mochi.py, layers/linear.py,
tests/models/mochi/test_performance_mochi.py, read at 00b0fa3 and 0d617af), Mochi-1 has two such costs:

  host phase   every forward rebuilds the 3-D RoPE on the host: diffusers' MochiRoPE in fp32
               (prepare_rope_features), cos and sin interleaved to the head dim (stack_cos_sin), the sequence
               padded to 32 x sp (pad_vision_seq_parallel), both uploaded as bf16 tiles sharded over sp and tp
               (bf16_tensor_2dshard); the time embedding runs in torch on the host too. The pipeline is not traced
               and every forward ends in a blocking read-back, so the device waits for the host phase. Measured
               here by running that torch code path at the published shape; ttnn's host tile conversion is stood
               in for by a bf16 cast and a tile reorder, and the PCIe upload of the tables (2 x 24 x 44544 x 128
               bf16, 547 MB per forward on either system) is not counted, so the figure is low on that side and
               high on the other (this machine's few cores against a TT host's many).
  FSDP         every block linear's weight is also sharded over the sp mesh axis and all-gathered before each use
               (ColParallelLinear / RowParallelLinear: all_gather_persistent_buffer on the sp axis), on both
               systems: modelled with the cost model's all-gather fit on meshdit's weights of each block.

SD3.5 Large and Flux.1-dev add nothing: their perf tests run the transformer traced, with the timestep and latents
copied on device, the embeddings on device, the RoPE uploaded once per image, and the cfg combine and Euler step on
device (pipelines/flux1/pipeline_flux1.py at 04b3405, pipelines/stable_diffusion_35_large at 085ce7d,
utils/tracing.py). The older SD3.5 pipeline (4658bbf) combined its two cfg submeshes' predictions on the host every
step: a small round trip of latents, left out.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass

import torch

from meshdit import model_zoo
from meshdit.cost.ccl import fit_time
from meshdit.lowering.blocks import instance_of

TILE = 32


def _tiles(x: torch.Tensor) -> torch.Tensor:
    """x cast to bf16 and reordered into 32x32 tiles, row-major within and across tiles: the work ttnn's host
    conversion to TILE_LAYOUT does before the upload (its faces ignored)."""
    *lead, rows, cols = x.shape
    t = x.to(torch.bfloat16).reshape(*lead, rows // TILE, TILE, cols // TILE, TILE)
    return t.transpose(-2, -3).contiguous()


def _padded(x: torch.Tensor, sp: int) -> torch.Tensor:
    """pad_vision_seq_parallel: dim 2 padded to a multiple of 32 x sp."""
    multiple = TILE * sp
    extra = -x.shape[2] % multiple
    return torch.nn.functional.pad(x, (0, 0, 0, extra)) if extra else x


def mochi_host_phase(sp: int, repeats: int = 5) -> float:
    """Seconds of TT-DiT's Mochi-1 host work per forward at the published shape (model_zoo's full-size inputs),
    measured on this machine: the fastest of `repeats` runs."""
    model = model_zoo.build("mochi1", device="meta")
    inputs = model_zoo.example_inputs("mochi1", device="meta", batch=1)
    _, _, frames, height, width = inputs["hidden_states"].shape
    patch = model.config.patch_size
    generator = torch.Generator().manual_seed(0)
    pos_frequencies = torch.randn(tuple(model.pos_frequencies.shape), generator=generator)
    time_embed = copy.deepcopy(model.time_embed).to_empty(device="cpu")
    for p in time_embed.parameters():
        p.data.normal_(0, 0.02, generator=generator)
    caption = torch.randn(tuple(inputs["encoder_hidden_states"].shape), generator=generator)
    mask = torch.ones(tuple(inputs["encoder_attention_mask"].shape), dtype=torch.bool)
    timestep = torch.tensor([500])
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        cos, sin = model.rope(pos_frequencies, frames, height // patch, width // patch, device="cpu",
                              dtype=torch.float32)
        for table in (cos, sin):  # [N, heads, d/2] -> [1, heads, N, d], pairs repeated, padded, tiled
            table = table.unsqueeze(0).permute(0, 2, 1, 3)
            table = torch.stack([table, table], dim=-1).flatten(-2)
            _tiles(_padded(table, sp))
        with torch.no_grad():
            time_embed(timestep, caption, mask, hidden_dtype=torch.float32)
        best = min(best, time.perf_counter() - start)
    return best


# TT-DiT's DiTs built with is_fsdp=True, their weights sharded over the sp mesh axis (pipeline_mochi.py)
FSDP_MODELS = ("mochi1",)
# host work per forward the device waits for, by model: a function of the sp factor giving measured seconds
HOST_PHASES = {"mochi1": mochi_host_phase}


@dataclass(frozen=True)
class Outside:
    """TT-DiT's modelled work per forward beyond meshdit's program: its FSDP weight all-gathers."""

    gather_s: float = 0.0  # link and fixed time of the gathers (the cost model's all-gather fit)
    gathers: int = 0  # device ops, each costing the fitted per-op overhead too

    def seconds(self, eff) -> float:
        return self.gather_s + self.gathers * eff.op_overhead_s


def outside(name: str, ir, system, sp_axis: int) -> Outside:
    """What TT-DiT's run of `name` adds per forward to the device program meshdit's cost model predicts (modelled;
    the host phase is measured separately, by HOST_PHASES)."""
    if name not in FSDP_MODELS or ir.submesh_shape[sp_axis] <= 1:
        return Outside()
    n = ir.submesh_shape[sp_axis]
    instances = {call.instance for call in ir.calls}
    links = system.links_for(None)
    seconds, count = 0.0, 0
    for weight_name, weight in ir.weights.items():
        if instance_of(weight_name.split(":")[0]) not in instances:
            continue  # outside the blocks
        if sum(1 for d in weight.spec.shape if d > 1) < 2:
            continue  # a vector (norm weight, bias): TT-DiT shards the linears' matrices
        piece = weight.spec.nbytes / n  # each device holds 1/sp of its tensor-parallel shard
        seconds += fit_time("all_gather", "Linear", n, (n - 1) * piece, links)
        count += 1
    return Outside(seconds, count)
