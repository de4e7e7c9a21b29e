"""A simulated TT-NN: the subset of the ttnn 0.81.1 API meshdit emits, executed on CPU with torch.

Used as the `ttnn` module of an emitted program (`ttnn = meshdit.runtime.sim`), so that a program written for a
mesh runs, and is checked, without hardware:
- one shard per device: a MeshDevice of R x C devices holds, for each device tensor, one torch tensor per device,
  every op runs per device on that device's shard, and collectives move data between shards;
- rounding as the hardware: each op's output is rounded to its data format (runtime/numerics.py), so bfloat16 /
  bfloat8_b PCC is meaningful;
- refusing what ttnn refuses: host tensors given to device ops, rows split mid-tile, wrong semaphore counts, host I/O during trace
  capture raise "TT_FATAL (simulated): ...".
Signatures follow ttnn's: same positional order and keyword names, so a call accepted here is spelled as ttnn
spells it. Memory configs, program configs and compute kernel configs are accepted and recorded, not simulated.

The files:
    tensor.py         dtypes, layouts, config objects, MeshDevice, Tensor, mesh mappers, host <-> device moves,
                      and the per-shard plumbing ops run through
    files.py          dump_tensor / load_tensor
    registry.py       @sim_op and OPS: the one list of simulated ops, each recorded while its mesh captures a trace
    compute.py        linear, norms (whole and distributed), eltwise, reductions, softmax, typecast
    data_movement.py  reshape, permute, slice, concat, pad, repeat
    attention.py      sdpa, joint sdpa, ring joint sdpa
    ccl.py            all_gather, reduce_scatter, all_reduce (and async variants), all_to_all, mesh_partition
    trace.py          begin/end_trace_capture, execute_trace, release_trace, copy_host_to_device_tensor
"""

from . import attention, ccl, compute, data_movement, registry  # noqa: F401  (the ops modules register their ops)
from .files import SIM_TENSOR_FORMAT, DumpTensorMode, dump_tensor, load_tensor  # noqa: F401
from .registry import OPS  # noqa: F401
from .tensor import (  # noqa: F401
    DRAM_MEMORY_CONFIG, L1_MEMORY_CONFIG, ROW_MAJOR_LAYOUT, TILE_LAYOUT, CoreCoord, CoreRange, CoreRangeSet,
    DataType, GlobalSemaphore, Layout, MathFidelity, MeshDevice, MeshMapperConfig, MeshShape, MinimalMatmulConfig,
    PlacementReplicate, PlacementShard, ReduceType, SDPAProgramConfig, Tensor, Topology, UnaryOpType, UnaryWithParam,
    WormholeComputeKernelConfig, bfloat8_b,
    bfloat16, close_mesh_device, create_global_semaphore, create_mesh_mapper, float32, from_device, from_torch,
    get_device_tensors, int32, open_mesh_device, replicate_tensor_to_mesh_mapper, to_device, to_torch, uint32)
from .trace import (  # noqa: F401
    MeshTraceId, begin_trace_capture, copy_host_to_device_tensor, end_trace_capture, execute_trace, release_trace,
    trace_ops)

__all__ = []  # the module is used as a namespace: `ttnn = meshdit.runtime.sim`

# The ops: `linear`, ..., and the `transformer` and `experimental` namespaces, bound to the recording wrappers.
# Tests replace ops here (sim.all_reduce, sim.transformer.ring_joint_scaled_dot_product_attention); ops built on
# another op look it up here at call time (registry.public_op), so a replacement reaches them too.
_ops = registry.surface()
if set(_ops) & set(globals()):
    raise ImportError(f"simulated ops shadow the sim's own names: {sorted(set(_ops) & set(globals()))}")
globals().update(_ops)
del _ops
