"""Cost of one device op of a ProgramIR on one chip, from its real (tile-padded) shapes and dtypes.

A roofline per op: compute at the op's math fidelity on the cores it gets, against DRAM traffic at its tensors'
dtypes; whichever is slower is the op's time. The per-op dispatch overhead is added by estimate.py, once per device
op. Collectives and ring attention are in ccl.py.

    matmul (ttnn.linear, ttnn.matmul,  2 * out elements * K FLOPs; time is the busiest core's output tiles
      minimal_matmul and its fused     (ir/matmul.py: how each op spreads them over the grid) times K; ttnn.linear's
      addcmul)                         activation is a separate pass over the output
    SDPA (plain, joint)                4 * B * H * Sq * Sk * d FLOPs (QK^T and PV) over whole q/k chunks and the
                                       softmax's elementwise tiles (attention_pass), on the cores its (batch,
                                       head, q chunk) items keep busy (ir/sdpa.py) and a fixed cost per (q
                                       chunk, k chunk) step, against DRAM traffic (K and V read once per head)
    everything else                    bytes read + written / DRAM bandwidth (a reshape that keeps the tiled
                                       last two dims is a view: no device work)
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from ..ir import matmul as matmul_facts
from ..ir import sdpa as sdpa_facts
from ..ir.tiles import TILE, tile_up
from ..lowering.program_ir import BYTES_PER_ELEMENT, Code, Op, ProgramIR, Ref, TensorSpec, WeightRef, leaves
from .calibration import SDPA_STEP_CYCLES, Efficiency
from .systems import System

MINIMAL_MATMUL = "ttnn.experimental.minimal_matmul"
# minimal_matmul's kernels with the gated residual fused in (ir/matmul.py): its layout, K blocks and cost
MATMUL_ADDCMUL = "ttnn.experimental.dit_minimal_matmul_addcmul_fused"
MINIMAL_MATMULS = (MINIMAL_MATMUL, MATMUL_ADDCMUL)
MATMULS = ("ttnn.linear", "ttnn.matmul") + MINIMAL_MATMULS
SDPAS = ("ttnn.transformer.scaled_dot_product_attention", "ttnn.transformer.joint_scaled_dot_product_attention")
# ttnn's compute kernel config defaults to LoFi on Wormhole when an op is given none
# (ttnn/cpp/ttnn/operations/core/compute_kernel/compute_kernel_config.cpp, init_device_compute_kernel_config)
DEFAULT_FIDELITY = "LoFi"
# ops that read only the part of their input they write (a cut, not a pass over the whole input)
SLICES = ("ttnn.slice", "ttnn.mesh_partition")


@dataclass
class OpCost:
    """One op's modelled seconds by category, and what it moves and computes (per chip)."""

    seconds: dict = field(default_factory=dict)  # category -> seconds (dispatch excluded)
    flops: float = 0.0
    dram_bytes: float = 0.0
    link_bytes: float = 0.0  # bytes on the bottleneck ethernet link
    waste_flops: float = 0.0  # FLOPs spent on tile padding
    waste_bytes: float = 0.0  # DRAM bytes moved for tile padding
    device_op: bool = True  # dispatched to the device (pays the per-op overhead)
    extra_ops: int = 0  # device ops ttnn runs besides the op itself (ttnn.linear's unfused activation)


