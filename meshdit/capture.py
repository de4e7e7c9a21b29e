"""Stage 1, capture: torch.export of the unmodified module into an ATen FX graph.

    captured = capture(module, example_inputs)

`example_inputs` is the dict of keyword arguments the module's forward takes. `return_dict=False` is set when the
forward accepts it (also over a return_dict=True the user passed), so diffusers models return a plain tuple. A module
built on the `meta` device (with meta example inputs) captures without allocating any weight, which is how full-size
models are planned.

The export traces each distinct repeated block once (capture_blocks.py): the other instances of a module list's
blocks are opaque calls in the trace, replaced afterwards by copies of the traced instance's ops with their own
weights, module paths, source lines and node names. The graph is the whole-model export's; where that cannot be
vouched for, the whole model is exported (`CapturedModel.blocks_fallback` says why).
"""

from __future__ import annotations

import contextlib
import inspect
import time
import types
from dataclasses import dataclass, field

import torch
import torch.fx.traceback as fx_traceback
import torch.utils._pytree as pytree

from .errors import CaptureError


@dataclass
class CapturedModel:
    """What capture hands to the passes: the exported program plus what it was captured from."""

    exported: torch.export.ExportedProgram
    example_inputs: dict  # keyword -> value, exactly as passed to forward (return_dict=False included)
    model_name: str  # class name, for reports only; no stage branches on it
    on_meta: bool  # weights are meta tensors: plan only, load real weights later
    seconds: float
    param_count: int
    timings: dict = field(default_factory=dict)
    method: str = "torch.export"  # or the trace on example values torch.export's refusal fell back to
    # repeated blocks traced once (capture_blocks.py): traced instance -> instances its ops were copied to; empty
    # when the whole model was traced, and then blocks_fallback says why (None: no repeated blocks)
    traced_blocks: dict = field(default_factory=dict)
    blocks_fallback: str | None = None

    @property
    def tensor_input_names(self) -> list[str]:
        return [k for k, v in self.example_inputs.items() if isinstance(v, torch.Tensor)]


@contextlib.contextmanager
def _meta_safe_autocast():
    """Let model code open `torch.autocast(x.device.type, ...)` while x is on meta (torch rejects 'meta').

    Autocast means nothing without real kernels; it is captured as a cpu autocast region, which the passes inline.
    """
    original = torch.autocast

    class MetaSafeAutocast(original):
        def __init__(self, device_type, *args, **kwargs):
            super().__init__("cpu" if device_type == "meta" else device_type, *args, **kwargs)

    torch.autocast = MetaSafeAutocast
    try:
        yield
    finally:
        torch.autocast = original


def _with_return_dict(module: torch.nn.Module, example_inputs: dict) -> dict:
    """The inputs with return_dict=False when forward takes it, whatever the user passed: the graph always returns
    the module's plain tuple (a return_dict=True given at lower() does not change what is captured)."""
    inputs = dict(example_inputs)
    try:
        params = inspect.signature(module.forward).parameters
    except (TypeError, ValueError):
        params = {}
    if "return_dict" in params:
        inputs["return_dict"] = False
    return inputs


