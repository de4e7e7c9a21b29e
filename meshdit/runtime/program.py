"""Stage 5, runtime: a lowered Program, callable like the module, runnable on the simulated mesh or real ttnn.

    outputs = program(**kwargs)          # same keywords as the module; returns what the module returns
    outputs = program(return_dict=True, **kwargs)  # the module's output class (when lower() recorded it)
    outputs = program(trace=True, **kwargs)  # the same, replaying a captured trace per cfg branch (see __call__)
    program.source                       # the emitted Python (the program itself)
    program.save("out/sd3")              # program.py + weights.safetensors (+ inputs / golden when known)
    program.pcc_report()                 # PCC of each output against the torch golden

The Program owns its weights, as a device does after upload: host copies are taken at lowering, so freeing or
changing the torch module afterwards does not affect it. A program planned on the meta device gets its weights
from `load_weights(state_dict or safetensors path)`.
"""

from __future__ import annotations

import copy
import os
import shutil
import types
from dataclasses import dataclass

import numpy as np
import torch
import torch.utils._pytree as pytree

from ..errors import ConfigError, InputMismatchError, SpecializationError
from ..lowering.program_ir import ProgramIR
from ..ir.graph import ModelGraph
from . import device, host_ops, weight_cache
from .pcc import pcc

NOT_RECORDED = object()  # Program.output_structure before lower() has looked

PCC_THRESHOLDS = {"float32": 0.9999, "bfloat16": 0.999, "bfloat8_b": 0.99}


@dataclass
class PCCResult:
    output: int
    shape: tuple
    pcc: float
    threshold: float

    @property
    def ok(self) -> bool:
        return self.pcc >= self.threshold

    def __str__(self):
        verdict = "ok" if self.ok else "BELOW THRESHOLD"
        return f"output {self.output} {list(self.shape)}: PCC {self.pcc:.6f} (threshold {self.threshold}) {verdict}"


def _same_argument(lowered, given) -> bool:
    """Whether a non-tensor argument equals the value a program was lowered with: same type (an int and a float
    of equal value count as the same number; a bool is not a number here) and equal."""
    def number(v):
        return isinstance(v, (int, float)) and not isinstance(v, bool)

    if type(lowered) is not type(given) and not (number(lowered) and number(given)):
        return False
    try:
        return bool(lowered == given)
    except Exception:  # values without a plain equality: not provably the same
        return False


class _Tensor:
    """Stands for a tensor in a skeleton: any tensor matches any tensor (shapes are checked per input)."""

    def __eq__(self, other):
        return isinstance(other, _Tensor)

    def __hash__(self):
        return 0

    def __repr__(self):
        return "<tensor>"


_TENSOR = _Tensor()


def skeleton(value):
    """A keyword argument with its tensors blanked: what export specialised on (its structure and its non-tensor
    values: bools, ints, None, lists of shapes)."""
    return pytree.tree_map(lambda leaf: _TENSOR if isinstance(leaf, torch.Tensor) else leaf, value)


def _describe(value) -> str:
    return f"a tensor of shape {tuple(value.shape)}" if isinstance(value, torch.Tensor) else repr(value)

def load_source(source: str, model_name: str) -> types.ModuleType:
    """Emitted program source, executed as a Python module (not yet bound to a backend)."""
    module = types.ModuleType("meshdit_program")
    # a file name inside meshdit/runtime: the program's import of a saved runtime copy beside it then finds none and
    # takes this package's device.py
    module.__file__ = os.path.join(os.path.dirname(device.__file__), "<meshdit program>")
    exec(compile(source, f"<meshdit program {model_name}>", "exec"), module.__dict__)
    return module


