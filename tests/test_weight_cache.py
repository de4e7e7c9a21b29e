"""The weight cache: device-format weight shards on disk, reused by later loads, never used when damaged.

Most tests run on the simulated mesh with tiny SD3 programs. test_real_ttnn_weight_cache runs the same cache code
against the real ttnn 0.81.1 on mocked n150 and t3k clusters, where conversion and dump/load are real."""

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

import meshdit.runtime.sim as sim
from conftest import lowered, tiny_inputs
from meshdit.runtime import device
from meshdit.runtime.weight_cache import CACHE_ENV, STALE_SECONDS, WeightCache, WeightCacheWarning

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TP2 = "1x2 tp2@1"


@pytest.fixture(autouse=True)
def no_cache_from_the_environment(monkeypatch):
    monkeypatch.delenv(CACHE_ENV, raising=False)


@pytest.fixture
def use():
    """A shared (session-cached) tiny program, closed and with its cache setting restored after the test."""
    taken = []

    def take(program):
        taken.append((program, program.cache_dir))
        program.close()
        return program

    yield take
    for program, cache_dir in taken:
        program.cache_dir = cache_dir
        program.close()


def run(program):
    """One forward on the sim, weights uploaded afresh (through the cache when one is configured)."""
    program.close()
    return program(**tiny_inputs("sd3-tiny"))[0]


def forbid_conversion(monkeypatch) -> list:
    """Make weight conversion fail, so a load that still succeeds read every weight from the cache. upload() (the
    uncached path, which converts too) also carries the inputs: it is counted, and the caller checks that only
    the inputs went through it."""
    def refuse(*args, **kwargs):
        raise AssertionError("a weight was converted on a cache hit")

    uploads = []
    upload = device.upload
    monkeypatch.setattr(device, "convert_weight", refuse)
    monkeypatch.setattr(device, "upload", lambda *a, **k: uploads.append(a[1].shape) or upload(*a, **k))
    return uploads


# --- hits and misses ---------------------------------------------------------------------------------------------
def program_of(weight_dtype=None, mesh=TP2):
    return lowered("sd3-tiny", "bf16", weight_dtype, mesh=mesh)


def runner(program, cache_dir) -> device.Runner:
    """A Runner of the program's emitted module: loads weights without running a forward."""
    return device.Runner(program.module("sim"), "sim", cache_dir=str(cache_dir))


def assert_same_weights(got: device.Runner, expected: device.Runner):
    """Every weight on every device holds the same values, dtype and layout."""
    for branch, reference in zip(got.weights, expected.weights, strict=True):
        assert branch.keys() == reference.keys()
        for name, tensor in branch.items():
            assert tensor.dtype is reference[name].dtype and tensor.layout is reference[name].layout, name
            assert all(torch.equal(a, b) for a, b in zip(tensor.shards, reference[name].shards, strict=True)), name


@pytest.fixture(scope="module")
def uncached():
    """The program's weights uploaded directly (no cache), and its output: what every cached load must give."""
    program = program_of()
    direct = runner(program, "").load_weights(program.weights)
    return direct, direct(program._check_inputs(tiny_inputs("sd3-tiny")))[0]


def test_second_load_is_a_hit_that_converts_nothing(use, tmp_path, monkeypatch, uncached):
    program = use(program_of())
    program.cache_dir = str(tmp_path)
    first = run(program)
    stats = program.weight_cache_stats
    assert (stats["last"], stats["misses"], stats["hits"]) == ("miss", 1, 0)
    files = sorted(os.listdir(stats["entry"]))
    assert "manifest.json" in files and len(files) == len(program.ir.weights) + 1
    manifest = json.load(open(os.path.join(stats["entry"], "manifest.json")))
    assert set(manifest["weights"]) == set(program.ir.weights)
    assert manifest["fields"]["mesh_shape"] == [1, 2] and manifest["fields"]["backend"] == sim.SIM_TENSOR_FORMAT

    uploads = forbid_conversion(monkeypatch)
    second = run(program)
    # the inputs and the persistent buffers make_configs creates on the reopened mesh; no weight
    assert len(uploads) == len(program.ir.inputs) + len(program.ir.buffers)
    stats = program.weight_cache_stats
    assert (stats["last"], stats["misses"], stats["hits"]) == ("hit", 1, 1)
    assert_same_weights(program._runner, uncached[0])
    assert np.array_equal(first.numpy(), uncached[1]) and np.array_equal(second.numpy(), uncached[1])
    assert sorted(os.listdir(tmp_path)) == [os.path.basename(stats["entry"])]  # no temporary directory left