class Context:
    """What every op cost needs: the program's tensor specs and configs, the system, the efficiencies."""

    def __init__(self, ir: ProgramIR, system: System, eff: Efficiency):
        self.ir, self.system, self.eff = ir, system, eff
        self.specs = {i.name: i.spec for i in ir.inputs}
        self.weights = {name: w.spec for name, w in ir.weights.items()}
        self.specs.update(ir.tensors)
        self._fidelity: dict = {}

    def spec(self, value) -> TensorSpec | None:
        if isinstance(value, Ref):
            return self.specs.get(value.name)
        if isinstance(value, WeightRef):
            return self.weights.get(value.name)
        return None

    def tensors_read(self, op: Op) -> list:
        return [s for s in (self.spec(v) for v in leaves((op.args, op.kwargs))) if s is not None]

    def outputs(self, op: Op) -> list:
        return [self.specs[name] for name in op.outputs if name in self.specs]

    def fidelity(self, op: Op) -> str:
        config = op.kwargs.get("compute_kernel_config")
        text = self.ir.configs.get(config.text, "") if isinstance(config, Code) else ""
        if text not in self._fidelity:
            self._fidelity[text] = fidelity_of(text)
        return self._fidelity[text]

    def config_text(self, op: Op, key: str) -> str:
        value = op.kwargs.get(key)
        return self.ir.configs.get(value.text, "") if isinstance(value, Code) else ""

    def sdpa_grid_cores(self, op: Op) -> int:
        """Cores of the SDPA program config's grid, written against DEVICE_GRID (the chip's compute grid)."""
        text = self.config_text(op, "program_config")
        gx, gy = self.system.grid
        found = re.search(r"compute_with_storage_grid_size=ttnn\.CoreCoord\(DEVICE_GRID\.x(?:\s*-\s*(\d+))?,\s*"
                          r"DEVICE_GRID\.y(?:\s*-\s*(\d+))?\)", text)
        if found:
            return (gx - int(found.group(1) or 0)) * (gy - int(found.group(2) or 0))
        return gx * gy

    def chunks(self, op: Op) -> sdpa_facts.Chunks:
        """The SDPA program config's q/k chunk sizes (ttnn's default without one)."""
        text = self.config_text(op, "program_config")
        q, k = re.search(r"q_chunk_size=(\d+)", text), re.search(r"k_chunk_size=(\d+)", text)
        return sdpa_facts.Chunks(int(q.group(1)) if q else sdpa_facts.DEFAULT_CHUNK,
                                 int(k.group(1)) if k else sdpa_facts.DEFAULT_CHUNK)

    def q_chunk(self, op: Op) -> int:
        return self.chunks(op).q


def fidelity_of(config_text: str) -> str:
    """The math fidelity a compute kernel config's text names (ttnn's default without one)."""
    found = re.search(r"MathFidelity\.(\w+)", config_text)
    return found.group(1) if found else DEFAULT_FIDELITY


def volume(shape) -> int:
    return math.prod(shape) if shape else 1


def logical_bytes(spec: TensorSpec) -> float:
    return volume(spec.shape) * BYTES_PER_ELEMENT[spec.dtype]


def dram_time(ctx: Context, nbytes: float) -> float:
    return nbytes / ctx.system.chip.dram_effective_bytes_per_s


def traffic(specs: list) -> tuple:
    """(bytes moved, of which tile padding) for reading or writing these tensors whole."""
    moved = sum(s.nbytes for s in specs)
    return moved, moved - sum(logical_bytes(s) for s in specs)


def matmul_cost(op: Op, ctx: Context) -> OpCost:
    a, out = ctx.spec(op.args[0]), ctx.outputs(op)[0]
    k_padded, k_logical = a.padded_shape[-1], a.shape[-1]
    flops = 2.0 * volume(out.padded_shape) * k_padded
    logical = 2.0 * volume(out.shape) * k_logical
    split = matmul_split(op, ctx, a, out)
    kt = k_padded // TILE
    if op.fn in MINIMAL_MATMULS:  # K is looped in whole K blocks (zero-padded reads)
        kt = math.ceil(kt / k_block(ctx, op)) * k_block(ctx, op)
    moved, waste = traffic(ctx.tensors_read(op) + [out])
    compute = split_compute_s(ctx.system, ctx.eff, ctx.fidelity(op), split, kt)
    seconds = {"matmul": max(compute, dram_time(ctx, moved))}
    extra_ops = 0
    if op.fn == "ttnn.linear" and op.kwargs.get("activation") is not None and "program_config" not in op.kwargs:
        # ttnn.linear runs its activation as a separate unary op (ir/matmul.py): another pass over the output
        unary, unary_waste = traffic([out, out])
        seconds["data movement"] = dram_time(ctx, unary)
        moved, waste, extra_ops = moved + unary, waste + unary_waste, 1
    return OpCost(seconds, flops, moved, 0.0, flops - logical, waste, extra_ops=extra_ops)


