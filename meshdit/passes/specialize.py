"""Specialise the exported graph: fold constants, resolve data-dependent values, make every shape concrete.

One walk over the exported graph evaluates each node abstractly. A value is
  const:   it depends only on parameters, buffers, literals and static inputs. It is not computed on the device:
           the recipe graph (see ModelGraph) computes it from the weights, and its real value is computed now
           whenever every leaf is real (always, unless weights are on meta);
  runtime: it depends on a runtime input; the node is copied into the new graph with a concrete meta value.

Tensors made from another's shape only (empty_like, zeros_like, new_ones, full_like, ...) are constants; an empty
one is zeros, so the program never reads uninitialised memory (the model overwrites what it reads).
Data-dependent ops (nonzero, masked_select, item(), ...) get this documented treatment: the inputs they read
must be static. Such inputs are found automatically (every module input upstream of a data-dependent op becomes
static: static_inputs.py), their example value is baked into the program, and the program refuses, with a named
error, a later call whose value differs. On the meta device an integer or boolean static input has no value; it is then taken
as all ones (a full attention mask, every prompt token valid) and the plan says so.
Higher-order ops that only wrap a region (autocast, grad mode) are inlined: autocast to float32 is a no-op on
device, where dtypes are chosen by the lowering.
"""

from __future__ import annotations

import operator
import time

import torch
import torch.fx as fx
import torch.utils._pytree as pytree

from ..capture import CapturedModel
from ..errors import SpecializationError, node_location
from .fold import prune_constants
from .flex import flex_as_sdpa, only_build_block_masks
from .mutations import written_in_place
from .static_inputs import DATA_DEPENDENT, runtime_dependent, static_ancestors, user_inputs
from ..ir.graph import ConstantSpec, ModelGraph, graph_module

aten = torch.ops.aten

# Ops whose value depends only on their input's shape and dtype -> the value they fill with, from (args, kwargs)
SHAPE_ONLY = {
    aten.empty_like.default: lambda a, k: 0,
    aten.zeros_like.default: lambda a, k: 0,
    aten.ones_like.default: lambda a, k: 1,
    aten.full_like.default: lambda a, k: a[1] if len(a) > 1 else k["fill_value"],
    aten.new_empty.default: lambda a, k: 0,
    aten.new_zeros.default: lambda a, k: 0,
    aten.new_ones.default: lambda a, k: 1,
    aten.new_full.default: lambda a, k: a[2] if len(a) > 2 else k["fill_value"],
}
# Ops evaluated for their assertion only; they produce no value the graph uses.
ASSERTIONS = {
    aten._assert_scalar.default,
    aten.sym_constrain_range_for_size.default,
    aten._assert_async.msg,
}


class Val:
    """Abstract value of one node: kind, meta (shape carrier), real value (const only), node in the new graph."""

    __slots__ = ("kind", "meta", "value", "node", "origin")

    def __init__(self, kind, meta, value=None, node=None, origin=None):
        self.kind = kind  # "const" | "runtime"
        self.meta = meta
        self.value = value
        self.node = node  # runtime: node in the new graph; const: node in the recipe graph
        self.origin = origin  # const: ("state", fqn) for a parameter/buffer used as is


def _is_val(x):
    return isinstance(x, Val)


def _concrete(value) -> bool:
    """A meta value with no symbolic size in it: a tensor with int shape and strides, an int, float or bool, or a
    list or tuple of those."""
    if isinstance(value, torch.Tensor):
        return all(type(d) is int for d in (*value.shape, *value.stride()))
    if isinstance(value, (list, tuple)):
        return all(_concrete(v) for v in value)
    return type(value) in (int, float, bool)


def _as_meta(value):
    if isinstance(value, torch.Tensor):
        return torch.empty_strided(tuple(value.shape), tuple(value.stride()), dtype=value.dtype, device="meta")
    return value


def _to_meta(x):
    if isinstance(x, torch.Tensor):
        return torch.empty(x.shape, dtype=x.dtype, device="meta") if x.device.type != "meta" else x
    return x


