"""Each registered sharding rule on its own, as torch.distributed.tensor tests its op strategies: a graph of one op,
inputs arriving with random placements on a small simulated mesh, and the sharded program must equal the op on
whole tensors. Propagation inserts whatever collectives the rule asks for, lowering emits the ttnn calls, and the
simulated mesh moves real data, so a wrong rule (a shard passed through an op that mixes that dim, a pending sum
through a nonlinearity, a wrong output dim) shows as a wrong number here, without a whole model.

The 2x2 mesh has a sequence axis (0: shards are zero-padded to whole tiles per device, as sp does) and a tp axis
(1: shards divide exactly); roles of linears and the attention strategy are drawn too.
"""

from __future__ import annotations

import math
import operator

import pytest
import torch
import torch.fx as fx
import torch.utils._pytree as pytree
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meshdit.ir.graph import ConstantSpec, ModelGraph, emit, finalize
from meshdit.ir.op_classes import COMPARISON
from meshdit.ir.ops import joint_sdpa
from meshdit.lowering import emit_source, lower_graph
from meshdit.runtime import Program
from meshdit.sharding import MeshConfig
from meshdit.sharding.placement import MeshAxes, R, Shard
from meshdit.sharding.plan import ShardingPlan
from meshdit.sharding.propagate import Propagator
from meshdit.sharding.rules import RULES

aten = torch.ops.aten
SEQ, TP = 0, 1
MESH = MeshConfig.parse("2x2 sp2@0 tp2@1")

POSITIVE = {aten.rsqrt.default, aten.sqrt.default, aten.reciprocal.default}


# --- a graph of one op ------------------------------------------------------------------------------------------
class Const:
    """A constant operand (a weight the program owns) of a sample."""

    def __init__(self, value):
        self.value = value


def run_single_op(target, args: list, kwargs: dict, layouts: dict, roles: str | None = None,
                  ulysses: bool = False) -> list:
    """The outputs of `target(*args, **kwargs)` lowered on the 2x2 mesh, with the tensor args uploaded in `layouts`
    (arg index -> layout); tensors are inputs, Const values constants."""
    graph, inputs, constants, values = fx.Graph(), {}, {}, {}

    def placeholder(value, index, kind):
        name = f"{kind}{index}"
        node = graph.placeholder(name)
        node.meta.update(kind=kind, key=name, val=torch.empty(value.shape, dtype=value.dtype, device="meta"))
        if kind == "input":
            inputs[name], values[name] = node.meta["val"], value
        else:
            constants[name] = ConstantSpec(name, tuple(value.shape), value.dtype, None, value)
        return node

    def leaf(value, index):
        if isinstance(value, Const):
            return placeholder(value.value, index, "const")
        if isinstance(value, torch.Tensor):
            return placeholder(value, index, "input")
        if isinstance(value, list) and value and isinstance(value[0], torch.Tensor):
            return [placeholder(v, f"{index}_{k}", "input") for k, v in enumerate(value)]
        return value

    node_args = [leaf(a, i) for i, a in enumerate(args)]
    node_kwargs = {k: leaf(v, k) for k, v in kwargs.items()}
    out = emit(graph, target, tuple(node_args), node_kwargs)
    multi = isinstance(out.meta["val"], (tuple, list))
    outputs = [emit(graph, operator.getitem, (out, i)) for i in range(len(out.meta["val"]))] if multi else [out]
    graph.output(tuple(outputs))
    recipe = fx.GraphModule(torch.nn.Module(), fx.Graph())
    recipe.graph.output(())
    mg = ModelGraph(gm=fx.GraphModule(torch.nn.Module(), graph), inputs=inputs, constants=constants, recipe=recipe,
                    recipe_inputs=[], recipe_outputs=[], static_inputs={},
                    input_paths={name: (pytree.MappingKey(name),) for name in inputs},
                    out_spec=pytree.tree_flatten(tuple(outputs))[1], model_name="single_op", on_meta=False)
    plan = ShardingPlan(MESH, MeshAxes((2, 2), (SEQ,)), SEQ, TP, SEQ if ulysses else None)
    if roles is not None and target is aten.linear.default:
        plan.linear_roles[out.name] = roles
    input_layouts = {}
    for index, layout in layouts.items():
        arg = node_args[index]
        for node in (arg if isinstance(arg, list) else [arg]):
            input_layouts[node.name] = layout
    Propagator(mg, plan, {}, input_layouts=input_layouts).run()
    finalize(mg)
    mg.sharding = plan
    ir = lower_graph(mg, MESH, "float32", allow_host_fallback=False)
    program = Program(ir, emit_source(ir), mg)
    return program.run_flat({k: v for k, v in values.items()})


