"""What ttnn's matmul kernels do with a linear's shapes: how they split the output over the core grid, and which
minimal_matmul configs they refuse. One home for these facts: lowering chooses between the two ops and a
minimal_matmul config with them (lowering/rules/linear.py), the cost model costs both with them (cost/ops.py) and
the simulated mesh refuses what ttnn refuses with them (runtime/sim/compute.py).

Two ops, for A [..., M, K] times a weight [K, N] (sizes in tiles: Mt, Kt, Nt):

  ttnn.linear without a program config (ttnn's own choice, matmul_program_config.cpp
  create_simple_matmul_program_config, all tensors DRAM interleaved, on the full compute grid):
    - a narrow shape (the longer of M and N over 8 times the shorter, or either at most one tile) or one whose
      per-core blocks fit one grid row (Mt <= 16) goes 1-D: the whole M per core and N spread over all cores
      (wide), or the reverse (tall);
    - otherwise 2-D: ceil(Mt / rows) x ceil(Nt / columns) output tiles per core;
    - leading dims of A are not folded into M: each core loops over them;
    - an activation is not fused: ttnn runs it as a separate unary op after the matmul (seen in ttnn 0.81.1's graph
      capture on the mock: MatmulDeviceOperation then UnaryDeviceOperation; the bias is fused).
  ttnn.experimental.minimal_matmul with a MinimalMatmulConfig (TT-DiT's linear):
    - leading dims of A folded into M; the longer of M and N on the grid's x axis (transpose_core_grid = M > N),
      ceil(tiles / cores) per core on each axis;
    - bias and activation fused (one device op);
    - refuses (minimal_matmul_device_operation.cpp, checked on the mock): a grid under 2x2 or beyond the device's,
      M_block % subblock_h, N_block % subblock_w, subblock_h * subblock_w over 4 tiles with fp32 accumulation
      (8 without), and circular buffers beyond L1 (l1_bytes).
  ttnn.experimental.dit_minimal_matmul_addcmul_fused (the same kernels, computing residual + s * (A @ W + b) * gate
  with the gate one row, in one device op, seen in the mock's graph capture): minimal_matmul's layout and
  refusals, two more circular buffers (an M x N block of the residual and a row of the gate, measured on the mock:
  exactly the "grow to" difference on 14 configs), and a residual whose tile size is the weight's
  (minimal_matmul_program_descriptor.cpp: ternary_a_tile_size == in1_tile_size; bfloat8_b weights with a bfloat16
  residual are refused).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .sdpa import L1_BYTES

# ttnn 0.81.1 tile bytes by dtype (bfloat8_b: 1024 one-byte mantissas + 64 shared exponents)
TILE_BYTES = {"bfloat16": 2048, "float32": 4096, "bfloat8_b": 1088}
# Where minimal_matmul's circular buffers start in L1: fitted exactly (zero residual) to the "grow to N B" ttnn
# 0.81.1 reported on the mocked N150 for 26 refused configs (blocks 8-24, bf16 and bfloat8_b weights, with and
# without bias, fp32 accumulation on and off)
MINIMAL_CB_START = 105824
# ttnn's 1-D choice: per-core blocks of up to 16 tiles (get_per_core_factor's largest; the CBs of 16 x 16 blocks with
# in0_block_w 2 fit L1 in bfloat16), so M of at most 16 tiles is one row of blocks
PER_CORE_FACTOR = 16
NARROW_RATIO = 8


@dataclass(frozen=True)
class Split:
    """How a matmul's output tiles are spread: the busiest core's output tiles (all leading dims included), and how
    the op was laid out."""

    busiest_tiles: int
    cores: int  # cores with work
    layout: str  # "2-D", "1-D wide", "1-D tall", "minimal"


def linear_split(batch: int, mt: int, nt: int, grid: tuple) -> Split:
    """ttnn.linear's own layout of [batch, Mt, Kt] x [Kt, Nt] on a grid (x, y) (see the module docstring)."""
    gx, gy = grid
    cores = gx * gy
    h, w = mt * 32, nt * 32
    narrow = max(h, w) > NARROW_RATIO * min(h, w) or h <= 32 or w <= 32
    blocks_x, blocks_y = math.ceil(nt / PER_CORE_FACTOR), math.ceil(mt / PER_CORE_FACTOR)
    fits = blocks_x <= gx and blocks_y <= gy and (blocks_x, blocks_y) != (1, 1)
    range_x, range_y = (blocks_x, blocks_y) if fits else (0, 0)
    wide = narrow and w > h
    if range_y == 1 or wide:  # the whole M on every core, N spread over all of them
        per_n = math.ceil(math.ceil(w / cores) / 32)
        return Split(batch * mt * per_n, math.ceil(nt / per_n), "1-D wide")
    if range_x == 1 or narrow:  # the reverse
        per_m = math.ceil(math.ceil(h / cores) / 32)
        return Split(batch * per_m * nt, math.ceil(mt / per_m), "1-D tall")
    per_m, per_n = math.ceil(mt / gy), math.ceil(nt / gx)
    return Split(batch * per_m * per_n, math.ceil(mt / per_m) * math.ceil(nt / per_n), "2-D")