class _Specializer:
    def __init__(self, captured: CapturedModel, static_names: set, notes: list, static_given: dict):
        self.cap = captured
        self.ep = captured.exported
        self.notes = notes
        self.graph = fx.Graph()
        self.recipe = fx.Graph()
        self.recipe_inputs: list = []
        self.recipe_placeholders: dict = {}
        self.constants: dict = {}
        # Val -> placeholder in the new graph. Keyed by the Val itself, which keeps it alive: keyed by id(), a folded
        # value nothing else held (the positions a static mask selects) was freed, and a later constant allocated at
        # its address was given its placeholder
        self.const_nodes: dict = {}
        self.recipe_outputs: list = []
        self.inputs: dict = {}
        self.static_values: dict = {}
        self.static_names = static_names
        self.static_given = static_given  # real values given for static inputs (needed on meta)
        self.used_names: set = set()
        self.written = written_in_place(captured.exported.graph,
                                        runtime_dependent(captured.exported, static_names))
        self.recipe_attrs: dict = {}  # constants the recipe holds as attributes (see const_from_value)
        self.skipped = only_build_block_masks(captured.exported.graph)
        self.region_depth = 0  # inside an inlined autocast or grad-mode region
        # torch.export's meta values are symbolic wherever a shape depends on values; a trace on the example values
        # (capture's fallback) fixes them to the example's, so they are not reused from a trace
        self.exported_metas = captured.method == "torch.export"

    # --- naming ---------------------------------------------------------------------------------------------------
    def _unique(self, base: str) -> str:
        name = base.replace(".", "_")
        if not name.isidentifier():
            name = "c_" + "".join(ch if ch.isalnum() else "_" for ch in name)
        candidate, i = name, 1
        while candidate in self.used_names:
            i += 1
            candidate = f"{name}_{i}"
        self.used_names.add(candidate)
        return candidate

    # --- leaves ---------------------------------------------------------------------------------------------------
    def _recipe_input(self, kind: str, key: str, meta) -> fx.Node:
        if (kind, key) not in self.recipe_placeholders:
            node = self.recipe.placeholder(self._unique(f"r_{key}"))
            node.meta["val"] = meta
            node.meta["recipe_key"] = (kind, key)
            self.recipe_placeholders[(kind, key)] = node
            self.recipe_inputs.append((kind, key))
        return self.recipe_placeholders[(kind, key)]

    def placeholder_val(self, node: fx.Node, user_values: dict) -> Val:
        sig = self.ep.graph_signature
        spec = next(s for s in sig.input_specs if s.arg.name == node.name)
        kind = spec.kind.name
        if kind in ("PARAMETER", "BUFFER", "CONSTANT_TENSOR"):
            key = spec.target
            tensor = self.ep.state_dict[key] if key in self.ep.state_dict else self.ep.constants[key]
            real = None if tensor.device.type == "meta" else tensor.detach()
            rnode = self._recipe_input("state", key, _to_meta(tensor))
            return Val("const", _to_meta(tensor), real, rnode, origin=("state", key))
        if kind == "USER_INPUT":
            key = node.name
            value = user_values[key]
            if not isinstance(value, torch.Tensor):
                return Val("const", value, value)
            if key in self.static_names:
                real = self.static_given.get(key, value)
                if tuple(real.shape) != tuple(value.shape):
                    raise SpecializationError(f"static_inputs['{key}'] has shape {tuple(real.shape)}, but the "
                                              f"example input has {tuple(value.shape)}")
                if real.device.type == "meta":
                    if value.dtype.is_floating_point:
                        raise SpecializationError(
                            f"input '{key}' is static (its value is baked in) but its example value is on meta; "
                            f"give its real value: static_inputs={{'{key}': tensor}}"
                        )
                    real = torch.ones(value.shape, dtype=value.dtype)
                    self.notes.append(
                        f"static input '{key}' was on meta: planned as all ones (e.g. every prompt token valid)"
                    )
                self.static_values[key] = real
                rnode = self._recipe_input("static", key, _to_meta(real))
                return Val("const", _to_meta(real), real, rnode)
            meta = _to_meta(value)
            new = self.graph.placeholder(self._unique(key))
            new.meta.update(kind="input", key=key, val=meta)
            self.inputs[key] = meta
            return Val("runtime", meta, node=new)
        raise SpecializationError(f"unsupported exported input kind {kind} for {node.name}")

    def const_node(self, val: Val, hint: str) -> fx.Node:
        """Placeholder in the new graph standing for a const tensor (a weight the program owns)."""
        if val in self.const_nodes:
            return self.const_nodes[val]
        if val.origin and val.origin[0] == "state":
            name, source = self._unique(val.origin[1]), val.origin[1]
        else:
            name, source = self._unique(f"folded_{hint}"), None
            self.recipe_outputs.append((name, val.node))
        node = self.graph.placeholder(name)
        node.meta.update(kind="const", key=name, val=val.meta)
        self.constants[name] = ConstantSpec(name, tuple(val.meta.shape), val.meta.dtype, source, val.value)
        self.const_nodes[val] = node
        return node

    # --- evaluation -----------------------------------------------------------------------------------------------
    def run_graph(self, graph: fx.Graph, arg_vals: list | None, user_values: dict | None):
        env: dict = {}
        placeholders = iter(arg_vals or [])
        out = None
        for node in graph.nodes:
            if node.op == "placeholder":
                env[node] = next(placeholders) if arg_vals is not None else self.placeholder_val(node, user_values)
            elif node.op == "get_attr":
                target = self.ep.graph_module
                for part in node.target.split("."):
                    target = getattr(target, part)
                env[node] = Val("const", target, target)
            elif node.op == "call_function":
                env[node] = self.eval_node(node, env)
            elif node.op == "output":
                out = pytree.tree_map(lambda a: env[a] if isinstance(a, fx.Node) else a, node.args[0])
        return out

    def eval_node(self, node: fx.Node, env: dict):
        args = pytree.tree_map(lambda a: env[a] if isinstance(a, fx.Node) else a, node.args)
        kwargs = pytree.tree_map(lambda a: env[a] if isinstance(a, fx.Node) else a, node.kwargs)
        target = node.target
        name = getattr(target, "__name__", str(target))

        if name in ("wrap_with_autocast", "wrap_with_set_grad_enabled"):
            return self.inline_region(node, args, name)
        if name == "flex_attention":
            return flex_as_sdpa(self, node, args)
        if node in self.skipped:
            return Val("const", None, None)  # builds a flex block mask, which the dense mask replaces
        if target in ASSERTIONS:
            flat = [v.value if _is_val(v) else v for v in pytree.tree_leaves(args)]
            if target is aten._assert_scalar.default and flat and flat[0] is False:
                raise SpecializationError(f"assertion fails for the given inputs at {node_location(node)}: {flat[1:]}")
            return Val("const", None, None)

        as_exported = (args, kwargs)  # the arguments as the exported node has them (their meta value may be reused)
        leaves = [v for v in pytree.tree_leaves((args, kwargs)) if _is_val(v)]
        # a tensor written in place (and the views it is written through) stays in the graph even when constant:
        # folding it would freeze its value before the write (passes/mutations.py turns the write out of place)
        runtime = any(v.kind == "runtime" for v in leaves) or node in self.written
        if target is operator.getitem and _is_val(args[0]):
            return self.getitem(args[0], args[1], node)
        if runtime and target is aten.index.Tensor and _is_val(args[0]) and args[0].kind == "runtime":
            args = (args[0], self._bool_indices_as_positions(node, args[1]))
        if runtime and target is aten.repeat_interleave.self_Tensor:
            target, args, kwargs = self._repeats_as_positions(node, args, kwargs)
        if runtime and target in DATA_DEPENDENT:
            raise SpecializationError(
                f"data-dependent op {name} at {node_location(node)} reads a value computed from runtime inputs; "
                "meshdit can only specialise data-dependent ops on static inputs. Pass the inputs it reads in "
                "static_inputs=... (their values are then baked into the program)."
            )
        if target in SHAPE_ONLY and not any(_is_val(a) for a in pytree.tree_leaves(args[1:])):
            # its value depends on the input's shape and dtype only: a constant (an empty tensor is zeros, so a
            # program never reads uninitialised memory where the model would)
            meta_args, meta_kwargs = self._meta_arguments(args, kwargs)
            meta = target(*meta_args, **meta_kwargs)
            fill = SHAPE_ONLY[target](args, kwargs)
            literal = ([int(d) for d in meta.shape], fill)
            if node in self.written:  # filled in place later: a graph node, folded once the writes are out of place
                new = self.graph.call_function(aten.full.default, literal, {"dtype": meta.dtype})
                new.name = self._unique(node.name)
                new.meta.update({k: node.meta[k] for k in ("stack_trace", "nn_module_stack") if k in node.meta})
                new.meta["val"] = meta
                return Val("runtime", meta, node=new)
            return self.fold(node, aten.full.default, literal, {"dtype": meta.dtype}, literal,
                             {"dtype": meta.dtype, "device": "meta"})
        if not runtime:
            return self.fold(node, target, args, kwargs, *self._meta_arguments(args, kwargs))
        unchanged = target is node.target and args is as_exported[0] and kwargs is as_exported[1]
        meta = self._exported_meta(node, args, kwargs) if unchanged else None
        try:
            if meta is None:
                meta_args, meta_kwargs = self._meta_arguments(args, kwargs)
                meta = target(*meta_args, **meta_kwargs)
        except Exception as exc:
            raise SpecializationError(
                f"shape propagation failed at {node_location(node)} ({name}): {exc}".splitlines()[0]
            ) from exc
        if not isinstance(meta, (torch.Tensor, list, tuple)):
            # A shape query (sym_size, numel) on a runtime tensor: shapes are concrete, so it is a literal.
            return Val("const", meta, meta)
        if isinstance(meta, torch.Tensor) and meta.numel() == 0 and node not in self.written:
            # an empty result holds no value (a stream of zero frames, say): a constant, and ops on it fold away,
            # where on device an op on a zero-volume tensor crashes ttnn
            literal = ([int(d) for d in meta.shape], 0)
            return self.fold(node, aten.full.default, literal, {"dtype": meta.dtype}, literal,
                             {"dtype": meta.dtype, "device": "meta"})
        return self._runtime_node(node, target, args, kwargs, meta)

    def _runtime_node(self, node, target, args, kwargs, meta) -> Val:
        new_args, new_kwargs = _on_device(*self._to_graph(args, kwargs, node), None)
        new = self.graph.call_function(target, tuple(new_args), new_kwargs)
        new.name = self._unique(node.name)
        new.meta.update({k: node.meta[k] for k in ("stack_trace", "nn_module_stack") if k in node.meta})
        new.meta["val"] = meta
        return Val("runtime", meta, node=new)

    def _exported_meta(self, node: fx.Node, args, kwargs):
        """The exported node's own meta value, as meta tensors, when it is certain to be what evaluating the node
        again would give: concrete shapes, every argument with the shape, dtype or value the export saw, and
        outside an inlined region (where autocast gave the exported values other dtypes), from torch.export only.
        Evaluating each node on meta tensors again took a third of the specialiser's time; the meta value is data
        the export computed."""
        val = node.meta.get("val")
        if self.region_depth or not self.exported_metas or not _concrete(val):
            return None
        exported = pytree.tree_leaves((node.args, node.kwargs))
        given = pytree.tree_leaves((args, kwargs))
        if len(exported) != len(given):
            return None
        for before, now in zip(exported, given):
            if not isinstance(before, fx.Node):
                continue
            seen = before.meta.get("val")
            if not _is_val(now) or not _concrete(seen):
                return None
            if isinstance(seen, torch.Tensor):
                if not (isinstance(now.meta, torch.Tensor) and now.meta.dtype == seen.dtype
                        and tuple(now.meta.shape) == tuple(seen.shape)):
                    return None
            elif type(seen) not in (int, float, bool) or now.value != seen:
                return None
        return pytree.tree_map(_as_meta, val)

    def _bool_indices_as_positions(self, node, indices):
        """x[mask] with a constant boolean mask (a static prompt mask, say) selects a fixed set of positions: the
        mask becomes one constant integer index per dim it covers (its nonzero positions), so the selection has a
        known shape and canonicalisation can turn a contiguous run of positions into a slice."""
        out = []
        for index in indices:
            if not (_is_val(index) and index.kind == "const" and isinstance(index.meta, torch.Tensor)
                    and index.meta.dtype == torch.bool and index.value is not None):
                out.append(index)
                continue
            positions = self.fold(node, aten.nonzero.default, (index,), {}, (index.meta,), {})
            for dim in range(index.meta.dim()):
                meta_args = (positions.meta, 1, dim)
                out.append(self.fold(node, aten.select.int, (positions, 1, dim), {}, meta_args, {}))
        return out

    def _repeats_as_positions(self, node, args, kwargs):
        """x.repeat_interleave(repeats, dim) with constant repeats (from a static mask, say) takes fixed positions:
        index_select(x, dim, repeat_interleave(arange(n), repeats)), whose shape is known (canonicalize makes it a
        one-hot matmul on device)."""
        x, repeats = args[0], args[1]
        dim = args[2] if len(args) > 2 else kwargs.get("dim")
        if not (_is_val(x) and x.kind == "runtime" and _is_val(repeats) and repeats.kind == "const"
                and repeats.value is not None and dim is not None):
            return aten.repeat_interleave.self_Tensor, args, kwargs
        dim %= x.meta.dim()
        size = x.meta.shape[dim]
        rows = self.fold(node, aten.arange.default, (size,), {"dtype": torch.int64}, (size,),
                         {"dtype": torch.int64, "device": "meta"})
        positions = self.fold(node, aten.repeat_interleave.self_Tensor, (rows, repeats), {}, (), {})
        return aten.index_select.default, (x, dim, positions), {}

    def fold(self, node, target, args, kwargs, meta_args, meta_kwargs):
        """Evaluate a node whose inputs are all const: meta always, real when every leaf is real."""
        leaves = [v for v in pytree.tree_leaves((args, kwargs)) if _is_val(v)]
        real = None
        if all(v.value is not None or v.meta is None for v in leaves):
            real_args, real_kwargs = _on_device(*self._abstract(args, kwargs, "value"), "cpu")
            real = target(*real_args, **real_kwargs)
        if target in DATA_DEPENDENT:
            if real is None:
                raise SpecializationError(
                    f"data-dependent op at {node_location(node)} needs real values, but its inputs are weights on "
                    "meta; lower with real weights"
                )
            meta = pytree.tree_map(_to_meta, real)
        elif real is not None and _data_dependent_shape(target, args):
            meta = _to_meta(real)  # indexing by a boolean mask: its shape is known from the real value only
        else:
            meta = target(*meta_args, **meta_kwargs)
        rargs, rkwargs = _on_device(*self._to_recipe(args, kwargs), "cpu")
        rnode = self.recipe.call_function(target, tuple(rargs), rkwargs)
        rnode.meta["val"] = meta
        if isinstance(meta, (int, float, bool, torch.SymInt)) or meta is None:
            return Val("const", meta, real if real is not None else meta, rnode)
        return Val("const", meta, real, rnode)

    def getitem(self, base: Val, index, node):
        if base.kind == "runtime":
            new = self.graph.call_function(operator.getitem, (base.node, index))
            new.name = self._unique(node.name)
            new.meta.update({k: node.meta[k] for k in ("stack_trace", "nn_module_stack") if k in node.meta})
            new.meta["val"] = base.meta[index]
            return Val("runtime", base.meta[index], node=new)
        if isinstance(base.meta, (list, tuple)) and base.meta and _is_val(base.meta[0]):
            return base.meta[index]  # a tuple of Vals (inlined region output)
        real = base.value[index] if base.value is not None else None
        rnode = self.recipe.call_function(operator.getitem, (base.node, index))
        rnode.meta["val"] = base.meta[index]
        return Val("const", base.meta[index], real, rnode)

    def const_from_value(self, name: str, value: torch.Tensor) -> Val:
        """A constant computed while specialising from static values only (a dense attention mask): the recipe
        holds it as an attribute, as it depends on no weight."""
        name = self._unique(name)
        self.recipe_attrs[name] = value
        rnode = self.recipe.get_attr(name)
        rnode.meta["val"] = _to_meta(value)
        return Val("const", _to_meta(value), value, rnode)

    def inline_region(self, node, args, name):
        if name == "wrap_with_autocast":
            _device_type, dtype, enabled = (a.value if _is_val(a) else a for a in args[:3])
            submod, operands = args[4], list(args[5:])
            if enabled and dtype not in (torch.float32, None):
                self.notes.append(
                    f"autocast to {dtype} at {node_location(node)} ignored: the lowering chooses device dtypes"
                )
        else:
            submod, operands = args[1], list(args[2:])
        sub = submod.value if _is_val(submod) else submod
        self.region_depth += 1
        try:
            outs = self.run_graph(sub.graph, operands, None)
        finally:
            self.region_depth -= 1
        return Val("const", tuple(outs) if isinstance(outs, (list, tuple)) else (outs,), None)

    # --- argument mapping -----------------------------------------------------------------------------------------
    def _meta_arguments(self, args, kwargs):
        """The arguments as meta tensors (for shape propagation), every device they name made meta."""
        return _on_device(*self._abstract(args, kwargs, "meta"), "meta")

    def _abstract(self, args, kwargs, field):
        def conv(a):
            if not _is_val(a):
                return a
            if field == "value" and a.kind == "const":
                return a.value if a.value is not None else a.meta
            return a.meta

        return pytree.tree_map(conv, args), pytree.tree_map(conv, kwargs)

    def _to_graph(self, args, kwargs, node):
        def conv(a):
            if not _is_val(a):
                return a
            if a.kind == "runtime":
                return a.node
            if isinstance(a.meta, torch.Tensor):
                return self.const_node(a, node.name)
            return a.value if a.value is not None else a.meta

        return pytree.tree_map(conv, args), pytree.tree_map(conv, kwargs)

    def _to_recipe(self, args, kwargs):
        def conv(a):
            if not _is_val(a):
                return a
            if isinstance(a.meta, torch.Tensor) or a.node is not None:
                return a.node
            return a.value if a.value is not None else a.meta

        return pytree.tree_map(conv, args), pytree.tree_map(conv, kwargs)