def check(target, args, kwargs=None, layouts=None, **options):
    kwargs = kwargs or {}
    plain = [a.value if isinstance(a, Const) else a for a in args]
    expected = target(*plain, **{k: (v.value if isinstance(v, Const) else v) for k, v in kwargs.items()})
    expected = list(expected) if isinstance(expected, (tuple, list)) else [expected]
    got = run_single_op(target, args, kwargs, layouts or {}, **options)
    assert len(got) == len(expected)
    # ttnn's attention kernels compute in bfloat16 (an fp32 program casts for them): their outputs carry bf16
    # rounding, about 1e-2 at unit scale; a wrong sharding is off by the values themselves
    tol = 3e-2 if target in (aten.scaled_dot_product_attention.default, joint_sdpa, operator.getitem) else 1e-4
    # (getitem's sample takes the outputs of a joint attention)
    for e, g in zip(expected, got):
        assert tuple(g.shape) == tuple(e.shape)
        assert torch.allclose(g.float(), e.float(), rtol=tol, atol=tol), (target, layouts, (g - e).abs().max())


# --- drawing shapes and placements --------------------------------------------------------------------------------
@st.composite
def shapes(draw, min_rank=2, max_rank=4):
    """Dims of 2, 4 or 6 (every size divides by the tp axis; 6 does not fill a tile, so sequence shards pad)."""
    rank = draw(st.integers(min_rank, max_rank))
    return [draw(st.sampled_from([2, 4, 6])) for _ in range(rank)]


@st.composite
def layout_for(draw, shape):
    """A random placement per mesh axis: replicated or sharded on a dim. The tp axis never shards the tile-row dim
    (-2) of a tensor, whose pieces would not be whole 32-row tiles (the sequence axis pads them to whole tiles)."""
    rank = len(shape)
    seq = draw(st.sampled_from([R] + [Shard(d) for d in range(rank)]))
    tp_dims = [d for d in range(rank) if d != rank - 2 and shape[d] % 2 == 0 and (seq == R or seq.dim != d)]
    tp = draw(st.sampled_from([R] + [Shard(d) for d in tp_dims]))
    return (seq, tp)


def randn(shape, positive=False):
    x = torch.randn(shape)
    return x.abs() + 0.5 if positive else x


SETTINGS = settings(max_examples=int(__import__("os").environ.get("RULE_EXAMPLES", 6)), deadline=None, suppress_health_check=list(HealthCheck))


# --- one sample strategy per registered op -----------------------------------------------------------------------
SAMPLES: dict = {}


def sample(*targets):
    def register(fn):
        for t in targets:
            SAMPLES[t] = fn
        return fn

    return register


UNARY_OPS = [aten.neg.default, aten.exp.default, aten.silu.default, aten.gelu.default, aten.sin.default,
             aten.cos.default, aten.tanh.default, aten.rsqrt.default, aten.sqrt.default, aten.sigmoid.default,
             aten.relu.default, aten.abs.default, aten.reciprocal.default, aten.to.dtype, aten.leaky_relu.default,
             aten.clamp.default, aten.logical_not.default]
EXTRA_ARGS = {aten.to.dtype: (torch.float32,), aten.leaky_relu.default: (0.2,), aten.clamp.default: (-0.5, 0.5)}


