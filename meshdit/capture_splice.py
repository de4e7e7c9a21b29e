"""Splice: put a copy of each traced block's ops where the export holds an opaque call (see capture_blocks.py).

The traced instance's ops lie between its enter and exit markers in the exported graph (a trace records ops in
call order). A copy for another instance maps the enter marker's outputs to that call's inputs, the traced
instance's weights to the same-named weights of the copied instance, and rewrites the metadata later stages read:
the module stack (paths of the copied instance, under the call site's stack), the stack trace (the call site's
frames, then the block's own) and torch_fn numbers, and gives it its own data-dependent size symbols (_Symbols).
Node names are given last, over the whole graph (_renumber), since torch.export numbers names in graph order and a
copy shifts every later name of its bases; runtime assert messages name their nodes, so they are written after.
"""

from __future__ import annotations

import copy
import operator
import re

import torch
import torch.fx as fx
from torch._subclasses.fake_tensor import FakeTensor

from .capture_blocks import _MARKERS, _OWN_FILE, Fallback, first_number

_ENTER, _EXIT, _CALL = _MARKERS


class Splicer:
    def __init__(self, capture, ep):
        self.capture = capture
        self.ep = ep
        self.graph = ep.graph
        module = capture.module
        self.state_node, self.kind = {}, {}
        by_name = {n.name: n for n in self.graph.nodes if n.op == "placeholder"}
        for spec in ep.graph_signature.input_specs:
            node = by_name[spec.arg.name]
            self.kind[node] = spec.kind.name
            if spec.kind.name in ("PARAMETER", "BUFFER"):
                self.state_node[spec.target] = node
        # a weight's placeholder is named after its first path (torch.export drops duplicate paths of a shared one)
        self.fqn_of = {id(t): name for name, t in [*module.named_parameters(), *module.named_buffers()]}
        self._traces: dict = {}
        self.copied: set = set()  # the copies' nodes, named by _renumber

    def run(self) -> None:
        graph = self.graph
        marks = {_ENTER: {}, _EXIT: {}, _CALL: {}}
        for node in graph.nodes:
            if node.op == "call_function" and node.target in marks:
                tag, index = node.args[1], node.args[2]
                if index in marks[node.target].setdefault(tag, {}):
                    raise Fallback(f"the export holds block marker {tag}/{index} twice")
                marks[node.target][tag][index] = node
        for tag in self.capture.unmarked:  # a kind traced in place after all: only its enter markers are there
            for marker in marks[_ENTER].pop(tag, {}).values():
                marker.replace_all_uses_with(marker.args[0])
                graph.erase_node(marker)
        nodes = list(graph.nodes)
        position = {n: i for i, n in enumerate(nodes)}
        traced = {t.tag: t for t in self.capture.traced.values()}
        if set(marks[_ENTER]) != set(traced) or set(marks[_EXIT]) != set(traced) or \
                set(marks[_CALL]) != set(self.capture.calls):
            raise Fallback("the export dropped a block marker (a block whose inputs or outputs are unused?)")
        bodies = {tag: self._body(t, marks[_ENTER][tag], marks[_EXIT][tag], nodes, position)
                  for tag, t in traced.items()}
        for tag, call in self.capture.calls.items():
            self._copy(call, marks[_CALL][tag], bodies[call.traced.tag])
        for tag in traced:
            for marker in [*marks[_ENTER][tag].values(), *marks[_EXIT][tag].values()]:
                marker.replace_all_uses_with(marker.args[0])
                graph.erase_node(marker)
        for node in graph.nodes:
            trace = node.meta.get("stack_trace")
            if trace and _OWN_FILE in trace:
                node.meta["stack_trace"] = self._clean(trace)
        names_made: dict = {}
        for call in self.capture.calls.values():
            for base, count in call.traced.names_made.items():
                names_made[base] = names_made.get(base, 0) + count
        _renumber(graph, self.copied, names_made)
        _assert_messages(graph)
        if any(n for t in self.capture.traced.values() for _, n in t.symbols):
            _order_symbols(self.ep.range_constraints)
        _rename_outputs(self.ep)
        graph.lint()
        _lazy_code(self.ep)

    # --- the traced instance ------------------------------------------------------------------------------------
    def _body(self, traced, enters, exits, nodes, position):
        path = traced.path
        start, end = max(position[n] for n in enters.values()), min(position[n] for n in exits.values())
        if max(position[n] for n in exits.values()) < start:
            raise Fallback(f"{path}: the block's markers are out of order in the export")
        inputs = {node: index for index, node in enters.items()}
        body = nodes[start + 1:end]
        inside = set(body) | set(inputs)
        block = self.capture.module.get_submodule(path)
        relative = {id(t): name for name, t in [*block.named_parameters(remove_duplicate=False),
                                                 *block.named_buffers(remove_duplicate=False)]}
        outputs = set(exits.values())
        weights = {}
        for node in body:
            if node.op != "call_function" or node.target in _MARKERS:
                raise Fallback(f"{path}: {node.op} node {node.name} inside the block (a constant or submodule the "
                               "copies would share)")
            for arg in node.all_input_nodes:
                if arg not in inside:
                    weights[arg] = self._weight(path, node, arg, relative)
            for user in node.users:
                if user not in inside and user not in outputs:
                    raise Fallback(f"{path}: {node.name} is read after the block by {user.name}, not through its "
                                   "outputs (state kept between calls?)")
        for exit_ in exits.values():
            arg = exit_.args[0]
            if arg not in inside:
                weights[arg] = self._weight(path, exit_, arg, relative)
        _check_no_writes(path, body, set(body))
        return enters, exits, inputs, body, weights

    def _weight(self, path, node, arg, relative):
        """The traced instance's name for the weight `arg` (None: a weight outside the block, shared by all)."""
        if arg.op != "placeholder" or self.kind.get(arg) not in ("PARAMETER", "BUFFER"):
            raise Fallback(f"{path}: {node.name} reads {arg.name}, a value the block was not passed")
        target = next(s.target for s in self.ep.graph_signature.input_specs if s.arg.name == arg.name)
        tensor = self._tensor(target)
        return relative.get(id(tensor))

    def _tensor(self, fqn):
        module = self.capture.module
        try:
            return module.get_parameter(fqn)
        except AttributeError:
            return module.get_buffer(fqn)

    # --- a copy ---------------------------------------------------------------------------------------------------
    def _copy(self, call, calls, body):
        enters, exits, inputs, nodes, weights = body
        graph = self.graph
        first = next(iter(calls.values()))
        block = self.capture.module.get_submodule(call.path)
        named = dict([*block.named_parameters(remove_duplicate=False), *block.named_buffers(remove_duplicate=False)])
        given = first.args[0]
        env = {marker: given[i] for marker, i in inputs.items()}
        for weight, name in weights.items():
            env[weight] = weight if name is None else self.state_node[self.fqn_of[id(named[name])]]
        stack_of = _StackMap(call.traced.path, call.path, first.meta.get("nn_module_stack") or {})
        trace_of = self._trace_map(next(iter(enters.values())).meta.get("stack_trace"), first.meta.get("stack_trace"))
        torch_fn = _TorchFn(call)
        symbols = _Symbols(self.ep, call, nodes) if any(n for _, n in call.traced.symbols) else None
        with graph.inserting_before(first):
            for template in nodes:
                new = graph.create_node(template.op, template.target, fx.map_arg(template.args, env.__getitem__),
                                        fx.map_arg(template.kwargs, env.__getitem__),
                                        "meshdit_copy_" + _NAME.match(template.name).group(1), template.type)
                meta = new.meta = copy.copy(template.meta)
                if "nn_module_stack" in meta:
                    meta["nn_module_stack"] = stack_of(meta["nn_module_stack"])
                if meta.get("stack_trace"):
                    meta["stack_trace"] = trace_of(meta["stack_trace"])
                if "torch_fn" in meta and not _made_by_export(template):
                    meta["torch_fn"] = torch_fn(meta["torch_fn"])
                if symbols is not None:
                    symbols.rewrite(meta)
                env[template] = new
                self.copied.add(new)
        for index, node in calls.items():
            source = exits[index].args[0]
            node.replace_all_uses_with(env[source] if isinstance(source, fx.Node) else source)
            graph.erase_node(node)

    def _clean(self, trace: str) -> str:
        """The stack trace without this package's wrapper frames (the whole-model export has none)."""
        if trace not in self._traces:
            lines = trace.split("\n")
            kept, drop = [], False
            for line in lines:
                if line.lstrip().startswith('File "'):
                    drop = line.lstrip().startswith(f'File "{_OWN_FILE}"')
                if not drop:
                    kept.append(line)
            self._traces[trace] = "\n".join(kept).strip()
        return self._traces[trace]

    def _trace_map(self, traced_site, call_site):
        """A traced op's stack trace for the copy: the copy's call site, then the frames inside the block."""
        prefix = self._clean(traced_site) if traced_site else ""
        site = self._clean(call_site) if call_site else ""
        memo: dict = {}

        def rewrite(trace):
            if trace not in memo:
                clean = self._clean(trace)
                memo[trace] = site + clean[len(prefix):] if prefix and clean.startswith(prefix) else clean
            return memo[trace]

        return rewrite