def _on_device(args, kwargs, device: str | None):
    """Arguments with every device they name (a `device=` keyword, or positional as in `x.to(other.device)`) made
    `device`: meta for shape propagation, cpu for folding real values (a model planned on meta names the meta
    device, whose tensors hold no data), and for the runtime graph None: the device keyword is dropped and a
    positional one made cpu, since where values live on the mesh is the lowering's business."""
    def convert(a):
        return torch.device(device or "cpu") if isinstance(a, torch.device) else a

    args = pytree.tree_map(convert, args)
    kwargs = dict(kwargs)
    if "device" in kwargs:
        if device is None:
            kwargs.pop("device")
        else:
            kwargs["device"] = torch.device(device)
    return args, pytree.tree_map(convert, kwargs)


def _drop_unread(graph: fx.Graph) -> None:
    """Remove every call the output does not read, impure ones too: a folded value nobody uses (the block mask a
    flex attention built, which its dense mask replaces) may hold ops that cannot even be printed as code."""
    output = next(n for n in graph.nodes if n.op == "output")
    read, stack = set(), [output]
    while stack:
        n = stack.pop()
        if n not in read:
            read.add(n)
            stack.extend(n.all_input_nodes)
    for n in reversed(list(graph.nodes)):
        if n.op in ("call_function", "call_method", "call_module", "get_attr") and n not in read:
            graph.erase_node(n)


