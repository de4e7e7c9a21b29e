"""The TT-NN program IR: ops named as ttnn 0.81.1 names them, over tensors with logical and tile-padded shapes.

A ProgramIR is what the emitter prints and what the plan reports. It holds no torch objects, only names, shapes and
Python literals, so it can be printed, diffed and saved as it is.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..ir.tiles import tile_padded

# collective ops the lowering emits -> the short name reports use
COLLECTIVE_OPS = {
    "ttnn.experimental.all_gather_async": "all_gather",
    "ttnn.experimental.reduce_scatter_minimal_async": "reduce_scatter",
    "ttnn.experimental.all_reduce_async": "all_reduce",
    "ttnn.experimental.all_to_all_async_generic": "all_to_all",
    "ttnn.transformer.ring_joint_scaled_dot_product_attention": "ring_joint_sdpa",
}
DTYPES = ("float32", "bfloat16", "bfloat8_b", "int32", "uint32")
BYTES_PER_ELEMENT = {"float32": 4, "bfloat16": 2, "bfloat8_b": 1.0625, "int32": 4, "uint32": 4}


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple  # logical shape
    dtype: str  # one of DTYPES
    layout: str = "TILE"  # TILE | ROW_MAJOR

    @property
    def padded_shape(self) -> tuple:
        return tile_padded(self.shape) if self.layout == "TILE" else tuple(self.shape)

    @property
    def nbytes(self) -> int:
        count = 1
        for d in self.padded_shape:
            count *= d
        return int(count * BYTES_PER_ELEMENT[self.dtype])

    def __str__(self):
        pad = "" if self.padded_shape == tuple(self.shape) else f" (padded {list(self.padded_shape)})"
        return f"{self.name}: {self.dtype}{list(self.shape)}{pad} {self.layout}"


@dataclass(frozen=True)
class Ref:
    """A reference to a tensor variable of the program."""

    name: str


@dataclass(frozen=True)
class WeightRef:
    """A reference to a program weight (printed as w["name"])."""

    name: str


@dataclass(frozen=True)
class Code:
    """A Python expression printed as is (ttnn.bfloat16, a config variable, ...)."""

    text: str


@dataclass(frozen=True)
class CclSemaphores:
    """The global semaphores of the next CCL of one kind on one mesh axis, from the program's semaphore manager
    (printed `ccl.all_gather(1)`). The manager (runtime/device.py CCLSemaphores) keeps two sets per kind and axis
    and each getter rotates through them, as TT-DiT's CCLManager does, so consecutive CCLs on an axis never share
    one; the count each CCL takes lives there too."""

    kind: str  # all_gather | reduce_scatter | all_reduce_barriers | barrier | ring
    axis: int


def leaves(value) -> list:
    """The values inside an op argument (lists, tuples and dicts opened), in order."""
    if isinstance(value, (list, tuple)):
        return [leaf for v in value for leaf in leaves(v)]
    if isinstance(value, dict):
        return [leaf for v in value.values() for leaf in leaves(v)]
    return [value]


def refs_in(value) -> list:
    """Names of the tensors an op argument refers to (Refs, also inside lists, tuples and dicts)."""
    return [leaf.name for leaf in leaves(value) if isinstance(leaf, Ref)]


def last_uses(ops: list, outputs: list) -> dict:
    """Tensor name -> index of the last op of `ops` that reads it (or produces it, if nothing reads it); `outputs`
    live to the end (len(ops))."""
    last = {}
    for index, op in enumerate(ops):
        for name in op.outputs + refs_in(op.args) + refs_in(op.kwargs):
            last[name] = index
    for name in outputs:
        last[name] = len(ops)
    return last


@dataclass
class Op:
    fn: str  # "ttnn.linear", "ttnn.transformer.scaled_dot_product_attention", or "host_call" for host fallback
    args: tuple
    kwargs: dict
    outputs: list  # output tensor names (several for multi-output ops)
    node: str  # FX node it lowers
    where: str  # model source location
    module: str = ""  # owning module path (transformer_blocks.3.attn), for grouping in the emitted source

    @property
    def on_host(self) -> bool:
        return self.fn == "host_call"


@dataclass
class WeightSpec:
    """A tensor the program owns, prepared on host from a model constant and uploaded once.

    A dim sharded over the sequence-parallel axes (a token table: position embeddings, rotary cos/sin) has a
    per-device length of whole tiles (sharding.placement.seq_local), so spec.shape[d] * mesh axis size can exceed
    global_shape[d]: the runtime zero-pads the host array along d to that size before splitting it."""

    name: str
    constant: str  # ModelGraph constant it comes from
    transform: object  # lowering.weights.WeightTransform: how the host prepares it (transpose, row, ...)
    spec: TensorSpec  # one device's piece (token dims padded)
    global_shape: tuple = ()  # shape of the prepared host array (logical, before it is padded and split)
    placements: tuple = ()  # per mesh axis: the dim sharded over that axis, or None (replicated)
    more_constants: tuple = ()  # further constants the transform reads after `constant` (fused q, k, v)


@dataclass
class InputSpec:
    """A program input. As for weights, a token dim sharded over the sequence-parallel axes is padded per device:
    the runtime zero-pads the host array along each sharded dim d to spec.shape[d] * mesh axis size."""

    name: str
    spec: TensorSpec  # one device's piece (token dims padded)
    torch_dtype: str  # dtype the module takes (the program casts on upload)
    global_shape: tuple = ()  # logical shape one cfg submesh receives (what the caller passes, per branch)
    placements: tuple = ()  # per mesh axis: the dim sharded over that axis, or None (replicated)


@dataclass
class ProgramIR:
    model_name: str
    mesh_shape: tuple  # the whole mesh
    act_dtype: str
    weight_dtype: str
    inputs: list  # InputSpec, in call order
    weights: dict  # name -> WeightSpec
    ops: list  # Op
    outputs: list  # output tensor names, flat, in the module's output order
    tensors: dict  # name -> TensorSpec for every op output
    configs: dict = field(default_factory=dict)  # config variable -> Python expression (kernel configs)
    static_inputs: dict = field(default_factory=dict)  # name -> description of the baked-in value
    submesh_shape: tuple = (1, 1)  # the mesh one cfg branch runs on (the program's ops see this mesh)
    cfg_factor: int = 1  # cfg submeshes; each runs the program on its share of the batch
    batched_inputs: tuple = ()  # inputs split over the cfg submeshes along dim 0
    buffers: dict = field(default_factory=dict)  # persistent device buffers, name -> TensorSpec (per device)
    module_classes: dict = field(default_factory=dict)  # module path -> class name (names block functions)
    blocks: dict = field(default_factory=dict)  # block kind name -> blocks.BlockKind (emitted as one function each)
    calls: list = field(default_factory=list)  # blocks.BlockCall per block instance, in program order
    fusions: dict = field(default_factory=dict)  # what lowering fused, or kept apart and why -> count
    # tensor -> the graph node whose value it holds, where that is not the node of the op writing it (a fused
    # op's output holds a later node's value: a linear with its activation), or None when it holds no node's value
    # (a fused QKV before the head split); meshdit.check compares tensors with node values by it
    holds: dict = field(default_factory=dict)
    matmul_fidelity: str = "HiFi2"  # the math fidelity of every matmul (lower's matmul_fidelity)

    def last_uses(self) -> dict:
        return last_uses(self.ops, refs_in(self.outputs))

    def collectives(self) -> list:
        return [op for op in self.ops if op.fn in COLLECTIVE_OPS]

    def coverage(self) -> dict:
        device, host = {}, {}
        for op in self.ops:
            bucket = host if op.on_host else device
            key = op.args[0] if op.on_host else op.fn
            bucket[key] = bucket.get(key, 0) + 1
        return {"device": device, "host": host}

    def weight_bytes(self) -> int:
        return sum(w.spec.nbytes for w in self.weights.values())