def test_bfp8_weights_come_back_bit_identical(tmp_path, monkeypatch):
    program = program_of("bfp8")
    direct = runner(program, "").load_weights(program.weights)
    assert runner(program, tmp_path).load_weights(program.weights).cache_stats["last"] == "miss"
    forbid_conversion(monkeypatch)
    hit = runner(program, tmp_path).load_weights(program.weights)
    assert hit.cache_stats["last"] == "hit"
    assert_same_weights(hit, direct)
    assert any(t.dtype is sim.bfloat8_b for t in hit.weights[0].values())


def test_cfg_branches_share_one_conversion_and_one_entry(tmp_path, monkeypatch):
    """With cfg each weight is converted once and loaded onto every submesh, as a direct upload would place it."""
    program, arrays = synthetic_program(mesh=(2, 2), submesh=(1, 2), cfg=2)
    calls = []
    convert = device.convert_weight
    monkeypatch.setattr(device, "convert_weight", lambda *a, **k: calls.append(a) or convert(*a, **k))
    direct = device.Runner(program, "sim", cache_dir="").load_weights(arrays)
    miss = device.Runner(program, "sim", cache_dir=str(tmp_path)).load_weights(arrays)
    assert miss.cache_stats["last"] == "miss" and len(calls) == len(arrays)
    hit = device.Runner(program, "sim", cache_dir=str(tmp_path)).load_weights(arrays)
    assert hit.cache_stats["last"] == "hit" and len(calls) == len(arrays)
    for loaded in (miss, hit):
        assert len(loaded.weights) == 2
        assert_same_weights(loaded, direct)
        for branch, mesh in zip(loaded.weights, loaded.meshes):
            assert all(t.device() is mesh for t in branch.values())


# --- the key -----------------------------------------------------------------------------------------------------
def key_of(program, arrays=None) -> str:
    module = program.module("sim")
    arrays = program.weights if arrays is None else arrays
    return WeightCache.for_program("/cache", module, device.backend_version(sim),
                                   device.weights_digest(arrays, module.WEIGHTS)).path


def test_key_follows_weights_dtype_and_parallel_config():
    program = program_of()
    base = key_of(program)
    assert key_of(program) == base  # stable
    changed = dict(program.weights)
    name = sorted(changed)[0]
    changed[name] = changed[name] + np.float32(1e-3)
    assert key_of(program, changed) != base  # weight values
    assert key_of(program_of("bfp8")) != base  # weight dtype: bf16 vs bfp8
    assert key_of(program_of(mesh="1x2 sp2@1")) != base  # parallel config: sp keeps whole what tp splits
    assert os.path.basename(base).startswith(program.ir.model_name + "-")


def test_changed_weights_miss_and_give_their_own_outputs(tmp_path):
    program = program_of()
    changed = {name: value * np.float32(0.5) for name, value in program.weights.items()}
    cached = runner(program, tmp_path)
    assert cached.load_weights(program.weights).cache_stats["last"] == "miss"
    assert cached.load_weights(changed).cache_stats["last"] == "miss"  # not the first entry
    assert cached.load_weights(changed).cache_stats["last"] == "hit"
    assert len(os.listdir(tmp_path)) == 2
    assert_same_weights(cached, runner(program, "").load_weights(changed))


# --- damaged entries ---------------------------------------------------------------------------------------------
def largest_file(entry: str) -> str:
    files = [f for f in os.listdir(entry) if f.endswith(".tensorbin")]
    return os.path.join(entry, max(files, key=lambda f: os.path.getsize(os.path.join(entry, f))))


@pytest.mark.parametrize("damage, why", [
    ("truncate", r"has \d+ bytes, its manifest says \d+"),
    ("flip", "fails its sha256 check"),
    ("delete", "is missing"),
    ("no manifest", "no manifest"),
    ("bad manifest", "unreadable manifest"),
])
def test_a_damaged_entry_is_rebuilt_never_used(tmp_path, damage, why, uncached):
    program = program_of()
    cached = runner(program, tmp_path)
    entry = cached.load_weights(program.weights).cache_stats["entry"]
    path = largest_file(entry)
    data = bytearray(open(path, "rb").read())
    if damage == "truncate":
        open(path, "wb").write(bytes(data[: len(data) - 100]))
    elif damage == "flip":
        data[-5] ^= 0x10  # inside the last weight values: the file still parses ...
        open(path, "wb").write(bytes(data))
        sim.load_tensor(path)  # ... and loads without complaint, as on ttnn: only the checksum catches it
    elif damage == "delete":
        os.remove(path)
    elif damage == "no manifest":
        os.remove(os.path.join(entry, "manifest.json"))
    else:
        open(os.path.join(entry, "manifest.json"), "w").write('{"format": 1, "key": ')
    with pytest.warns(WeightCacheWarning, match=f"unusable: .*{why}.*rebuilding it"):
        cached.load_weights(program.weights)
    assert cached.cache_stats["last"] == "rebuild"
    assert_same_weights(cached, uncached[0])
    if damage == "flip":  # the values that reach the program are the right ones
        assert np.array_equal(cached(program._check_inputs(tiny_inputs("sd3-tiny")))[0], uncached[1])
    assert cached.load_weights(program.weights).cache_stats["last"] == "hit"
    assert sorted(os.listdir(tmp_path)) == [os.path.basename(entry)]  # the damaged copy is gone