class _TorchFn:
    """torch_fn metadata of a copy's nodes, numbered as the whole-model trace numbers them: the trace skipped the
    counts the traced block made at this call (capture_blocks._skip_counts); a copied node takes the count at the
    same offset from this call's start as its template has from the traced block's start."""

    def __init__(self, call):
        traced = call.traced
        labels: dict = {}
        for fn in traced.fns_made:
            labels.setdefault(f"{fn.__class__.__name__}.{fn.__name__}", []).append(fn)
        self.fns = {label: call.fns_at[fns[0]] - traced.fns_before.get(fns[0], 0)
                    for label, fns in labels.items() if len(fns) == 1}

    def __call__(self, value):
        name, label = value
        if label not in self.fns:
            return value
        stem, count = name.rsplit("_", 1)
        return (f"{stem}_{int(count) + self.fns[label]}", label)


_NAME = re.compile(r"^([a-zA-Z_][0-9a-zA-Z_]*?)(?:_(\d+))?$")  # as torch.fx's namespace splits a name


def _made_by_export(node) -> bool:
    """A node torch.export's passes made after the trace (runtime asserts on a data-dependent size and the size
    arithmetic they read, tensor metadata checks). Such nodes carry `custom` metadata, a torch_fn count of their own
    (always 0) and names numbered after all the trace's nodes of their name (capture_splice._renumber)."""
    return "custom" in node.meta


