"""meshdit: lower a diffusers diffusion transformer to a (sharded) TT-NN program.

    program = meshdit.lower(model, "1x1", example_inputs)
    outputs = program(**example_inputs)        # runs on the simulated mesh by default
    print(program.plan())
    for result in program.pcc_report(): print(result)

    pipe.transformer = meshdit.compile_transformer(pipe.transformer, "2x4 cfg2@1 sp2@0 tp2@1")  # in a pipeline

Stages (each a module with one entry point; data flows one way):
    capture.capture -> passes.run_passes -> sharding (MeshConfig) -> lowering.lower_graph / emit_source
    -> runtime.Program
"""

from __future__ import annotations

__version__ = "0.1.0"

import collections
import copy
import re
import time
from dataclasses import dataclass

import torch
import torch.utils._pytree as pytree

from .capture import capture
from .errors import ConfigError, MeshditError
from .lowering.builder import FIDELITIES
from .sharding import MeshConfig

DTYPE_NAMES = {"fp32": "float32", "float32": "float32", "bf16": "bfloat16", "bfloat16": "bfloat16",
               "bfp8": "bfloat8_b", "bfp8_b": "bfloat8_b", "bfloat8_b": "bfloat8_b"}


def _dtype_name(value, what):
    name = DTYPE_NAMES.get(str(value).replace("torch.", "")) if value is not None else None
    if name is None:
        raise ConfigError(f"{what}={value!r}: use one of fp32, bf16 (and bfp8 for weights)")
    return name


def _cfg_branch_inputs(example_inputs: dict, mesh: MeshConfig, static_inputs) -> tuple:
    """The inputs one cfg branch sees (its share of the batch, also inside structured arguments) and the key paths
    of the tensors split by batch."""
    if mesh.cfg.factor == 1 or not example_inputs:
        return example_inputs, set()
    leaves = pytree.tree_flatten_with_path(example_inputs)[0]
    tensors = [v for _, v in leaves if isinstance(v, torch.Tensor) and v.dim() > 0]
    batch = tensors[0].shape[0] if tensors else 0
    if batch % mesh.cfg.factor:
        raise ConfigError(
            f"mesh {mesh}: cfg{mesh.cfg.factor} splits the batch over {mesh.cfg.factor} submeshes, but the example "
            f"inputs have batch {batch}; pass the unconditional and conditional halves together "
            f"(batch {mesh.cfg.factor} x n) or drop cfg from the mesh config"
        )
    share = batch // mesh.cfg.factor
    split = set()

    def branch(path, value):
        if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape[0] == batch and \
                path[0].key not in static_inputs:
            split.add(path)
            return value[:share]
        return value

    return pytree.tree_map_with_path(branch, example_inputs), split


def _check_static_branches(graph, example_inputs: dict, batched: tuple, mesh: MeshConfig) -> None:
    """A static input (baked into the program, e.g. a prompt mask a data-dependent op reads) that cfg splits by
    batch is baked in once for both branches: the branches must agree on it."""
    for name in graph.static_inputs:
        if name not in batched:
            continue
        shares = graph.input_value(name, example_inputs).chunk(mesh.cfg.factor)
        if not all(torch.equal(share, shares[0]) for share in shares[1:]):
            raise ConfigError(
                f"mesh {mesh}: input '{name}' is static (baked into the program: a data-dependent op reads it) and "
                f"differs between the cfg branches; one program holds one value. Run cfg outside the mesh (drop "
                f"cfg{mesh.cfg.factor} from the mesh config and call the program once per branch), or make the "
                "branches agree")


def _is_mesh_shape(mesh_config) -> bool:
    """A mesh of several devices given by its shape alone ("2x4"): the plan search chooses its parallel config."""
    match = re.fullmatch(r"\s*(\d+)x(\d+)\s*", mesh_config) if isinstance(mesh_config, str) else None
    return match is not None and int(match.group(1)) * int(match.group(2)) > 1


def _example_batch(example_inputs: dict) -> int:
    tensors = [v for v in pytree.tree_leaves(example_inputs) if isinstance(v, torch.Tensor) and v.dim() > 0]
    return tensors[0].shape[0] if tensors else 1


