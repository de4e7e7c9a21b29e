"""Checking a lowered program against its torch module, so that a wrong number is loud.

`lower(check=True)` (the default, when the model has real weights) runs the program once on the simulated mesh on
the example inputs and compares every output with the torch module's (PCC, threshold by dtype: fp32 0.9999, bf16
0.999, bfp8 weights 0.99). A program below the threshold is never handed back silently: `NumericsError` (or a
warning, with check="warn") gives the PCC of each output and where the program first goes wrong:

  the first block instance (transformer_blocks.3, its class) whose outputs disagree with the same values computed
  in torch, and the first device op inside it (its graph node and model source line) whose output disagrees.

To find them, the program is emitted once more with probes (every device op's output read back from every device)
and the lowered graph is run in torch on the same inputs (collectives are identities there: sharding changes where
data lives, not what it is). A probed tensor is assembled from its pieces by the node's placements (concatenated
over Shard axes, summed over Partial ones, sequence padding cut off) and compared with the node's torch value.
Tensors that cannot be compared that way (a width padded per tp shard, an internal layout of an op that lowers to
several) are skipped.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch
import torch.fx as fx
import torch.utils._pytree as pytree

from .errors import NumericsError, node_location


@dataclass
class Divergence:
    """Where a program first disagrees with the graph run in torch."""

    block: str  # block instance ("transformer_blocks.3"), or "" when no block output diverges
    block_class: str
    block_pcc: float | None
    op_node: str  # node_location() of the first diverging device op ("" if none was found)
    op_fn: str
    op_module: str  # the module the op's node came from ("transformer_blocks.3.ff.net.0")
    op_pcc: float | None
    compared: int  # probed tensors that could be compared
    graph_pcc: float  # the lowered graph run in torch, against the module (worst output)
    threshold: float

    def __str__(self):
        parts = []
        if not self.graph_pcc >= self.threshold:
            parts.append(f"the captured graph run in torch already disagrees with the module (PCC "
                         f"{self.graph_pcc:.6f}): capture or a pass changed the computation")
        if self.block:
            parts.append(f"first diverging block: {self.block}" + (f" ({self.block_class})" if self.block_class else "")
                         + f", output PCC {self.block_pcc:.6f}")
        if self.op_node:
            parts.append(f"first diverging op: {self.op_fn} lowering {self.op_node}"
                         + (f" in {self.op_module}" if self.op_module else "") + f", PCC {self.op_pcc:.6f}")
        if not self.block and not self.op_node:
            parts.append(f"no probed intermediate diverges ({self.compared} compared): the divergence is in an "
                         "output's final assembly or in a tensor that cannot be compared piecewise")
        return "; ".join(parts)


def verify(program, mode: str = "raise") -> list:
    """PCC of every output against the golden; below the threshold: raise NumericsError ("raise") or warn ("warn"),
    naming where the program first diverges. Returns the PCC report."""
    report = program.pcc_report()
    bad = [r for r in report if not r.ok]
    if not bad:
        return report
    try:
        where = str(localize(program))
    except Exception as error:  # noqa: BLE001 - the diagnosis must not hide the failure it explains
        where = f"(could not localise: {type(error).__name__}: {error})"
    message = (f"the lowered program disagrees with the torch module on the example inputs: "
               f"{'; '.join(str(r) for r in report)}. {where}. This is a meshdit defect; please report it with "
               "the model config. lower(..., check='warn') returns the program anyway, check=False skips the check")
    program.divergence = where
    if mode == "warn":
        warnings.warn(message, stacklevel=3)
        return report
    raise NumericsError(message)


def localize(program) -> Divergence:
    """Run the program with probes and the graph in torch on the golden inputs; find the first disagreement."""
    from .lowering import emit_source
    from .runtime import device
    from .runtime.program import load_source

    ir, graph = program.ir, program.graph
    inputs, _ = program.golden
    module = load_source(emit_source(ir, probes=True), ir.model_name)
    runner = device.Runner(module, "sim")
    try:
        runner.load_weights(program.weights)
        runner(program._check_inputs(inputs))
    finally:
        runner.close()
    probes = module.PROBES  # tensor -> [pieces per cfg branch]
    values = [_torch_values(graph, inputs, ir, branch) for branch in range(ir.cfg_factor)]
    threshold = program.pcc_threshold
    # the graph in torch against the module: a capture or pass that changed the computation shows here, and then no
    # device op can be blamed
    _, golden = program.golden
    tensors = [i for i, e in enumerate(golden) if isinstance(e, torch.Tensor)]
    graph_outputs = {i: torch.cat([v["output"][i] for v in values]) if ir.cfg_factor > 1 else values[0]["output"][i]
                     for i in tensors}
    graph_pcc = min((device.pcc(golden[i].double().numpy(), graph_outputs[i].double().numpy()) for i in tensors),
                    key=lambda f: f if f == f else -2.0, default=1.0)

    tensor_pcc: dict = {}
    for tensor, (node, index) in _final_tensors(ir, graph).items():
        if tensor not in probes:
            continue
        figures = []
        for branch, pieces in enumerate(probes[tensor][: ir.cfg_factor]):
            expected = values[branch].get(node)
            if isinstance(expected, (tuple, list)):
                expected = expected[index] if index is not None and index < len(expected) else None
            if not isinstance(expected, torch.Tensor):
                break
            actual = _assemble(pieces, _layout(graph, node, index), ir.submesh_shape, tuple(expected.shape), graph)
            if actual is None:
                break
            figures.append(device.pcc(expected.detach().double().numpy(), actual))
        else:
            if figures:
                tensor_pcc[tensor] = min(figures, key=lambda f: f if f == f else -2.0)

    def diverges(tensor):
        figure = tensor_pcc.get(tensor)
        return figure is not None and not figure >= threshold

    result = Divergence("", "", None, "", "", "", None, len(tensor_pcc), graph_pcc, threshold)
    ops = ir.ops
    span = (0, len(ops))
    for call in ir.calls:
        bad = [t for t in call.outputs if diverges(t)]
        if bad:
            result.block, result.block_class = call.instance, ir.module_classes.get(call.instance, "")
            result.block_pcc = min(tensor_pcc[t] for t in bad)
            span = (call.start, call.end)
            break
    for op in ops[span[0]:span[1]]:
        bad = [t for t in op.outputs if diverges(t)]
        if bad and not op.on_host:
            node = graph_nodes(graph).get(op.node)
            result.op_node = node_location(node) if node is not None else op.node
            result.op_fn, result.op_module, result.op_pcc = op.fn, op.module, tensor_pcc[bad[0]]
            break
    return result


def graph_nodes(graph) -> dict:
    return {n.name: n for n in graph.gm.graph.nodes}


def _final_tensors(ir, graph) -> dict:
    """Program tensor -> (FX node, output index or None) for the last device op lowering each node: the tensor that
    holds the node's value (earlier ops of the same node hold parts of its computation)."""
    nodes = graph_nodes(graph)
    last: dict = {}
    for op in ir.ops:
        if op.on_host or op.node not in nodes:
            continue
        last[op.node] = op
    final = {}
    for name, op in last.items():
        for index, tensor in enumerate(op.outputs):
            final[tensor] = (nodes[name], index if len(op.outputs) > 1 else None)
    for tensor, name in ir.holds.items():  # fused ops: the node whose value the tensor holds, if any
        final.pop(tensor, None)
        if name in nodes:
            final[tensor] = (nodes[name], None)
    return final