INTEGER_UNARY = {aten.clamp.default: (1, 3), aten.abs.default: (), aten.neg.default: (), aten.relu.default: ()}


@sample(*UNARY_OPS)
def _unary(draw, target):
    """Integer inputs too where models have them (LongCat clamps a token count): ttnn's unary kernels refuse those."""
    shape = draw(shapes())
    if target in INTEGER_UNARY and draw(st.booleans()):
        return [torch.randint(-5, 6, shape), *INTEGER_UNARY[target]], {}, {0: draw(layout_for(shape))}
    x = torch.rand(shape) > 0.5 if target is aten.logical_not.default else randn(shape, target in POSITIVE)
    return [x, *EXTRA_ARGS.get(target, ())], {}, {0: draw(layout_for(shape))}


@sample(aten.add.Tensor, aten.sub.Tensor, aten.mul.Tensor, aten.div.Tensor)
def _binary(draw, target):
    shape = draw(shapes())
    kind = draw(st.sampled_from(["same", "broadcast", "scalar"]))
    a = randn(shape)
    if kind == "scalar":
        return [a, 1.5], {}, {0: draw(layout_for(shape))}
    other = list(shape)
    if kind == "broadcast":  # fewer dims, and a unit dim
        other = other[draw(st.integers(0, len(shape) - 1)):]
        other[draw(st.integers(0, len(other) - 1))] = 1
    b = randn(other, positive=target is aten.div.Tensor)
    return [a, b], {}, {0: draw(layout_for(shape)), 1: draw(layout_for(other))}


@sample(aten.where.self, aten.where.ScalarSelf, aten.where.ScalarOther, aten.where.Scalar)
def _where(draw, target):
    """A boolean condition broadcast against the values (a token mask over hidden states, say)."""
    shape = draw(shapes())
    cond_shape = list(shape)
    if draw(st.booleans()):
        cond_shape[-1] = 1
    cond = torch.rand(cond_shape) > 0.5
    a, b = randn(shape), randn(shape)
    scalar_self = target in (aten.where.ScalarSelf, aten.where.Scalar)
    scalar_other = target in (aten.where.ScalarOther, aten.where.Scalar)
    args = [cond, 0.25 if scalar_self else a, -2.0 if scalar_other else b]
    layouts = {0: draw(layout_for(cond_shape))}
    for i in (1, 2):
        if not isinstance(args[i], float):
            layouts[i] = draw(layout_for(shape))
    return args, {}, layouts


@sample(*COMPARISON)
def _compare(draw, target):
    """Comparisons of broadcast operands (integer token ids against a scalar, float tensors against each other)."""
    shape = draw(shapes())
    if target in (aten.logical_and.default, aten.logical_or.default):
        return [torch.rand(shape) > 0.5, torch.rand(shape[-1:]) > 0.5], {}, \
            {0: draw(layout_for(shape)), 1: draw(layout_for(shape[-1:]))}
    if str(target).endswith(".Scalar"):
        return [torch.randint(0, 4, shape), 2], {}, {0: draw(layout_for(shape))}
    return [randn(shape), randn(shape).round()], {}, {0: draw(layout_for(shape)), 1: draw(layout_for(shape))}


@sample(aten.reshape.default)
def _reshape(draw, target):
    shape = draw(shapes(3, 4))
    d = draw(st.integers(0, len(shape) - 2))
    merged = shape[:d] + [shape[d] * shape[d + 1]] + shape[d + 2:]
    out = draw(st.sampled_from([merged, shape[:d] + [1] + shape[d:], [shape[0], math.prod(shape[1:])]]))
    return [randn(shape), out], {}, {0: draw(layout_for(shape))}


@sample(aten.permute.default)
def _permute(draw, target):
    shape = draw(shapes())
    return [randn(shape), draw(st.permutations(range(len(shape))))], {}, {0: draw(layout_for(shape))}


@sample(aten.slice.Tensor)
def _slice(draw, target):
    shape = draw(shapes())
    dim = draw(st.integers(0, len(shape) - 1))
    start = draw(st.integers(0, shape[dim] - 1))
    end = draw(st.integers(start + 1, shape[dim]))
    return [randn(shape), dim, start, end], {}, {0: draw(layout_for(shape))}


