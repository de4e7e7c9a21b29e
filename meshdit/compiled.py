"""A lowered transformer as a drop-in part of a diffusers pipeline.

    pipe.transformer = meshdit.compile_transformer(pipe.transformer, "2x4 cfg2@1 sp2@0 tp2@1")
    image = pipe(prompt, num_inference_steps=28).images[0]          # the pipeline itself is unchanged

No example inputs are given: the first call with an input signature (tensor shapes and dtypes, the structure and
values of non-tensor arguments) lowers the module with that call's arguments as the example, which also checks
the program against the module on them (lower(check=True): a wrong number raises NumericsError), then runs the
program. Later calls with the same signature reuse it and run traced, as TT-DiT runs its denoising steps. A
static input (Flux's position ids, given in static_inputs, or an input a data-dependent op reads) is baked into its
program, so a call with another value lowers a program of its own. With cfg on the mesh the pipeline's
[unconditional, conditional] batch is split over the two submeshes by the program.

The wrapper answers what pipelines read of their transformer (config, dtype, device, cache_context, ...) from
the torch module it wraps, and returns what the module returns (return_dict honoured, outputs in the module's
dtype and on the device of its inputs).
"""

from __future__ import annotations

import inspect

import torch
import torch.utils._pytree as pytree

from .runtime.program import NOT_RECORDED


def _leaf_key(value):
    if isinstance(value, torch.Tensor):
        return ("tensor", tuple(value.shape), value.dtype)
    return ("value", type(value).__name__, repr(value))


def signature_key(kwargs: dict) -> tuple:
    """What a program is specialised on, apart from static input values: the arguments' structure, their tensors'
    shapes and dtypes, and their non-tensor values."""
    leaves, spec = pytree.tree_flatten(kwargs)
    return str(spec), tuple(_leaf_key(leaf) for leaf in leaves)


class CompiledTransformer(torch.nn.Module):
    """A torch module whose forward runs meshdit programs lowered from `module` (see the module docstring)."""

    def __init__(self, module: torch.nn.Module, mesh_config="1x1", *, backend: str = "sim", trace: bool = True,
                 **lower_options):
        super().__init__()
        # not a registered submodule: the pipeline's .to() and state_dict() see the wrapper, whose weights live
        # in its programs; attribute reads fall through to the module (__getattr__)
        object.__setattr__(self, "module", module)
        self.mesh_config = mesh_config
        self.backend = backend
        self.trace = trace
        self.lower_options = lower_options
        self.programs: dict = {}  # signature_key -> [Program] (one per set of static input values)
        self.calls = 0
        forward = inspect.signature(module.forward)
        self._forward_signature = forward
        param = forward.parameters.get("return_dict")
        self._default_return_dict = bool(param.default) if param is not None and \
            param.default is not inspect.Parameter.empty else False

    def __getattr__(self, name):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(object.__getattribute__(self, "module"), name)

    def program_for(self, kwargs: dict):
        """The program this call runs on, lowering one when no program of its signature accepts it; and whether
        it was lowered by this call."""
        import meshdit

        candidates = self.programs.setdefault(signature_key(kwargs), [])
        for program in candidates:
            if program.specialization_mismatch(kwargs) is None:
                return program, False
        program = meshdit.lower(self.module, self.mesh_config, kwargs, **self.lower_options)
        candidates.append(program)
        return program, True

    def forward(self, *args, **kwargs):
        bound = self._forward_signature.bind_partial(*args, **kwargs)
        kwargs = dict(bound.arguments)
        if any(p.kind == p.VAR_KEYWORD for p in self._forward_signature.parameters.values()):
            for name, p in self._forward_signature.parameters.items():
                if p.kind == p.VAR_KEYWORD:
                    kwargs.update(kwargs.pop(name, {}))
        return_dict = kwargs.pop("return_dict", self._default_return_dict)
        self.calls += 1
        program, new = self.program_for(kwargs)
        if return_dict and program.output_structure is NOT_RECORDED:
            from .capture import output_structure

            program.output_structure = output_structure(self.module, kwargs)
        # a new program has just run once in its check; its next call is its first step and captures the trace
        outputs = program(backend=self.backend, trace=self.trace and not new, return_dict=return_dict, **kwargs)
        device = next((v.device for v in pytree.tree_leaves(kwargs) if isinstance(v, torch.Tensor)), None)
        if device is not None and device.type != "cpu":
            outputs = pytree.tree_map(lambda v: v.to(device) if isinstance(v, torch.Tensor) else v, outputs)
        return outputs

    def close(self):
        """Release every program's mesh and traces."""
        for programs in self.programs.values():
            for program in programs:
                program.close()

    def extra_repr(self) -> str:
        lowered = sum(len(p) for p in self.programs.values())
        return f"{type(self.module).__name__} on {self.mesh_config!r}, {lowered} program(s) lowered"


def compile_transformer(module: torch.nn.Module, mesh_config="1x1", *, backend: str = "sim", trace: bool = True,
                        **lower_options) -> CompiledTransformer:
    """`module` as a drop-in transformer for a diffusers pipeline, running meshdit programs on `mesh_config`.
    lower_options go to meshdit.lower (dtype, weight_dtype, static_inputs, residual, check, ...); backend is "sim"
    (the simulated mesh) or "ttnn"; trace=False runs every call op by op."""
    return CompiledTransformer(module, mesh_config, backend=backend, trace=trace, **lower_options)
