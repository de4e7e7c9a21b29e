"""Capture traces each distinct repeated block once (meshdit/capture_blocks.py) and gives the graph the whole-model
export gives: same ops, arguments, node names, weights and the metadata later stages read; and it falls back to the
whole-model export when it cannot vouch for the copies."""

import pytest
import torch
import torch.utils._pytree as pytree
from torch import nn

from meshdit import model_zoo
from meshdit.capture import capture


def assert_same_graph(fast, full):
    """Node by node: target, arguments (as positions), name, module stack, stack trace, torch_fn; same inputs."""
    a, b = list(fast.exported.graph.nodes), list(full.exported.graph.nodes)
    assert len(a) == len(b)
    ia, ib = {n: i for i, n in enumerate(a)}, {n: i for i, n in enumerate(b)}

    def args(node, index):
        return repr(pytree.tree_map(lambda v: ("node", index[v]) if isinstance(v, torch.fx.Node) else v,
                                    (node.args, node.kwargs)))

    for x, y in zip(a, b):
        assert (x.op, x.target, x.name) == (y.op, y.target, y.name)
        assert args(x, ia) == args(y, ib), x.name
        for key in ("nn_module_stack", "stack_trace", "torch_fn", "unbacked_bindings"):
            assert x.meta.get(key) == y.meta.get(key), (x.name, key)
        assert value(x.meta.get("val")) == value(y.meta.get("val")), x.name  # sizes, with their symbols
        assert repr(x.meta.get("tensor_meta")) == repr(y.meta.get("tensor_meta")), x.name
    specs = lambda c: [(s.kind, s.arg.name, s.target) for s in c.exported.graph_signature.input_specs]  # noqa: E731
    assert specs(fast) == specs(full)
    assert repr(fast.exported.range_constraints) == repr(full.exported.range_constraints)
    assert not any(str(n.target).startswith("meshdit.") for n in a)


def value(v):
    if isinstance(v, (list, tuple)):
        return [value(x) for x in v]
    if isinstance(v, torch.Tensor):
        return (str(tuple(v.shape)), str(v.stride()), v.dtype)
    return str(v)


def both(model, inputs):
    return capture(model, inputs), capture(model, inputs, blocks_once=False)


class Block(nn.Module):
    def __init__(self, width=16, flip=False):
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.proj = nn.Linear(width, width)
        self.flip = flip  # a config value the forward branches on: instances that differ trace differently

    def forward(self, x, temb, scale=1.0):
        h = self.proj(self.norm(x) * (1 + temb[:, None]))
        if self.flip:
            h = torch.tanh(h)
        a, b = h.chunk(2, dim=-1)
        return x + scale * torch.cat([b, a], dim=-1), temb


class Stack(nn.Module):
    def __init__(self, blocks):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.out = nn.Linear(16, 4)

    def forward(self, x, temb):
        for block in self.blocks:
            x, temb = block(x, temb, scale=0.5)
        return (self.out(x),)


def toy_inputs():
    gen = torch.Generator().manual_seed(0)
    return {"x": torch.randn(1, 8, 16, generator=gen), "temb": torch.randn(1, 16, generator=gen)}


def test_repeated_blocks_traced_once_give_the_whole_model_graph():
    torch.manual_seed(0)
    fast, full = both(Stack([Block() for _ in range(5)]).eval(), toy_inputs())
    assert fast.traced_blocks == {"blocks.0": ["blocks.1", "blocks.2", "blocks.3", "blocks.4"]}
    assert fast.blocks_fallback is None and full.traced_blocks == {}
    assert_same_graph(fast, full)


def test_instances_differing_in_a_config_value_are_traced_apart():
    torch.manual_seed(0)
    fast, full = both(Stack([Block(flip=i % 2 == 1) for i in range(5)]).eval(), toy_inputs())
    assert fast.traced_blocks == {"blocks.0": ["blocks.2", "blocks.4"], "blocks.1": ["blocks.3"]}
    assert_same_graph(fast, full)
    tanh = [n for n in fast.exported.graph.nodes if n.target is torch.ops.aten.tanh.default]
    assert [list(n.meta["nn_module_stack"].values())[-1][0] for n in tanh] == ["blocks.1", "blocks.3"]