@dataclass
class _Prepared:
    """The captured and canonicalised graph for one cfg factor (the cfg submeshes each capture their batch share)."""
    captured: object
    graph: object
    capture_inputs: dict
    batched: tuple


def _graph_copy(graph):
    """A copy of a ModelGraph to shard and lower (both rewrite it), sharing the constants' values."""
    memo = {id(c.value): c.value for c in graph.constants.values() if c.value is not None}
    memo.update({id(v): v for v in graph.static_inputs.values()})
    return copy.deepcopy(graph, memo)


def lower(model: torch.nn.Module, mesh_config="1x1", example_inputs: dict | None = None, *, dtype="fp32",
          weight_dtype=None, static_inputs=(), allow_host_fallback=True, check=True, residual=None,
          strict=False, matmul_fidelity="HiFi2"):
    """Lower `model` to a TT-NN Program for `mesh_config`, specialised to the shapes of `example_inputs`.

    mesh_config: a mesh with its parallel factors ("2x4 cfg2@1 sp2@0 tp2@1", a MeshConfig), or a mesh shape alone
    ("2x4"): the plan search (meshdit.search) then lowers every parallel config the mesh admits, keeps those that
    fit a chip's DRAM and takes the least modelled step time; the plan lists the top candidates.
    dtype: activation dtype on device (fp32 or bf16); weight_dtype: matmul weight dtype (bf16 or bfp8; defaults to
    dtype). matmul_fidelity: math fidelity of the matmuls, HiFi2 (TT-DiT's default) or LoFi (TT-DiT's opt-in
    bf8_weights_lofi profile with weight_dtype="bfp8": twice the matmul throughput; the simulated mesh truncates
    operands as LoFi's multiplier reads them, so the PCC check reports what it costs). static_inputs: input names
    whose values are baked in (inputs read by data-dependent ops always are).
    residual: tp layout of the residual stream, "replicated" (all-reduce after row-parallel linears) or "sharded"
    (TT-DiT's: reduce-scatter into a hidden-sharded residual, distributed norms, all-gather before column-parallel
    linears); None: replicated, or both tried by the plan search. allow_host_fallback: run ops without a TT-NN
    lowering on host (counted in the coverage report) instead of raising UnsupportedOpError. strict: an op with no
    sharding rule is an error (UnsupportedOpError) instead of running on gathered inputs (counted in the plan).
    check (when weights are real): True computes the torch golden on the example inputs, runs the program once on
    the simulated mesh and raises NumericsError (PCC per output, the first block and op that diverge) when an output
    is below the dtype's PCC threshold; "warn" warns instead; "golden" only keeps the golden for
    `program.pcc_report()`; False does neither. The module is always captured with return_dict=False;
    return_dict=True in example_inputs records the module's output class (a forward on fake tensors), which the
    program then returns by default and on return_dict=True calls. Non-tensor arguments in example_inputs (bools,
    ints, e.g. num_frames=2) are baked into the program: a call must give the same value or omit the argument, else
    SpecializationError.
    """
    from .lowering import emit_source, lower_graph
    from .passes import run_passes
    from .report import plan_text
    from .runtime import Program
    from .runtime.program import skeleton
    from .sharding.plan import shard_graph
    from . import search

    act = _dtype_name(dtype, "dtype")
    weights = _dtype_name(weight_dtype or dtype, "weight_dtype")
    if act == "bfloat8_b":
        raise ConfigError("dtype='bfp8' is for weights only; use weight_dtype='bfp8' with dtype='bf16'")
    if example_inputs is None:
        raise ConfigError("example_inputs is required: the dict of keyword arguments the module's forward takes")
    if residual not in (None, *search.RESIDUALS):
        raise ConfigError(f"residual={residual!r}: use 'replicated' or 'sharded'")
    fidelity = {f.lower(): f for f in FIDELITIES}.get(str(matmul_fidelity).lower())
    if fidelity is None:
        raise ConfigError(f"matmul_fidelity={matmul_fidelity!r}: use one of {', '.join(FIDELITIES)}")
    searching = _is_mesh_shape(mesh_config)
    if searching:
        shape = tuple(int(v) for v in mesh_config.strip().split("x"))
        todo = search.candidates(shape, _example_batch(example_inputs), residual)
    else:
        todo = [(MeshConfig.parse(mesh_config), residual or "replicated")]
    timings = collections.defaultdict(float)
    static_inputs = static_inputs if static_inputs is not None else ()
    prepared: dict = {}

    def prepare(mesh) -> _Prepared:
        """Capture and passes once per cfg factor."""
        if mesh.cfg.factor not in prepared:
            capture_inputs, split = _cfg_branch_inputs(example_inputs, mesh, static_inputs)
            captured = capture(model, capture_inputs)
            timings["capture"] += captured.seconds
            t0 = time.perf_counter()
            graph = run_passes(captured, static_inputs)
            if captured.method != "torch.export":
                graph.notes.append(f"captured by {captured.method}")
            timings["passes"] += time.perf_counter() - t0
            batched = tuple(name for name, path in graph.input_paths.items() if path in split)
            prepared[mesh.cfg.factor] = _Prepared(captured, graph, capture_inputs, batched)
        return prepared[mesh.cfg.factor]

    def lowered(mesh, layout):
        """((prepared, graph), ir) of one parallel config: sharded and lowered on its own copy when searching."""
        p = prepare(mesh)
        _check_static_branches(p.graph, example_inputs, p.batched, mesh)
        graph = _graph_copy(p.graph) if searching else p.graph
        if mesh.num_devices > 1:
            t0 = time.perf_counter()
            shard_graph(graph, mesh, layout, strict)
            timings["sharding"] += time.perf_counter() - t0
        t0 = time.perf_counter()
        ir = lower_graph(graph, mesh, act, weights, allow_host_fallback, p.batched, matmul_fidelity=fidelity)
        timings["lowering"] += time.perf_counter() - t0
        return (p, graph), ir

    search_notes = []
    if searching:
        t0 = time.perf_counter()
        chosen, results = search.run(todo, lowered)
        ((p, graph), ir), mesh = chosen.program, chosen.mesh
        chosen.program = None
        search_notes = search.search_lines(results, chosen)
        searched = time.perf_counter() - t0 - timings["capture"] - timings["passes"]
        timings = {"capture": timings["capture"], "passes": timings["passes"],
                   f"sharding and lowering {len(results)} candidates": searched}
    else:
        mesh = todo[0][0]
        (p, graph), ir = lowered(*todo[0])
    t0 = time.perf_counter()
    source = emit_source(ir)
    timings["emit"] = time.perf_counter() - t0
    # non-tensor arguments (bools, ints, None, shape lists, and the structure of dicts and lists of tensors) are
    # specialised by export: the program checks calls against them
    specialized = {k: skeleton(v) for k, v in p.captured.example_inputs.items()
                   if k != "return_dict" and not isinstance(v, torch.Tensor)}
    plan = plan_text(graph, ir, dict(timings), str(mesh))
    program = Program(ir, source, graph, "\n".join([plan, *search_notes]), specialized)
    program.mesh = mesh
    program.residual = graph.sharding.residual if graph.sharding is not None else None
    if example_inputs.get("return_dict") is True:
        from .capture import output_structure

        program.output_structure = output_structure(model, p.capture_inputs)
        program.return_dict = True
    if check and not p.captured.on_meta:
        inputs = pytree.tree_map(lambda v: v.detach().clone() if isinstance(v, torch.Tensor) else v, example_inputs)
        with torch.no_grad():  # the golden has the captured output structure: return_dict=False, as captured
            expected = model(**{**example_inputs, **({"return_dict": False} if "return_dict" in
                                                     p.captured.example_inputs else {})})
        program.golden = (inputs, [t.detach().clone() if isinstance(t, torch.Tensor) else t
                                   for t in pytree.tree_leaves(expected)])
        if check != "golden":
            from .check import verify

            verify(program, "warn" if check == "warn" else "raise")
    return program


from .compiled import CompiledTransformer, compile_transformer  # noqa: E402 - uses lower() above

__all__ = ["lower", "compile_transformer", "CompiledTransformer", "capture", "MeshConfig", "MeshditError",
           "__version__"]