def test_a_leftover_temporary_directory_is_ignored(tmp_path):
    program = program_of()
    name = os.path.basename(key_of(program))
    crashed = tmp_path / f".tmp-{name}-crashed"  # a writer died after its first file, before the manifest
    crashed.mkdir()
    (crashed / "00000.tensorbin").write_bytes(b"partial")
    old = tmp_path / f".tmp-{name}-long-ago"
    old.mkdir()
    os.utime(old, (time.time() - 2 * STALE_SECONDS,) * 2)
    cached = runner(program, tmp_path)
    assert cached.load_weights(program.weights).cache_stats["last"] == "miss"  # no rebuild: it is no entry
    assert cached.load_weights(program.weights).cache_stats["last"] == "hit"
    assert crashed.exists() and not old.exists()  # a young one may belong to a live writer; an old one is removed


def test_an_unwritable_cache_warns_and_still_uploads(tmp_path, uncached):
    program = program_of()
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with pytest.warns(WeightCacheWarning, match="cannot be written"):
        cached = runner(program, blocker / "cache").load_weights(program.weights)
    assert_same_weights(cached, uncached[0])


# --- where the cache is ------------------------------------------------------------------------------------------
def test_the_environment_variable_sets_the_directory(use, tmp_path, monkeypatch):
    program = use(program_of())
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    run(program)
    assert program.weight_cache_stats["last"] == "miss"
    assert os.path.dirname(program.weight_cache_stats["entry"]) == str(tmp_path)
    run(program)
    assert program.weight_cache_stats["last"] == "hit"
    # an empty argument turns the cache off even when the variable is set
    assert runner(program, "").load_weights(program.weights).cache_stats["last"] == "off"


def test_saved_program_takes_weight_cache_option_and_variable(tmp_path):
    path = program_of().save(tmp_path / "sd3")
    cache = tmp_path / "cache"
    env = dict(os.environ, PYTHONPATH=ROOT)
    env.pop(CACHE_ENV, None)

    def standalone(*args, **extra):
        result = subprocess.run([sys.executable, str(path), *args], capture_output=True, text=True,
                                env=dict(env, **extra), check=True)
        return result.stdout

    first = standalone("--weight-cache", str(cache))
    second = standalone(**{CACHE_ENV: str(cache)})
    assert "weight cache miss" in first and "weight cache hit" in second
    outputs = [[line for line in out.splitlines() if line.startswith("output 0")] for out in (first, second)]
    assert outputs[0] and outputs[0] == outputs[1]  # same shape, same PCC vs golden
    # the saved program keys its weights file as the in-process program keys its arrays: they share the entry
    assert runner(program_of(), cache).load_weights(program_of().weights).cache_stats["last"] == "hit"