class Program:
    def __init__(self, ir: ProgramIR, source: str, graph: ModelGraph, plan_text: str = "",
                 specialized_args: dict | None = None):
        self.ir = ir
        self.source = source
        self.graph = graph  # kept for load_weights (the constant recipe) and for reports
        self.plan_text = plan_text
        self.weights: dict | None = None  # name -> host numpy array, prepared for upload
        self.golden: tuple | None = None  # (inputs, flat outputs) of the torch module, when lowering had weights
        self.divergence: str | None = None  # where the program first disagrees with its golden (meshdit.check)
        self._module = None  # the emitted source, executed
        self._backend = None
        self._runner = None  # device.Runner: the open mesh, uploaded weights and configs
        # weight cache directory for device uploads: None takes $MESHDIT_WEIGHT_CACHE (no cache when unset), ""
        # turns it off; see weight_cache.WeightCache
        self.cache_dir = None
        self._weights_digest = None  # the cache key's hash of self.weights, computed once per set of weights
        self.static_inputs = {k: v.clone() for k, v in graph.static_inputs.items()}
        # non-tensor arguments given at lowering (bools, ints, None, ...): export bakes them into the graph, so a call
        # must give the same value or omit the argument (name -> value)
        self.specialized_args = copy.deepcopy(dict(specialized_args or {}))
        # what a return_dict=True call returns (capture.OutputStructure; None: the plain tuple), recorded by lower()
        # when it is asked for, since finding it costs a forward on fake tensors; and the return_dict a call that
        # does not say gets (the one the program was lowered with)
        self.output_structure = NOT_RECORDED
        self.return_dict = False
        if not graph.on_meta:
            self._prepare_weights()

    # --- weights ----------------------------------------------------------------------------------------------
    def _prepare_weights(self):
        values = self.graph.constant_values()
        self.weights = {name: w.transform.prepare(values[w.constant], *(values[c] for c in w.more_constants))
                        for name, w in self.ir.weights.items()}
        self._weights_digest = None
        if self._runner is not None:
            self._runner.weights = None  # uploaded again on the next call

    def load_weights(self, state_dict_or_path, cache_dir=None) -> "Program":
        """Give a (meta-planned) program real weights: a state dict or a .safetensors file of the module.
        cache_dir: keep their device-format shards there and reuse them on later uploads (sets self.cache_dir)."""
        if cache_dir is not None:
            self.cache_dir = cache_dir
        if isinstance(state_dict_or_path, (str, os.PathLike)):
            from safetensors.torch import load_file

            state_dict = load_file(str(state_dict_or_path))
        else:
            state_dict = dict(state_dict_or_path)
        self.graph.materialize_constants(state_dict)
        self._prepare_weights()
        return self

    # --- execution --------------------------------------------------------------------------------------------
    def module(self, backend: str = "sim"):
        """The emitted source, executed as a Python module bound to `backend` ("sim" or "ttnn")."""
        if self._module is None or self._backend != backend:
            self.close()
            module = load_source(self.source, self.ir.model_name)
            self._runner = device.Runner(module, backend)
            self._module, self._backend = module, backend
        return self._module

    def __call__(self, backend: str = "sim", trace: bool = False, **kwargs):
        """Run the program on `kwargs` (the module's keyword inputs). trace=True runs one denoising step as TT-DiT
        does on hardware: the first traced call runs the forward once, captures it per cfg branch on persistent
        input tensors and replays it; later traced calls copy their inputs into those tensors and replay. Untraced
        calls (the default) run op by op and may be mixed with traced ones. close() releases the traces; new
        weights (load_weights) make the next traced call capture again.

        Outputs have the module's dtypes. return_dict=False gives the module's plain tuple (as captured);
        return_dict=True its output class (BaseOutput), which lower() records when its example inputs ask for it;
        a call without return_dict gets what the lowering's example inputs asked for (the tuple when they did not
        say)."""
        return_dict = kwargs.pop("return_dict", self.return_dict)
        flat = self.run_flat(kwargs, backend, trace)
        outputs = pytree.tree_unflatten(flat, self.graph.out_spec)
        if not return_dict:
            return outputs
        if self.output_structure is NOT_RECORDED:
            raise ConfigError(
                "return_dict=True: this program does not know the module's output class; lower it with "
                "return_dict=True in example_inputs (or call with return_dict=False for the plain tuple)")
        return outputs if self.output_structure is None else self.output_structure.wrap(list(outputs))

    def run_flat(self, kwargs: dict, backend: str = "sim", trace: bool = False) -> list:
        if self.weights is None:
            raise RuntimeError("this program was planned on meta and has no weights; call load_weights() first")
        inputs = self._check_inputs(kwargs)
        self.module(backend)
        if trace and not self._runner.trace:
            # a trace needs a trace region, which is reserved when the mesh opens: reopen (weights upload again)
            self._runner.close()
            self._runner.trace = True
        if self._runner.weights is None:
            self._runner.load_weights(self.weights, cache_dir=self.cache_dir, weights_key=self._weights_key())
        outputs = self._runner(inputs, trace=trace)
        dtypes = self.output_dtypes
        return [torch.from_numpy(np.array(o)).to(dtypes[i] or torch.float32) if isinstance(o, np.ndarray) else o
                for i, o in enumerate(outputs)]

    @property
    def output_dtypes(self) -> list:
        """The torch dtype of each flat output as the module returns it (None for a non-tensor output)."""
        values = [getattr(node, "meta", {}).get("val") for node in self.graph.gm.graph.output_node().args[0]]
        return [v.dtype if isinstance(v, torch.Tensor) else None for v in values]

    def specialization_mismatch(self, kwargs: dict) -> str | None:
        """Why a call cannot run on this program although its names fit: a non-tensor argument or a static input
        differs from the value baked in at lowering (None when nothing does). The fix is to lower again."""
        paths = self.graph.input_paths
        for name, lowered in self.specialized_args.items():
            if name in kwargs and not _same_argument(lowered, skeleton(kwargs[name])):
                return (f"argument '{name}' is specialised: the program was lowered with {_describe(lowered)} but "
                        f"is given {_describe(skeleton(kwargs[name]))} (non-tensor arguments, and the structure of "
                        f"structured ones, are baked into the program at lowering); lower again with this '{name}'")
        for name, baked in self.static_inputs.items():
            if paths[name][0].key not in kwargs:
                continue
            value = torch.as_tensor(self.graph.input_value(name, kwargs)).cpu()
            # with cfg on the mesh each branch gets its share of the batch; a static input split with it is baked
            # in once, for every branch
            shares = value.chunk(self.ir.cfg_factor) if name in self.ir.batched_inputs else [value]
            if not all(tuple(v.shape) == tuple(baked.shape) and torch.equal(v, baked) for v in shares):
                return (f"input '{name}' differs from the value this program was specialised on (it is static: "
                        "a data-dependent op reads it, or it was listed in static_inputs); lower again with this "
                        "value")
        return None

    def _check_inputs(self, kwargs: dict) -> dict:
        """The host arrays of a call's inputs, by program input name (a structured argument's leaves by their
        flattened names), after checking the call against what the program was lowered for."""
        kwargs = {k: v for k, v in kwargs.items() if k != "return_dict"}  # output structure only (see __call__)
        expected = {i.name: i for i in self.ir.inputs}
        paths = self.graph.input_paths
        roots = {paths[name][0].key for name in list(expected) + list(self.static_inputs)}
        missing = sorted({paths[name][0].key for name in expected} - set(kwargs))
        unknown = sorted(set(kwargs) - roots - set(self.specialized_args))
        if missing or unknown:
            raise InputMismatchError(f"program inputs are {sorted(roots - set(self.static_inputs))} (static: "
                                     f"{sorted(self.static_inputs)}; non-tensor, as lowered: "
                                     f"{sorted(self.specialized_args)}); missing {missing}, unexpected {unknown}")
        mismatch = self.specialization_mismatch(kwargs)
        if mismatch:
            raise SpecializationError(mismatch)
        arrays = {}
        for name, spec in expected.items():
            value = self.graph.input_value(name, kwargs)
            if not isinstance(value, torch.Tensor):
                raise InputMismatchError(f"input '{name}' must be a torch.Tensor, got {type(value).__name__}")
            shape = list(spec.global_shape)
            if name in self.ir.batched_inputs:
                shape[0] *= self.ir.cfg_factor
            if tuple(value.shape) != tuple(shape):
                raise InputMismatchError(
                    f"input '{name}' has shape {tuple(value.shape)}, but the program was lowered for "
                    f"{tuple(shape)}; shapes are static on device: lower again for this shape"
                )
            value = value.detach().cpu()
            arrays[name] = value.float().numpy() if value.is_floating_point() else value.to(torch.int32).numpy()
        return arrays

    def _weights_key(self):
        """The cache key's hash of the weight values, when a weight cache is configured (hashed once, not per
        upload)."""
        if weight_cache.cache_root(self.cache_dir) is None:
            return None
        if self._weights_digest is None:
            self._weights_digest = device.weights_digest(self.weights, self._module.WEIGHTS)
        return self._weights_digest

    @property
    def weight_cache_stats(self) -> dict:
        """Weight cache results of this program's uploads: hits, misses, rebuilds, and the last result and entry."""
        return dict(self._runner.cache_stats) if self._runner is not None else {}

    def close(self):
        """Release any traces and close the mesh (weights are uploaded again on the next call)."""
        if self._runner is not None:
            self._runner.close()

    # --- checking ---------------------------------------------------------------------------------------------
    def pcc_report(self, backend: str = "sim") -> list:
        """PCC of every output against the torch module's outputs on the lowering's example inputs."""
        if self.golden is None:
            raise RuntimeError("no golden outputs: the program was lowered without real weights (check=False or meta)")
        inputs, expected = self.golden
        actual = self.run_flat(inputs, backend)
        threshold = self.pcc_threshold
        return [PCCResult(i, tuple(e.shape), pcc(e, a), threshold) for i, (e, a) in enumerate(zip(expected, actual))
                if isinstance(e, torch.Tensor)]  # (a None the module returns has no PCC)

    @property
    def pcc_threshold(self) -> float:
        """The PCC this program must reach against its torch module: by weight dtype for bfp8, else activations."""
        return PCC_THRESHOLDS[self.ir.weight_dtype if self.ir.weight_dtype == "bfloat8_b" else self.ir.act_dtype]

    # --- reports ----------------------------------------------------------------------------------------------
    def coverage(self) -> dict:
        return self.ir.coverage()

    def plan(self) -> str:
        return self.plan_text

    def estimate(self, system=None):
        """The cost model's estimate (meshdit.cost.Estimate) of one forward on the mesh: `seconds` (with cfg on the
        mesh, both halves side by side), totals per category and a per-block breakdown. `system`: a name ("t3k",
        "galaxy", "n150", "n300") or a cost.System with run settings; by default the one the mesh shape implies.
        Modelled, not measured."""
        from ..cost import estimate

        return estimate(self.ir, system)

    # --- saving -----------------------------------------------------------------------------------------------
    def save_program(self, directory) -> str:
        """Write program.py and its device runtime (meshdit_device.py, meshdit_host_ops.py, meshdit_weight_cache.py)
        only: no weights, inputs or golden."""
        os.makedirs(directory, exist_ok=True)
        path = os.path.join(directory, "program.py")
        with open(path, "w") as f:
            f.write(self.source)
        for module in (device, host_ops, weight_cache):  # saved names: device.py's _sibling looks for them
            name = module.__name__.rsplit(".", 1)[-1]
            shutil.copyfile(module.__file__, os.path.join(directory, f"meshdit_{name}.py"))
        return path

    def save(self, directory) -> str:
        """Write program.py, its device runtime (meshdit_device.py), weights.safetensors and, when known,
        inputs.safetensors and golden.safetensors: a directory that runs without meshdit or torch."""
        from safetensors.numpy import save_file

        if self.weights is None:
            raise RuntimeError("a meta-planned program has no weights to save; call load_weights() first, or "
                               "save_program() for the program alone")
        path = self.save_program(directory)
        save_file(self.weights, os.path.join(directory, "weights.safetensors"))
        if self.golden is not None:
            inputs, outputs = self.golden
            save_file(self._check_inputs(inputs), os.path.join(directory, "inputs.safetensors"))
            save_file({f"output_{i}": o.float().numpy() for i, o in enumerate(outputs)},
                      os.path.join(directory, "golden.safetensors"))
        return path