def capture(module: torch.nn.Module, example_inputs: dict, blocks_once: bool = True) -> CapturedModel:
    """Export `module` with keyword `example_inputs`; raise CaptureError naming the cause on failure.

    blocks_once: trace each distinct repeated block once and copy its ops to the other instances (the graph the
    whole-model export gives, in a fraction of the time); False traces every instance."""
    if not isinstance(module, torch.nn.Module):
        raise CaptureError(f"capture expects a torch.nn.Module, got {type(module).__name__}")
    if not isinstance(example_inputs, dict) or not example_inputs:
        raise CaptureError(
            "example_inputs must be a non-empty dict of the keyword arguments forward() takes, "
            f"got {type(example_inputs).__name__}"
        )
    try:
        accepted = inspect.signature(module.forward).parameters
    except (TypeError, ValueError):
        accepted = None
    if accepted is not None and not any(p.kind == p.VAR_KEYWORD for p in accepted.values()):
        unknown = sorted(set(example_inputs) - set(accepted))
        if unknown:
            raise CaptureError(
                f"example_inputs has keys {unknown} that {type(module).__name__}.forward does not take; "
                f"it takes {list(accepted)}"
            )
    inputs = _with_return_dict(module, example_inputs)
    devices = {p.device.type for p in module.parameters()}
    on_meta = devices == {"meta"}
    input_devices = {v.device.type for v in inputs.values() if isinstance(v, torch.Tensor)}
    if on_meta and input_devices - {"meta"}:
        raise CaptureError(
            "the module's weights are on the meta device but example inputs are on "
            f"{sorted(input_devices - {'meta'})}; build the inputs on meta too (torch.empty(..., device='meta'))"
        )
    was_training = module.training
    module.eval()  # inference graph: dropout becomes a no-op the passes can drop
    start = time.perf_counter()
    method = "torch.export"
    try:
        if not on_meta:
            # one real call first: a model that builds a cache in forward (a RoPE table per size) then holds real
            # tensors there; traced with an empty cache, Z-Image's graph came out at PCC 0.91 against the module
            with torch.no_grad():
                module(**inputs)
        with torch.no_grad(), (_meta_safe_autocast() if on_meta else contextlib.nullcontext()), \
                _module_state_kept(module):
            exported, traced_blocks, blocks_fallback = _export(module, inputs, blocks_once)
    except Exception as exc:  # torch.export raises many types; report the first line with context
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        failure = f"torch.export failed on {type(module).__name__}: {type(exc).__name__}: {first}"
        if on_meta:
            module.train(was_training)
            hint = (" (a data-dependent value: such a model is captured by tracing its real example inputs, which a "
                    "model on meta does not have; lower it with real weights and inputs)" if _data_dependent(exc)
                    else "")
            raise CaptureError(f"{failure}{hint}. Check that example_inputs match forward()'s arguments (names, "
                               "shapes, dtypes, device).") from exc
        # torch.export traces symbolically and refuses what it cannot know while tracing (a guard on a mask's
        # length, a SymInt used as a key, a tensor read with .numpy()). meshdit specialises on the example values
        # anyway: trace the module on them, which fixes those values; the inputs they are read from become static
        try:
            with torch.no_grad():
                exported = traced_program(module, inputs)
        except Exception as trace_exc:  # noqa: BLE001 - both failures are reported
            module.train(was_training)
            second = str(trace_exc).strip().splitlines()[0] if str(trace_exc).strip() else ""
            raise CaptureError(
                f"{failure}; the trace on the example values failed too: {type(trace_exc).__name__}: {second}. "
                "Check that example_inputs match forward()'s arguments (names, shapes, dtypes, device)."
            ) from exc
        method = f"trace on example values (torch.export: {type(exc).__name__}: {first[:120]})"
    finally:
        module.train(was_training)
    seconds = time.perf_counter() - start
    if method != "torch.export":
        traced_blocks, blocks_fallback = {}, None
    return CapturedModel(
        exported=exported,
        example_inputs=inputs,
        model_name=type(module).__name__,
        on_meta=on_meta,
        seconds=seconds,
        param_count=sum(p.numel() for p in module.parameters()),
        timings={"torch.export": seconds},
        method=method,
        traced_blocks=traced_blocks,
        blocks_fallback=blocks_fallback,
    )


def _export(module: torch.nn.Module, inputs: dict, blocks_once: bool):
    """torch.export of the module, tracing each repeated block once when that applies (capture_blocks.py), else the
    whole model. Returns (exported program, traced instance -> copied instances, why the whole model was traced)."""
    fallback = None
    if blocks_once:
        from .capture_blocks import BlockCapture, Fallback

        try:
            # its own state guard: an attempt given up half-way must not leave caches of its fake tensors to the
            # whole-model export
            with _module_state_kept(module), BlockCapture(module) as blocks:
                if blocks.active:
                    exported = torch.export.export(module, (), inputs, strict=False)
                    blocks.splice(exported)
                    return exported, blocks.summary(), "; ".join(blocks.in_place.values()) or None
        except Fallback as exc:
            fallback = str(exc)
        except Exception as exc:  # noqa: BLE001 - the whole-model export below reports its own failure
            if _data_dependent(exc):
                # a guard on a value in the model's own code or in a block's first instance, which the whole-model
                # export traces alike: it would refuse the same way, so the trace on example values comes next
                raise
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            fallback = f"torch.export with blocks traced once failed: {type(exc).__name__}: {first[:200]}"
    return torch.export.export(module, (), inputs, strict=False), {}, fallback