class _Symbols:
    """A copy's own unbacked symbols. The traced block made u0 (say) from data; the whole-model export gives each
    instance's the next number in call order, which capture_blocks._skip_symbols kept for this call. Each is
    registered with the export's shape environment and range constraints (the traced symbol's range) and replaces
    the traced one in the copied values, their tensor metadata and bindings."""

    def __init__(self, ep, call, body):
        from torch.fx.experimental.symbolic_shapes import free_unbacked_symbols
        from torch.utils._sympy.symbol import SymT, make_symbol

        self.map = {}
        int_, float_ = ((SymT.UNBACKED_INT, {"integer": True}), (SymT.UNBACKED_FLOAT, {}))
        for (first, count), at, (kind, assume) in zip(call.traced.symbols, call.symbols_at, (int_, float_)):
            for i in range(count):
                self.map[make_symbol(kind, first + i, **assume)] = make_symbol(kind, at + i, **assume)
        self.free = free_unbacked_symbols
        self.env = next((_shape_env_of(n.meta["val"]) for n in body if self.free(n.meta.get("val"))), None)
        if self.env is None:
            raise Fallback(f"{call.traced.path} makes a data-dependent size no value of its graph holds")
        for old, new in self.map.items():
            for table in (self.env.var_to_range, self.env.var_to_range_sloc, ep.range_constraints):
                if old in table:
                    table[new] = table[old]
            if old in self.env.size_like:
                self.env.size_like.add(new)

    def rewrite(self, meta: dict) -> None:
        if not self.free(meta.get("val")):
            return
        meta["val"] = self._value(meta["val"])
        if "tensor_meta" in meta:
            from torch.fx.passes.shape_prop import _extract_tensor_metadata

            meta["tensor_meta"] = _extract_tensor_metadata(meta["val"])
        if "unbacked_bindings" in meta:
            meta["unbacked_bindings"] = {self.map.get(s, s): path for s, path in meta["unbacked_bindings"].items()}

    def _value(self, value):
        if isinstance(value, (list, tuple)):
            return type(value)(self._value(v) for v in value)
        if isinstance(value, FakeTensor):
            with value.fake_mode:
                return torch.empty_strided([self._value(d) for d in value.shape],
                                           [self._value(d) for d in value.stride()],
                                           dtype=value.dtype, device=value.device)
        if isinstance(value, torch.SymBool):
            return self.env.create_symboolnode(value.node.expr.xreplace(self.map))
        if isinstance(value, torch.SymInt):
            return self.env.create_symintnode(value.node.expr.xreplace(self.map), hint=None)
        if isinstance(value, torch.SymFloat):
            return self.env.create_symfloatnode(value.node.expr.xreplace(self.map), hint=None)
        return value