def split_compute_s(system: System, eff: Efficiency, fidelity: str, split: matmul_facts.Split, kt: int) -> float:
    """The busiest core's output tiles, each a K-long dot product of tiles, at the fitted matmul efficiency (or the
    throttle's cap)."""
    efficiency = eff.matmul if system.mm_throttle is None else min(eff.matmul, system.mm_throttle)
    return split.busiest_tiles * kt * 2.0 * TILE ** 3 / (system.chip.peak_flops_per_core(fidelity) * efficiency)


def linear_choice(system: System, eff: Efficiency, fidelity: str, batch: int, mt: int, kt: int, nt: int,
                  k_block: int, activation: bool, io_bytes: float, out_bytes: float) -> str:
    """"minimal" when ttnn.experimental.minimal_matmul is modelled faster than ttnn.linear for [batch, Mt, Kt] x
    [Kt, Nt] (ir/matmul.py: how each spreads its tiles; ttnn.linear's activation is another op over the output),
    else "linear". io_bytes: A, the weight and the output, which both move."""
    linear, minimal = _linear_seconds(system, eff, fidelity, batch, mt, kt, nt, k_block, activation, io_bytes,
                                      out_bytes)
    return "minimal" if minimal < linear else "linear"


def addcmul_choice(system: System, eff: Efficiency, fidelity: str, batch: int, mt: int, kt: int, nt: int,
                   k_block: int, io_bytes: float, out_bytes: float) -> bool:
    """Whether residual + gate * linear(x) as one dit_minimal_matmul_addcmul_fused (it reads the residual, and
    writes no intermediate) is modelled faster than the linear (the faster of ttnn.linear and minimal_matmul) and a
    ttnn.addcmul after it (one more op, reading the residual and the linear's output, writing the sum)."""
    dram = system.chip.dram_effective_bytes_per_s
    linear, minimal = _linear_seconds(system, eff, fidelity, batch, mt, kt, nt, k_block, False, io_bytes, out_bytes)
    apart = min(linear, minimal) + eff.op_overhead_s + 3 * out_bytes / dram
    split = matmul_facts.minimal_split(batch * mt, nt, system.grid)
    fused = max(split_compute_s(system, eff, fidelity, split, math.ceil(kt / k_block) * k_block),
                (io_bytes + out_bytes) / dram)
    return fused < apart


def _linear_seconds(system, eff, fidelity, batch, mt, kt, nt, k_block, activation, io_bytes, out_bytes) -> tuple:
    """(ttnn.linear, minimal_matmul) modelled seconds of one linear (see linear_choice)."""
    dram = io_bytes / system.chip.dram_effective_bytes_per_s
    linear = max(split_compute_s(system, eff, fidelity, matmul_facts.linear_split(batch, mt, nt, system.grid), kt),
                 dram)
    if activation:
        linear += eff.op_overhead_s + 2 * out_bytes / system.chip.dram_effective_bytes_per_s
    minimal_split = matmul_facts.minimal_split(batch * mt, nt, system.grid)
    minimal = max(split_compute_s(system, eff, fidelity, minimal_split, math.ceil(kt / k_block) * k_block), dram)
    return linear, minimal


def matmul_split(op: Op, ctx: Context, a: TensorSpec, out: TensorSpec) -> matmul_facts.Split:
    """How the op spreads its output tiles over the system's compute grid (ir/matmul.py)."""
    batch, mt, nt = volume(a.padded_shape[:-2]), a.padded_shape[-2] // TILE, out.padded_shape[-1] // TILE
    if op.fn in MINIMAL_MATMULS:
        return matmul_facts.minimal_split(batch * mt, nt, ctx.system.grid)
    return matmul_facts.linear_split(batch, mt, nt, ctx.system.grid)