def test_copies_read_their_own_weights():
    torch.manual_seed(0)
    fast, _ = both(Stack([Block() for _ in range(3)]).eval(), toy_inputs())
    names = {n.name: s.target for s in fast.exported.graph_signature.input_specs
             for n in fast.exported.graph.nodes if n.name == s.arg.name}
    linears = [n for n in fast.exported.graph.nodes if n.target is torch.ops.aten.linear.default]
    assert [names[n.args[1].name] for n in linears] == [f"blocks.{i}.proj.weight" for i in range(3)] + ["out.weight"]


class Counting(Block):
    def forward(self, x, temb, scale=1.0):
        self.calls = getattr(self, "calls", 0) + 1  # state a forward keeps: each call may trace differently
        return super().forward(x, temb, scale)


class WritesInput(Block):
    def forward(self, x, temb, scale=1.0):
        temb.mul_(2.0)  # writes into its input: the trace reads the write's node for temb from now on
        return super().forward(x, temb, scale)


class WritesInputView(Block):
    def forward(self, x, temb, scale=1.0):
        temb[:, :4].mul_(2.0)  # writes into its input through a view: found in the traced ops
        return super().forward(x, temb, scale)


class Rebinds(Block):
    def forward(self, x, temb, scale=1.0):
        temb = temb.to(torch.float32)  # returns temb itself: the trace reads this op's node for temb from now on
        return super().forward(x, temb, scale)[0], None


class SharedTemb(Stack):
    def forward(self, x, temb):
        for block in self.blocks:
            x, _ = block(x, temb, scale=0.5)  # the caller's temb again: the whole-model trace reads the last .to
        return (self.out(x) + temb[:, None, :4],)


def test_a_block_returning_its_input_from_an_op_is_traced_once():
    """x.to(its own dtype) rebinds the caller's tensor to the block's op: after each copy the caller's later reads
    (the next block's input, the model's last add) read that copy's op, as in the whole-model trace."""
    torch.manual_seed(0)
    fast, full = both(SharedTemb([Rebinds() for _ in range(3)]).eval(), toy_inputs())
    assert fast.blocks_fallback is None
    assert fast.traced_blocks == {"blocks.0": ["blocks.1", "blocks.2"]}
    assert_same_graph(fast, full)
    to = [n for n in fast.exported.graph.nodes if n.target is torch.ops.aten.to.dtype]
    assert [n.args[0] for n in to[1:]] == to[:-1]  # each block's .to reads the previous block's


@pytest.mark.parametrize("cls, reason", [(Counting, "changes its module's attributes"),
                                         (WritesInputView, "writes in place into a block input")])
def test_falls_back_to_the_whole_model_export(cls, reason):
    torch.manual_seed(0)
    fast, full = both(Stack([cls() for _ in range(3)]).eval(), toy_inputs())
    assert fast.traced_blocks == {} and reason in fast.blocks_fallback
    assert_same_graph(fast, full)


def test_a_block_writing_into_its_input_is_traced_in_place():
    torch.manual_seed(0)
    fast, full = both(Stack([WritesInput() for _ in range(3)]).eval(), toy_inputs())
    assert "writes into an input in place" in fast.blocks_fallback
    assert_same_graph(fast, full)


def test_a_block_with_a_hook_is_traced_in_the_model():
    torch.manual_seed(0)
    model = Stack([Block() for _ in range(3)]).eval()
    model.blocks[1].register_forward_hook(lambda mod, args, out: (out[0] * 2, out[1]))
    fast, full = both(model, toy_inputs())
    assert fast.traced_blocks == {"blocks.0": ["blocks.2"]}  # the hooked block is not of the kind
    assert_same_graph(fast, full)


@pytest.mark.parametrize("name", ["flux-tiny", "motif-tiny"])
def test_zoo_models_traced_once_give_the_whole_model_graph(name):
    model, inputs = model_zoo.build(name), model_zoo.example_inputs(name)
    fast, full = both(model, inputs)
    assert fast.traced_blocks and fast.blocks_fallback is None
    assert_same_graph(fast, full)