# --- fallback: a trace on the example values ----------------------------------------------------------------------
def _data_dependent(exc: BaseException) -> bool:
    """torch.export refused a guard on a value it cannot know while tracing (a mask's sum used as a length)."""
    text = f"{type(exc).__name__}: {exc}"
    return "DataDependent" in text or "data-dependent" in text or "data dependent" in text


@dataclass
class _Named:
    name: str


@dataclass
class _InputSpec:
    kind: _Named  # PARAMETER | BUFFER | USER_INPUT, as torch.export's InputKind names them
    arg: _Named  # the placeholder
    target: str | None  # the state dict key of a parameter or buffer


class TracedProgram:
    """What the passes read of a torch.export ExportedProgram (graph, signature, state dict, output structure),
    from a pre-dispatch ATen trace of the module on its real example inputs (make_fx in real mode).

    Values the model computes from its inputs and uses as Python numbers (a length from `mask.sum().item()`, sizes
    from `.tolist()`) are fixed at their example values. The trace keeps the ops that read them (`item`, `nonzero`,
    ...), so specialisation finds the inputs upstream and makes them static: a call with a different value is
    refused by name. Module paths (for block detection and reports) are recorded by forward hooks."""

    def __init__(self, gm, input_specs: list, state_dict: dict, out_spec):
        self.graph_module = gm
        self.graph = gm.graph
        self.graph_signature = types.SimpleNamespace(input_specs=input_specs)
        self.state_dict = state_dict
        self.constants: dict = {}
        self.call_spec = types.SimpleNamespace(out_spec=out_spec)


def traced_program(module: torch.nn.Module, inputs: dict) -> TracedProgram:
    from torch.fx.experimental.proxy_tensor import make_fx

    state = dict(module.named_parameters())
    state.update(dict(module.named_buffers()))
    keys = list(state)
    leaves, in_spec = pytree.tree_flatten_with_path(((), inputs))
    tensor_at = [i for i, (_, v) in enumerate(leaves) if isinstance(v, torch.Tensor)]
    outputs: dict = {}

    def run(*flat):
        params = dict(zip(keys, flat[:len(keys)]))
        values = [v for _, v in leaves]
        for i, t in zip(tensor_at, flat[len(keys):]):
            values[i] = t
        args, kwargs = pytree.tree_unflatten(values, in_spec)
        out = torch.func.functional_call(module, params, args, kwargs)
        flat_out, outputs["spec"] = pytree.tree_flatten(out)
        return flat_out

    with _module_paths(module), fx_traceback.preserve_node_meta():
        gm = make_fx(run, tracing_mode="real", pre_dispatch=True, record_stack_traces=True,
                     _error_on_data_dependent_ops=False)(*state.values(), *(leaves[i][1] for i in tensor_at))
    graph = gm.graph
    placeholders = [n for n in graph.nodes if n.op == "placeholder"]
    # tensors the forward makes from Python values (torch.tensor(...)) are attributes of the trace: constants
    constants, constant_specs = {}, []
    for node in [n for n in graph.nodes if n.op == "get_attr"]:
        value = getattr(gm, node.target)
        with graph.inserting_before(placeholders[0] if placeholders else None):
            holder = graph.placeholder("c_" + node.target)
        node.replace_all_uses_with(holder)
        graph.erase_node(node)
        constants[holder.name] = value.detach() if isinstance(value, torch.Tensor) else value
        constant_specs.append(_InputSpec(_Named("CONSTANT_TENSOR"), _Named(holder.name), holder.name))
    specs = []
    for key, node in zip(keys, placeholders):
        node._rename("p_" + key.replace(".", "_"))
        kind = "BUFFER" if key in dict(module.named_buffers()) else "PARAMETER"
        specs.append(_InputSpec(_Named(kind), _Named(node.name), key))
    # every leaf of the keyword arguments is a user input, in flattening order, as torch.export lists them (a
    # non-tensor leaf gets an unused placeholder: its value is baked into the trace)
    traced = iter(placeholders[len(keys):])
    anchor = placeholders[-1] if placeholders else None
    for i, (path, _) in enumerate(leaves):
        name = "_".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path[1:])
        if i in tensor_at:
            node = next(traced)
        else:
            with graph.inserting_after(anchor) if anchor is not None else graph.inserting_before():
                node = graph.placeholder(name)
        node._rename(name)
        anchor = node
        specs.append(_InputSpec(_Named("USER_INPUT"), _Named(node.name), None))
    gm.recompile()
    program = TracedProgram(gm, constant_specs + specs, {k: v.detach() for k, v in state.items()}, outputs["spec"])
    program.constants = constants
    return program


