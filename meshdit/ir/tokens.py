"""Token streams: where a value's token dim comes from, and which stream is the latent (image/video) one.

A DiT carries several token streams (image or video patches, prompt tokens, a pooled token) that meet in
attention. The passes must know which stream of a joint attention is the main one, and sequence parallelism must
know which token dim to shard. Both are answered structurally, never by sizes or names:

  * the *origin* of a token dim is the node where it first appears, found by walking back from a value through ops
    that keep tokens apart (elementwise ops, row-wise ops such as linear and norms, permutes, reshapes that leave the
    dim whole, cats along another dim, attention from its output back to its queries);
  * the *latent input* is the runtime input the model's first output is a prediction for (the one with its shape);
  * the *main stream* is the one whose token origin descends from the latent input. Prompt tokens come from the
    prompt embeddings, never from the latent, however many there are (a 256 x 256 Flux image has 256 image tokens
    against 512 prompt tokens).
"""

from __future__ import annotations

import operator

import torch
import torch.fx as fx

from .graph import ModelGraph, is_const, is_row_wise, reshape_dim_map, shape_of
from .op_classes import BINARY, UNARY
from .ops import ATTENTION, joint_sdpa

aten = torch.ops.aten


def token_origins(node: fx.Node, dim: int, origins: dict | None = None, seen: set | None = None,
                  through_slices: bool = False) -> dict:
    """{origin node: its token dim} for the token dim `dim` of `node` (see the module docstring). A slice of the
    token dim keeps a subset of the same tokens, a cat along it joins tokens of several origins: with
    `through_slices` the walk goes on through both, following which positions it is tracing (to tell where tokens
    come from: register tokens sliced back out of an attention over [registers, image, prompt] come from the
    registers, not from the image); without, the slice or cat is the origin (where sequence parallelism shards)."""
    origins = {} if origins is None else origins
    seen = set() if seen is None else seen
    stack = [(node, dim, None)]  # (node, token dim, (lo, hi) of the positions traced there, None = all)
    while stack:
        state = stack.pop()
        if state in seen:
            continue
        seen.add(state)
        sources = _token_sources(*state, through_slices)
        if sources is None and state[0].op == "placeholder":
            origins[state[0]] = state[1]
        elif sources is None:
            origins.setdefault(state[0], state[1])
        else:
            stack.extend(sources)
    return origins


def _token_sources(node: fx.Node, t: int, span, through_slices: bool) -> list | None:
    """One step of the walk back: the (node, token dim, span) states the tokens of `t` at `node` (positions `span`,
    None for all) come from; None when `node` is their origin, [] when they come from nowhere (a constant)."""
    if is_const(node):
        return []
    if node.op == "placeholder":
        return None
    shape = shape_of(node) if not isinstance(node.meta.get("val"), (tuple, list)) else None
    target = node.target
    if target is operator.getitem and node.args[0].target in ATTENTION:
        # an attention output's tokens are its queries' tokens (a joint attention's second output: the joint ones)
        attention = node.args[0]
        return [(attention.args[3] if attention.target is joint_sdpa and node.args[1] == 1 else attention.args[0],
                 t, span)]
    if target is aten.scaled_dot_product_attention.default:
        return [(node.args[0], t, span)]
    last = len(shape) - 1
    if target is aten.permute.default:
        return [(node.args[0], list(node.args[1])[t], span)]
    if target is aten.reshape.default:
        d = reshape_dim_map(shape, shape_of(node.args[0]), t)
        return None if d is None else [(node.args[0], d, span)]  # None: the reshape makes the token dim (patchify)
    if (target in UNARY or is_row_wise(node)) and t != last:
        return [(node.args[0], t, span)]
    if target in BINARY:
        sources = []
        for operand in node.args[:2]:
            if isinstance(operand, fx.Node):
                od = t - (len(shape) - len(shape_of(operand)))
                if od >= 0 and shape_of(operand)[od] == shape[t]:  # broadcast operands carry no tokens
                    sources.append((operand, od, span))
        return sources
    if target is aten.slice.Tensor and node.args[1] % len(shape) != t:
        return [(node.args[0], t, span)]
    if target is aten.slice.Tensor and through_slices:
        return [(node.args[0], t, _sliced_span(node, span))]
    if target is aten.constant_pad_nd.default and through_slices:
        # padding adds constant positions: the others are the input's (Mochi pads each prompt's attention output
        # back to the full prompt length)
        reaches, inner = _padded_span(node, t, span)
        return [(node.args[0], t, inner)] if reaches else []
    if target is aten.cat.default and (node.args[1] if len(node.args) > 1 else 0) % len(shape) != t:
        return [(part, t, span) for part in node.args[0]]
    if target is aten.cat.default and through_slices:
        lo, hi = span or (0, shape[t])
        sources, start = [], 0
        for part in node.args[0]:
            size = shape_of(part)[t]
            if start < hi and lo < start + size:
                sources.append((part, t, (max(lo, start) - start, min(hi, start + size) - start)))
            start += size
        return sources
    return None