# --- the simulated dump_tensor / load_tensor -------------------------------------------------------------------
def test_sim_dump_and_load_give_the_same_per_device_tensor(tmp_path):
    mesh = sim.open_mesh_device(sim.MeshShape(2, 2))
    mapper = sim.create_mesh_mapper(mesh, sim.MeshMapperConfig([sim.PlacementReplicate(), sim.PlacementShard(1)]))
    values = np.random.default_rng(0).standard_normal((64, 128)).astype(np.float32)
    for dtype in (sim.float32, sim.bfloat16, sim.bfloat8_b):
        host = sim.Tensor(values, data_type=dtype, layout=sim.TILE_LAYOUT, mesh_mapper=mapper)
        assert host.device() is None and len(host.shards) == 4 and host.shape == (64, 64)  # split on host
        path = tmp_path / f"{dtype.name}.tensorbin"
        sim.dump_tensor(path, host)
        direct = sim.Tensor(values, data_type=dtype, layout=sim.TILE_LAYOUT, device=mesh, mesh_mapper=mapper)
        for loaded in (sim.load_tensor(path, device=mesh), sim.to_device(sim.load_tensor(path), mesh),
                       sim.to_device(host, mesh)):
            assert loaded.device() is mesh and loaded.dtype is dtype and loaded.layout is sim.TILE_LAYOUT
            assert all(torch.equal(a, b) for a, b in zip(loaded.shards, direct.shards))
    # replicated shards are stored once, as ttnn does: 2 of the 4 shards
    assert os.path.getsize(tmp_path / "float32.tensorbin") < 64 * 64 * 4 * 3
    with pytest.raises(RuntimeError, match="tensorbin extension"):
        sim.dump_tensor(tmp_path / "x.bin", host)
    with pytest.raises(RuntimeError, match="holds shards for a"):
        sim.load_tensor(tmp_path / "float32.tensorbin", device=sim.open_mesh_device(sim.MeshShape(1, 4)))
    with pytest.raises(RuntimeError, match="does not exist"):
        sim.load_tensor(tmp_path / "absent.tensorbin")


# --- the real ttnn (mock cluster) --------------------------------------------------------------------------------
def synthetic_program(mesh=(1, 1), submesh=(1, 1), cfg=1):
    """A namespace shaped like an emitted program's constants, with one weight of each kind programs hold."""
    import types

    tp = submesh[1]
    weights = {
        "qkv.weight": [[64, 64], "bfloat8_b", "TILE", [None, 1]],
        "out.weight": [[64, 64], "bfloat16", "TILE", [None, 1]],
        "norm.bias": [[1, 64], "bfloat16", "TILE", [None, None]],
        "rope.cos": [[32, 64], "float32", "ROW_MAJOR", [None, None]],
        "mask": [[32, 32], "int32", "TILE", [None, None]],
        "padded.weight": [[32, 64], "bfloat16", "TILE", [None, 1]],  # zero-padded to whole shards
    }
    rng = np.random.default_rng(0)
    arrays = {
        "qkv.weight": rng.standard_normal((64, 64 * tp)).astype(np.float32),
        "out.weight": rng.standard_normal((64, 64 * tp)).astype(np.float32),
        "norm.bias": rng.standard_normal((1, 64)).astype(np.float32),
        "rope.cos": rng.standard_normal((32, 64)).astype(np.float32),
        "mask": (rng.random((32, 32)) > 0.5).astype(np.int32),
        "padded.weight": rng.standard_normal((32, 64 * tp - 32)).astype(np.float32),
    }
    program = types.SimpleNamespace(
        MODEL_NAME="cache-check", MESH_SHAPE=tuple(mesh), SUBMESH_SHAPE=tuple(submesh),
        CFG_FACTOR=cfg, WEIGHTS=weights, use_backend=device.bind_backend, make_configs=lambda m: {})
    return program, arrays


