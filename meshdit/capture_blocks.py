"""Capture each distinct repeated block once (used by capture.py).

A DiT is a few module lists of identical transformer blocks (Flux.1: 19 dual-stream and 38 single-stream blocks).
Exporting the whole model runs every block's Python and traces every op again: most of the capture time. Here one
torch.export of the whole model traces only the first call of each block kind; every later call is an opaque op in
that trace, and the traced call's ops are copied in its place afterwards (capture_splice.py), with that instance's
weights, module paths, source lines, torch_fn numbers and node names. The result is the graph the whole-model
export gives, node for node.

    with BlockCapture(module) as blocks:        # patches each repeated block's forward for the export
        exported = torch.export.export(module, ...)
    blocks.splice(exported)                     # raises Fallback when the copies cannot be trusted

A block kind is an instance's class, its parameter and buffer names, shapes and dtypes, and the plain attributes
of every module inside it (config values such as a layer index or a flag the forward branches on); a call reuses a
trace only when its kind and input signature (tensor shapes, strides, dtypes, aliasing; every non-tensor
argument's value; grad and autocast state) equal the traced call's. Two things a trace keeps outside the block are
reproduced per copy: an op returning an input itself (x.to(its own dtype)) rebinds the caller's tensor to the
block's op, and a size made from data (a nonzero) is a symbol of each instance's own, numbered in call order. What
the copies could not reproduce is refused:
 - per kind, traced in the model like the whole export does (the trace continues): a block writing into an input
   in place, computing a data-dependent size of an input itself (kept on the caller's tensor and shared by all
   instances), returning a data-dependent size, a symbolic value or no tensor of its own, called with dynamic
   shapes;
 - for the whole capture, which capture.py then exports as before: a global module hook, a forward that changes
   its module's attributes, a write into an input through a view or into a weight, a block reading a value it was
   not passed or creating constants or submodules, a data-dependent size of an input computed both before the block
   and in it, markers under a traced region (autocast) or dropped by export.
Blocks with hooks of their own are not of any kind (traced in the model).
"""

from __future__ import annotations

import functools
import itertools
import types
from collections import defaultdict
from dataclasses import dataclass, field

import torch
import torch.fx as fx
import torch.utils._pytree as pytree
from torch.fx.experimental.proxy_tensor import get_proxy_slot, set_proxy_slot

_OWN_FILE = __file__.removesuffix("c")  # frames of this file's wrapper are removed from recorded stack traces
_OUTPUTS: dict = {}  # call tag -> output (shape, stride, dtype, device) of an opaque call, read by its fake kernel


class Fallback(Exception):
    """The fast path does not apply; the message says why. capture.py then exports the whole model."""


# --- the marker ops ------------------------------------------------------------------------------------------------
# Ops that bracket blocks in the trace, one per tensor (an op returning a list would add getitem nodes, which would
# shift the numbering of the model's own getitems). They return new tensors (a custom op may not alias its inputs);
# when the markers are removed each use is rewired to the marker's input, which restores the aliasing the model had.
def _bracket(name: str):
    """A marker op that stands for its input: a copy in eager mode, a tensor of its input's layout when traced."""
    def kernel(x: torch.Tensor, tag: int, index: int) -> torch.Tensor:
        return x.clone()

    op = torch.library.custom_op(f"meshdit::{name}", kernel, mutates_args=())
    op.register_fake(lambda x, tag, index: torch.empty_strided(x.shape, x.stride(), dtype=x.dtype, device=x.device))
    return op


_block_enter, _block_exit = _bracket("block_enter"), _bracket("block_exit")


@torch.library.custom_op("meshdit::block_call", mutates_args=())
def _block_call(xs: list[torch.Tensor], tag: int, index: int) -> torch.Tensor:
    raise RuntimeError("meshdit::block_call stands for a block only while capture traces the model; it has no "
                       "kernel (a captured graph still holding it is a meshdit bug)")


@_block_call.register_fake
def _(xs, tag, index):
    shape, stride, dtype, device = _OUTPUTS[tag][index]
    return torch.empty_strided(shape, stride, dtype=dtype, device=device)


_MARKERS = (torch.ops.meshdit.block_enter.default, torch.ops.meshdit.block_exit.default,
            torch.ops.meshdit.block_call.default)


# --- block kinds ---------------------------------------------------------------------------------------------------
_HOOKS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks",
          "_forward_hooks_with_kwargs", "_forward_hooks_always_called", "_forward_pre_hooks_with_kwargs")