@contextlib.contextmanager
def _module_state_kept(module: torch.nn.Module):
    """Undo what tracing writes into the module's own attributes. Some models cache tables in forward (a RoPE cache
    keyed by size); under torch.export those caches fill with fake tensors, and the module's next real call (the
    golden, a fallback trace) then reads them and fails. Attributes (and the containers they hold, one level deep)
    are restored as they were; attributes tracing added are removed."""
    internal = ("_parameters", "_buffers", "_modules")
    saved = []
    for sub in module.modules():
        saved.append((sub, {k: (v, dict(v) if isinstance(v, dict) else list(v) if isinstance(v, list) else None)
                            for k, v in vars(sub).items() if k not in internal}))
    try:
        yield
    finally:
        for sub, state in saved:
            for key in [k for k in vars(sub) if k not in state and k not in internal]:
                del sub.__dict__[key]
            for key, (value, content) in state.items():
                sub.__dict__[key] = value
                if isinstance(value, dict) and (value.keys() != content.keys() or
                                                any(value[k] is not content[k] for k in content)):
                    value.clear()
                    value.update(content)
                elif isinstance(value, list) and (len(value) != len(content) or
                                                  any(a is not b for a, b in zip(value, content))):
                    value[:] = content


@contextlib.contextmanager
def _module_paths(module: torch.nn.Module):
    """Record each op's enclosing module paths as torch.export does (node.meta['nn_module_stack'])."""
    stack: list = []

    def publish():
        fx_traceback.current_meta["nn_module_stack"] = {path: (path, cls) for path, cls in stack}

    def enter(path, cls):
        def hook(mod, args, kwargs):
            stack.append((path, cls))
            publish()
        return hook

    def leave(mod, args, kwargs, out):
        stack.pop()
        publish()

    handles = []
    for path, sub in module.named_modules():
        if path:
            handles.append(sub.register_forward_pre_hook(enter(path, type(sub).__qualname__), with_kwargs=True))
            handles.append(sub.register_forward_hook(leave, with_kwargs=True))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


# --- the module's return_dict=True output -------------------------------------------------------------------------
@dataclass(frozen=True)
class OutputStructure:
    """What a module returns with return_dict=True: its output class and the field each value of its plain tuple
    fills (a diffusers BaseOutput's tuple is its non-None fields in order)."""

    cls: type
    fields: tuple

    def wrap(self, values):
        if len(values) != len(self.fields):
            raise ValueError(f"{self.cls.__name__} has {len(self.fields)} fields set, the program returned "
                             f"{len(values)} values")
        return self.cls(**dict(zip(self.fields, values)))


def output_structure(module: torch.nn.Module, example_inputs: dict) -> OutputStructure | None:
    """The output class a call with return_dict=True gives, found by running forward on fake tensors (shapes only:
    a few seconds at full size, so only when a return_dict=True output is asked for). None when forward returns
    the same with return_dict=True as without (a plain tuple, or no return_dict argument)."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    inputs = {**example_inputs, "return_dict": True}
    with torch.no_grad(), FakeTensorMode(allow_non_fake_inputs=True), _meta_safe_autocast(), \
            _module_state_kept(module):
        out = module(**inputs)
    if isinstance(out, (tuple, list, torch.Tensor)) or out is None:
        return None
    if not hasattr(out, "to_tuple"):
        raise CaptureError(f"{type(module).__name__}.forward(return_dict=True) returns a {type(out).__name__}; "
                           "meshdit rebuilds diffusers/transformers output classes (with to_tuple()) only. Call it "
                           "with return_dict=False")
    return OutputStructure(type(out), tuple(out.keys()))