def _sliced_span(node: fx.Node, span):
    """The positions of a slice's input that positions `span` of its output (None: all of them) come from."""
    size = shape_of(node)[node.args[1] % len(shape_of(node))]
    length = shape_of(node.args[0])[node.args[1] % len(shape_of(node))]
    start = node.args[2] if len(node.args) > 2 and node.args[2] is not None else 0
    step = node.args[4] if len(node.args) > 4 else 1
    start = max(0, start + length if start < 0 else start)
    if step != 1:
        return None  # strided: every position of the input may be traced (conservative)
    lo, hi = span or (0, size)
    return (start + lo, start + hi)


def _padded_span(node: fx.Node, t: int, span):
    """(whether positions `span` of a constant pad's output (None: all of them) include any of its input's along dim
    `t`, which of the input's they are: None for all)."""
    pad, rank = list(node.args[1]), len(shape_of(node))
    before = {rank - 1 - i: pad[2 * i] for i in range(len(pad) // 2)}.get(t, 0)
    length = shape_of(node.args[0])[t]
    lo, hi = span or (0, shape_of(node)[t])
    lo, hi = max(lo - before, 0), min(hi - before, length)
    if lo >= hi:
        return False, None
    return True, (None if (lo, hi) == (0, length) else (lo, hi))


def latent_input(mg: ModelGraph) -> fx.Node | None:
    """The runtime input the first output predicts: the one with its shape (denoisers predict noise, velocity or
    the clean latent in the latent's own shape); failing that, the one of the same rank matching it in the most
    dims (a learned-variance output has twice the channels). None when no input has the output's rank."""
    output = next(n for n in mg.gm.graph.nodes if n.op == "output")
    first = next((o for o in output.args[0] if isinstance(o, fx.Node)), None)
    if first is None or not hasattr(first.meta.get("val"), "shape"):
        return None
    target = shape_of(first)
    best, best_score = None, -1
    for node in mg.placeholders("input"):
        shape = shape_of(node)
        if len(shape) != len(target) or not node.meta["val"].dtype.is_floating_point:
            continue
        score = sum(a == b for a, b in zip(shape, target))
        if score > best_score:
            best, best_score = node, score
    return best


def descendants(node: fx.Node) -> set:
    """Every node computed from `node`, itself included."""
    found, stack = set(), [node]
    while stack:
        cur = stack.pop()
        if cur in found:
            continue
        found.add(cur)
        stack.extend(cur.users)
    return found


class StreamOracle:
    """Answers "does this token dim come from the latent?" for one graph (the latent's descendants computed once)."""

    def __init__(self, mg: ModelGraph):
        self.latent = latent_input(mg)
        self.from_latent = descendants(self.latent) if self.latent is not None else set()
        # whether any token at a walk state comes from the latent, kept for every state walked: a later block's
        # question stops where an earlier one's walk went (linear in the graph, where walking each block's residual
        # stream back to the inputs again was quadratic in the blocks)
        self._answers: dict = {}

    def is_main(self, node: fx.Node, dim: int) -> bool | None:
        """True when the token dim `dim` of `node` originates in the latent input, False when it does not, None
        when the graph has no latent input to tell by. The graph must not change between calls."""
        if self.latent is None:
            return None
        return self._reaches_latent((node, dim, None))

    def _reaches_latent(self, root) -> bool:
        answers = self._answers
        stack = [(root, False)]
        while stack:
            state, expanded = stack.pop()
            if state in answers:
                continue
            if state[0] not in self.from_latent:  # none of its ancestors descends from the latent
                answers[state] = False
                continue
            sources = _token_sources(*state, through_slices=True)
            if sources is None:  # the origin of these tokens
                answers[state] = True
            elif not expanded:
                stack.append((state, True))
                stack.extend((source, False) for source in sources if source not in answers)
            else:
                answers[state] = any(answers[source] for source in sources)
        return answers[root]