def k_block(ctx: Context, op: Op) -> int:
    """A minimal_matmul's K block from its config (ttnn's default 8 without one)."""
    found = re.search(r"K_block_size=(\d+)", ctx.config_text(op, "config"))
    return int(found.group(1)) if found else 8


def attention_flops(q: TensorSpec, k: TensorSpec, padded: bool = True) -> float:
    """QK^T and PV over [B, H, S, d] q and k: 4 * B * H * Sq * Sk * d."""
    qs, ks = (q.padded_shape, k.padded_shape) if padded else (q.shape, k.shape)
    return 4.0 * volume(qs[:-2]) * qs[-2] * ks[-2] * qs[-1]


def sdpa_cores(op: Op, ctx: Context, q_lengths, q: TensorSpec) -> float:
    """Cores an SDPA op keeps busy on average: it splits work by (batch, head, q chunk) (ir/sdpa.py)."""
    return sdpa_facts.busy_cores(volume(q.padded_shape[:-2]), q_lengths, ctx.q_chunk(op), ctx.sdpa_grid_cores(op))


@dataclass
class AttentionPass:
    """One SDPA pass (ir/sdpa.py Pass): every query of q_lengths against every key of k_lengths, per (batch, head)."""

    compute_s: float  # the matmul FLOPs, the softmax's elementwise work and the steps' fixed cost, busy cores
    flops: float  # over whole q and k chunks (the kernel computes a chunk's padded tail and masks it)
    merge_bytes: float  # a merged pass's Q, previous output and output, moved again in DRAM

    def seconds(self, other_bytes: float, system: System) -> float:
        return max(self.compute_s, (other_bytes + self.merge_bytes) / system.chip.dram_effective_bytes_per_s)