_SKIP = {"_parameters", "_buffers", "_modules", "_state_dict_hooks", "_state_dict_pre_hooks",
         "_load_state_dict_pre_hooks", "_load_state_dict_post_hooks", *_HOOKS}


class _Unique:
    """A value that equals nothing else: what an attribute this cannot compare fingerprints to."""


def _fingerprint(value, depth: int = 0):
    """A hashable stand-in equal for two values the forward cannot tell apart (plain values by value, containers
    element by element, shared objects by identity); anything else is unique, which makes its block a kind of its
    own (traced on its own), never a wrong match."""
    if value is None or isinstance(value, (bool, int, float, complex, str, bytes, torch.dtype, torch.device,
                                           torch.Size, torch.memory_format, torch.layout)):
        return (type(value), repr(value))
    if isinstance(value, (torch.SymInt, torch.SymFloat, torch.SymBool)):
        return _Unique()
    if isinstance(value, (tuple, list)):
        return (type(value), tuple(_fingerprint(v, depth) for v in value))
    if isinstance(value, dict):
        return (type(value), tuple((_fingerprint(k, depth), _fingerprint(v, depth)) for k, v in value.items()))
    if isinstance(value, (set, frozenset)):
        return (type(value), tuple(sorted(repr(_fingerprint(v, depth)) for v in value)))
    if isinstance(value, (type, torch.Tensor, torch.nn.Module, types.FunctionType, types.BuiltinFunctionType,
                          functools.partial)):
        return ("id", id(value))  # a function, class or tensor shared by the instances, or distinct: never equal
    if hasattr(value, "__self__") and hasattr(value, "__func__"):  # a bound method: its function and its object
        return ("method", id(value.__func__), id(value.__self__))
    if depth < 3 and hasattr(value, "__dict__") and not hasattr(type(value), "__slots__"):
        return (type(value), _fingerprint(vars(value), depth + 1))  # an attention processor, a config object
    return ("id", id(value))


def _module_fingerprint(module: torch.nn.Module):
    if any(getattr(module, h, None) for h in _HOOKS):
        return None
    return tuple((k, _fingerprint(v)) for k, v in vars(module).items() if k not in _SKIP)


def kind_key(block: torch.nn.Module):
    """What makes two blocks trace to the same ops, or None when a hook on it may change the trace."""
    modules = []
    for path, sub in block.named_modules(remove_duplicate=False):
        fingerprint = _module_fingerprint(sub)
        if fingerprint is None:
            return None
        modules.append((path, type(sub), fingerprint))
    params = tuple((n, tuple(p.shape), p.dtype, type(p)) for n, p in block.named_parameters())
    buffers = tuple((n, tuple(b.shape), b.dtype) for n, b in block.named_buffers())
    return (type(block), params, buffers, tuple(modules))


def repeated_blocks(module: torch.nn.Module) -> dict:
    """instance path -> kind id, for the numbered children of module lists (the first numbered child on each path,
    as lowering/blocks.py finds instances) whose kind has at least two instances."""
    from torch.nn.modules import module as nn_module

    if any(getattr(nn_module, name, None) for name in ("_global_forward_hooks", "_global_forward_pre_hooks",
                                                       "_global_forward_hooks_always_called")):
        return {}  # a global hook runs around every module call, which an opaque call would skip
    by_key: dict = defaultdict(list)
    for path, sub in module.named_modules():
        parts = path.split(".")
        if not (len(parts) >= 2 and parts[-1].isdigit() and not any(p.isdigit() for p in parts[:-1])):
            continue
        if not isinstance(module.get_submodule(".".join(parts[:-1])), torch.nn.ModuleList):
            continue
        key = kind_key(sub)
        if key is not None:
            by_key[key].append(path)
    return {path: kind for kind, paths in enumerate(p for p in by_key.values() if len(p) >= 2) for path in paths}


# --- the capture ---------------------------------------------------------------------------------------------------
@dataclass
class _Traced:
    tag: int  # the enter/exit markers' tag
    path: str  # the instance traced
    outputs: list  # per flat output leaf: ("value", v), ("in", tensor input k) or ("out", exit marker k)
    out_spec: object
    metas: list  # (shape, stride, dtype, device) per output tensor
    rebinds: list  # (tensor input k, output j): the caller's input k reads output j after the call
    keep: list  # the call's non-tensor arguments: alive, so no later object reuses an id its signature holds
    fns_before: dict  # torch function -> its torch_fn count before the block
    fns_made: dict  # torch function -> calls the block made
    symbols: tuple  # (first number, count) of the unbacked int and float symbols the block made
    names_made: dict  # node name base -> names the trace gave the block's nodes (those a pass erased too)