def test_a_block_with_data_dependent_sizes_is_traced_once():
    """Mochi's blocks index by a boolean mask: each instance has a size symbol of its own (u0, u1, ...) with its
    runtime asserts, and its norms rebind their input (x.to(its own dtype)). The copies give the same graph."""
    import diffusers

    torch.manual_seed(0)
    model = diffusers.MochiTransformer3DModel(**{**model_zoo.ENTRIES["mochi-tiny"].config, "num_layers": 4}).eval()
    fast, full = both(model, model_zoo.example_inputs("mochi-tiny"))
    # the last block (context_pre_only) is a kind of its own: traced in the model
    assert fast.traced_blocks == {"transformer_blocks.0": ["transformer_blocks.1", "transformer_blocks.2"]}
    assert fast.blocks_fallback is None
    assert_same_graph(fast, full)
    asserts = [n.args[1] for n in fast.exported.graph.nodes if n.target is torch.ops.aten._assert_scalar.default]
    assert "Runtime assertion failed for expression u2 <= 32 on node 'le_2'" in asserts


class MaskedBlock(Block):
    def forward(self, x, temb, mask, scale=1.0):
        kept = x[:, mask.view(-1)]  # a size made from data (of a fresh view): u0 in the first instance, u1 next, ...
        return x + kept.mean(dim=1, keepdim=True), temb


class SharedMaskBlock(Block):
    def forward(self, x, temb, mask, scale=1.0):
        kept = x[:, mask]  # the mask's nonzero, kept on the caller's tensor: every instance reads u0
        return x + kept.mean(dim=1, keepdim=True), temb


class MaskedStack(Stack):
    def forward(self, x, temb, mask):
        for block in self.blocks:
            x, temb = block(x, temb, mask)
        kept = x[:, mask]  # after the blocks: the symbol after theirs
        return (self.out(x) + kept.sum(),)


def test_copies_get_symbols_numbered_as_the_whole_model_trace_numbers_them():
    torch.manual_seed(0)
    model = MaskedStack([MaskedBlock() for _ in range(3)]).eval()
    fast, full = both(model, {**toy_inputs(), "mask": torch.arange(8) % 3 == 0})
    assert fast.traced_blocks == {"blocks.0": ["blocks.1", "blocks.2"]}
    assert_same_graph(fast, full)
    assert sorted(map(str, fast.exported.range_constraints)) == ["u0", "u1", "u2", "u3"]


def test_a_size_computed_from_an_input_is_traced_in_place():
    torch.manual_seed(0)
    model = MaskedStack([SharedMaskBlock() for _ in range(3)]).eval()
    fast, full = both(model, {**toy_inputs(), "mask": torch.arange(8) % 3 == 0})
    assert fast.traced_blocks == {} and "computes a data-dependent size of an input" in fast.blocks_fallback
    assert_same_graph(fast, full)
    assert list(map(str, fast.exported.range_constraints)) == ["u0"]


def test_the_spliced_program_runs_like_the_module():
    """The spliced graph runs (its code is generated on first call) and computes what the module computes."""
    model, inputs = model_zoo.build("flux-tiny"), model_zoo.example_inputs("flux-tiny")
    fast = capture(model, inputs)
    assert fast.traced_blocks
    with torch.no_grad():
        got = fast.exported.module()(**fast.example_inputs)
        want = model(**fast.example_inputs)
    torch.testing.assert_close(got[0], want[0], rtol=1e-5, atol=1e-5)
    assert "meshdit" not in fast.exported.graph_module.code


def test_a_global_module_hook_turns_the_fast_path_off():
    torch.manual_seed(0)
    model = Stack([Block() for _ in range(3)]).eval()
    handle = nn.modules.module.register_module_forward_hook(lambda mod, args, out: None)
    try:
        fast, full = both(model, toy_inputs())
    finally:
        handle.remove()
    assert fast.traced_blocks == {} and fast.blocks_fallback is None
    assert_same_graph(fast, full)
