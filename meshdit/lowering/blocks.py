"""Repeated blocks: each distinct block of a lowered program becomes one function that every instance of it calls
with its own weights, the way TT-DiT writes a block class (SD3.5 Large: 38 joint blocks, 2 distinct structures).

    find_blocks(ir)      # fills ir.blocks (kind name -> BlockKind) and ir.calls (BlockCall per instance)

The flat op list stays the program's truth (coverage, collectives, memory and cost read it); blocks are an overlay
the emitter prints. An instance is the ops of one numbered child of a module list ("transformer_blocks.3", from
the module stack torch.export records). Instances of one container are the same kind when their op sequences are
identical once tensor names are made local and weight names relative to the instance ("attn.to_q.weight"), with
the same shapes, dtypes and weight specs. An instance gets no function, and is emitted inline, when its ops cannot
be made contiguous.

Common-subexpression elimination shares values between instances (silu(temb) is computed once, in the first
block, and read by all); such an op, which uses none of its instance's weights, is hoisted in front of the
instance so that the first block looks like the others.
"""

from __future__ import annotations

import functools
import re
from collections import Counter
from dataclasses import dataclass, field

from .program_ir import Op, ProgramIR, Ref, WeightRef, leaves, refs_in


@dataclass
class BlockKind:
    name: str  # the emitted function's name
    container: str  # the module list its instances belong to ("transformer_blocks")
    params: list  # local names of the tensors it takes, in order
    ops: list  # the body: ops over local names; weights by their names inside an instance
    outputs: list  # local names it returns
    instances: list = field(default_factory=list)  # instance paths ("transformer_blocks.3")


@dataclass
class BlockCall:
    kind: str
    instance: str  # "transformer_blocks.3"; its weights are those named "transformer_blocks.3.*"
    start: int  # ir.ops[start:end] are the instance's ops
    end: int
    args: list  # program values for the kind's params (Refs, or WeightRefs of weights from outside the block)
    outputs: list  # program tensor names bound to the kind's outputs


@functools.lru_cache(maxsize=None)  # a few hundred module paths, asked about once per op and pass
def instance_of(module: str) -> str | None:
    """'transformer_blocks.3' for 'transformer_blocks.3.attn.to_q': the first numbered child on the path."""
    parts = module.split(".")
    for i, part in enumerate(parts):
        if part.isdigit() and i:
            return ".".join(parts[: i + 1])
    return None


def find_blocks(ir: ProgramIR) -> None:
    instances = _instances(ir)
    containers = Counter(path.rsplit(".", 1)[0] for path in instances)
    candidates = [p for p in instances if containers[p.rsplit(".", 1)[0]] >= 2]
    # the op order changes only where an instance is not yet contiguous or shares values: the index is rebuilt
    # after such a move, not once per instance (which made block finding quadratic in the op count)
    for path in candidates:
        if _make_contiguous(ir, path, instances.get(path, [])):
            instances = _instances(ir)
    shared_by = _readers_by_instance(ir)
    for path in candidates:
        if _hoist_shared(ir, path, shared_by, _spans(instances).get(path)):
            instances = _instances(ir)
    spans = _spans(instances)
    last_use = ir.last_uses()
    signatures, forms = {}, {}
    for path in candidates:
        span = spans.get(path)
        if span is None:
            continue
        form = _local_form(ir, path, *span, last_use)
        signatures[path] = form.signature
        forms[path] = form
    by_container: dict = {}
    for path in forms:
        by_container.setdefault(path.rsplit(".", 1)[0], []).append(path)
    for container, paths in by_container.items():
        if len(paths) < 2:
            continue
        kinds: dict = {}
        for path in paths:
            kinds.setdefault(signatures[path], []).append(path)
        ordered = sorted(kinds.values(), key=lambda group: (-len(group), paths.index(group[0])))
        for rank, group in enumerate(ordered):
            name = _kind_name(ir, container, group[0], rank)
            first = forms[group[0]]
            outputs = sorted({o for path in group for o in forms[path].outputs}, key=first.order.index)
            ir.blocks[name] = BlockKind(name, container, first.params, first.ops, outputs, list(group))
            for path in group:
                form = forms[path]
                start, end = spans[path]
                ir.calls.append(BlockCall(name, path, start, end, form.args,
                                          [form.flat.get(o) for o in outputs]))
    ir.calls.sort(key=lambda call: call.start)


# --- grouping and order -----------------------------------------------------------------------------------------
def _instances(ir: ProgramIR) -> dict:
    """Instance path -> indices of its ops, in program order."""
    out: dict = {}
    for index, op in enumerate(ir.ops):
        path = instance_of(op.module)
        if path is not None:
            out.setdefault(path, []).append(index)
    return out


def _spans(instances: dict) -> dict:
    """Instance path -> (start, end) when its ops (`_instances`) are contiguous."""
    spans = {}
    for path, indices in instances.items():
        if indices[-1] - indices[0] + 1 == len(indices):
            spans[path] = (indices[0], indices[-1] + 1)
    return spans


def _reads(op: Op) -> set:
    return set(refs_in(op.args)) | set(refs_in(op.kwargs))


def _make_contiguous(ir: ProgramIR, path: str, indices: list) -> bool:
    """Move the other ops interleaved with an instance's ops (at `indices`) out of its span (before it when they do
    not depend on it, after it otherwise), keeping every op after the ops it reads. Leaves the order alone when that
    fails. Whether ops moved."""
    if not indices or indices[-1] - indices[0] + 1 == len(indices):
        return False
    lo, hi = indices[0], indices[-1] + 1
    inside, before, after = [], [], []
    made_inside, made_after = set(), set()
    for op in ir.ops[lo:hi]:
        if instance_of(op.module) == path:
            if _reads(op) & made_after:
                return False  # an instance op reads an op that must follow the instance
            inside.append(op)
            made_inside.update(op.outputs)
        elif _reads(op) & (made_inside | made_after):
            after.append(op)
            made_after.update(op.outputs)
        else:
            before.append(op)
    ir.ops[lo:hi] = before + inside + after
    return True


