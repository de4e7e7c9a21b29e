"""A cached Python 3.12 environment where the real ttnn 0.81.1 runs on mocked Tenstorrent clusters.

ttnn's PyPI wheels exist for CPython 3.10 and 3.12 only, and without hardware ttnn opens a device only in
mock-cluster mode (TT_METAL_MOCK_CLUSTER_DESC_PATH). Device start-up still JIT-compiles firmware with the sfpi
RISC-V toolchain, which the wheel does not ship and which cannot be downloaded here, so the environment carries a
stand-in compiler (fake_sfpi.py) inside a runtime root of symlinks to the wheel's own files; the venv itself is
left as pip made it. In mock mode ops are validated, programs are built and the real allocator runs, but no
values are computed (reads return zeros).

    env = ensure_environment()           # builds once (about a minute, needs the package registry), then cached
    subprocess.run([env.python, script], env=env.variables("t3k"), cwd=scratch)

The cache directory is $MESHDIT_TTNN_ENV, else ~/.cache/meshdit/ttnn-<version>-py312. $MESHDIT_PYTHON312 names
the interpreter when `python3.12` is not on PATH.
"""

from __future__ import annotations

import fcntl
import glob
import hashlib
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from ..errors import MeshditError

TTNN_VERSION = "0.81.1"
PACKAGES = [f"ttnn=={TTNN_VERSION}", "safetensors>=0.4"]

# cluster name -> (descriptor file, mesh shape it offers)
CLUSTERS = {
    "n150": ("wormhole_N150.yaml", (1, 1)),
    "t3k": ("t3k_cluster_desc.yaml", (2, 4)),
    "galaxy": ("6u_cluster_desc.yaml", (4, 8)),
}

FAKE_COMPILER = Path(__file__).with_name("fake_sfpi.py")


class ConformanceEnvironmentError(MeshditError):
    """The ttnn mock environment cannot be built or used on this machine."""


def find_python312() -> str:
    """A CPython 3.12 interpreter: $MESHDIT_PYTHON312, python3.12 on PATH, or a pyenv install."""
    candidates = [os.environ.get("MESHDIT_PYTHON312"), shutil.which("python3.12")]
    roots = [os.environ.get("PYENV_ROOT"), os.path.expanduser("~/.pyenv"), "/root/.pyenv"]
    for root in filter(None, roots):
        candidates += sorted(glob.glob(os.path.join(root, "versions", "3.12*", "bin", "python3.12")), reverse=True)
    for path in filter(None, candidates):
        # pyenv shims exist on PATH even when they refuse to run: ask each candidate for its version
        probe = subprocess.run([path, "-c", "import sys; print(sys.version_info[:2] == (3, 12))"],
                               capture_output=True, text=True) if os.access(path, os.X_OK) else None
        if probe is not None and probe.stdout.strip() == "True":
            return path
    raise ConformanceEnvironmentError(
        "no Python 3.12 interpreter found (ttnn 0.81.1 ships wheels for CPython 3.10 and 3.12 only): install one "
        "(e.g. `pyenv install 3.12`) or point MESHDIT_PYTHON312 at it")


def cluster_descriptor(cluster: str) -> str:
    """Path of a mock cluster descriptor: $MESHDIT_CLUSTER_DESCS, else ../shared/ttnn-mock/cluster_descs beside
    the repository."""
    if cluster not in CLUSTERS:
        raise ConformanceEnvironmentError(f"unknown cluster {cluster!r}; known: {sorted(CLUSTERS)}")
    roots = [os.environ.get("MESHDIT_CLUSTER_DESCS"),
             str(Path(__file__).resolve().parents[3] / "shared" / "ttnn-mock" / "cluster_descs")]
    for root in filter(None, roots):
        path = os.path.join(root, CLUSTERS[cluster][0])
        if os.path.exists(path):
            return path
    raise ConformanceEnvironmentError(
        f"mock cluster descriptor {CLUSTERS[cluster][0]} not found in {[r for r in roots if r]}; set "
        "MESHDIT_CLUSTER_DESCS to the directory holding tt-umd's cluster_descriptor_examples")


