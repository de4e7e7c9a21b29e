"""The op registry: every simulated op under the name ttnn spells it, recorded while its mesh captures a trace.

    @sim_op("linear")
    @sim_op("transformer.scaled_dot_product_attention")
    @sim_op("experimental.all_gather_async")

register an implementation under its dotted ttnn name and return it wrapped for trace recording. OPS is the one
list of what the simulation runs as an op: it is what a trace records, what the package exposes as ops (surface()
builds `ttnn.linear`, `ttnn.transformer.*`, `ttnn.experimental.*` from it), and what tests/test_sim_registry.py
checks against the ttnn signatures meshdit emits. Host and device management (opening meshes, moving tensors,
tensor files, the trace calls themselves) is not registered, so it is never recorded.
"""

from __future__ import annotations

import functools
import sys
from types import SimpleNamespace

from . import trace

OPS: dict = {}  # ttnn name ("linear", "experimental.all_gather_async") -> implementation
_RECORDING: dict = {}  # ttnn name -> the implementation wrapped for recording: what a program calls


def sim_op(name, *aliases):
    """Register the decorated implementation as the simulated ttnn op `name` (and as each alias, e.g. "mul" for
    "multiply"; a trace names an op as it was called). Returns the recording wrapper of `name`."""
    def register(fn):
        for each in (name,) + aliases:
            if each in OPS:
                raise ValueError(f"simulated op {each!r} is registered twice")
            if each.count(".") > 1:
                raise ValueError(f"simulated op {each!r}: ttnn's op namespaces are one level deep")
            OPS[each], _RECORDING[each] = fn, _recorded_op(each, fn)
        return _RECORDING[name]

    return register


def _recorded_op(name, fn):
    """fn, recorded into the trace its mesh is capturing (if any) each time it is called."""
    @functools.wraps(fn)
    def op(*args, **kwargs):
        capturing = None
        if trace.op_depth[0] == 0:
            device = trace.device_of(list(args) + list(kwargs.values()))
            capturing = device.recording if device is not None else None
        trace.op_depth[0] += 1
        try:
            result = fn(*args, **kwargs)
        finally:
            trace.op_depth[0] -= 1
        if capturing is not None:
            capturing.ops.append(trace.Recorded(name, fn, args, dict(kwargs), trace.output_tensors(result)))
        return result

    return op


def surface() -> dict:
    """The registered ops as the package exposes them: an undotted op under its name, a dotted one in a namespace
    per prefix (`transformer`, `experimental`), so that `ttnn.transformer.scaled_dot_product_attention` is spelled
    here as in ttnn. Each name is bound to the recording wrapper."""
    names, spaces = {}, {}
    for name, op in _RECORDING.items():
        prefix, _, leaf = name.rpartition(".")
        if prefix:
            spaces.setdefault(prefix, {})[leaf] = op
        else:
            names[name] = op
    names.update({prefix: SimpleNamespace(**ops) for prefix, ops in spaces.items()})
    return names


def public_op(name):
    """The op `name` as a program calls it at this moment: looked up on the package (`ttnn.all_reduce`), not bound
    at import. An op built on another (matmul on linear, the async collectives on the sync ones) calls it through
    here, so an op replaced on the package (a test monkeypatching sim.all_reduce to break the sum) is replaced on
    every path a program takes to it."""
    target = sys.modules[__package__]
    for part in name.split("."):
        target = getattr(target, part)
    return target
