"""ModelGraph: the FX graph the passes rewrite, with its constants and the recipe that computes them.

After specialisation every value in `gm` has a concrete shape (node.meta["val"] is a meta tensor), and the
graph's placeholders are of two kinds (node.meta["kind"]):
  "input": a runtime input of the module (hidden_states, timestep, ...), fed on every call;
  "const": a constant the program owns: a parameter, a buffer, or a folded input-independent value (position
           tables, a cropped position embedding). Folded constants are computed from the state dict by `recipe`,
           so a graph planned on the meta device gets real constants when real weights arrive.
"""

from __future__ import annotations

import inspect
import math
import operator
from dataclasses import dataclass, field

import torch
import torch.fx as fx
from torch.fx._lazy_graph_module import _LazyGraphModule
import torch.utils._pytree as pytree
from torch.fx.operator_schemas import _torchscript_schema_to_signature

from .op_classes import BINARY, LAYOUT, SELECT, TRIG

aten = torch.ops.aten


@dataclass
class ConstantSpec:
    name: str
    shape: tuple
    dtype: torch.dtype
    source: str | None  # state-dict key when the constant is a parameter/buffer as is, else None (folded)
    value: torch.Tensor | None = None  # real value, None while weights are on meta


@dataclass
class ModelGraph:
    gm: fx.GraphModule
    inputs: dict  # runtime input name -> meta tensor (shape, dtype), in call order
    constants: dict  # name -> ConstantSpec
    recipe: fx.GraphModule  # (state-dict tensors..., static inputs...) -> folded constants
    recipe_inputs: list  # [(kind, key)] with kind in {"state", "static"}, one per recipe placeholder
    recipe_outputs: list  # constant names, one per recipe output
    static_inputs: dict  # name -> value baked into the program (checked on every call)
    input_paths: dict  # input name (runtime or static) -> its key path in the module's keyword arguments
    out_spec: pytree.TreeSpec
    model_name: str
    on_meta: bool
    notes: list = field(default_factory=list)  # decisions the passes took that a user should see in the plan
    patterns: list = field(default_factory=list)  # recognised structure (see passes/patterns.py)
    sharding: object = None  # sharding.plan.ShardingPlan once placements are assigned

    # --- inspection -------------------------------------------------------------------------------------------
    def op_nodes(self):
        return [n for n in self.gm.graph.nodes if n.op == "call_function"]

    def placeholders(self, kind: str | None = None):
        return [n for n in self.gm.graph.nodes if n.op == "placeholder" and (kind is None or n.meta["kind"] == kind)]

    # --- constants ----------------------------------------------------------------------------------------------
    def materialize_constants(self, state_dict: dict) -> None:
        """Compute every constant from a state dict of real tensors (parameters and buffers by FQN)."""
        missing = [c.source for c in self.constants.values() if c.source and c.source not in state_dict]
        missing += [key for kind, key in self.recipe_inputs if kind == "state" and key not in state_dict]
        if missing:
            raise KeyError(f"state dict lacks {len(missing)} tensors the model needs, e.g. {sorted(set(missing))[:5]}")
        for spec in self.constants.values():
            if spec.source:
                spec.value = _checked(state_dict[spec.source], spec)
        if self.recipe_outputs:
            args = [state_dict[key] if kind == "state" else self.static_inputs[key] for kind, key in self.recipe_inputs]
            self.recipe.recompile()  # the passes rewrite the recipe without regenerating its code
            with torch.no_grad():
                outs = self.recipe(*args)
            for name, value in zip(self.recipe_outputs, outs):
                self.constants[name].value = _checked(value, self.constants[name])

    def constant_values(self) -> dict:
        unset = [n for n, c in self.constants.items() if c.value is None]
        if unset:
            raise RuntimeError(
                f"{len(unset)} constants have no value (the model was planned on meta); "
                "load real weights first (Program.load_weights or ModelGraph.materialize_constants)"
            )
        return {n: c.value for n, c in self.constants.items()}

    # --- execution (torch, for verifying passes) ----------------------------------------------------------------
    def input_value(self, name: str, kwargs: dict):
        """The value of input `name` in the module's keyword arguments (a leaf of a structured argument too)."""
        return pytree.key_get(kwargs, self.input_paths[name])

    def run(self, **inputs):
        """Run the graph in torch on the module's keyword inputs and its constants; returns its output structure."""
        consts = self.constant_values()
        args = []
        for node in self.placeholders():
            key = node.meta["key"]
            args.append(self.input_value(key, inputs) if node.meta["kind"] == "input" else consts[key])
        self.gm.recompile()  # passes rewrite the graph without regenerating its code (finalize)
        with torch.no_grad():
            flat = self.gm(*args)
        return pytree.tree_unflatten(list(flat), self.out_spec)


