"""The device runtime of an emitted program: open the mesh, upload weights and inputs, run, download.

Torch-free on purpose (numpy, safetensors and a `ttnn` module only): an emitted program and this module run in a
Python environment that has the real ttnn library and nothing of meshdit's compile-time stack. `Program.save` writes
a copy of this file beside program.py as `meshdit_device.py` (with its siblings host_ops.py and weight_cache.py as
`meshdit_host_ops.py` and `meshdit_weight_cache.py`); the program imports that copy when meshdit itself is not
installed.

`ttnn` is passed in (the real library or meshdit.runtime.sim), never imported here, so one process can hold
programs bound to either backend.

    runner = Runner(program_module, backend="sim")   # the emitted module: constants, make_configs, forward
    runner.load_weights(arrays)                      # name -> full host array, as in weights.safetensors
    outputs = runner(inputs)                         # name -> numpy array (whole batch) -> list of numpy arrays
    runner.close()

Traced execution (one denoising step, captured once per cfg branch and replayed, as TT-DiT's pipelines do):

    runner = Runner(program_module, backend, trace=True)  # the mesh opens with a trace region
    runner.load_weights(arrays)
    outputs = runner(inputs)      # first call: warm-up run, capture into persistent input tensors, replay
    outputs = runner(inputs_2)    # later calls: copy the new inputs into those tensors, replay the trace
    runner.close()                # releases the traces

`runner(inputs, trace=False)` still runs op by op. A traced call must give the inputs the shapes and dtypes the
traces were captured with, else TraceInputMismatchError.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import os
import sys
import time
import warnings
from collections.abc import Mapping

import numpy as np

INTEGER_DTYPES = ("int32", "uint32")
DEFAULT_TRACE_REGION_SIZE = 50_000_000  # bytes per device; TT-DiT reserves 25 MB (SD3.5) to 50 MB (Flux) for a step


def _error_bases() -> tuple:
    """InputMismatchError when meshdit is loaded, so that `except MeshditError` catches the trace error too; plain
    ValueError in the saved copy of this file, which runs where meshdit (and torch) are not installed. Looked up in
    sys.modules, never imported: importing meshdit would import torch."""
    errors = sys.modules.get("meshdit.errors")
    return (errors.InputMismatchError,) if errors is not None else (ValueError,)


class TraceInputMismatchError(*_error_bases()):
    """A traced call's inputs differ in shape or dtype from those its trace was captured with. A trace replays fixed
    buffers: new shapes need a program lowered for them and a new trace."""


def bind_backend(name: str):
    """The ttnn module for a backend name: the real library ("ttnn") or meshdit's simulated mesh ("sim")."""
    if name not in ("ttnn", "sim"):
        raise ValueError(f"backend must be 'ttnn' or 'sim', got {name!r}")
    return importlib.import_module("ttnn" if name == "ttnn" else "meshdit.runtime.sim")


def is_real(ttnn) -> bool:
    return ttnn.__name__ == "ttnn"


# --- mesh ------------------------------------------------------------------------------------------------------------
def open_mesh(ttnn, mesh_shape: tuple, trace_region_size: int = 0, dispatch: str = "worker"):
    """Open the whole mesh. On real ttnn: 1-D fabric for multi-chip meshes; dispatch on ethernet cores where the
    program says so (the whole 8x8 grid computes; Galaxy), else on worker cores (a row of the grid dispatches; T3K,
    keeping both ethernet links for CCLs). A mocked cluster always takes worker dispatch: with ethernet dispatch it
    reports an 8x8 grid that ttnn's newer ops reject ("compute worker grid on this device is 8x7").
    trace_region_size: bytes per device reserved for traces (0: none, and a trace capture then fails)."""
    if not is_real(ttnn):
        return ttnn.open_mesh_device(ttnn.MeshShape(*mesh_shape), trace_region_size=trace_region_size)
    if tuple(mesh_shape) != (1, 1):
        ttnn.set_fabric_config(ttnn.FabricConfig.FABRIC_1D)
    mocked = bool(os.environ.get("TT_METAL_MOCK_CLUSTER_DESC_PATH"))
    core = ttnn.DispatchCoreType.ETH if dispatch == "ethernet" and not mocked else ttnn.DispatchCoreType.WORKER
    kwargs = {"dispatch_core_config": ttnn.DispatchCoreConfig(core)}
    if trace_region_size:
        kwargs["trace_region_size"] = trace_region_size
    return ttnn.open_mesh_device(ttnn.MeshShape(*mesh_shape), **kwargs)


