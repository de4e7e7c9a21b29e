"""Run a saved meshdit program on the real ttnn library in mock-cluster mode and report what the device did.

Runs inside the conformance environment (Python 3.12, ttnn, numpy, safetensors; no torch, no meshdit install):

    python mock_run.py <program dir> [--report report.json] [--no-weights]

Every op call goes through real ttnn: argument binding, shape/layout/memory-config validation, program factory
selection and the real L1/DRAM allocator. Mock devices compute no values, so no PCC is possible here; the
simulated backend checks numbers. Trace capture is not attempted: in mock mode the first op inside
begin_trace_capture segfaults (the host-side command queue is not initialised for mock devices), so the program
runs untraced and the report says so.

Memory figures, per device: DRAM and L1 the allocator holds after the weights are uploaded (its memory view), and
the peak during one forward pass: that baseline plus the largest running sum of the buffers the forward allocates
and frees, read from ttnn's graph capture, with the peak circular-buffer/L1 use per core ttnn reports.
With --no-weights the weights are allocated on device uninitialised (ttnn.allocate_tensor_on_device) instead of
uploaded: the allocator sees the same buffers without host arrays, which lets full-size models be checked.
"""

import argparse
import importlib.util
import json
import os
import sys
import time

UNTRACED_NOTE = ("untraced: trace capture segfaults in ttnn's mock mode (no host-side command queue), so the "
                 "program ran op by op; on hardware `--trace` captures and replays it")


def load_program(directory: str):
    spec = importlib.util.spec_from_file_location("meshdit_program", os.path.join(directory, "program.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def allocated(ttnn, mesh) -> dict:
    """Bytes the allocator holds on one device, per buffer type (banks are allocated in lockstep)."""
    out = {}
    for kind in ("DRAM", "L1"):
        view = ttnn.get_memory_view(mesh, getattr(ttnn.BufferType, kind))
        out[kind] = {"allocated": view.total_bytes_allocated_per_bank * view.num_banks,
                     "capacity": view.total_bytes_per_bank * view.num_banks}
    return out


def forward_peaks(trace) -> dict:
    """Largest running sum of buffers allocated during a captured forward, per buffer type, on one device."""
    running, peak = {"DRAM": 0, "L1": 0}, {"DRAM": 0, "L1": 0}
    device = None
    for node in trace:
        kind = node.get("node_type")
        if kind not in ("buffer_allocate", "buffer_deallocate"):
            continue
        params = node["params"]
        device = params.get("device_id") if device is None else device
        if params.get("device_id") != device or params.get("type") not in running:
            continue  # a mesh allocates in lockstep: follow one device
        size = int(params["size"])
        running[params["type"]] += size if kind == "buffer_allocate" else -size
        peak[params["type"]] = max(peak[params["type"]], running[params["type"]])
    return peak


def uninitialised_weights(program, ttnn, mesh) -> dict:
    """Device weights with the program's per-device shapes, allocated but never written."""
    weights = {}
    for name, (shape, dtype, layout, placements) in program.WEIGHTS.items():
        spec = ttnn.TensorSpec(shape, getattr(ttnn, dtype),
                               ttnn.TILE_LAYOUT if layout == "TILE" else ttnn.ROW_MAJOR_LAYOUT)
        weights[name] = ttnn.allocate_tensor_on_device(spec, mesh)
    return weights


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("program_dir")
    parser.add_argument("--report", help="write the report here as JSON (also printed)")
    parser.add_argument("--no-weights", action="store_true",
                        help="allocate weights on device without uploading values (full-size fit checks)")
    args = parser.parse_args(argv)

    import numpy as np

    program = load_program(args.program_dir)
    rt = program.rt
    started = time.time()
    runner = rt.Runner(program, "ttnn")
    ttnn = runner.ttnn
    graph = ttnn._ttnn.graph  # the C++ capture API: the Python wrapper needs torch
    report = {"program": os.path.abspath(args.program_dir), "mesh": list(program.MESH_SHAPE),
              "cfg_branches": program.CFG_FACTOR, "trace": UNTRACED_NOTE}
    try:
        runner.open()
        report["after_open"] = allocated(ttnn, runner.meshes[0])
        from safetensors.numpy import load_file

        if args.no_weights:
            runner.weights = [uninitialised_weights(program, ttnn, m) for m in runner.meshes]
        else:
            runner.load_weights(load_file(os.path.join(args.program_dir, "weights.safetensors")))
        inputs_file = os.path.join(args.program_dir, "inputs.safetensors")
        if os.path.exists(inputs_file):
            inputs = load_file(inputs_file)
        else:  # no example inputs saved: values do not matter to a mock device, shapes do
            inputs = {name: np.zeros(tuple(shape), np.float32) for name, (shape, *_) in program.INPUTS.items()}
            for name in program.BATCHED_INPUTS:
                inputs[name] = np.concatenate([inputs[name]] * program.CFG_FACTOR)
        report["after_weights"] = allocated(ttnn, runner.meshes[0])
        report["weights_uploaded"] = not args.no_weights
        mesh, weights, configs = runner.meshes[0], runner.weights[0], runner.configs[0]
        device_inputs = runner.upload_inputs(runner.branch_inputs(inputs, 0), mesh)
        baseline = allocated(ttnn, mesh)
        graph.begin_graph_capture(graph.RunMode.NORMAL)
        try:
            outputs = program.forward(mesh, weights, configs, **device_inputs)
        finally:
            trace = graph.end_graph_capture()
        peaks = forward_peaks(trace)
        calls = [n["params"]["name"] for n in trace if n.get("node_type") == "function_start"]
        report["device_operations"] = sum(1 for c in calls if c.endswith("DeviceOperation"))
        report["peak"] = {kind: baseline[kind]["allocated"] + peaks[kind] for kind in peaks}
        report["peak_l1_cb_per_core"] = int(graph.extract_peak_L1_memory_usage(trace))
        report["capacity"] = {kind: baseline[kind]["capacity"] for kind in baseline}
        report["outputs"] = [None if o is None else list(o.shape) for o in outputs]  # a module may return None
        del outputs, device_inputs
    finally:
        runner.close()
    report["seconds"] = round(time.time() - started, 2)
    text = json.dumps(report, indent=1)
    if args.report:
        with open(args.report, "w") as f:
            f.write(text)
    print(text)
    return report


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