def _checked(value: torch.Tensor, spec: ConstantSpec) -> torch.Tensor:
    if tuple(value.shape) != tuple(spec.shape):
        raise ValueError(f"constant {spec.name}: expected shape {tuple(spec.shape)}, got {tuple(value.shape)}")
    # no copy here: the program copies what it keeps when it prepares its host weights (runtime.program
    # _weight_array), so a huge model's weights are not copied twice on the way
    return value.detach().to(spec.dtype)


def graph_module(root: torch.nn.Module, graph: fx.Graph) -> fx.GraphModule:
    """A GraphModule whose Python code is generated when it first runs, not now: generating it for a full-size
    model's graph takes a fraction of a second each time, and the passes rewrite the graph before it ever runs
    (ModelGraph.run and materialize_constants regenerate it). torch.fx's lazy class is private; torch is pinned."""
    return _LazyGraphModule(root, graph)


# --- rewriting helpers shared by the passes -----------------------------------------------------------------------
def shape_of(node: fx.Node) -> list:
    """Global shape of a node's value."""
    return list(node.meta["val"].shape)


def calls(graph: fx.Graph, *targets) -> list:
    """The graph's call nodes of any of `targets`, in graph order (a list: callers rewrite while iterating)."""
    return [n for n in graph.nodes if n.op == "call_function" and n.target in targets]


def is_const(node) -> bool:
    """True for a placeholder standing for a constant the program owns (a weight or a folded table)."""
    return isinstance(node, fx.Node) and node.op == "placeholder" and node.meta.get("kind") == "const"


def is_row_wise(node: fx.Node) -> bool:
    """Each row (every dim but the last) on its own: a linear or a norm (op_classes.ROW_WISE), or x @ M with a
    constant matrix M (a lookup as a one-hot matmul, RoPE's pair rotation: passes/pairs.py)."""
    from .op_classes import ROW_WISE

    return node.target in ROW_WISE or (node.target is aten.matmul.default and is_const(node.args[1])
                                       and len(shape_of(node.args[1])) == 2)


def meta_of(arg):
    """The meta value of a node argument (nodes -> meta['val'], containers mapped, literals as they are)."""
    return pytree.tree_map(lambda a: a.meta["val"] if isinstance(a, fx.Node) else a, arg)


_META_RESULTS: dict = {}  # (op, argument shapes/dtypes/strides and literals) -> meta result; bounded below


def _meta_key(value):
    if isinstance(value, torch.Tensor):
        return ("tensor", tuple(value.shape), value.dtype, tuple(value.stride()), value.device.type)
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, tuple(_meta_key(v) for v in value))
    if isinstance(value, dict):
        return ("dict", tuple((k, _meta_key(v)) for k, v in value.items()))
    hash(value)  # raises for a literal that cannot be a key
    return (type(value).__name__, value)


def _meta_call(target, args: tuple, kwargs: dict):
    """target(*args, **kwargs) on meta tensors, remembered by shapes, dtypes, strides and literals: a model's
    repeated blocks ask the same questions dozens of times, and each meta call runs torch's Python reference
    implementations (a third of the passes' time on Flux.1-dev). Meta results are only read (shape, dtype)."""
    try:
        key = (target, _meta_key(args), _meta_key(kwargs))
    except TypeError:
        return target(*args, **kwargs)
    if key not in _META_RESULTS:
        if len(_META_RESULTS) > 50_000:
            _META_RESULTS.clear()
        _META_RESULTS[key] = target(*args, **kwargs)
    return _META_RESULTS[key]


