"""Conformance: run emitted programs on the real ttnn library (mock-cluster mode) and read its allocator.

The simulated mesh checks numbers; this checks that real ttnn 0.81.1 accepts every call of a program (argument
binding, shapes, layouts, memory configs, program factories, CCL parameters) on a mocked N150, T3K or Galaxy, and
records what its allocator holds per device: weights, and the peak during one forward pass.

    report = conformance.run_on_mock(program)           # a Program (saved to a scratch dir) or a saved program dir
    print(report.summary())

It runs in a separate Python 3.12 process (environment.py builds and caches that environment), untraced: trace
capture crashes in mock mode, and the report says so.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import MeshditError
from .environment import CLUSTERS, ConformanceEnvironmentError, ensure_environment

MOCK_RUN = Path(__file__).with_name("mock_run.py")
GIB = 1024 ** 3


class ConformanceError(MeshditError):
    """Real ttnn rejected a call of the program (or the mock run failed); the message holds ttnn's own error."""


@dataclass
class MockRunReport:
    cluster: str
    mesh: tuple
    device_operations: int  # device operations one forward pass launched (one cfg branch)
    weights_bytes: int  # DRAM per device the allocator holds for the weights
    peak_dram_bytes: int  # DRAM per device at the forward pass's peak (weights included)
    peak_l1_bytes: int  # L1 buffers per device at the peak
    peak_l1_cb_per_core: int  # ttnn's own estimate from the graph capture (extract_peak_L1_memory_usage)
    dram_capacity: int
    l1_capacity: int
    weights_uploaded: bool
    trace_note: str
    seconds: float
    raw: dict

    @property
    def fits(self) -> bool:
        return self.peak_dram_bytes <= self.dram_capacity and self.peak_l1_bytes <= self.l1_capacity

    def summary(self) -> str:
        weights = "uploaded" if self.weights_uploaded else "allocated, not written"
        return (f"ttnn 0.81.1 mock {self.cluster} mesh {self.mesh[0]}x{self.mesh[1]}: {self.device_operations} "
                f"device ops accepted; per device: weights {self.weights_bytes / GIB:.3f} GiB ({weights}), peak "
                f"DRAM {self.peak_dram_bytes / GIB:.3f} of {self.dram_capacity / GIB:.2f} GiB, peak L1 buffers "
                f"{self.peak_l1_bytes / 2**20:.2f} MiB (ttnn's graph-capture L1 estimate "
                f"{self.peak_l1_cb_per_core / 1024:.0f} KiB); {'fits' if self.fits else 'DOES NOT FIT'}; {self.trace_note.split(':')[0]} "
                f"({self.seconds:.1f} s)")


def cluster_for(mesh_shape: tuple) -> str:
    """The smallest mocked cluster that holds a mesh of this shape."""
    for name, (_, shape) in CLUSTERS.items():
        if mesh_shape[0] <= shape[0] and mesh_shape[1] <= shape[1]:
            return name
    raise ConformanceEnvironmentError(f"no mocked cluster holds a {mesh_shape[0]}x{mesh_shape[1]} mesh; "
                                      f"known: {sorted(CLUSTERS)}")


def _ttnn_error(stderr: str) -> str:
    """The lines of a failed run that say why: ttnn's TT_FATAL / TT_THROW, Python's exception."""
    lines = [line for line in stderr.splitlines()
             if re.search(r"TT_FATAL|TT_THROW|Error|error:|incompatible function arguments|Traceback|^  File ", line)
             and "| info" not in line]
    return "\n".join(lines[-25:]) or stderr[-3000:]


def run_on_mock(program, cluster: str | None = None, weights: bool = True, timeout: float = 1800,
                workdir: str | None = None) -> MockRunReport:
    """Run a program (a Program, or a directory Program.save wrote) on a mocked cluster with the real ttnn.

    weights=False allocates the weights on device without uploading values: the allocator sees the same buffers,
    and a full-size model planned on meta can be checked without host copies of its weights."""
    scratch = tempfile.TemporaryDirectory(prefix="meshdit-mock-", dir=workdir)
    with scratch:
        if isinstance(program, (str, os.PathLike)):
            directory = str(program)
        else:
            directory = os.path.join(scratch.name, "program")
            if weights:
                program.save(directory)
            else:
                program.save_program(directory)
        mesh_shape = _mesh_shape_of(directory)
        cluster = cluster or cluster_for(mesh_shape)
        env = ensure_environment()
        report_path = os.path.join(scratch.name, "report.json")
        command = [env.python, str(MOCK_RUN), directory, "--report", report_path]
        if not weights:
            command.append("--no-weights")
        result = subprocess.run(command, cwd=scratch.name, env=env.variables(cluster), capture_output=True,
                                text=True, timeout=timeout)
        if result.returncode or not os.path.exists(report_path):
            raise ConformanceError(
                f"real ttnn rejected the program in {directory} on a mocked {cluster} (exit {result.returncode}):\n"
                + _ttnn_error(result.stderr + result.stdout))
        raw = json.loads(Path(report_path).read_text())
    return MockRunReport(
        cluster=cluster, mesh=tuple(raw["mesh"]), device_operations=raw["device_operations"],
        weights_bytes=raw["after_weights"]["DRAM"]["allocated"] - raw["after_open"]["DRAM"]["allocated"],
        peak_dram_bytes=raw["peak"]["DRAM"], peak_l1_bytes=raw["peak"]["L1"],
        peak_l1_cb_per_core=raw["peak_l1_cb_per_core"], dram_capacity=raw["capacity"]["DRAM"],
        l1_capacity=raw["capacity"]["L1"], weights_uploaded=raw["weights_uploaded"], trace_note=raw["trace"],
        seconds=raw["seconds"], raw=raw)


def _mesh_shape_of(directory: str) -> tuple:
    """MESH_SHAPE as the saved program states it (read from the text: the program is not imported here)."""
    text = Path(directory, "program.py").read_text()
    match = re.search(r"^MESH_SHAPE = \((\d+), (\d+)\)", text, re.M)
    if not match:
        raise ConformanceError(f"{directory}/program.py has no MESH_SHAPE line: not a meshdit program")
    return int(match.group(1)), int(match.group(2))


__all__ = ["run_on_mock", "MockRunReport", "ConformanceError", "ConformanceEnvironmentError", "cluster_for",
           "ensure_environment"]