# Runs in the ttnn venv (Python 3.12, no torch, no meshdit installed): imports device.py by path and drives its
# Runner through miss, hit and damage on a mocked mesh. Mock devices compute nothing, so values are compared on
# host: each cached file is byte-equal to a fresh conversion's dump.
CHECK_SCRIPT = r'''
import importlib.util, json, os, sys, types, warnings
import numpy as np

runtime, cache_dir, program_file, arrays_file = sys.argv[1:5]
spec = importlib.util.spec_from_file_location("meshdit_device", runtime)
rt = importlib.util.module_from_spec(spec)
spec.loader.exec_module(rt)
ttnn = rt.bind_backend("ttnn")
program = types.SimpleNamespace(**json.load(open(program_file)), use_backend=rt.bind_backend,
                                make_configs=lambda mesh: {})
arrays = dict(np.load(arrays_file))
WEIGHTS = program.WEIGHTS
real_convert, calls = rt.convert_weight, []
rt.convert_weight = lambda *a, **k: calls.append(a) or real_convert(*a, **k)
report = {}


def describe(t):
    return [list(t.shape), str(t.dtype), str(t.layout), str(t.memory_config()), str(t.tensor_topology()),
            len(ttnn.get_device_tensors(t))]


def load(**extra):
    """One Runner's load; a function, so no submesh or device tensor outlives it (real ttnn refuses to reopen
    the mesh while any is alive)."""
    calls.clear()
    runner = rt.Runner(program, "ttnn", cache_dir=cache_dir)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        runner.load_weights(arrays)
    out = dict(runner.cache_stats, conversions=len(calls),
               warnings=[str(w.message) for w in caught if issubclass(w.category, rt._sibling("weight_cache").WeightCacheWarning)])
    entry = runner.cache_stats["entry"]
    manifest = json.load(open(os.path.join(entry, "manifest.json")))
    fresh = os.path.join(cache_dir, "fresh.tensorbin")
    same_files, same_device = True, True
    for name, (shape, dtype, layout, placements) in WEIGHTS.items():
        ttnn.dump_tensor(fresh, real_convert(ttnn, arrays[name], dtype, layout, runner.meshes[0], placements, shape))
        same_files &= open(os.path.join(entry, manifest["weights"][name]["file"]), "rb").read() == \
            open(fresh, "rb").read()
        for branch, mesh in zip(runner.weights, runner.meshes):
            direct = rt.upload(ttnn, arrays[name], dtype, layout, mesh, placements, shape)
            same_device &= describe(branch[name]) == describe(direct)
    os.remove(fresh)
    out.update(files_equal_fresh_conversion=bool(same_files), like_direct_upload=bool(same_device),
               files={f: os.path.getsize(os.path.join(entry, f)) for f in sorted(os.listdir(entry))},
               qkv=os.path.join(entry, manifest["weights"]["qkv.weight"]["file"]))
    runner.close()
    return out


report["first"] = load()
report["second"] = load()
path = report["first"]["qkv"]
data = bytearray(open(path, "rb").read())
data[-7] ^= 0x40
open(path, "wb").write(bytes(data))
report["ttnn_loads_flipped_file"] = list(ttnn.load_tensor(path).shape) == WEIGHTS["qkv.weight"][0]
report["flip"] = load()
data = open(path, "rb").read()
open(path, "wb").write(data[: len(data) // 2])
try:
    ttnn.load_tensor(path)
    report["ttnn_refuses_truncated_file"] = False
except RuntimeError as error:
    report["ttnn_refuses_truncated_file"] = "truncated or corrupt" in str(error)
report["truncate"] = load()
report["after"] = load()
report["cache_dir"] = sorted(os.listdir(cache_dir))
print("REPORT " + json.dumps(report))
'''


@pytest.mark.slow
@pytest.mark.parametrize("cluster, mesh, cfg", [("n150", (1, 1), 1), ("t3k", (2, 4), 1), ("t3k", (2, 4), 2)])
def test_real_ttnn_weight_cache(tmp_path, cluster, mesh, cfg):
    """The cache code on the real ttnn 0.81.1, mocked n150 / t3k: host conversion, dump_tensor and load_tensor
    are real there (only device values are not computed)."""
    from meshdit.conformance.environment import ConformanceEnvironmentError, ensure_environment

    try:
        env = ensure_environment()
    except ConformanceEnvironmentError as error:
        pytest.skip(f"no ttnn mock environment: {error}")
    program, arrays = synthetic_program(mesh, (mesh[0], mesh[1] // cfg), cfg)
    constants = {k: getattr(program, k) for k in ("MODEL_NAME", "MESH_SHAPE", "SUBMESH_SHAPE", "CFG_FACTOR", "WEIGHTS")}
    (tmp_path / "program.json").write_text(json.dumps(constants))
    np.savez(tmp_path / "arrays.npz", **arrays)
    (tmp_path / "check.py").write_text(CHECK_SCRIPT)
    result = subprocess.run(
        [env.python, "check.py", device.__file__, str(tmp_path / "cache"), "program.json", "arrays.npz"],
        env=env.variables(cluster), cwd=tmp_path, capture_output=True, text=True, timeout=600)
    lines = [line for line in result.stdout.splitlines() if line.startswith("REPORT ")]
    assert result.returncode == 0 and lines, result.stdout[-2000:] + result.stderr[-4000:]
    report = json.loads(lines[0][len("REPORT "):])
    weights = 6
    first, second = report["first"], report["second"]
    assert (first["last"], first["conversions"]) == ("miss", weights)  # once per weight, whatever the cfg
    assert (second["last"], second["conversions"]) == ("hit", 0)
    for load in (first, second, report["flip"], report["truncate"], report["after"]):
        assert load["files_equal_fresh_conversion"] and load["like_direct_upload"]
        assert len(load["files"]) == weights + 1
    assert report["ttnn_loads_flipped_file"] and report["ttnn_refuses_truncated_file"]
    assert report["flip"]["last"] == "rebuild" and "sha256" in report["flip"]["warnings"][0]
    assert report["truncate"]["last"] == "rebuild" and "bytes" in report["truncate"]["warnings"][0]
    assert report["after"]["last"] == "hit"
    assert report["cache_dir"] == [os.path.basename(os.path.dirname(first["qkv"]))]
