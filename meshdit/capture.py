"""Stage 1, capture: torch.export of the unmodified module into an ATen FX graph.

    captured = capture(module, example_inputs)

`example_inputs` is the dict of keyword arguments the module's forward takes. `return_dict=False` is set when the
forward accepts it (also over a return_dict=True the user passed), so diffusers models return a plain tuple. A module
built on the `meta` device (with meta example inputs) captures without allocating any weight, which is how full-size
models are planned.
"""

from __future__ import annotations

import contextlib
import inspect
import time
from dataclasses import dataclass, field

import torch

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


def capture(module: torch.nn.Module, example_inputs: dict) -> CapturedModel:
    """Export `module` with keyword `example_inputs`; raise CaptureError naming the cause on failure."""
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
    try:
        with torch.no_grad(), (_meta_safe_autocast() if on_meta else contextlib.nullcontext()):
            exported = torch.export.export(module, (), inputs, strict=False)
    except Exception as exc:  # torch.export raises many types; report the first line with context
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CaptureError(
            f"torch.export failed on {type(module).__name__}: {type(exc).__name__}: {first}. "
            "Check that example_inputs match forward()'s arguments (names, shapes, dtypes, device)."
        ) from exc
    finally:
        module.train(was_training)
    seconds = time.perf_counter() - start
    return CapturedModel(
        exported=exported,
        example_inputs=inputs,
        model_name=type(module).__name__,
        on_meta=on_meta,
        seconds=seconds,
        param_count=sum(p.numel() for p in module.parameters()),
        timings={"torch.export": seconds},
    )