def _data_dependent_shape(target, args) -> bool:
    """Indexing by a boolean mask (an abstract value): the output shape depends on the mask's values."""
    return target is aten.index.Tensor and len(args) > 1 and any(
        _is_val(i) and isinstance(i.meta, torch.Tensor) and i.meta.dtype == torch.bool for i in args[1])


def specialize(captured: CapturedModel, static_inputs=()) -> ModelGraph:
    """Turn a captured ExportedProgram into a ModelGraph with concrete shapes and folded constants.

    static_inputs: input names whose example values are baked in, or a dict name -> real value (needed when the
    example inputs are on meta)."""
    start = time.perf_counter()
    ep = captured.exported
    arguments = user_inputs(ep, captured.example_inputs)
    user_values = {name: value for name, (value, _) in arguments.items()}
    static_given = dict(static_inputs) if isinstance(static_inputs, dict) else {}
    unknown = sorted(set(static_inputs) - set(user_values))
    if unknown:
        raise SpecializationError(f"static_inputs names {unknown} are not inputs of the module: {sorted(user_values)}")
    notes: list = []
    auto = static_ancestors(ep)
    for name in sorted(auto - set(static_inputs)):
        notes.append(f"input '{name}' feeds a data-dependent op: its value is baked in (static)")
    spec = _Specializer(captured, set(static_inputs) | auto, notes, static_given)
    outs = spec.run_graph(ep.graph, None, user_values)
    flat_out = []
    for i, val in enumerate(outs):
        if not _is_val(val):
            flat_out.append(val)
        elif val.kind == "runtime":
            flat_out.append(val.node)
        else:
            flat_out.append(spec.const_node(val, f"output{i}"))
    spec.graph.output(tuple(flat_out))
    gm = graph_module(torch.nn.Module(), spec.graph)
    recipe_graph = spec.recipe
    recipe_graph.output(tuple(node for _, node in spec.recipe_outputs))
    recipe_graph.eliminate_dead_code()
    _drop_unread(recipe_graph)
    holder = torch.nn.Module()
    for name, value in spec.recipe_attrs.items():
        holder.register_buffer(name, value)
    recipe = graph_module(holder, recipe_graph)
    mg = ModelGraph(
        gm=gm,
        inputs=spec.inputs,
        constants=spec.constants,
        recipe=recipe,
        recipe_inputs=list(spec.recipe_inputs),
        recipe_outputs=[name for name, _ in spec.recipe_outputs],
        static_inputs=spec.static_values,
        input_paths={name: path for name, (_, path) in arguments.items()
                     if name in spec.inputs or name in spec.static_values},
        out_spec=ep.call_spec.out_spec,
        model_name=captured.model_name,
        on_meta=captured.on_meta,
        notes=notes,
    )
    prune_constants(mg)
    mg.gm.meta["specialize_seconds"] = time.perf_counter() - start
    return mg
