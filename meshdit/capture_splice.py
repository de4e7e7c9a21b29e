"""Splice: put a copy of each traced block's ops where the export holds an opaque call (see capture_blocks.py).

The traced instance's ops lie between its enter and exit markers in the exported graph (a trace records ops in
call order). A copy for another instance maps the enter marker's outputs to that call's inputs, the traced
instance's weights to the same-named weights of the copied instance, and rewrites the metadata later stages read:
the module stack (paths of the copied instance, under the call site's stack), the stack trace (the call site's
frames, then the block's own) and torch_fn numbers. Node names are given last, over the whole graph (_renumber),
since torch.export numbers names in graph order and a copy shifts every later name of its bases.
"""

from __future__ import annotations

import copy
import operator
import re

import torch
import torch.fx as fx

from .capture_blocks import _MARKERS, _OWN_FILE, Fallback

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
        _renumber(graph, self.copied)
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
                if "torch_fn" in meta:
                    meta["torch_fn"] = torch_fn(meta["torch_fn"])
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


def _renumber(graph, copies: set) -> None:
    """Name the copies' nodes and renumber the rest as the whole-model export names them. torch.export numbers the
    nodes of each name base in graph order (in the trace, or again when a pass rebuilds the graph, as its autocast
    regions do), skipping only numbers of nodes that left the graph (moved into a region's subgraph). So each
    copied node takes the number after the last one of its base before it, and every later node of that base moves
    up by the copies' nodes before it; gaps the export left stay where they were."""
    shift: dict = {}  # base -> copied nodes of that base so far
    last: dict = {}  # base -> the last number given
    renamed = []
    for node in graph.nodes:
        if node.op == "placeholder":
            continue
        if node in copies:
            base = node.name.removeprefix("meshdit_copy_")
            base = _NAME.match(base).group(1)
            new = last.get(base, _first(base) - 1) + 1
            shift[base] = shift.get(base, 0) + 1
        else:
            base, index = _index(node.name)
            if not shift.get(base):
                last[base] = max(last.get(base, -1), index)
                continue
            new = index + shift[base]
        last[base] = new
        renamed.append((node, base, new))
    names = graph._graph_namespace
    for i, (node, _, _) in enumerate(renamed):  # free the names first (a rename never frees the old one)
        names._used_names.discard(node.name)
        node._rename(f"meshdit_renumbered_{i}")
    for node, base, new in renamed:
        names._used_names.discard(node.name)
        node._rename(f"{base}_{new}" if new else base)


def _index(name: str):
    base, number = _NAME.match(name).group(1, 2)
    return base, int(number) if number else 0


def _first(base: str) -> int:
    """The first number of a base: 0 (the bare name), or 1 when torch.fx never gives the bare name to a node (a
    Python builtin or keyword: `slice_1`)."""
    from torch.fx.graph import _illegal_names

    return 1 if base in _illegal_names else 0


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
