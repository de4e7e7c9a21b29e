"""The simulated ttnn's op registry (meshdit/runtime/sim/registry.py).

OPS is the one list of simulated ops: what the package exposes as ops and what a trace records. These tests keep it
in step with the ttnn signatures meshdit emits (tests/ttnn_signatures.py), so the sim cannot accept a call that
ttnn would refuse or refuse one that ttnn accepts, and check that registration, and nothing else, is what makes a
function recorded during trace capture.
"""

import inspect

import pytest
import torch

import meshdit.runtime.sim as sim
from meshdit.runtime.sim import registry
from ttnn_signatures import RUNTIME_SIGNATURES, SIGNATURES

# host and device management: not ops, never recorded (the trace calls are in RUNTIME_SIGNATURES)
MANAGEMENT = {"open_mesh_device", "close_mesh_device", "create_global_semaphore", "replicate_tensor_to_mesh_mapper",
              "create_mesh_mapper", "get_device_tensors", "from_device", "to_device", "from_torch", "to_torch",
              "dump_tensor", "load_tensor"} | {name.removeprefix("ttnn.") for name in RUNTIME_SIGNATURES}
EMITTED = {name.removeprefix("ttnn."): params for name, params in SIGNATURES.items()
           if name.startswith("ttnn.") and name.removeprefix("ttnn.") not in MANAGEMENT}
# simulated ops meshdit does not emit, so no signature entry checks them
NOT_EMITTED = {"transpose", "mul", "sub", "div"}


def test_every_emitted_op_is_simulated():
    assert sorted(set(EMITTED) - set(sim.OPS)) == []
    assert sorted(set(sim.OPS) - set(EMITTED)) == sorted(NOT_EMITTED)
    assert not MANAGEMENT & set(sim.OPS)


@pytest.mark.parametrize("name", sorted(EMITTED))
def test_simulated_op_takes_the_ttnn_parameters(name):
    """Positional parameters as ttnn orders them; every keyword ttnn lists accepted (by name or by **kwargs); no
    keyword-only parameter ttnn does not have."""
    positional, keywords = EMITTED[name]
    params = inspect.signature(sim.OPS[name]).parameters.values()
    named = {p.name for p in params}
    takes_any_keyword = any(p.kind is p.VAR_KEYWORD for p in params)
    assert tuple(p.name for p in params if p.kind is p.POSITIONAL_OR_KEYWORD) == positional
    assert takes_any_keyword or set(keywords) <= named, sorted(set(keywords) - named)
    assert {p.name for p in params if p.kind is p.KEYWORD_ONLY} <= set(keywords)


def test_the_package_exposes_each_registered_op_recorded():
    for name, implementation in sim.OPS.items():
        exposed = sim
        for part in name.split("."):
            exposed = getattr(exposed, part)
        assert exposed.__wrapped__ is implementation, name


def _capture(mesh, calls):
    trace_id = sim.begin_trace_capture(mesh, cq_id=0)
    outputs = calls()
    sim.end_trace_capture(mesh, trace_id, cq_id=0)
    return trace_id, outputs


def test_registered_ops_are_recorded_once_and_helpers_not(monkeypatch):
    mesh = sim.open_mesh_device(sim.MeshShape(1, 1), trace_region_size=1 << 20)
    a, b = (sim.Tensor(torch.randn(32, 32).numpy(), data_type=sim.float32, device=mesh, layout=sim.TILE_LAYOUT)
            for _ in range(2))

    def double(input_tensor):  # a helper on the ops' own plumbing, not registered
        return sim.tensor._map(lambda x: 2 * x, input_tensor)

    # a scratch registry: registering here must not leak into the sim other tests use
    monkeypatch.setattr(registry, "OPS", dict(registry.OPS))
    monkeypatch.setattr(registry, "_RECORDING", dict(registry._RECORDING))
    registered_double = registry.sim_op("double")(double)
    with pytest.raises(ValueError, match="registered twice"):
        registry.sim_op("double")(double)

    trace_id, (y, z, helper_out, doubled) = _capture(mesh, lambda: (
        sim.linear(a, b), sim.matmul(a, b),  # matmul runs linear inside: recorded once, as matmul
        double(a), registered_double(a)))
    assert sim.trace_ops(mesh, trace_id) == ["linear", "matmul", "double"]
    assert torch.isnan(y.shards[0]).all() and torch.isnan(doubled.shards[0]).all()  # captured outputs hold nothing
    assert torch.equal(helper_out.shards[0], 2 * a.shards[0])  # not recorded: computed once, left alone

    sim.execute_trace(mesh, trace_id, cq_id=0)
    assert torch.allclose(y.shards[0], a.shards[0] @ b.shards[0]) and torch.equal(y.shards[0], z.shards[0])
    assert torch.equal(doubled.shards[0], 2 * a.shards[0])
    sim.release_trace(mesh, trace_id)
    sim.close_mesh_device(mesh)