def minimal_split(mt: int, nt: int, grid: tuple) -> Split:
    """minimal_matmul's layout of [Mt (leading dims folded in), Kt] x [Kt, Nt] on a grid (x, y)."""
    gx, gy = grid
    m_cores, n_cores = (gx, gy) if mt > nt else (gy, gx)
    per_m, per_n = math.ceil(mt / m_cores), math.ceil(nt / n_cores)
    return Split(per_m * per_n, math.ceil(mt / per_m) * math.ceil(nt / per_n), "minimal")


@dataclass(frozen=True)
class MinimalConfig:
    m_block: int
    k_block: int
    n_block: int
    subblock_h: int
    subblock_w: int

    def code(self) -> str:
        return (f"ttnn.MinimalMatmulConfig(M_block_size={self.m_block}, K_block_size={self.k_block}, "
                f"N_block_size={self.n_block}, subblock_h={self.subblock_h}, subblock_w={self.subblock_w}, "
                "compute_with_storage_grid_size=DEVICE_GRID)")


def l1_bytes(config: MinimalConfig, weight_dtype: str, bias_dtype: str | None, fp32_acc: bool,
             act_dtype: str = "bfloat16", addcmul: tuple | None = None) -> int:
    """Where one core's circular buffers end: A, B and the output double-buffered in blocks, the accumulator (fp32
    tiles with fp32 accumulation), and a row of bias tiles (minimal_matmul_program_factory.cpp; MINIMAL_CB_START);
    with `addcmul` (residual dtype, gate dtype: the fused addcmul), an M x N block of the residual and a row of the
    gate."""
    m, k, n = config.m_block, config.k_block, config.n_block
    end = MINIMAL_CB_START + 2 * m * k * TILE_BYTES[act_dtype] + 2 * k * n * TILE_BYTES[weight_dtype] \
        + 2 * m * n * TILE_BYTES[act_dtype] + m * n * TILE_BYTES["float32" if fp32_acc else act_dtype]
    if bias_dtype is not None:
        end += n * TILE_BYTES[bias_dtype]
    if addcmul is not None:
        end += m * n * TILE_BYTES[addcmul[0]] + n * TILE_BYTES[addcmul[1]]
    return end


def minimal_refusal(config: MinimalConfig, grid: tuple, device_grid: tuple, weight_dtype: str,
                    bias_dtype: str | None, fp32_acc: bool, act_dtype: str = "bfloat16",
                    addcmul: tuple | None = None) -> str | None:
    """Why ttnn 0.81.1 refuses this minimal_matmul config (with `addcmul`: the fused addcmul's, its residual and
    gate dtypes), or None (see the module docstring)."""
    why = addcmul_refusal(addcmul, weight_dtype)
    if why is not None:
        return why
    if min(grid) < 2 or grid[0] > device_grid[0] or grid[1] > device_grid[1]:
        return f"compute_with_storage_grid_size {grid} must be at least 2x2 and within the device grid {device_grid}"
    if min(config.m_block, config.k_block, config.n_block, config.subblock_h, config.subblock_w) <= 0:
        return "block and subblock sizes must be positive"
    if config.m_block % config.subblock_h or config.n_block % config.subblock_w:
        return "(cfg.M_block_size % cfg.subblock_h) == 0 and (cfg.N_block_size % cfg.subblock_w) == 0"
    dest = 4 if fp32_acc else 8
    if config.subblock_h * config.subblock_w > dest:
        return f"cfg.subblock_h * cfg.subblock_w <= max_dest_volume ({dest})"
    end = l1_bytes(config, weight_dtype, bias_dtype, fp32_acc, act_dtype, addcmul)
    if end > L1_BYTES:
        return (f"Statically allocated dataflow buffers grow to {end} B which is beyond max L1 size of {L1_BYTES} B "
                "(modelled)")
    return None


def addcmul_refusal(addcmul: tuple | None, weight_dtype: str) -> str | None:
    """Why ttnn refuses the fused addcmul's residual (dtype addcmul[0]) with these weights whatever the config."""
    if addcmul is not None and TILE_BYTES[addcmul[0]] != TILE_BYTES[weight_dtype]:
        return f"ternary_a_tile_size == in1_tile_size (a {addcmul[0]} residual with {weight_dtype} weights)"
    return None


def minimal_config(mt: int, kt: int, nt: int, weight_dtype: str, bias_dtype: str | None,
                   fp32_acc: bool, addcmul: tuple | None = None) -> MinimalConfig:
    """TT-DiT's default blocking (models/tt_dit/utils/matmul.py get_matmul_config for shapes its tables lack): 8
    tiles on each of M, K and N, 2 on M or N when that side has fewer than 8 tiles, 2x2 subblocks. Larger blocks
    only cut block-loop overhead, which the cost model does not see, so the table's tuned entries are not needed to
    rank the two ops; the K block shrinks if the buffers would not fit L1."""
    m, n = (8 if mt >= 8 else 2), (8 if nt >= 8 else 2)
    for k in (8, 4, 2, 1):
        config = MinimalConfig(m, k, n, 2, 2)
        if l1_bytes(config, weight_dtype, bias_dtype, fp32_acc, addcmul=addcmul) <= L1_BYTES:
            return config
    return MinimalConfig(2, 1, 2, 2, 2)
