"""Persistent output buffers for the program's async all-gathers, shared by liveness.

TT-DiT gives `ttnn.experimental.all_gather_async` persistent output tensors, made once, so a gather allocates
nothing per step (and a captured trace replays into fixed addresses). Sharing one buffer between gathers is only
safe when the earlier result is dead before the later gather writes: TT-DiT alternates two buffers per shape and
relies on each block consuming its gathers quickly. Here the program is known, so buffers are assigned by
liveness: a gather reuses a buffer of its shape and dtype whose previous result (and every reshape view of it,
which may share the buffer on device) is read for the last time before the gather runs; otherwise it gets a new
buffer. This is interval colouring in program order, so it uses the fewest buffers any safe sharing can.
"""

from __future__ import annotations

from .program_ir import Code, ProgramIR, Ref, TensorSpec

GATHER = "ttnn.experimental.all_gather_async"
VIEW_OPS = ("ttnn.reshape",)  # may return a view of its input's device buffer


def live_ends(ir: ProgramIR) -> dict:
    """Tensor name -> index of the last op that reads it or any view derived from it."""
    end = ir.last_uses()
    for op in reversed(ir.ops):
        if op.fn in VIEW_OPS and op.args and isinstance(op.args[0], Ref):
            source = op.args[0].name
            end[source] = max(end.get(source, -1), *(end.get(name, -1) for name in op.outputs))
    return end


def assign_gather_buffers(ir: ProgramIR) -> int:
    """Give every all_gather_async a persistent output buffer (ir.buffers, made in make_configs), shared by
    liveness. Returns the number of buffers made."""
    end = live_ends(ir)
    busy: dict = {}  # (shape, dtype) -> [[buffer name, index of its current result's last use], ...]
    made = 0
    for index, op in enumerate(ir.ops):
        if op.fn != GATHER:
            continue
        spec = ir.tensors[op.outputs[0]]
        pool = busy.setdefault((spec.shape, spec.dtype), [])
        slot = next((s for s in pool if s[1] < index), None)
        if slot is None:
            name = f"AG_OUTPUT_{'X'.join(str(d) for d in spec.shape)}_{spec.dtype.upper()}_{len(pool)}"
            slot = [name, -1]
            pool.append(slot)
            ir.buffers[name] = TensorSpec(name, spec.shape, spec.dtype)
            made += 1
        slot[1] = end.get(op.outputs[0], len(ir.ops))
        op.kwargs["persistent_output_tensor"] = Code(slot[0])
    return made
