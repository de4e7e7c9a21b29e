"""Lower a ModelGraph to a ProgramIR: each node through its registered rule (lowering/registry.py).

    ir = lower_graph(model_graph, mesh_config, act_dtype="bfloat16", weight_dtype="bfloat8_b")

Nodes are lowered in graph order through the Builder (naming, dtypes, weights, per-device shapes), reading the
sharding decision of each node (NodeSharding: layouts, attention strategy, norm axis). A node without a rule, or
whose rule declines, runs on host when host fallback is allowed: it is emitted as `host_call("aten....", ...)` and
counted in the coverage report; otherwise lowering stops with UnsupportedOpError naming the node and its source
line. After lowering: repeated blocks are found (blocks.py) and all-gathers get persistent buffers (buffers.py).

Precision: the arguments of sin/cos (timestep and position embeddings, where t * 1000 * freq reaches 1e6 and
bfloat16 keeps 3 significant digits) are computed in float32 back to the program inputs and constants they come
from, whatever the activation dtype; sin/cos results are cast to the activation dtype.
"""

from __future__ import annotations

import operator
import warnings

import torch
import torch.fx as fx
import torch.utils._pytree as pytree

from ..errors import UnsupportedOpError, node_location
from ..ir.graph import ModelGraph, float32_region
from ..sharding.mesh_config import MeshConfig
from ..runtime import host_ops
from ..sharding.placement import MeshAxes, R, Shard
from . import attention, ccl, rules  # noqa: F401  (registers their lowering rules)
from .blocks import find_blocks
from .buffers import assign_gather_buffers
from .builder import Builder
from .program_ir import InputSpec, ProgramIR, Ref, TensorSpec, refs_in
from .registry import find_fused_patterns, lower_node

aten = torch.ops.aten

def _host_fallback(b: Builder, node, allow: bool):
    name = str(node.target)
    if not allow:
        raise UnsupportedOpError(
            f"no TT-NN lowering for {name} at {node_location(node)}; allow host fallback (allow_host_fallback=True) "
            "or register a rule (@lowering in meshdit/lowering/rules/)"
        )
    sharded = [a.name for a in node.all_input_nodes if any(p != R for p in (b.decision(a).layout or ()))]
    if sharded:  # host_call reads one device's piece of each input: a sharded one would give a wrong number
        raise UnsupportedOpError(
            f"{name} at {node_location(node)} has no TT-NN lowering here and would run on host, but its inputs "
            f"{sharded} are sharded on the mesh; lower on one device, or add a lowering rule for this case")
    if name in host_ops.HOST_OPS:
        warnings.warn(f"meshdit: {name} at {node_location(node)} runs on host in numpy (no TT-NN lowering)",
                      stacklevel=3)
    else:
        warnings.warn(f"meshdit: {name} at {node_location(node)} runs on host through torch (no TT-NN lowering and "
                      "no numpy form in meshdit/runtime/host_ops.py): the program needs torch where it runs",
                      stacklevel=3)

    def spell(a):  # tensors by reference; torch values (a dtype, a layout) as "torch.<name>" strings
        if isinstance(a, fx.Node):
            return b.value_or_weight(a)
        return str(a) if isinstance(a, (torch.dtype, torch.layout, torch.memory_format)) else a

    args = tuple(pytree.tree_map(spell, list(node.args)))
    kwargs = {k: pytree.tree_map(spell, v) for k, v in node.kwargs.items() if k not in ("device", "pin_memory")}
    # the model's dtype of each tensor argument, in the order host_call meets them: integers and booleans stay so
    tensors = [a for a in pytree.tree_leaves((list(node.args), dict(node.kwargs))) if isinstance(a, fx.Node)]
    dtypes = [str(a.meta["val"].dtype).replace("torch.", "") for a in tensors]
    return b.call("host_call", (name, list(args), kwargs, dtypes))


def lower_graph(mg: ModelGraph, mesh: MeshConfig | None = None, act_dtype="float32", weight_dtype=None,
                allow_host_fallback=True, batched_inputs=(), blocks: bool = True,
                matmul_fidelity: str = "HiFi2") -> ProgramIR:
    """mesh: the MeshConfig the graph was sharded for (shard_graph); None for one device. blocks: find repeated
    blocks so the program is emitted as one function per block kind (False: one flat forward). matmul_fidelity: the
    math fidelity of every matmul's compute kernel config."""
    mesh = mesh or MeshConfig()
    mesh_axes = mg.sharding.mesh_axes if mg.sharding is not None else MeshAxes(tuple(mesh.shape))
    weight_dtype = weight_dtype or act_dtype
    b = Builder(mg, act_dtype, weight_dtype, mesh_axes,
                float32_region(mg) if act_dtype != "float32" else set(), whole_mesh=tuple(mesh.shape),
                matmul_fidelity=matmul_fidelity)
    find_fused_patterns(b)
    inputs, outputs = [], []
    for node in mg.gm.graph.nodes:
        b.node = node
        if node.op == "placeholder":
            if node.meta["kind"] == "input":
                meta = node.meta["val"]
                layout = b.decision().layout or ()
                placements = tuple(p.dim if isinstance(p, Shard) else None for p in layout)
                inputs.append(InputSpec(node.name, TensorSpec(node.name, b.local(node), b.dtype_of(meta.dtype, node)),
                                        str(meta.dtype).replace("torch.", ""), tuple(meta.shape),
                                        placements or (None,) * len(mesh_axes.shape)))
                b.values[node] = Ref(node.name)
            else:
                b.values[node] = None  # constants become weights where a rule uses them
        elif node.op == "call_function":
            if node.target is operator.getitem:
                b.values[node] = b.values[node.args[0]][node.args[1]]
                continue
            if node in b.absorbed:
                b.values[node] = b.absorbed.pop(node)
                for ref in refs_in(b.values[node]):  # a fused op's output holds this node's value
                    b.holds[ref] = node.name
                continue
            result = lower_node(b, node)
            b.values[node] = result if result is not None else _host_fallback(b, node, allow_host_fallback)
        elif node.op == "output":
            outputs = [b.value_or_weight(out) if isinstance(out, fx.Node) else out for out in node.args[0]]
    ir = ProgramIR(
        model_name=mg.model_name,
        mesh_shape=tuple(mesh.shape),
        act_dtype=act_dtype,
        weight_dtype=weight_dtype,
        inputs=inputs,
        weights=b.weights,
        ops=b.ops,
        outputs=outputs,
        tensors=b.tensors,
        configs=b.configs,
        static_inputs={k: f"{tuple(v.shape)} {str(v.dtype).replace('torch.', '')}"
                       for k, v in mg.static_inputs.items()},
        submesh_shape=tuple(mesh_axes.shape),
        cfg_factor=mesh.cfg.factor,
        batched_inputs=tuple(batched_inputs),
        buffers=b.buffers,
        module_classes=b.module_classes,
        fusions=dict(b.fusions),
        holds=dict(b.holds),
        matmul_fidelity=matmul_fidelity,
    )
    if blocks:
        find_blocks(ir)
    assign_gather_buffers(ir)
    return ir