def _shape_env_of(value):
    if isinstance(value, (list, tuple)):
        return next((env for env in map(_shape_env_of, value) if env is not None), None)
    if isinstance(value, (torch.SymInt, torch.SymFloat, torch.SymBool)):
        return value.node.shape_env
    mode = getattr(value, "fake_mode", None)
    return getattr(mode, "shape_env", None)


def _order_symbols(ranges: dict) -> None:
    """Range constraints in the order the whole-model export makes its symbols: inputs' first, then unbacked ones
    by number (the copies' symbols were added after every traced one)."""
    from torch.utils._sympy.symbol import SymT, symbol_is_type

    def order(item):
        symbol = item[0]
        for rank, kind in enumerate((SymT.UNBACKED_INT, SymT.UNBACKED_FLOAT), start=1):
            if symbol_is_type(symbol, kind):
                return rank, int(re.search(r"\d+$", symbol.name).group())
        return 0, 0

    items = sorted(ranges.items(), key=order)
    ranges.clear()
    ranges.update(items)


_ASSERT = re.compile(r"^Runtime assertion failed for expression (.*) on node '(.*)'$", re.S)


def _assert_messages(graph) -> None:
    """A runtime assert's message names its condition's node and expression, as torch.export writes it; a copy's
    condition has another symbol, and _renumber may have renamed any condition."""
    for node in graph.nodes:
        if node.target is not torch.ops.aten._assert_scalar.default or len(node.args) < 2:
            continue
        cond, message = node.args[0], node.args[1]
        if not isinstance(cond, fx.Node) or not isinstance(message, str) or not _ASSERT.match(message):
            continue
        value = cond.meta.get("val")
        expr = value.node.expr if isinstance(value, torch.SymBool) else _ASSERT.match(message).group(1)
        node.args = (cond, f"Runtime assertion failed for expression {expr} on node '{cond.name}'", *node.args[2:])


class _StackMap:
    """nn_module_stack of a copied op: the opaque call's stack (which ends at the copied instance), then the traced
    op's entries below the traced instance with their paths moved to the copied instance."""

    def __init__(self, traced_path: str, path: str, call_stack: dict):
        self.traced, self.path, self.call_stack = traced_path, path, call_stack
        self.memo: dict = {}

    def __call__(self, stack: dict) -> dict:
        key = tuple(stack.items())
        if key not in self.memo:
            items = list(stack.items())
            at = max((i for i, (_, (p, _c)) in enumerate(items) if p == self.traced), default=None)
            if at is None:
                self.memo[key] = dict(stack)
            else:
                new = dict(self.call_stack)
                for k, (p, cls) in items[at + 1:]:
                    moved = self.path + p[len(self.traced):]
                    suffix = re.search(r"@\d+$", k)
                    new["L__self__" + moved + (suffix.group(0) if suffix else "")] = (moved, cls)
                self.memo[key] = new
        return dict(self.memo[key])