def emit(graph: fx.Graph, target, args: tuple, kwargs: dict | None = None, like: fx.Node | None = None) -> fx.Node:
    """Insert a call at the graph's current insertion point, with its meta value computed on meta tensors.

    `like` lends its source location and module stack, so errors and reports on the new node still point at the
    model line it came from.
    """
    kwargs = kwargs or {}
    node = graph.call_function(target, tuple(args), kwargs)
    meta_kwargs = meta_of(kwargs)
    if not any(isinstance(a, fx.Node) for a in pytree.tree_leaves((args, kwargs))):
        meta_kwargs["device"] = torch.device("meta")  # a factory (full, zeros): its meta value allocates nothing
    node.meta["val"] = _meta_call(target, meta_of(tuple(args)), meta_kwargs)
    if like is not None:
        for key in ("stack_trace", "nn_module_stack"):
            if key in like.meta:
                node.meta[key] = like.meta[key]
    return node


def reshape_dim_map(src_shape, dst_shape, d):
    """Dim of a reshape's output that carries input dim d unchanged (same size, same products of the dims
    before and after it), or None when the reshape splits or merges d."""
    before, after = math.prod(src_shape[:d]), math.prod(src_shape[d + 1:])
    prefix, found = 1, []
    for e, size in enumerate(dst_shape):
        if prefix == before and size == src_shape[d] and math.prod(dst_shape[e + 1:]) == after:
            found.append(e)
        prefix *= size
        if prefix > before:
            break
    # a dim of size 1 fits wherever other size-1 dims sit ([1, 1, 64] -> [1, 1, 4, 16]: a one-token stream of
    # batch 1); it stays at its own index when that is one of the places
    return (d if d in found else found[0]) if found else None


def replace_node(node: fx.Node, replacement) -> None:
    node.replace_all_uses_with(replacement)
    node.graph.erase_node(node)


def finalize(mg: ModelGraph) -> None:
    """Drop dead nodes after a rewrite. The GraphModule's Python code is regenerated only where it runs (run()):
    recompiling after every pass cost seconds at full size and nothing else reads the code."""
    graph = mg.gm.graph
    for node in reversed(list(graph.nodes)):
        if node.op == "call_function" and not node.users:
            graph.erase_node(node)


_SIGNATURES: dict = {}


def _signature(target) -> inspect.Signature:
    if target not in _SIGNATURES:
        if isinstance(target, torch._ops.OpOverload):
            _SIGNATURES[target] = _torchscript_schema_to_signature(target._schema)  # names 'self' 'input', as fx does
        elif target is operator.getitem:
            _SIGNATURES[target] = inspect.Signature([inspect.Parameter(n, inspect.Parameter.POSITIONAL_ONLY)
                                                     for n in ("input", "index")])
        else:
            _SIGNATURES[target] = inspect.signature(target)
    return _SIGNATURES[target]


def normalized_args(node: fx.Node) -> dict:
    """A call node's arguments by parameter name, defaults filled in: what sharding and lowering rules take, so no
    rule decodes node.args positions by hand (aten.slice.Tensor -> input, dim, start, end, step)."""
    bound = _signature(node.target).bind(*node.args, **node.kwargs)
    bound.apply_defaults()
    return dict(bound.arguments)


# Elementwise and data-movement ops a float32 region extends back through.
FP32_REGION_OPS = BINARY | LAYOUT | SELECT | {aten.neg.default, aten.exp.default}


def float32_region(mg: ModelGraph) -> set:
    """Nodes (including placeholders) whose values feed a sin/cos argument through elementwise ops only: the
    lowering computes them in float32 whatever the activation dtype (lowering/lower.py), and no pass may move their
    arithmetic into an op outside the region."""
    region, stack = set(), []
    for node in mg.gm.graph.nodes:
        if node.op == "call_function" and node.target in TRIG:
            stack.append(node.args[0])
    while stack:
        node = stack.pop()
        if not isinstance(node, fx.Node) or node in region:
            continue
        if node.op == "placeholder" or (node.op == "call_function" and node.target in FP32_REGION_OPS):
            region.add(node)
            stack.extend(node.all_input_nodes)
    return region