@sample(aten.cat.default)
def _cat(draw, target):
    shape = draw(shapes())
    dim = draw(st.integers(0, len(shape) - 1))
    parts = [list(shape) for _ in range(draw(st.integers(2, 3)))]
    for p in parts[1:]:
        p[dim] = draw(st.sampled_from([2, 4]))
    layout = draw(layout_for(shape))
    return [[randn(p) for p in parts], dim], {}, {0: layout}


@sample(aten.constant_pad_nd.default)
def _pad(draw, target):
    shape = draw(shapes())
    pad = [draw(st.sampled_from([0, 0, 1, 2])) for _ in range(2 * draw(st.integers(1, len(shape))))]
    return [randn(shape), pad, 0.0], {}, {0: draw(layout_for(shape))}


@sample(aten.expand.default)
def _expand(draw, target):
    shape = draw(shapes())
    small = list(shape)
    small[draw(st.integers(0, len(shape) - 1))] = 1
    out = [draw(st.sampled_from([2, 4]))] + list(shape) if draw(st.booleans()) else list(shape)
    return [randn(small), out], {}, {0: draw(layout_for(small))}


@sample(aten.repeat.default)
def _repeat(draw, target):
    shape = draw(shapes(2, 3))
    repeats = [draw(st.sampled_from([1, 2])) for _ in shape]
    if draw(st.booleans()):
        repeats = [2] + repeats  # a new leading dim
    return [randn(shape), repeats], {}, {0: draw(layout_for(shape))}


@sample(aten.mean.dim, aten.sum.dim_IntList)
def _reduce(draw, target):
    shape = draw(shapes())
    dims = sorted(draw(st.sets(st.integers(0, len(shape) - 1), min_size=1, max_size=2)))
    return [randn(shape), dims, draw(st.booleans())], {}, {0: draw(layout_for(shape))}


@sample(aten.softmax.int, aten._softmax.default)
def _softmax(draw, target):
    shape = draw(shapes())
    dim = draw(st.integers(0, len(shape) - 1))
    extra = (False,) if target is aten._softmax.default else ()
    return [randn(shape), dim, *extra], {}, {0: draw(layout_for(shape))}


@sample(aten.linear.default)
def _linear(draw, target):
    shape = draw(shapes(2, 3))
    out_features = draw(st.sampled_from([4, 8]))
    role = draw(st.sampled_from(["col", "row", "rep"]))
    # a row-parallel bias is added after the reduction by the tp step, before the rule sees the linear
    bias = Const(randn([out_features])) if role != "row" and draw(st.booleans()) else None
    args = [randn(shape), Const(randn([out_features, shape[-1]])), bias]
    return args, {}, {0: draw(layout_for(shape))}, {"roles": role}


@sample(aten.layer_norm.default, aten.rms_norm.default)
def _norm(draw, target):
    shape = draw(shapes())
    width = shape[-1]
    weight = Const(randn([width]))
    # rows with some spread: a distributed norm (over the tp-sharded hidden dim) computes the variance in one pass,
    # E[x^2] - E[x]^2, as ttnn's kernels do, which loses digits on rows that are nearly constant
    x = 0.1 * randn(shape) + torch.arange(width, dtype=torch.float32)
    if target is aten.layer_norm.default:
        args = [x, [width], weight, Const(randn([width])), 1e-5]
    else:
        args = [x, [width], weight, 1e-6]
    return args, {}, {0: draw(layout_for(shape))}


@sample(aten.matmul.default, aten.bmm.default, aten.mm.default)
def _matmul(draw, target):
    """Two activations, or (matmul) an activation of any rank times a constant matrix, row-wise."""
    m, k, n = (draw(st.sampled_from([2, 4, 6])) for _ in range(3))
    if target is aten.matmul.default and draw(st.booleans()):
        shape = draw(shapes())[:-1] + [k]
        return [randn(shape), Const(randn([k, n]))], {}, {0: draw(layout_for(shape))}
    batch = [] if target is aten.mm.default else [draw(st.sampled_from([2, 4]))]
    a, b = batch + [m, k], batch + [k, n]
    return [randn(a), randn(b)], {}, {0: draw(layout_for(a)), 1: draw(layout_for(b))}


