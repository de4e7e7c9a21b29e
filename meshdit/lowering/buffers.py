"""Persistent output buffers for the program's async all-gathers, shared by liveness.

TT-DiT gives `ttnn.experimental.all_gather_async` persistent output tensors, made once, so a gather allocates
nothing per step (and a captured trace replays into fixed addresses). Sharing one buffer between gathers is only
safe when the earlier result is dead before the later gather writes: TT-DiT alternates two buffers per shape and
relies on each block consuming its gathers quickly. Here the program is known, so buffers are assigned by
liveness: a gather reuses a buffer of its shape and dtype whose previous result (and every reshape view of it,
which may share the buffer on device) is read for the last time before the gather runs; otherwise it gets a new
buffer. This is interval colouring in program order, so it uses the fewest buffers any safe sharing can.

A block function (lowering/blocks.py) is one body that every instance runs, so its gathers get buffers of its own,
assigned over the body, and every instance writes the same ones: safe because a block's gather result is dead when
its call returns. A gather whose result the block returns gets no persistent buffer (the next instance would
overwrite it while the caller still reads it). The program around the blocks pools its own buffers.
"""

from __future__ import annotations

from .program_ir import Code, ProgramIR, Ref, TensorSpec, last_uses, refs_in

GATHER = "ttnn.experimental.all_gather_async"
VIEW_OPS = ("ttnn.reshape",)  # may return a view of its input's device buffer


def live_ends(ops: list, outputs: list) -> dict:
    """Tensor name -> index of the last op that reads it or any view derived from it; `outputs` live to the end."""
    end = last_uses(ops, outputs)
    for op in reversed(ops):
        if op.fn in VIEW_OPS and op.args and isinstance(op.args[0], Ref):
            source = op.args[0].name
            end[source] = max(end.get(source, -1), *(end.get(name, -1) for name in op.outputs))
    return end


def _assign(ops: list, positions: list, end: dict, tensors: dict, buffers: dict, prefix: str) -> dict:
    """Position -> buffer name for the gathers at `positions` of `ops`, pooled by (shape, dtype) and liveness."""
    busy: dict = {}  # (shape, dtype) -> [[buffer name, index of its current result's last use], ...]
    chosen = {}
    for index in positions:
        op = ops[index]
        spec = tensors[op.outputs[0]]
        pool = busy.setdefault((spec.shape, spec.dtype), [])
        slot = next((s for s in pool if s[1] < index), None)
        if slot is None:
            name = f"{prefix}AG_OUTPUT_{'X'.join(str(d) for d in spec.shape)}_{spec.dtype.upper()}_{len(pool)}"
            slot = [name, -1]
            pool.append(slot)
            buffers[name] = TensorSpec(name, spec.shape, spec.dtype)
        slot[1] = end.get(op.outputs[0], len(ops))
        chosen[index] = slot[0]
    return chosen


def assign_gather_buffers(ir: ProgramIR) -> int:
    """Give all_gather_async ops persistent output buffers (ir.buffers, made in make_configs). Returns how many."""
    before = len(ir.buffers)
    inside = set()
    for kind in ir.blocks.values():
        calls = [c for c in ir.calls if c.kind == kind.name]
        body_tensors = {}
        for call in calls[:1]:
            for local, flat in zip(kind.ops, ir.ops[call.start:call.end]):
                body_tensors.update({n: ir.tensors[f] for n, f in zip(local.outputs, flat.outputs)})
        end = live_ends(kind.ops, kind.outputs)
        returned = set(kind.outputs)
        positions = [i for i, op in enumerate(kind.ops) if op.fn == GATHER and op.outputs[0] not in returned]
        chosen = _assign(kind.ops, positions, end, body_tensors, ir.buffers, f"{kind.name.upper()}_")
        for index, name in chosen.items():
            kind.ops[index].kwargs["persistent_output_tensor"] = Code(name)
            for call in calls:
                ir.ops[call.start + index].kwargs["persistent_output_tensor"] = Code(name)
        for call in calls:
            inside.update(range(call.start, call.end))
    end = live_ends(ir.ops, refs_in(ir.outputs))
    positions = [i for i, op in enumerate(ir.ops) if op.fn == GATHER and i not in inside]
    for index, name in _assign(ir.ops, positions, end, ir.tensors, ir.buffers, "").items():
        ir.ops[index].kwargs["persistent_output_tensor"] = Code(name)
    return len(ir.buffers) - before