@dataclass
class _Call:
    path: str
    traced: _Traced
    fns_at: dict  # torch function -> its torch_fn count then
    symbols_at: tuple  # the first unbacked int and float symbol numbers kept for this call's copy


@dataclass
class BlockCapture:
    """Patches each repeated block's forward while torch.export traces the model, then splices the copies."""

    module: torch.nn.Module
    kinds: dict = field(default_factory=dict)  # instance path -> kind id
    traced: dict = field(default_factory=dict)  # (kind, call signature) -> _Traced
    calls: dict = field(default_factory=dict)  # tag -> _Call of an opaque call
    refused: str | None = None
    in_place: dict = field(default_factory=dict)  # kind -> why its instances are all traced in the model
    unmarked: list = field(default_factory=list)  # tags of enter markers of a kind then traced in place
    _tags: object = field(default_factory=lambda: itertools.count())
    _patched: list = field(default_factory=list)

    def __enter__(self):
        self._patch(repeated_blocks(self.module))
        return self

    def _patch(self, kinds: dict) -> None:
        self.kinds.update(kinds)
        for path in kinds:
            block = self.module.get_submodule(path)
            had = "forward" in vars(block)
            self._patched.append((path, block, had, vars(block).get("forward")))
            block.forward = self._wrapper(path, block, block.forward)

    def __exit__(self, *exc):
        self._unpatch(lambda path: True)
        for call in list(self.calls):
            _OUTPUTS.pop(call, None)
        return False

    def _unpatch(self, which) -> None:
        kept = []
        for path, block, had, previous in self._patched:
            if not which(path):
                kept.append((path, block, had, previous))
            elif had:
                block.forward = previous
            else:
                vars(block).pop("forward", None)
        self._patched = kept

    @property
    def active(self) -> bool:
        return bool(self.kinds)

    def summary(self) -> dict:
        """kind -> the instance traced and the instances copied from it (for reports and tests)."""
        out = {}
        for traced in self.traced.values():
            copies = [c.path for c in self.calls.values() if c.traced is traced]
            out[traced.path] = copies
        return out

    def _wrapper(self, path, block, original):
        capture = self

        def traced_once(*args, **kwargs):
            from torch.fx.experimental.proxy_tensor import get_proxy_mode

            if capture.refused is not None or get_proxy_mode() is None or capture.kinds[path] in capture.in_place:
                return original(*args, **kwargs)
            flat, spec = pytree.tree_flatten((args, kwargs))
            signature = capture._signature(path, flat, spec)
            at = [i for i, v in enumerate(flat) if isinstance(v, torch.Tensor)]
            if signature is None or not at:  # no tensor input: nothing marks where the block starts
                return original(*args, **kwargs)
            traced = capture.traced.get(signature)
            if traced is None:
                return capture._trace(path, block, original, flat, spec, at, signature)
            tag = next(capture._tags)
            capture.calls[tag] = _Call(path, traced, _skip_counts(traced), _skip_symbols(traced))
            _OUTPUTS[tag] = traced.metas
            xs = [flat[i] for i in at]
            outs = [torch.ops.meshdit.block_call(xs, tag, j) for j in range(len(traced.metas))]
            tracer = _tracer()
            for k, j in traced.rebinds:
                set_proxy_slot(xs[k], tracer, get_proxy_slot(outs[j], tracer))
            return _rebuild(traced.outputs, xs, outs, traced.out_spec)

        return traced_once

    def _signature(self, path, flat, spec):
        leaves = []
        seen: dict = {}
        for value in flat:
            if isinstance(value, torch.Tensor):
                if not all(isinstance(d, int) for d in (*value.shape, *value.stride())):
                    self.in_place[self.kinds[path]] = f"{path} is called with a dynamic shape"
                    return None
                # the same tensor passed twice must be passed twice again: a write through one is seen by the other
                alias = seen.setdefault(id(value), len(seen))
                leaves.append((tuple(value.shape), value.stride(), value.storage_offset(), value.dtype,
                               value.device.type, value.requires_grad, alias))
            else:
                leaves.append(_fingerprint(value))
        state = (torch.is_grad_enabled(), torch.is_autocast_enabled("cpu"), torch.is_autocast_enabled("cuda"))
        return (self.kinds[path], repr(spec), tuple(leaves), state)

    def _trace(self, path, block, original, flat, spec, at, signature):
        tag, kind = next(self._tags), signature[0]
        before = kind_key(block)
        keep = [v for v in flat if not isinstance(v, torch.Tensor)]
        given = [flat[i] for i in at]
        marked = [torch.ops.meshdit.block_enter(x, tag, k) for k, x in enumerate(given)]
        tracer = _tracer()
        nodes = [_node_of(m, tracer) for m in marked]
        ins = iter(marked)
        tensor_at = set(at)
        args, kwargs = pytree.tree_unflatten([next(ins) if i in tensor_at else v for i, v in enumerate(flat)], spec)
        memos = [_memos(x) for x in given]
        fns_before, names_before = _counts(), _name_counts()
        symbols = _unbacked_count()
        out = original(*args, **kwargs)
        fns_after = _counts()
        # a data-dependent size of an input (its nonzero, item, ...) is kept on that tensor, and the whole-model
        # trace gives every later op on it the same symbol; the block computed it on its own copy of the tensor
        computed = [k for k, m in enumerate(marked) if _memos(m)]
        if any(memos[k] for k in computed):
            self.refused = f"{path} recomputes a data-dependent size of an input its caller already computed"
            raise Fallback(self.refused)
        if kind_key(block) != before:
            self.refused = f"{path}.forward changes its module's attributes (a cache?): each call may trace differently"
            raise Fallback(self.refused)  # stop this export now: the whole model is exported again
        rebound = [k for k, m in enumerate(marked) if _node_of(m, tracer) is not nodes[k]]

        def in_place(reason):
            for k in rebound:  # the caller's tensor is the one the whole-model trace rebinds
                set_proxy_slot(given[k], tracer, get_proxy_slot(marked[k], tracer))
            for k in computed:  # and the one that keeps the size the block computed from it
                for memo, value in _memos(marked[k]).items():
                    setattr(given[k], memo, value)
            return self._in_place(kind, tag, out, f"{path} {reason}")

        if computed:
            return in_place("computes a data-dependent size of an input (a nonzero or boolean mask index), which the "
                            "whole-model trace computes once for every instance")
        if any(_writes(_node_of(marked[k], tracer)) for k in rebound):
            return in_place("writes into an input in place: each copy would have to write into its caller's tensor")
        # sizes the block made from data (a nonzero, a boolean mask index): u0, u1, ... numbered in call order. Each
        # copy gets symbols of its own (capture_splice: _Symbols), so none may leave the block in an output's size
        made_symbols = tuple(after - before for before, after in zip(symbols, _unbacked_count()))
        out_flat, out_spec = pytree.tree_flatten(out)
        if any(isinstance(v, (torch.SymInt, torch.SymFloat, torch.SymBool)) for v in out_flat):
            return in_place("returns a symbolic value")
        # each output is an input passed through (the caller's own tensor, as the whole trace returns it), or a
        # value the block made (one exit marker per distinct tensor: one returned twice stays one tensor)
        given_at = {id(m): k for k, m in enumerate(marked)}
        plan, made_here, index = [], [], {}
        for v in out_flat:
            if not isinstance(v, torch.Tensor):
                plan.append(("value", v))
            elif id(v) in given_at:
                plan.append(("in", given_at[id(v)]))
            else:
                if id(v) not in index:
                    index[id(v)] = len(made_here)
                    made_here.append(v)
                plan.append(("out", index[id(v)]))
        if not made_here:
            return in_place("returns no tensor of its own")
        if any(made_symbols) and not all(isinstance(d, int) for v in made_here for d in (*v.shape, *v.stride())):
            return in_place("returns a tensor whose size is data-dependent")
        # an op returning an input itself (x.to(its own dtype)) makes the trace read that op's node for every later
        # use of the caller's tensor: the rebinding op's value leaves the block as one more output, which the
        # caller's tensor is bound to, here and after each copy
        rebinds = [(k, len(made_here) + i) for i, k in enumerate(rebound)]
        exits = [torch.ops.meshdit.block_exit(v, tag, k)
                 for k, v in enumerate([*made_here, *(marked[k] for k in rebound)])]
        for k, j in rebinds:
            set_proxy_slot(given[k], tracer, get_proxy_slot(exits[j], tracer))
        metas = [(tuple(v.shape), tuple(v.stride()), v.dtype, v.device) for v in exits]
        fns = {f: n - fns_before.get(f, 0) for f, n in fns_after.items() if n != fns_before.get(f, 0)}
        names = _names_made(names_before)
        self.traced[signature] = _Traced(tag, path, plan, out_spec, metas, rebinds, keep, fns_before, fns,
                                         tuple(zip(symbols, made_symbols)), names)
        return _rebuild(plan, given, exits, out_spec)

    def _in_place(self, kind, tag, out, reason):
        """Trace this kind's instances in the model (the whole-model export's trace, for this kind): its enter
        markers are removed by the splice and its later calls run unpatched; kinds already copied are unaffected."""
        self.in_place[kind] = reason
        self.unmarked.append(tag)
        self._unpatch(lambda other: self.kinds[other] == kind)
        return out

    # --- after the export --------------------------------------------------------------------------------------
    def splice(self, ep) -> None:
        """Replace each opaque call in `ep` by a copy of its kind's traced ops; remove the markers."""
        if self.refused is not None:
            raise Fallback(self.refused)
        _check_markers_on_top(ep)
        if any(s.kind.name != "USER_OUTPUT" for s in ep.graph_signature.output_specs):
            raise Fallback("the model writes into an input or buffer (an export output other than its results)")
        from .capture_splice import Splicer  # here: capture_splice imports this module's markers

        Splicer(self, ep).run()