def _layout(graph, node, index):
    if graph.sharding is None:
        return None
    layout = graph.sharding.layout(node)
    if layout is not None and index is not None and layout and isinstance(layout[0], tuple):
        layout = layout[index]
    return layout


def _torch_values(graph, inputs: dict, ir, branch: int) -> dict:
    """Every node's value when the lowered graph runs in torch on cfg branch `branch`'s share of the inputs."""
    consts = graph.constant_values()
    args = []
    for node in graph.placeholders():
        key = node.meta["key"]
        if node.meta["kind"] != "input":
            args.append(consts[key])
            continue
        value = graph.input_value(key, inputs)
        if key in ir.batched_inputs and ir.cfg_factor > 1:
            value = value.chunk(ir.cfg_factor)[branch]
        args.append(value)
    recorded: dict = {}

    class Recorder(fx.Interpreter):
        def run_node(self, n):
            out = super().run_node(n)
            if n.op == "call_function":
                recorded[n] = pytree.tree_map(lambda v: v.detach() if isinstance(v, torch.Tensor) else v, out)
            return out

    with torch.no_grad():
        outputs = Recorder(graph.gm).run(*args)
    recorded["output"] = list(pytree.tree_leaves(outputs))
    return recorded


def _assemble(pieces: list, layout, mesh_shape: tuple, shape: tuple, graph) -> np.ndarray | None:
    """One tensor's global value from its devices' pieces (row-major mesh order), or None when it cannot be
    rebuilt piecewise. Axes are joined innermost first, as the mesh mapper split them outermost first."""
    from .sharding.placement import Partial, Shard

    if layout is None or not any(isinstance(p, (Shard, Partial)) for p in layout):
        whole = pieces[0]
    else:
        parts = list(pieces)
        for axis in reversed(range(len(mesh_shape))):
            n, placement = mesh_shape[axis], layout[axis]
            groups = [parts[i:i + n] for i in range(0, len(parts), n)]
            if isinstance(placement, Shard) and n > 1:
                parts = [np.concatenate(g, axis=placement.dim) if g[0].ndim > placement.dim else None for g in groups]
            elif isinstance(placement, Partial) and n > 1:
                parts = [np.sum(g, axis=0) for g in groups]
            else:
                parts = [g[0] for g in groups]
            if any(p is None for p in parts):
                return None
        whole = parts[0]
    if whole.shape == shape:
        return whole
    if whole.size == int(np.prod(shape)) and not any(isinstance(p, (Shard, Partial)) for p in layout or ()):
        return whole.reshape(shape)
    # a sequence-sharded dim holds padding at its end; any other mismatch (a width padded per tp shard) is not
    # comparable piecewise
    seq_dims = {p.dim for a, p in enumerate(layout or ()) if isinstance(p, Shard) and a in graph.sharding.seq_axes}
    if whole.ndim != len(shape) or any(w < s or (w != s and d not in seq_dims)
                                       for d, (w, s) in enumerate(zip(whole.shape, shape))):
        return None
    return whole[tuple(slice(0, s) for s in shape)]