def split_submeshes(ttnn, mesh, submesh_shape: tuple, cfg_factor: int) -> list:
    """One mesh per cfg branch (the whole mesh without cfg)."""
    if cfg_factor == 1:
        return [mesh]
    return list(mesh.create_submeshes(ttnn.MeshShape(*submesh_shape)))


def close_mesh(ttnn, mesh) -> None:
    ttnn.close_mesh_device(mesh)
    if is_real(ttnn) and hasattr(ttnn, "FabricConfig"):
        ttnn.set_fabric_config(ttnn.FabricConfig.DISABLED)


# --- host <-> device -------------------------------------------------------------------------------------------------
def mesh_mapper(ttnn, device, placements):
    """Split a host tensor over the mesh: per mesh axis, the tensor dim sharded over it or None (replicated)."""
    if not placements or all(p is None for p in placements):
        return ttnn.replicate_tensor_to_mesh_mapper(device)
    return ttnn.create_mesh_mapper(device, ttnn.MeshMapperConfig(
        [ttnn.PlacementReplicate() if p is None else ttnn.PlacementShard(p) for p in placements]))


def pad_for_mesh(array: np.ndarray, device_shape, placements, mesh_shape) -> np.ndarray:
    """Zero-pad each sharded dim so it splits into equal per-device pieces of `device_shape`.

    Sequence shards are padded to whole tiles per device (the program masks by the logical length); a shard that
    is already even is left alone."""
    if not placements or device_shape is None:
        return array
    pads = [(0, 0)] * array.ndim
    for axis, dim in enumerate(placements):
        if dim is None:
            continue
        target = device_shape[dim] * mesh_shape[axis]
        if array.shape[dim] > target:
            raise ValueError(f"dim {dim} of host array {array.shape} is larger than the mesh holds "
                             f"({device_shape[dim]} per device x {mesh_shape[axis]} devices)")
        pads[dim] = (0, target - array.shape[dim])
    return np.pad(array, pads) if any(after for _, after in pads) else array


def upload(ttnn, array, dtype: str, layout: str, device, placements=None, device_shape=None):
    """Host numpy array -> device tensor of `dtype`, split over the mesh as `placements` says."""
    return _mesh_tensor(ttnn, array, dtype, layout, device, placements, device_shape, on_device=True)


def host_tensor(ttnn, array, dtype: str, layout: str, device, placements=None, device_shape=None):
    """What `upload` makes, left on host: cast, padded and split per device by the same mesh mapper. The source of
    copy_host_to_device_tensor, which writes it into a tensor already on `device` (a traced input)."""
    return _mesh_tensor(ttnn, array, dtype, layout, device, placements, device_shape, on_device=False)


def _mesh_tensor(ttnn, array, dtype, layout, device, placements, device_shape, on_device):
    array = pad_for_mesh(host_array(array, dtype), device_shape, placements, tuple(device.shape))
    return ttnn.Tensor(array, data_type=getattr(ttnn, dtype), **({"device": device} if on_device else {}),
                       layout=ttnn.TILE_LAYOUT if layout == "TILE" else ttnn.ROW_MAJOR_LAYOUT,
                       mesh_mapper=mesh_mapper(ttnn, device, placements))


def download(ttnn, tensor) -> np.ndarray:
    """Device tensor -> host numpy array, read from the first device (program outputs are replicated): float32 for
    floating tensors, int32 for integer ones (indices and labels must stay integers)."""
    return device_pieces(ttnn, tensor, first_only=True)[0]