def default_directory() -> Path:
    return Path(os.environ.get("MESHDIT_TTNN_ENV")
                or os.path.expanduser(f"~/.cache/meshdit/ttnn-{TTNN_VERSION}-py312"))


@dataclass
class MockEnvironment:
    root: Path

    @property
    def python(self) -> str:
        return str(self.root / "venv" / "bin" / "python")

    @property
    def runtime_root(self) -> Path:
        return self.root / "runtime-root"

    def variables(self, cluster: str) -> dict:
        """Environment variables for a process that opens the mocked `cluster` with this environment's ttnn."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("TT_METAL_", "PYTHON"))}
        env.update({
            "TT_METAL_RUNTIME_ROOT": str(self.runtime_root),
            "TT_METAL_CACHE": str(self.root / "jit-cache") + "/",  # used as a plain prefix: keep the slash
            "TT_METAL_MOCK_CLUSTER_DESC_PATH": cluster_descriptor(cluster),
            "LOGURU_LEVEL": "WARNING",
        })
        return env


def _stamp() -> str:
    """What a built environment must match: ttnn version, packages and the stand-in compiler's text."""
    return hashlib.sha256(("\n".join(PACKAGES) + FAKE_COMPILER.read_text()).encode()).hexdigest()[:16]


def ensure_environment(directory=None, log=None) -> MockEnvironment:
    """The mock environment, built on first use. Safe against concurrent builders (file lock) and against a build
    that died half way (the READY stamp is written last; anything without it is rebuilt)."""
    root = Path(directory) if directory else default_directory()
    root.parent.mkdir(parents=True, exist_ok=True)
    env = MockEnvironment(root)
    ready = root / "READY"
    with open(str(root) + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if ready.exists() and ready.read_text().strip() == _stamp() and os.path.exists(env.python):
            return env
        if root.exists():
            shutil.rmtree(root)
        root.mkdir()
        _build(env, log or (lambda message: print(message, file=sys.stderr)))
        ready.write_text(_stamp() + "\n")
    return env


def _run(command: list, what: str) -> str:
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode:
        raise ConformanceEnvironmentError(f"{what} failed ({' '.join(command)}):\n{result.stderr[-3000:]}")
    return result.stdout


def _build(env: MockEnvironment, log) -> None:
    python = find_python312()
    log(f"meshdit: building the ttnn {TTNN_VERSION} mock environment in {env.root} (once; ~1 min)")
    _run([python, "-m", "venv", str(env.root / "venv")], "creating the Python 3.12 venv")
    _run([env.python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *PACKAGES],
         f"pip install {' '.join(PACKAGES)} (needs the package registry)")
    site = _run([env.python, "-c", "import os, sysconfig; print(sysconfig.get_paths()['purelib'])"],
                "locating site-packages").strip()
    package = Path(site) / "ttnn"
    # a root that mirrors the wheel's ttnn directory, except runtime/sfpi, which holds the stand-in compiler
    rt_root = env.runtime_root
    (rt_root / "runtime").mkdir(parents=True)
    for entry in package.iterdir():
        if entry.name != "runtime":
            (rt_root / entry.name).symlink_to(entry)
    for entry in (package / "runtime").iterdir():
        if entry.name != "sfpi":
            (rt_root / "runtime" / entry.name).symlink_to(entry)
    compiler = rt_root / "runtime" / "sfpi" / "compiler" / "bin" / "riscv-tt-elf-g++"
    compiler.parent.mkdir(parents=True)
    compiler.write_text(f"#!{env.python}\n" + FAKE_COMPILER.read_text())
    compiler.chmod(0o755)
    (env.root / "jit-cache").mkdir()
    log(f"meshdit: ttnn mock environment ready ({env.python})")