def attention_pass(system: System, eff: Efficiency, fidelity: str, batch_heads: int, q_lengths, k_lengths,
                   head_dim: int, chunks: sdpa_facts.Chunks, cores: int, element_bytes: float = 2.0,
                   merged: bool = False, step_cycles: float | None = None) -> AttentionPass:
    """The cost model's SDPA term, shared by the ops here, ring attention (ccl.py) and lowering's choice of chunk
    sizes (lowering/attention/common.py). Each core runs its (batch, head, q chunk) items one after another, each
    item a step per k chunk: small q chunks keep more cores busy but take more steps, large ones leave cores idle
    when there are few heads. K and V come from DRAM once per head: ttnn's SDPA readers (reader_interleaved,
    joint_reader, ring_joint_reader in 0.81.1) chain the cores that share a head, one reading each K/V chunk and
    forwarding it to the others (measured: about 0.9 GB of DRAM traffic for a ring SDPA call that would re-read
    42 GB without, bench/measured_ops.py).

    Besides QK^T and PV, the kernel (sdpa_inner_loop in compute_common.hpp) does matrix-engine elementwise work
    whose amount does not follow the FLOPs, counted in tiles at the engine's rates (systems.Chip.tile_cycles):
      per k chunk     the row max of the Sq x Sk scores, and the max subtracted from them
      per k chunk     the online-softmax rescale: the running Sq x Dt output and the Sq running sums multiplied by
      after the first   exp(old max - new max), the sums added: small k chunks rescale more often
      per q chunk     the output multiplied by 1 / sum
      merged pass     the log-sum-exp merge into the previous output (subtract, multiply, subtract over Sq x Dt, two
                        ops on the Sq statistics), and Q, the previous output and the output moved again in DRAM
      per step        a fixed cost beyond its tiles (the threads' handshakes, the K/V chunk's arrival):
                        step_cycles, calibration.SDPA_STEP_CYCLES unless given
    The exps run on the vector unit, whose rate is not sourced: they are in the fitted SDPA efficiency, which
    divides all of this work."""
    d = tile_up(head_dim)
    q_rows, k_rows = sdpa_facts.padded_rows(q_lengths, chunks.q), sdpa_facts.padded_rows(k_lengths, chunks.k)
    flops = 4.0 * batch_heads * q_rows * k_rows * d
    busy = sdpa_facts.busy_cores(batch_heads, q_lengths, chunks.q, cores)
    chip = system.chip
    sq, dt = chunks.q // TILE, d // TILE
    items = sdpa_facts.work_items(batch_heads, q_lengths, chunks.q)
    mul, add = chip.tile_cycles("mul", fidelity), chip.tile_cycles("add")
    cycles = batch_heads * (q_rows // TILE) * (k_rows // TILE) * (chip.tile_cycles("reduce") + add)
    rescales = items * max(sdpa_facts.k_chunks(k_lengths, chunks.k) - 1, 0)
    cycles += rescales * sq * (dt * mul + mul + add) + items * sq * dt * mul
    if merged:
        cycles += items * sq * (dt * (2 * add + mul) + mul + add)
    steps = items * sdpa_facts.k_chunks(k_lengths, chunks.k)
    cycles += steps * (SDPA_STEP_CYCLES if step_cycles is None else step_cycles)
    engine = flops / chip.peak_flops_per_core(fidelity) + cycles / chip.clock_hz
    compute = engine / (busy * eff.sdpa)
    merge = 3.0 * batch_heads * q_rows * d * element_bytes if merged else 0.0
    return AttentionPass(compute, flops, merge)


def sdpa_cost(op: Op, ctx: Context) -> OpCost:
    q, k = ctx.spec(op.args[0]), ctx.spec(op.args[1])
    logical = attention_flops(q, k, padded=False)
    q_lengths, k_lengths = [q.padded_shape[-2]], [k.padded_shape[-2]]
    if op.fn.endswith("joint_scaled_dot_product_attention"):  # the prompt stream joins queries and keys
        jq, jk = ctx.spec(op.args[3]), ctx.spec(op.args[4])
        q_lengths.append(jq.padded_shape[-2])
        k_lengths.append(jk.padded_shape[-2])
        logical = 4.0 * volume(q.shape[:-2]) * (q.shape[-2] + jq.shape[-2]) * (k.shape[-2] + jk.shape[-2]) \
            * q.shape[-1]
    step = attention_pass(ctx.system, ctx.eff, ctx.fidelity(op), volume(q.padded_shape[:-2]), q_lengths, k_lengths,
                          q.padded_shape[-1], ctx.chunks(op), ctx.sdpa_grid_cores(op), BYTES_PER_ELEMENT[k.dtype])
    moved, waste = traffic(ctx.tensors_read(op) + ctx.outputs(op))
    seconds = step.seconds(moved, ctx.system)
    return OpCost({"attention": seconds}, step.flops, moved + step.merge_bytes, 0.0, step.flops - logical, waste)


def is_view(op: Op, ctx: Context) -> bool:
    """A reshape that keeps a tiled tensor's last two padded dims only relabels its leading dims: ttnn returns a
    view and runs no device program."""
    if op.fn != "ttnn.reshape":
        return False
    a, out = ctx.spec(op.args[0]), ctx.outputs(op)[0]
    return a is not None and a.layout == out.layout and a.padded_shape[-2:] == out.padded_shape[-2:]


def data_movement_cost(op: Op, ctx: Context) -> OpCost:
    outs = ctx.outputs(op)
    if is_view(op, ctx):
        return OpCost({}, device_op=False)
    out_bytes, out_waste = traffic(outs)
    if op.fn in SLICES:  # reads the piece it keeps
        moved, waste = 2 * out_bytes, 2 * out_waste
    else:
        in_bytes, in_waste = traffic(ctx.tensors_read(op))
        moved, waste = in_bytes + out_bytes, in_waste + out_waste
    return OpCost({"data movement": dram_time(ctx, moved)}, 0.0, moved, 0.0, 0.0, waste)
