"""The Builder: what lowering rules emit through. It owns naming, dtypes, weights, configs and the per-device
shapes of values, so a rule only says which ttnn calls a node becomes.

Dtypes: every floating activation has the program's activation dtype (float32 or bfloat16); matmul weights have
the weight dtype (bfloat16 or bfloat8_b); other constants (norm weights, biases, tables) the activation dtype.
float64 computations in the model (rotary tables) run in the activation dtype: the device has no float64.
Precision-sensitive subgraphs stay float32 whatever the activation dtype (`fp32`, from lower.float32_region).
"""

from __future__ import annotations

import collections
import os

import torch
import torch.fx as fx

from ..cost.systems import system_for
from ..errors import node_location
from ..ir.graph import ModelGraph, is_const
from ..sharding.decisions import NodeSharding
from ..sharding.placement import MeshAxes, Partial, R, Shard
from .program_ir import CclSemaphores, Code, Op, Ref, TensorSpec, WeightRef, WeightSpec
from .weights import IDENTITY, WeightTransform

TTNN_DTYPE = {"float32": "ttnn.float32", "bfloat16": "ttnn.bfloat16", "bfloat8_b": "ttnn.bfloat8_b",
              "int32": "ttnn.int32", "uint32": "ttnn.uint32"}

# Compute kernel configs as TT-DiT sets them: matmuls HiFi2 (LoFi in its opt-in bf8_weights_lofi profile) with fp32
# accumulation, norms HiFi4.
FIDELITIES = ("LoFi", "HiFi2", "HiFi3", "HiFi4")
MATMUL_CONFIG = ("ttnn.WormholeComputeKernelConfig(math_fidelity=ttnn.MathFidelity.{fidelity}, "
                 "math_approx_mode=False, fp32_dest_acc_en=True, packer_l1_acc=True)")
CONFIGS = {
    "MATMUL_CONFIG": MATMUL_CONFIG.format(fidelity="HiFi2"),
    "NORM_CONFIG": "ttnn.WormholeComputeKernelConfig(math_fidelity=ttnn.MathFidelity.HiFi4, "
                   "math_approx_mode=False, fp32_dest_acc_en=True, packer_l1_acc=False)",
    "SDPA_CONFIG": "ttnn.WormholeComputeKernelConfig(math_fidelity=ttnn.MathFidelity.HiFi2, "
                   "math_approx_mode=False, fp32_dest_acc_en=False, packer_l1_acc=False)",
    # the device runtime's CCL semaphore manager (global semaphores per mesh axis, in ping-pong sets)
    "CCL": "rt.CCLSemaphores(ttnn, device, ALL_CORES)",
}


def module_stack(node: fx.Node) -> list:
    """[(module path, class name)] of the modules a node was called in, outermost first (torch.export's record)."""
    out = []
    for path, cls in (node.meta.get("nn_module_stack") or {}).values():
        cls = cls if isinstance(cls, str) else getattr(cls, "__name__", str(cls))
        out.append((path.replace("L['self'].", "").replace("L__self__.", ""), cls.rsplit(".", 1)[-1]))
    return out