def _tracer():
    from torch.fx.experimental.proxy_tensor import get_proxy_mode

    return get_proxy_mode().tracer


def _node_of(tensor, tracer):
    return get_proxy_slot(tensor, tracer).proxy.node


def _writes(node) -> bool:
    """Whether the op of `node` writes into an argument (x.mul_(2)), not only returns one (x.to(its own dtype))."""
    target = node.target
    return not isinstance(target, torch._ops.OpOverload) or target._schema.is_mutable


_MEMOS = ("nonzero_memo", "item_memo", "unique_memo", "unique_consecutive_memo", "nested_int_memo")


def _memos(tensor) -> dict:
    """The data-dependent sizes fake tensor `tensor` keeps for later ops on it (FakeTensor's memo fields)."""
    return {name: value for name in _MEMOS if (value := getattr(tensor, name, None)) is not None}


def _rebuild(plan, given, made, spec):
    leaves = [v if how == "value" else given[v] if how == "in" else made[v] for how, v in plan]
    return pytree.tree_unflatten(leaves, spec)


def _counts():
    """Each torch function's call count so far (the trace numbers node.meta['torch_fn'] by it)."""
    return dict(getattr(_tracer(), "torch_fn_counts", None) or {})


def _name_counts() -> dict:
    """Node name base -> the last number the trace's graph gave a node of that base."""
    return dict(_tracer().graph._graph_namespace._base_count)