def _attention_layouts(draw, rank4, count):
    """Heads sharded on tp, or the main stream's tokens on the sequence axis, or anything."""
    choice = draw(st.sampled_from(["heads", "tokens", "random"]))
    if choice == "heads":
        return {i: (R, Shard(1)) for i in range(count)}
    if choice == "tokens":
        return {i: (Shard(2), R) for i in range(3)}
    return {i: draw(layout_for(rank4)) for i in range(count)}


@sample(aten.scaled_dot_product_attention.default)
def _sdpa(draw, target):
    shape = [1, 4, draw(st.sampled_from([6, 40, 64])), 32]
    layouts = _attention_layouts(draw, shape, 3)
    return [randn(shape) for _ in range(3)], {}, layouts, {"ulysses": draw(st.booleans())}


@sample(joint_sdpa, operator.getitem)
def _joint(draw, target):
    shape = [1, 4, draw(st.sampled_from([6, 40, 64])), 32]
    joint = [1, 4, draw(st.sampled_from([6, 32])), 32]
    layouts = _attention_layouts(draw, shape, 6)
    args = [randn(shape) for _ in range(3)] + [randn(joint) for _ in range(3)]
    return args, {"scale": 0.25, "joint_first": draw(st.booleans())}, layouts, {"ulysses": draw(st.booleans())}


def test_every_sharding_rule_has_a_sample():
    """A rule added without a sample here fails this test: every rule is checked on its own."""
    assert set(RULES) <= set(SAMPLES), sorted(map(str, set(RULES) - set(SAMPLES)))


@pytest.mark.parametrize("target", sorted(RULES, key=str), ids=str)
def test_sharded_op_equals_unsharded(target):
    @SETTINGS
    @given(st.data())
    def run(data):
        drawn = SAMPLES[target](data.draw, target if target is not operator.getitem else joint_sdpa)
        args, kwargs, layouts = drawn[:3]
        options = drawn[3] if len(drawn) > 3 else {}
        check(target if target is not operator.getitem else joint_sdpa, args, kwargs, layouts, **options)

    run()


def test_a_wrong_rule_is_caught(monkeypatch):
    """Fault visibility: a softmax rule that lets a shard of the softmax dim through must fail the check."""
    from meshdit.sharding.rules import reductions

    def wrong(op):
        x = op.args["input"]
        return {x: op.placement(x)}, op.placement(x)

    monkeypatch.setitem(RULES, aten.softmax.int, wrong)
    with pytest.raises(AssertionError):
        check(aten.softmax.int, [randn([2, 4, 6]), -1], {}, {0: (R, Shard(2))})
    assert reductions.reduction is not wrong


def test_a_number_added_to_a_pending_sum_is_added_once():
    """adaLN's `x * (1 + scale)` where scale comes out of a row-parallel linear (OmniGen's norm_out on tp2 gave a
    wrong number, PCC 0.9866 in fp32): each device holds a summand, so adding 1 on every device would add tp; the
    sum is reduced first."""
    import meshdit

    class Modulated(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.up, self.down = torch.nn.Linear(32, 64), torch.nn.Linear(64, 32)

        def forward(self, x, t):
            return x * (1 + self.down(torch.nn.functional.silu(self.up(t))))

    torch.manual_seed(0)
    inputs = {"x": torch.randn(1, 64, 32), "t": torch.randn(1, 1, 32)}
    program = meshdit.lower(Modulated().eval(), "1x2 tp2@1", inputs)
    result = program.pcc_report()[0]
    print(f"1 + row-parallel scale on tp2: PCC {result.pcc:.6f}")
    assert result.pcc > 0.9999