class Builder:
    def __init__(self, mg: ModelGraph, act_dtype: str, weight_dtype: str, mesh_axes: MeshAxes, fp32: set,
                 whole_mesh: tuple | None = None, matmul_fidelity: str = "HiFi2"):
        self.mg = mg
        self.matmul_fidelity = matmul_fidelity
        self.config_texts = {**CONFIGS, "MATMUL_CONFIG": MATMUL_CONFIG.format(fidelity=matmul_fidelity)}
        self.plan = mg.sharding  # None on one device
        self.mesh_axes = mesh_axes
        self.mesh_shape = tuple(mesh_axes.shape)
        # the system the whole mesh implies (cost/systems.py): its ethernet links per CCL and its compute grid
        self.system = system_for(tuple(whole_mesh or self.mesh_shape))
        self.seq_axes = mesh_axes.seq_axes
        self.fp32 = fp32
        self.act_dtype = act_dtype
        self.weight_dtype = weight_dtype
        self.ops: list = []
        self.tensors: dict = {}
        self.weights: dict = {}
        self.buffers: dict = {}  # persistent device buffers (ring attention K/V), name -> TensorSpec
        self.values: dict = {}  # FX node -> Ref | tuple of Ref | literal
        self.configs: dict = {}
        self.module_classes: dict = {}  # module path -> class name, for naming block functions
        # FX node -> its IR value, for nodes an op lowered earlier already computed (an activation fused into its
        # linear, the k and v heads of a fused QKV projection): lower_graph takes the value and emits nothing
        self.absorbed: dict = {}
        self.fused: dict = {}  # FX node -> the rule of the fused pattern it ends (lowering/registry.py)
        self.fusions = collections.Counter()  # what lowering fused (or kept apart, and why): the plan prints it
        self.fusion_seen: set = set()
        self.holds: dict = {}  # see ProgramIR.holds
        self.node: fx.Node | None = None
        self._count = 0

    # --- decisions and shapes ---------------------------------------------------------------------------------
    def decision(self, node: fx.Node | None = None) -> NodeSharding:
        node = node if node is not None else self.node
        return self.plan.decision(node) if self.plan is not None else NodeSharding.unsharded(node)

    def local(self, node: fx.Node, index: int | None = None) -> tuple:
        """Shape of one device's piece of a node's value (its global shape when unsharded)."""
        meta, layout = node.meta["val"], self.decision(node).layout
        if index is not None:
            meta, layout = meta[index], (layout[index] if layout else None)
        return self.mesh_axes.local_shape(meta.shape, layout)

    def arg_local(self, x: fx.Node, reader: fx.Node | None = None) -> tuple:
        """Local shape of an input of `reader` (by default the node being lowered); a constant's in the layout it is
        uploaded in for it."""
        layout = self.decision(reader).arg_layouts.get(x.name) if is_const(x) else None
        if layout is None:
            return self.local(x)
        return self.mesh_axes.local_shape(x.meta["val"].shape, layout)

    def pending_sum(self, node: fx.Node) -> bool:
        """Whether the node's value is a partial sum on some mesh axis (a row-parallel result not yet reduced)."""
        return any(isinstance(p, Partial) for p in (self.decision(node).layout or ()))

    def dtype_of(self, torch_dtype: torch.dtype, node: fx.Node | None = None) -> str:
        if torch_dtype.is_floating_point:
            return "float32" if (node if node is not None else self.node) in self.fp32 else self.act_dtype
        if torch_dtype == torch.bool or torch_dtype == torch.uint8:
            return "uint32"
        return "int32"

    # --- values -----------------------------------------------------------------------------------------------
    def arg(self, a):
        if isinstance(a, fx.Node):
            return self.values[a]
        if isinstance(a, (list, tuple)):
            return type(a)(self.arg(x) for x in a)
        return a

    def value_or_weight(self, a, reader: fx.Node | None = None):
        """An operand's IR value: a constant as the weight uploaded for `reader` (by default the node being
        lowered), anything else as computed."""
        return self.weight(a, owner=reader) if is_const(a) else self.arg(a)

    def config(self, name: str, expression: str | None = None) -> Code:
        self.configs[name] = expression or self.config_texts[name]
        return Code(name)

    def semaphores(self, kind: str, axis: int) -> CclSemaphores:
        """The global semaphores of the next CCL of `kind` on mesh `axis` (the runtime's manager rotates them)."""
        self.config("CCL")
        return CclSemaphores(kind, axis)

    def weight(self, node: fx.Node, transform: WeightTransform = IDENTITY, dtype: str | None = None,
               more: tuple = (), owner: fx.Node | None = None) -> WeightRef:
        """A program weight made from a constant placeholder, prepared on host by `transform`; `more`: further
        constant placeholders the transform fuses with it (k and v after q), of the same shape and upload layout;
        `owner`: the node whose sharding decision holds the upload layout (by default the node being lowered)."""
        const = node.meta["key"]
        base = self._weight_base(node, more)
        name = f"{base}:{transform.name}" if transform.name else base
        shape = tuple(node.meta["val"].shape)
        layout = self.decision(owner).arg_layouts.get(node.name)
        dims = [p.dim if isinstance(p, Shard) else None for p in layout] if layout else [None] * len(self.mesh_shape)
        dims = [transform.dim(d, len(shape)) if d is not None else None for d in dims]
        shape = transform.shape(shape)
        if any(d is not None for d in dims):
            name += "@" + "".join("R" if d is None else f"S{d}" for d in dims)
        if name not in self.weights:
            tdtype = dtype or (self.act_dtype if transform.float_output() else
                               self.dtype_of(node.meta["val"].dtype, node))
            # one device's piece; a token dim (sp axis) is padded, the runtime zero-fills it
            local = self.mesh_axes.local_shape(shape, [R if d is None else Shard(d) for d in dims])
            self.weights[name] = WeightSpec(name, const, transform, TensorSpec(name, tuple(local), tdtype),
                                            tuple(shape), tuple(dims), tuple(m.meta["key"] for m in more))
        return WeightRef(name)

    def _weight_base(self, node: fx.Node, more: tuple) -> str:
        """A weight's name: the state-dict name of its parameter; for fused constants their names' common prefix
        and suffix around the parts that differ (`attn.to_{q,k,v}.weight`), so the instances of a repeated block
        still name their weights alike once the block's prefix is stripped."""
        names = [self.mg.constants[n.meta["key"]].source or n.meta["key"] for n in (node,) + tuple(more)]
        if len(names) == 1:
            return names[0]
        head = len(os.path.commonprefix(names))
        tail = len(os.path.commonprefix([n[head:][::-1] for n in names]))
        return names[0][:head] + "{" + ",".join(n[head:len(n) - tail] for n in names) + "}" + names[0][len(names[0]) - tail:]

    # --- ops --------------------------------------------------------------------------------------------------
    def call(self, fn: str, args: tuple, kwargs: dict | None = None, shapes=None, dtype: str | None = None,
             layout: str = "TILE"):
        """Append an op; returns a Ref, or a tuple of Refs for several outputs.

        shapes: [(local shape, torch dtype), ...] of the outputs; by default those of the node being lowered.
        layout: the outputs' ("ROW_MAJOR" after an untilize, and for what row-major ops make of it)."""
        node = self.node
        multi = shapes is not None and isinstance(shapes, list) or \
            shapes is None and isinstance(node.meta["val"], (tuple, list))
        if shapes is None:
            metas = node.meta["val"] if multi else [node.meta["val"]]
            shapes = [(self.local(node, i if multi else None), m.dtype) for i, m in enumerate(metas)]
        elif not multi:
            shapes = [shapes]
        names = []
        for shape, torch_dtype in shapes:
            self._count += 1
            name = f"t{self._count}"
            self.tensors[name] = TensorSpec(name, tuple(shape), dtype or self.dtype_of(torch_dtype), layout)
            names.append(name)
        stack = module_stack(node)
        self.module_classes.update(stack)
        self.ops.append(Op(fn, tuple(args), dict(kwargs or {}), names, node.name, node_location(node),
                           stack[-1][0] if stack else ""))
        refs = tuple(Ref(n) for n in names)
        return refs if multi else refs[0]

    def buffer(self, name: str, shape, dtype: str) -> Code:
        self.buffers[name] = TensorSpec(name, tuple(shape), dtype)
        return Code(name)

    # --- padding and cutting a dim (sequence shards, head dims) ------------------------------------------------
    def pad_dim(self, value, shape, dim: int, size: int, torch_dtype, fill: float = 0.0):
        """`value` of local `shape` padded with `fill` (zeros by default) at the end of `dim` to `size` entries."""
        if shape[dim] == size:
            return value
        padding = [[0, 0] for _ in shape]
        padding[dim] = [0, size - shape[dim]]
        padded = list(shape)
        padded[dim] = size
        return self.call("ttnn.pad", (value, padding, fill), shapes=(padded, torch_dtype))

    def slice_dim(self, value, shape, dim: int, length: int, torch_dtype):
        """`value` of local `shape` cut to its first `length` entries along `dim` (logical tokens, a head dim)."""
        if shape[dim] == length:
            return value
        ends = list(shape)
        ends[dim] = length
        return self.call("ttnn.slice", (value, [0] * len(shape), ends), shapes=(ends, torch_dtype))