def _check_no_writes(path, body, own):
    """A block that writes in place into its inputs or weights would be copied with aliasing the traced instance
    had and another may not (or with a write the export must list as a buffer mutation): not spliced."""
    for node in body:
        target = node.target
        if not isinstance(target, torch._ops.OpOverload) or not target._schema.is_mutable:
            continue
        for i, arg in enumerate(target._schema.arguments):
            value = node.args[i] if i < len(node.args) else node.kwargs.get(arg.name)
            if arg.alias_info is not None and arg.alias_info.is_write and isinstance(value, fx.Node):
                if _origin(value) not in own:
                    raise Fallback(f"{path}: {node.name} ({target}) writes in place into a block input or weight")


def _origin(node):
    """The tensor a view was taken of (following view ops and the getitems of multi-output views)."""
    while node.op == "call_function":
        target = node.target
        if target is operator.getitem:
            node = node.args[0]
        elif isinstance(target, torch._ops.OpOverload) and target._schema.returns and \
                target._schema.returns[0].alias_info is not None and isinstance(node.args[0], fx.Node):
            node = node.args[0]
        else:
            break
    return node


def _index(name: str):
    base, number = _NAME.match(name).group(1, 2)
    return base, int(number) if number else 0


def _renumber(graph, copies: set, names_made: dict) -> None:
    """Name the copies' nodes and renumber the rest as the whole-model export names them. torch.export numbers the
    nodes of each name base in graph order (in the trace, or again when a pass rebuilds the graph, as its autocast
    regions do), skipping only numbers of nodes that left the graph (moved into a region's subgraph). So each
    copied node takes the number after the last one of its base before it, and every later node of that base moves
    up by the copies' nodes before it; gaps the export left stay where they were. Nodes export's passes made after
    the trace (_made_by_export) are numbered the same way among themselves, after every name the trace gave their
    base: they also move up by all the names the copied blocks would have made in the trace (names_made: base ->
    count over all copies, counting nodes a pass then erased, such as a size read a runtime assert replaced)."""
    shift: dict = {}  # (base, made by export) -> how far that base and kind has moved up so far
    last: dict = {}  # (base, made by export) -> the last number given

    def moved(base, late):
        return shift.get((base, late), names_made.get(base, 0) if late else 0)

    renamed = []
    for node in graph.nodes:
        if node.op == "placeholder":
            continue
        late = _made_by_export(node)
        if node in copies:
            base = _NAME.match(node.name.removeprefix("meshdit_copy_")).group(1)
            key = (base, late)
            new = last.get(key, first_number(base) - 1) + 1
            shift[key] = moved(base, late) + 1
        else:
            base, index = _index(node.name)
            key = (base, late)
            if not moved(base, late):
                last[key] = max(last.get(key, -1), index)
                continue
            new = index + moved(base, late)
        last[key] = new
        renamed.append((node, base, new))
    names = graph._graph_namespace
    for i, (node, _, _) in enumerate(renamed):  # free the names first (a rename never frees the old one)
        names._used_names.discard(node.name)
        node._rename(f"meshdit_renumbered_{i}")
    for node, base, new in renamed:
        names._used_names.discard(node.name)
        node._rename(f"{base}_{new}" if new else base)


def _lazy_code(ep) -> None:
    """The graph changed, so the graph module's Python code is stale. No stage runs that code (the passes walk the
    graph), and generating it for a full-size model costs about a second: the graph module becomes torch's lazy
    kind, which generates its code when it is first called or its code is read."""
    from torch.fx._lazy_graph_module import _LazyGraphModule

    old = ep.graph_module
    lazy = _LazyGraphModule(old, old.graph)  # copies the submodules and attributes the graph reads
    lazy.meta.update(old.meta)
    ep._graph_module = lazy  # ExportedProgram has no setter for it


def _rename_outputs(ep):
    """Output specs name the graph's output nodes; a block's output returned by the model is now another node."""
    output = next(n for n in reversed(ep.graph.nodes) if n.op == "output")
    values = output.args[0] if isinstance(output.args[0], (tuple, list)) else (output.args[0],)
    for spec, value in zip(ep.graph_signature.output_specs, values):
        if isinstance(value, fx.Node) and hasattr(spec.arg, "name"):
            spec.arg.name = value.name