def host_call(ttnn, op_name: str, args, kwargs: dict, dtypes, act_dtype: str):
    """Run one ATen op on host for an op the lowering leaves there: its tensor arguments downloaded (in the model's
    dtypes, by position: integer and boolean tensors live on device as int32/uint32), the op run in numpy
    (host_ops.py), the result uploaded replicated (floating in the activation dtype, integers as int32). An op with
    no numpy form runs through torch, which lowering warned needs torch where the program runs."""
    host_ops = _sibling("host_ops")
    device, dtypes = None, iter(dtypes or [])

    def to_host(a):
        nonlocal device
        if isinstance(a, ttnn.Tensor):
            device = device or a.device()
            dtype = next(dtypes, None)
            value = download(ttnn, a)
            return value.astype(host_ops.numpy_dtype(dtype)) if dtype else value
        if isinstance(a, (list, tuple)):
            return type(a)(to_host(x) for x in a)
        return a

    args, kwargs = to_host(list(args)), {k: to_host(v) for k, v in kwargs.items()}
    if op_name in host_ops.HOST_OPS:
        result = np.asarray(host_ops.run(op_name, args, kwargs))
    else:
        result = _torch_host_call(op_name, args, kwargs)
    if np.issubdtype(result.dtype, np.floating):
        return upload(ttnn, result.astype(np.float32), act_dtype, "TILE", device)
    return upload(ttnn, result.astype(np.int32), "int32", "TILE", device)  # indices and labels stay integers