def first_number(base: str) -> int:
    """The first number torch.fx gives a node name of `base`: 0 (the bare name), or 1 when it never gives the bare
    name (a Python builtin or keyword: `slice_1`)."""
    from torch.fx.graph import _illegal_names

    return 1 if base in _illegal_names else 0


def _names_made(before: dict) -> dict:
    after = _name_counts()
    return {base: n - before.get(base, first_number(base) - 1) for base, n in after.items() if n != before.get(base)}


def _shape_env():
    from torch._guards import detect_fake_mode

    return getattr(detect_fake_mode(), "shape_env", None)


def _unbacked_count() -> tuple:
    """The numbers the next unbacked int and float symbols will get (u0, u1, ...; f0, ...)."""
    env = _shape_env()
    return (getattr(env, "unbacked_symint_counter", 0), getattr(env, "unbacked_symfloat_counter", 0))


def _skip_symbols(traced: _Traced) -> tuple:
    """Keep the symbol numbers this call would have made if traced (the whole-model export numbers each instance's
    symbols in call order), for its copy; later symbols get the numbers the whole-model export gives them."""
    at = _unbacked_count()
    if any(count for _, count in traced.symbols):
        env = _shape_env()
        env.unbacked_symint_counter += traced.symbols[0][1]
        env.unbacked_symfloat_counter += traced.symbols[1][1]
    return at


def _skip_counts(traced: _Traced):
    """Advance the trace's torch function counts past what the traced block made, as if this call had traced it
    too: later nodes get the torch_fn numbers the whole-model export gives them, and the copies take the numbers
    skipped. Returns the counts before the skip. (Node names are numbered after the splice: capture_splice.)"""
    counts = getattr(_tracer(), "torch_fn_counts", None)
    at = {}
    if counts is not None:
        for fn, made in traced.fns_made.items():
            at[fn] = counts.get(fn, 0)
            counts[fn] = at[fn] + made
    return at


def _check_markers_on_top(ep) -> None:
    for name, gm in ep.graph_module.named_modules():
        if name and isinstance(gm, fx.GraphModule) and any(n.target in _MARKERS for n in gm.graph.nodes):
            raise Fallback(f"a repeated block is called inside a traced region ({name}: autocast or a higher-order "
                           "op), whose graph the copies cannot be spliced into")

