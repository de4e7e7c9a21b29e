"""The weight cache of the device runtime: converted weights (device dtype, layout, split per device) kept on disk,
one entry per (model, weight values, parallel config, mesh, dtypes), so a second load skips the conversion.

Torch-free like device.py, and saved beside a program as `meshdit_weight_cache.py`. It knows files, keys and
manifests; the device runtime gives it the conversion (device.convert_weight) and the backend's name.

    root = cache_root(cache_dir)                       # None: no cache
    cache = WeightCache.for_program(root, program, backend, weights_key)
    manifest, why = cache.check(specs)                 # an intact entry, or why not
    weights = cache.load(ttnn, manifest, specs, mesh)  # a hit
    weights = cache.build(ttnn, arrays, specs, meshes, convert)  # a miss: convert, upload, write
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import time
import warnings
from collections.abc import Mapping

# Converting weights to the device format (tilizing, packing bfloat8_b blocks, padding and splitting per device) is
# host work that gives the same result on every run; the cache keeps that result on disk, one entry per (model,
# weight values, parallel config, mesh, dtypes), so a second load skips it. What the real ttnn 0.81.1 does, checked
# on mocked n150 (1x1) and t3k (2x4) meshes (tests/test_weight_cache.py::test_real_ttnn_weight_cache runs it):
#   * ttnn.Tensor(array, data_type=, layout=, mesh_mapper=) with no device gives a HOST tensor already in the
#     device format and split per device: one shard per device, the mapper's placements in its topology. The mesh
#     must be open (host tilizing queries the cluster), so conversion happens after open_mesh.
#   * ttnn.dump_tensor(path, tensor) writes ONE flatbuffer file holding every device's shard and nothing else (the
#     ./generated/ directory comes from opening the mesh). Identical shards are stored once: a bfloat16 64x512
#     weight replicated on 8 devices takes 66 KB, not 8 x 66 KB; the same weight sharded 4 ways and replicated 2
#     ways stores 4 shards. The file name must end in .tensorbin (ttnn raises otherwise).
#   * ttnn.load_tensor(path, device=mesh) gives the same shape, dtype, layout, topology and memory config (DRAM
#     interleaved) as a direct upload; without device, the host tensor. A file written from one cfg submesh loads
#     onto the other submesh of the same shape, and ttnn.to_device(host tensor, submesh) works for both submeshes,
#     so one conversion serves every cfg branch.
#   * A truncated file makes load_tensor raise (TT_FATAL "...the file is truncated or corrupt"), but a flipped byte
#     in the values loads silently; hence the sha256 of every file in the manifest, checked before any load.
CACHE_ENV = "MESHDIT_WEIGHT_CACHE"
CACHE_FORMAT = 1  # bump when the entry layout or the key's meaning changes: older entries then never match
MANIFEST = "manifest.json"
STALE_SECONDS = 24 * 3600  # a temporary directory this old belongs to a crashed writer and is removed
cache_log = logging.getLogger("meshdit.weight_cache")


class WeightCacheWarning(UserWarning):
    """A weight cache entry was unusable (and is rebuilt), or the cache could not be written."""


def cache_root(cache_dir=None) -> str | None:
    """The weight cache directory: `cache_dir`, else $MESHDIT_WEIGHT_CACHE; None (no cache) when neither is set.
    An empty cache_dir ("") turns the cache off even when the variable is set."""
    value = os.environ.get(CACHE_ENV) if cache_dir is None else cache_dir
    return os.path.abspath(os.path.expanduser(os.fspath(value))) if value else None


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


class SafetensorsArrays(Mapping):
    """The arrays of a .safetensors file, each read when asked for: a weight cache hit reads each weight once to
    hash it and never holds the whole file in memory; a miss converts one weight at a time."""

    def __init__(self, path):
        from safetensors import safe_open

        self.path = os.fspath(path)
        self._file = safe_open(self.path, framework="numpy")
        self._names = list(self._file.keys())

    def __getitem__(self, name):
        if name not in self._names:
            raise KeyError(name)
        return self._file.get_tensor(name)

    def __iter__(self):
        return iter(self._names)

    def __len__(self):
        return len(self._names)


class WeightCache:
    """One weight cache entry: every weight's device-format shards for one program on one backend.

    On disk, under the cache root:
        <model>-<key[:24]>/manifest.json      written last: the key, what it was made of, and per weight its file,
                                              byte size and sha256
        <model>-<key[:24]>/00000.tensorbin    one ttnn.dump_tensor file per weight (in WEIGHTS order): the host
        ...                                   tensor in the device dtype/layout, one shard per device of a cfg
                                              branch's (sub)mesh; every cfg branch loads the same files
        .tmp-<model>-<key[:24]>-XXXX/         an entry being written; one rename publishes it when complete
    The key is the sha256 of: cache format, model name, weight values (a digest of the arrays, or a key the caller
    gives), backend and ttnn version, mesh and submesh shapes, cfg factor, and every weight's per-device shape,
    dtype, layout and sharded dims (which is how the parallel config reaches the weights). An entry whose manifest
    is missing, unreadable, for another key, or whose files do not match it in size and sha256 is never used.
    """

    def __init__(self, root: str, fields: dict):
        self.root = root
        self.fields = fields
        self.key = hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()
        slug = re.sub(r"[^A-Za-z0-9._-]+", "_", str(fields.get("model") or "program")).strip("._")[:64] or "program"
        self.path = os.path.join(root, f"{slug}-{self.key[:24]}")

    @classmethod
    def for_program(cls, root: str, program, backend: str, weights_key: str) -> "WeightCache":
        table = {name: [list(shape), dtype, layout, list(placements or ())]
                 for name, (shape, dtype, layout, placements) in program.WEIGHTS.items()}
        return cls(root, {
            "format": CACHE_FORMAT,
            "model": program.MODEL_NAME,
            "weights": str(weights_key),
            "backend": backend,
            "mesh_shape": list(program.MESH_SHAPE),
            "submesh_shape": list(program.SUBMESH_SHAPE),
            "cfg_factor": int(program.CFG_FACTOR),
            "weight_specs": hashlib.sha256(json.dumps(table, sort_keys=True).encode()).hexdigest(),
        })

    # reading
    def check(self, specs: dict):
        """(manifest, None) for a complete, intact entry; else (None, why), why None when there is no entry."""
        if not os.path.isdir(self.path):
            return None, None
        manifest_path = os.path.join(self.path, MANIFEST)
        if not os.path.isfile(manifest_path):
            return None, "no manifest (an interrupted write)"
        try:
            with open(manifest_path) as f:
                manifest = json.load(f)
            files = {name: (os.path.basename(e["file"]), int(e["size"]), str(e["sha256"]))
                     for name, e in manifest["weights"].items()}
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
            return None, f"unreadable manifest ({type(error).__name__}: {error})"
        if manifest.get("key") != self.key:
            return None, "its manifest is for another key"
        if set(files) != set(specs):
            return None, "its manifest lists other weights"
        for name in specs:  # sizes first: a truncated file is caught without reading anything
            file, size, _ = files[name]
            try:
                actual = os.path.getsize(os.path.join(self.path, file))
            except OSError:
                return None, f"{file} ({name}) is missing"
            if actual != size:
                return None, f"{file} ({name}) has {actual} bytes, its manifest says {size}"
        for name in specs:
            file, _, sha = files[name]
            if file_sha256(os.path.join(self.path, file)) != sha:
                return None, f"{file} ({name}) fails its sha256 check"
        return manifest, None

    def load(self, ttnn, manifest: dict, specs: dict, mesh) -> dict:
        """name -> device tensor on `mesh`, from a checked entry (no conversion)."""
        weights = {}
        for name, (shape, dtype, layout, placements) in specs.items():
            tensor = ttnn.load_tensor(os.path.join(self.path, manifest["weights"][name]["file"]), device=mesh)
            if tuple(tensor.shape) != tuple(shape) or tensor.dtype != getattr(ttnn, dtype):
                raise ValueError(f"{name}: the file holds {list(tensor.shape)} {tensor.dtype}, the program "
                                 f"expects {list(shape)} {dtype}")
            weights[name] = tensor
        return weights

    # writing
    def build(self, ttnn, arrays, specs: dict, meshes: list, convert) -> list:
        """Convert every weight once (`convert`: the device runtime's convert_weight), upload it to every cfg branch
        and write the entry. Files go into a
        temporary directory, the manifest last, and one rename publishes the whole entry, so a reader sees a
        complete entry or none. If the cache cannot be written (disk full, read-only), the weights are still
        uploaded, with a warning."""
        temp = self._temp_dir()
        files, weights = {}, [{} for _ in meshes]
        try:
            for index, (name, (shape, dtype, layout, placements)) in enumerate(specs.items()):
                host = convert(ttnn, arrays[name], dtype, layout, meshes[0], placements, shape)
                if temp is not None:
                    temp = self._write(temp, f"{index:05d}.tensorbin", name, host, ttnn, files)
                for branch, mesh in zip(weights, meshes):
                    branch[name] = ttnn.to_device(host, mesh)
                del host
            if temp is not None:
                self._publish(temp, files)
        except BaseException:
            if temp is not None:
                shutil.rmtree(temp, ignore_errors=True)
            raise
        return weights

    def _temp_dir(self):
        try:
            os.makedirs(self.root, exist_ok=True)
            self._remove_stale()
            return tempfile.mkdtemp(prefix=f".tmp-{os.path.basename(self.path)}-", dir=self.root)
        except OSError as error:
            warnings.warn(f"weight cache {self.root} cannot be written ({error}); uploading without it",
                          WeightCacheWarning, stacklevel=4)
            return None

    def _remove_stale(self):
        """Temporary directories left by writers that crashed long ago. Younger ones are left alone (another
        process may be writing them); either way they are never read, so leaving one is harmless."""
        now = time.time()
        for entry in os.scandir(self.root):
            if entry.name.startswith((".tmp-", ".trash-")) and entry.is_dir(follow_symlinks=False):
                try:
                    if now - entry.stat(follow_symlinks=False).st_mtime > STALE_SECONDS:
                        shutil.rmtree(entry.path, ignore_errors=True)
                except OSError:
                    pass

    def _write(self, temp, file, name, host, ttnn, files):
        """Dump one converted weight and record its size and sha256; on an OS error stop writing the entry."""
        path = os.path.join(temp, file)
        try:
            ttnn.dump_tensor(path, host)
            _fsync(path)  # the rename that publishes the entry must not reach the disk before the data does
            files[name] = {"file": file, "size": os.path.getsize(path), "sha256": file_sha256(path)}
            return temp
        except OSError as error:
            warnings.warn(f"weight cache entry {self.path} cannot be written ({error}); uploading without it",
                          WeightCacheWarning, stacklevel=5)
            shutil.rmtree(temp, ignore_errors=True)
            return None

    def _publish(self, temp, files):
        manifest = {"format": CACHE_FORMAT, "key": self.key, "fields": self.fields, "weights": files,
                    "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        path = os.path.join(temp, MANIFEST)
        with open(path, "w") as f:
            json.dump(manifest, f, indent=1, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.replace(temp, self.path)
        except OSError:  # another process published this entry first: a rename cannot replace a non-empty directory
            shutil.rmtree(temp, ignore_errors=True)

    def discard(self):
        """Remove an unusable entry: renamed aside first, so no reader ever sees it half deleted."""
        try:
            trash = tempfile.mkdtemp(prefix=f".trash-{os.path.basename(self.path)}-", dir=self.root)
            os.replace(self.path, os.path.join(trash, "entry"))
        except OSError:  # gone already, or a read-only cache: the rebuilt entry then cannot be published either
            return
        shutil.rmtree(trash, ignore_errors=True)


def _fsync(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