def _sibling(name: str):
    """A runtime module beside this one (host_ops, weight_cache): the package's module, or in a saved program the
    copy beside this file (meshdit_<name>.py; <name>.py when this file is loaded by path from the package)."""
    if __package__:
        return importlib.import_module(f"{__package__}.{name}")
    module = sys.modules.get(f"meshdit_{name}")
    if module is None:
        here = os.path.dirname(os.path.abspath(__file__))
        path = next((p for p in (os.path.join(here, f"meshdit_{name}.py"), os.path.join(here, f"{name}.py"))
                     if os.path.exists(p)), None)
        if path is None:
            raise ImportError(f"meshdit_{name}.py is missing beside {__file__}: Program.save writes it with the "
                              "program; copy it over too")
        spec = importlib.util.spec_from_file_location(f"meshdit_{name}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        sys.modules[f"meshdit_{name}"] = module
    return module


def _torch_host_call(op_name: str, args: list, kwargs: dict) -> np.ndarray:
    import torch  # only for an op host_ops.py has no numpy form of

    op = torch.ops.aten
    for part in op_name.split(".")[1:]:
        op = getattr(op, part)

    def to_torch(a):
        if isinstance(a, np.ndarray):
            return torch.from_numpy(a)
        if isinstance(a, str) and a.startswith("torch."):  # dtypes, layouts, memory formats are spelled so
            return getattr(torch, a[len("torch."):])
        return type(a)(to_torch(x) for x in a) if isinstance(a, (list, tuple)) else a

    result = op(*to_torch(args), **{k: to_torch(v) for k, v in kwargs.items()})
    return result.float().numpy() if result.is_floating_point() else result.to(torch.int64).numpy()


def device_pieces(ttnn, tensor, first_only: bool = False) -> list:
    """Every device's piece of a mesh tensor as host numpy arrays, in row-major mesh order (float32, or int32 for
    integer tensors). Checking a program (meshdit.check) reads intermediate tensors this way."""
    integer = tensor.dtype in (ttnn.int32, ttnn.uint32)
    if not integer and tensor.dtype != ttnn.float32:
        tensor = ttnn.typecast(tensor, ttnn.float32)
    hosts = ttnn.get_device_tensors(ttnn.from_device(tensor))
    arrays = []
    for host in hosts[:1] if first_only else hosts:
        shape = tuple(host.shape)
        values = host.to_numpy()
        if values.dtype == object:  # the mock backend returns a wrapped 0-d array and computes no values
            values = np.zeros(shape)
        arrays.append(np.asarray(values, dtype=np.int32 if integer else np.float32).reshape(shape))
    return arrays


def probe(ttnn, probes: dict, name: str, value) -> None:
    """Record `value`'s pieces under `name` (programs emitted with probes call this after every device op)."""
    if isinstance(value, ttnn.Tensor):
        probes.setdefault(name, []).append(device_pieces(ttnn, value))


# --- the program's view of a block's weights, and CCL semaphores -------------------------------------------------
class BlockWeights(Mapping):
    """One block instance's weights, by their names inside the block: the emitted block functions read
    w["attn.to_q.weight:transpose"], which is the program's "transformer_blocks.3.attn.to_q.weight:transpose" for
    the instance called with prefix "transformer_blocks.3."."""

    def __init__(self, weights: Mapping, prefix: str):
        self.weights, self.prefix = weights, prefix

    def __getitem__(self, name):
        return self.weights[self.prefix + name]

    def __iter__(self):
        return (name[len(self.prefix):] for name in self.weights if name.startswith(self.prefix))

    def __len__(self):
        return sum(1 for _ in self)


def block_weights(weights: Mapping, prefix: str) -> BlockWeights:
    return BlockWeights(weights, prefix)


# Global semaphores each async CCL of ttnn 0.81.1 takes, by the manager's getter that hands them out: all-gather 2,
# reduce-scatter 3, all-reduce 2 barriers (plus a reduce-scatter's 3 and an all-gather's 2), ring attention 2, and
# one barrier semaphore. The simulated mesh checks calls against the same counts.
SEMAPHORE_COUNTS = {"all_gather": 2, "reduce_scatter": 3, "all_reduce_barriers": 2, "ring": 2, "barrier": 1}


class CCLSemaphores:
    """The global semaphores of one (sub)mesh, per CCL kind and mesh axis, made once (before any trace capture).

    As TT-DiT's CCLManager: two sets per kind and axis, and each getter hands out the next set, so consecutive
    CCLs of a kind on an axis alternate ("ping-pong") and a CCL never waits on a semaphore the previous one may
    still be resetting. Rotation happens as the forward runs, so a block function called once per layer rotates
    like the flat program would; a captured trace records the ones each CCL used."""

    def __init__(self, ttnn, device, cores):
        def make():
            return ttnn.create_global_semaphore(device, cores, 0)

        axes = [axis for axis, size in enumerate(tuple(device.shape)) if size > 1]
        self._sets = {(kind, axis): [[make() for _ in range(count)] for _ in range(2)]
                      for kind, count in SEMAPHORE_COUNTS.items() for axis in axes}
        self._next = dict.fromkeys(self._sets, 0)

    def _take(self, kind: str, axis: int):
        key = (kind, axis)
        if key not in self._sets:
            raise ValueError(f"no {kind} semaphores on mesh axis {axis}: the axis has one device")
        index = self._next[key]
        self._next[key] = 1 - index
        return self._sets[key][index]

    def all_gather(self, axis):
        return self._take("all_gather", axis)

    def reduce_scatter(self, axis):
        return self._take("reduce_scatter", axis)

    def all_reduce_barriers(self, axis):
        return self._take("all_reduce_barriers", axis)

    def ring(self, axis):
        return self._take("ring", axis)

    def barrier(self, axis):
        return self._take("barrier", axis)[0]


# --- weights: what upload sees, and the conversion the weight cache (weight_cache.py) keeps -----------------
def host_array(array, dtype: str) -> np.ndarray:
    """A weight as upload() hands it to ttnn: contiguous float32, or int32 for integer dtypes."""
    return np.ascontiguousarray(array, dtype=np.int32 if dtype in INTEGER_DTYPES else np.float32)


def convert_weight(ttnn, array, dtype: str, layout: str, mesh, placements=None, device_shape=None):
    """Host numpy array -> host tensor in the device format (dtype, layout, zero-padded and split per device as
    `placements` says over `mesh`'s shape). This is the conversion the cache saves; ttnn.to_device or
    dump_tensor/load_tensor move its result."""
    return host_tensor(ttnn, array, dtype, layout, mesh, placements, device_shape)


def weights_digest(arrays, specs: dict) -> str:
    """sha256 of the values the cache converts: per weight (by name) its name, dtype, shape and bytes as upload()
    sees them, so equal weights key equally whether they come from a dict or a weights.safetensors file. Arrays are
    read one at a time (a SafetensorsArrays mapping never holds the whole file)."""
    digest = hashlib.sha256()
    for name in sorted(specs):
        array = host_array(arrays[name], specs[name][1])
        digest.update(json.dumps([name, array.dtype.str, list(array.shape)]).encode())
        digest.update(array.reshape(-1).view(np.uint8))
    return digest.hexdigest()


def backend_version(ttnn) -> str:
    """Part of the cache key: a file written by one backend (or ttnn release) is not read by another."""
    if not is_real(ttnn):
        return getattr(ttnn, "SIM_TENSOR_FORMAT", "sim")
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"ttnn {version('ttnn')}"
    except PackageNotFoundError:  # a source build: no release to tell apart
        return "ttnn"



# --- running a program -----------------------------------------------------------------------------------------------
class BranchTrace:
    """The trace of one cfg branch's forward: its id, the persistent input tensors it reads (each call copies new
    inputs into them) and the output tensors it writes (the same objects after every replay)."""

    def __init__(self, trace_id, inputs: dict, outputs: tuple):
        self.trace_id, self.inputs, self.outputs = trace_id, inputs, outputs


class Runner:
    """One emitted program on one backend: owns the open mesh, the uploaded weights and the per-mesh configs.

    trace: calls replay a captured trace per cfg branch unless told otherwise (`runner(inputs, trace=False)`); the
    mesh then opens with `trace_region_size` bytes per device reserved for traces, which a capture needs."""

    def __init__(self, program, backend: str = "sim", cache_dir=None, trace: bool = False,
                 trace_region_size: int = DEFAULT_TRACE_REGION_SIZE):
        self.trace = trace
        self.trace_region_size = trace_region_size
        self.traces = None  # per branch: BranchTrace, from the first traced call until close()
        self.trace_signature = None  # input name -> (shape, dtype kind) of the call the traces were captured on
        self._region = 0  # trace region of the open mesh
        self._traced_weights = None  # the weights the traces read (uploading new ones invalidates them)
        self.program = program  # the emitted module (or any namespace with its constants and functions)
        self.cache_dir = cache_dir  # weight cache directory; None: $MESHDIT_WEIGHT_CACHE; "": no cache
        # weight loads: hits, misses (converted and written), rebuilds (an unusable entry replaced); last result
        self.cache_stats = {"hits": 0, "misses": 0, "rebuilds": 0, "last": None, "entry": None, "reason": None}
        self.ttnn = program.use_backend(backend)
        self.backend = backend
        self.mesh = None
        self.meshes = None  # one per cfg branch
        self.configs = None
        self.weights = None  # per branch: name -> device tensor

    # mesh lifetime
    def open(self):
        if self.mesh is None:
            p = self.program
            self._region = self.trace_region_size if self.trace else 0
            self.mesh = open_mesh(self.ttnn, p.MESH_SHAPE, self._region, getattr(p, "DISPATCH", "worker"))
            self.meshes = split_submeshes(self.ttnn, self.mesh, p.SUBMESH_SHAPE, p.CFG_FACTOR)
            self.configs = [p.make_configs(m) for m in self.meshes]
        return self

    def close(self):
        if self.mesh is not None:
            self.release_traces()
            close_mesh(self.ttnn, self.mesh)
        self.mesh = self.meshes = self.configs = self.weights = None

    # weights
    def load_weights(self, arrays, cache_dir=None, weights_key=None):
        """Upload every weight to every cfg branch. arrays: full host arrays by name, as in weights.safetensors (a
        dict, or SafetensorsArrays to read the file one weight at a time).

        With a weight cache (cache_dir, else the Runner's, else $MESHDIT_WEIGHT_CACHE), an intact entry for these
        weights on this program, backend and mesh is loaded as it is (a hit: no conversion); otherwise the weights
        are converted once, uploaded to every branch and written as a new entry (a miss). An entry that fails its
        checks is rebuilt with a WeightCacheWarning saying why. weights_key stands for the weight values in the
        key (e.g. a checkpoint's hash); by default the arrays are hashed. self.cache_stats counts the results."""
        specs = self.program.WEIGHTS
        missing = sorted(set(specs) - set(arrays))
        if missing:
            raise KeyError(f"weights missing from the weight file: {missing[:5]} ({len(missing)} in all)")
        self.open()
        cache_module = _sibling("weight_cache")
        root = cache_module.cache_root(self.cache_dir if cache_dir is None else cache_dir)
        if root is None:
            self.weights = [{name: upload(self.ttnn, arrays[name], dtype, layout, mesh, placements, shape)
                             for name, (shape, dtype, layout, placements) in specs.items()}
                            for mesh in self.meshes]
            self.cache_stats.update(last="off", entry=None, reason=None)
            return self
        self.weights = None
        cache = cache_module.WeightCache.for_program(root, self.program, backend_version(self.ttnn),
                                                     weights_key or weights_digest(arrays, specs))
        manifest, why = cache.check(specs)
        if manifest is not None:
            try:
                self.weights = [cache.load(self.ttnn, manifest, specs, mesh) for mesh in self.meshes]
            except Exception as error:  # checksums passed but ttnn refused a file (or it holds another shape)
                why = f"ttnn could not load it ({(str(error).strip().splitlines() or [type(error).__name__])[0]})"
        if self.weights is not None:
            result = "hit"
        else:
            if why is not None:
                warnings.warn(f"weight cache entry {cache.path} is unusable: {why}; rebuilding it",
                              cache_module.WeightCacheWarning, stacklevel=2)
                cache.discard()
            self.weights = cache.build(self.ttnn, arrays, specs, self.meshes, convert_weight)
            result = "miss" if why is None else "rebuild"
        self.cache_stats[{"hit": "hits", "miss": "misses", "rebuild": "rebuilds"}[result]] += 1
        self.cache_stats.update(last=result, entry=cache.path, reason=why)
        cache_module.cache_log.info("weight cache %s: %s%s", result, cache.path, f" ({why})" if why else "")
        return self

    # inputs and outputs
    def branch_inputs(self, inputs: dict, index: int) -> dict:
        """The host arrays cfg branch `index` receives: batched inputs sliced along dim 0, shapes checked."""
        arrays = {}
        for name, (shape, dtype, placements, device_shape) in self.program.INPUTS.items():
            array = inputs[name]
            if name in self.program.BATCHED_INPUTS:
                array = array[index * shape[0]:(index + 1) * shape[0]]
            if tuple(array.shape) != tuple(shape):
                raise ValueError(f"input {name}: expected shape {tuple(shape)} per cfg branch, "
                                 f"got {tuple(array.shape)}")
            arrays[name] = array
        return arrays

    def upload_inputs(self, arrays: dict, mesh) -> dict:
        return {name: upload(self.ttnn, arrays[name], dtype, "TILE", mesh, placements, device_shape)
                for name, (shape, dtype, placements, device_shape) in self.program.INPUTS.items()}

    def __call__(self, inputs: dict, trace: bool | None = None) -> list:
        """inputs: name -> numpy array (whole batch). One forward per cfg branch; outputs joined along the batch.
        trace: replay the captured traces (capturing them on the first traced call); default: the Runner's `trace`."""
        if self.weights is None:
            raise RuntimeError("no weights on the device: call load_weights() first")
        if self.trace if trace is None else trace:
            return self._join([[self._download(o) for o in outputs] for outputs in self._run_traced(inputs)])
        per_branch = []
        for index, (mesh, weights, configs) in enumerate(zip(self.meshes, self.weights, self.configs)):
            device_inputs = self.upload_inputs(self.branch_inputs(inputs, index), mesh)
            outputs = self.program.forward(mesh, weights, configs, **device_inputs)
            per_branch.append([self._download(o) for o in outputs])
        return self._join(per_branch)

    def _download(self, output):
        return download(self.ttnn, output) if isinstance(output, self.ttnn.Tensor) else output

    @staticmethod
    def _join(per_branch: list) -> list:
        if len(per_branch) == 1:
            return per_branch[0]
        return [np.concatenate(parts, axis=0) for parts in zip(*per_branch)]

    # traced execution
    def _run_traced(self, inputs: dict) -> list:
        """Per branch, the output tensors of one replay. TT-DiT's sequence: the first call runs the forward once
        untraced (compiles every program and makes the allocations a capture must not contain), uploads the inputs
        into tensors that stay (the trace reads their buffers), captures the forward on them; every call then copies
        its inputs into those tensors and replays. Traces of all branches are enqueued before any output is read,
        so the cfg submeshes run at the same time."""
        if not self._region:
            raise RuntimeError("traced call on a mesh opened without a trace region: make the Runner with trace=True "
                               "(the region is reserved when the mesh opens)")
        if self.traces is not None and self._traced_weights is not self.weights:
            self.release_traces()  # the weights were uploaded again: the traces read the old buffers
        if self.traces is not None:
            self.check_trace_inputs(inputs)
        branches = [self.branch_inputs(inputs, index) for index in range(len(self.meshes))]
        if self.traces is None:
            signature = _signature(inputs, self.program.INPUTS)
            self.traces = []
            try:
                for index, arrays in enumerate(branches):
                    self.traces.append(self._capture(index, arrays))
            except BaseException:
                self.release_traces()
                raise
            self.trace_signature, self._traced_weights = signature, self.weights
        else:
            for trace, arrays, mesh in zip(self.traces, branches, self.meshes):
                self._copy_inputs(trace, arrays, mesh)
        for trace, mesh in zip(self.traces, self.meshes):
            self.ttnn.execute_trace(mesh, trace.trace_id, cq_id=0, blocking=False)
        return [trace.outputs for trace in self.traces]

    def _capture(self, index: int, arrays: dict) -> BranchTrace:
        ttnn = self.ttnn
        mesh, weights, configs = self.meshes[index], self.weights[index], self.configs[index]
        self.program.forward(mesh, weights, configs, **self.upload_inputs(arrays, mesh))  # warm-up, untraced
        inputs = self.upload_inputs(arrays, mesh)  # persistent: allocated before the capture, kept with the trace
        trace_id = ttnn.begin_trace_capture(mesh, cq_id=0)
        try:
            outputs = self.program.forward(mesh, weights, configs, **inputs)
        except BaseException:
            try:  # leave the mesh usable; the forward's error is the one to report
                ttnn.end_trace_capture(mesh, trace_id, cq_id=0)
                ttnn.release_trace(mesh, trace_id)
            except Exception:
                pass
            raise
        ttnn.end_trace_capture(mesh, trace_id, cq_id=0)
        return BranchTrace(trace_id, inputs, tuple(outputs))

    def _copy_inputs(self, trace: BranchTrace, arrays: dict, mesh) -> None:
        """Write new inputs into the traced input tensors, prepared exactly as `upload` prepares them."""
        for name, (shape, dtype, placements, device_shape) in self.program.INPUTS.items():
            host = host_tensor(self.ttnn, arrays[name], dtype, "TILE", mesh, placements, device_shape)
            self.ttnn.copy_host_to_device_tensor(host, trace.inputs[name])

    def check_trace_inputs(self, inputs: dict) -> None:
        """Refuse inputs whose shapes or dtypes differ from those the traces were captured with."""
        given = _signature(inputs, self.program.INPUTS)
        for name, (shape, kind) in self.trace_signature.items():
            if given[name] != (shape, kind):
                raise TraceInputMismatchError(
                    f"input '{name}': the trace was captured with shape {shape} ({_KINDS.get(kind, kind)}), this call "
                    f"gives shape {given[name][0]} ({_KINDS.get(given[name][1], given[name][1])}). A trace replays "
                    "fixed buffers, so every call must match: for another shape lower a Program for it and capture a "
                    "new trace with it (one Program and trace per shape), or call with trace=False")

    def release_traces(self) -> None:
        """Release every captured trace (the next traced call captures again)."""
        for trace, mesh in zip(self.traces or [], self.meshes or []):
            self.ttnn.release_trace(mesh, trace.trace_id)
        self.traces = self.trace_signature = self._traced_weights = None


_KINDS = {"f": "floating point", "i": "integer", "u": "unsigned integer", "b": "boolean"}


def _signature(inputs: dict, specs: dict) -> dict:
    """name -> (shape, dtype kind) of the host inputs of a call, for every program input."""
    missing = sorted(set(specs) - set(inputs))
    if missing:
        raise KeyError(f"inputs missing: {missing}")
    return {name: (tuple(np.shape(inputs[name])), np.asarray(inputs[name]).dtype.kind) for name in specs}


def _float64(x) -> np.ndarray:
    """A flat float64 copy of a numpy array or a torch tensor (any dtype, any device). Tensors are recognised by
    duck typing: this module never imports torch (it runs beside saved programs where torch is not installed)."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().double().numpy()
    return np.asarray(x, dtype=np.float64).ravel()


def pcc(expected, actual) -> float:
    """Pearson correlation (PCC) of two arrays or tensors of the same shape, in float64: the figure TT model tests
    gate on, and meshdit's only PCC (meshdit.runtime.pcc re-exports it). Edge cases, decided once:
      non-finite values (nan, inf) in either -> nan, even when both are identical (never a pass);
      identical arrays -> 1.0, constant ones included;
      a constant array against a different one -> nan: the correlation is undefined (zero variance), and nan fails
      every threshold where 0.0 would read as a figure."""
    if tuple(np.shape(expected)) != tuple(np.shape(actual)):
        raise ValueError(f"PCC of arrays of different shapes: {tuple(np.shape(expected))} vs {tuple(np.shape(actual))}")
    a, b = _float64(expected), _float64(actual)
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        return float("nan")
    if np.array_equal(a, b):
        return 1.0
    a, b = a - a.mean(), b - b.mean()
    denom = np.linalg.norm(a) * np.linalg.norm(b)
    if denom == 0:
        return float("nan")
    return float(np.clip(a @ b / denom, -1.0, 1.0))


def main(program, argv=None) -> list:
    """Command line of an emitted program: run it on the weights and inputs beside it and print PCC vs golden."""
    import argparse

    from safetensors.numpy import load_file

    cache_module = _sibling("weight_cache")

    here = os.path.dirname(os.path.abspath(program.__file__))
    parser = argparse.ArgumentParser(description=(program.__doc__ or "").splitlines()[0])
    parser.add_argument("--backend", choices=["sim", "ttnn"], default="sim")
    parser.add_argument("--weights", default=os.path.join(here, "weights.safetensors"))
    parser.add_argument("--inputs", default=os.path.join(here, "inputs.safetensors"))
    parser.add_argument("--golden", default=os.path.join(here, "golden.safetensors"),
                        help="expected outputs; the PCC against them is printed when the file exists")
    parser.add_argument("--weight-cache", metavar="DIR", default=None,
                        help="keep device-format weight shards here and reuse them "
                             f"(default ${cache_module.CACHE_ENV}; "
                             "no cache when neither is set)")
    parser.add_argument("--trace", action="store_true",
                        help="capture the forward once per cfg branch and replay it at every step")
    parser.add_argument("--steps", type=int, default=1,
                        help="forward passes to run on the inputs (with --trace, each a replay; the first captures)")
    parser.add_argument("--trace-region-size", type=int, default=DEFAULT_TRACE_REGION_SIZE, metavar="BYTES",
                        help="per device, reserved for traces with --trace (ttnn names the size it needs when this "
                             "is too small)")
    args = parser.parse_args(argv)
    if args.steps < 1:
        parser.error("--steps must be at least 1")
    runner = Runner(program, args.backend, cache_dir=args.weight_cache, trace=args.trace,
                    trace_region_size=args.trace_region_size)
    try:
        runner.load_weights(cache_module.SafetensorsArrays(args.weights))
        if runner.cache_stats["last"] != "off":
            print(f"weight cache {runner.cache_stats['last']}: {runner.cache_stats['entry']}")
        inputs = load_file(args.inputs)
        for step in range(args.steps):
            started = time.perf_counter()
            outputs = runner(inputs)
            if args.trace or args.steps > 1:
                how = ("warm-up, capture and replay" if step == 0 else "replay") if args.trace else "untraced"
                print(f"step {step + 1}: {(time.perf_counter() - started) * 1e3:.1f} ms ({how})")
    finally:
        runner.close()
    golden = load_file(args.golden) if os.path.exists(args.golden) else {}
    for i, out in enumerate(outputs):
        line = f"output {i}: shape {list(out.shape)}"
        ref = golden.get(f"output_{i}")
        if ref is not None:
            line += f"  PCC vs golden {pcc(ref, out):.6f}"
        print(line)
    return outputs