def _readers_by_instance(ir: ProgramIR) -> dict:
    """Tensor name -> the instance paths of the ops that read it."""
    readers: dict = {}
    for op in ir.ops:
        path = instance_of(op.module)
        for name in _reads(op):
            readers.setdefault(name, set()).add(path)
    return readers


def _hoist_shared(ir: ProgramIR, path: str, readers: dict, span) -> bool:
    """Move in front of the instance (at ops[span]) the ops whose values other instances of the same container read
    and that use none of the instance's own weights (values shared by CSE), with the ops of the instance they need.
    Whether ops moved."""
    if span is None:
        return False
    start, end = span
    container, prefix = path.rsplit(".", 1)[0], path + "."
    body = ir.ops[start:end]
    producer = {name: op for op in body for name in op.outputs}
    hoist: list = []
    for op in body:
        others = {p for name in op.outputs for p in readers.get(name, ()) if p not in (None, path) and
                  p.rsplit(".", 1)[0] == container}
        if not others:
            continue
        closure, stack = [], [op]
        while stack:
            cur = stack.pop()
            if any(c is cur for c in closure):
                continue
            closure.append(cur)
            stack.extend(producer[name] for name in _reads(cur) if name in producer)
        if any(w.startswith(prefix) for c in closure for w in _weights_in(c)):
            continue
        hoist.extend(c for c in closure if not any(h is c for h in hoist))
    if hoist:
        moved = [op for op in body if any(h is op for h in hoist)]
        kept = [op for op in body if not any(h is op for h in hoist)]
        ir.ops[start:end] = moved + kept
        for op in moved:
            op.module = container  # now part of the program around the blocks
    return bool(hoist)


def _weights_in(op: Op) -> list:
    return [leaf.name for leaf in leaves((op.args, op.kwargs)) if isinstance(leaf, WeightRef)]


# --- local form -------------------------------------------------------------------------------------------------
@dataclass
class _LocalForm:
    params: list  # local names of what the block takes
    args: list  # the program values passed for them
    ops: list  # the body over local names
    outputs: list  # local names read after the instance
    flat: dict  # local name -> program tensor name (for the outputs)
    order: list  # every local name, in definition order
    signature: tuple


def _local_form(ir: ProgramIR, path: str, start: int, end: int, last_use: dict) -> _LocalForm:
    prefix = path + "."
    local: dict = {}  # program tensor name (or "w:" + weight name) -> local name
    params, args, order = [], [], []
    count = 0

    def param(key, value):
        if key not in local:
            local[key] = f"x{len(params)}"
            params.append(local[key])
            args.append(value)
            order.append(local[key])
        return Ref(local[key])

    def convert(value):
        if isinstance(value, Ref):
            return Ref(local[value.name]) if value.name in local else param(value.name, value)
        if isinstance(value, WeightRef):
            if value.name.startswith(prefix):
                return WeightRef(value.name[len(prefix):])
            return param("w:" + value.name, value)
        if isinstance(value, list):
            return [convert(v) for v in value]
        if isinstance(value, tuple):
            return tuple(convert(v) for v in value)
        if isinstance(value, dict):
            return {k: convert(v) for k, v in value.items()}
        return value

    ops, signature = [], []
    for op in ir.ops[start:end]:
        new_args, new_kwargs = convert(op.args), convert(op.kwargs)
        outputs = []
        for name in op.outputs:
            count += 1
            local[name] = f"t{count}"
            order.append(local[name])
            outputs.append(local[name])
        module = op.module[len(prefix):] if op.module.startswith(prefix) else ("" if op.module == path else op.module)
        ops.append(Op(op.fn, new_args, new_kwargs, outputs, op.node, op.where, module))
        specs = tuple((s.shape, s.dtype, s.layout) for s in (ir.tensors[n] for n in op.outputs))
        weights = tuple((w[len(prefix):], ir.weights[w].spec.shape, ir.weights[w].spec.dtype, ir.weights[w].placements,
                         str(ir.weights[w].transform)) for w in _weights_in(op) if w.startswith(prefix))
        signature.append((op.fn, repr(new_args), repr(new_kwargs), specs, weights, module))
    program_outputs = set(refs_in(ir.outputs))
    flat = {local[name]: name for op in ir.ops[start:end] for name in op.outputs}
    outputs = [local[name] for op in ir.ops[start:end] for name in op.outputs
               if name in program_outputs or last_use.get(name, -1) >= end]  # read after the instance
    specs = tuple((p, ir.tensors[a.name].shape if isinstance(a, Ref) and a.name in ir.tensors else None)
                  for p, a in zip(params, args))
    return _LocalForm(params, args, ops, outputs, flat, order, (tuple(signature), specs))


def _kind_name(ir: ProgramIR, container: str, first: str, rank: int) -> str:
    cls = ir.module_classes.get(first) or container.rsplit(".", 1)[-1]
    name = re.sub(r"(?<!^)(?=[A-Z])", "_", cls).lower()
    name = re.sub(r"\W+", "_", name).strip("_") or "block"
    if rank:
        name += f"_{rank + 1}"
    while name in ir.blocks:
        name += "_"
    return name
