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
                  through_slices: bool = False, known: dict | None = None) -> dict:
    """{origin node: its token dim} for the token dim `dim` of `node` (see the module docstring). A slice of the
    token dim keeps a subset of the same tokens, a cat along it joins tokens of several origins: with
    `through_slices` the walk goes on through both, following which positions it is tracing (to tell where tokens
    come from: register tokens sliced back out of an attention over [registers, image, prompt] come from the
    registers, not from the image); without, the slice or cat is the origin (where sequence parallelism shards).
    known: {(node, token dim): "all", "some" or "none"}, how many of those tokens come from the latent, answers
    already found (StreamOracle): the walk does not go past a value whose answer holds for any subset of its
    positions ("all", which stands in for its origins, being a descendant of theirs; "none", which adds none)."""
    origins = {} if origins is None else origins
    seen = set() if seen is None else seen
    stack = [(node, dim, None)]  # (node, token dim, (lo, hi) of the positions traced there, None = all)
    while stack:
        node, t, span = stack.pop()
        if (node, t, span) in seen or is_const(node):
            continue
        seen.add((node, t, span))
        answer = known.get((node, t)) if known is not None else None
        if answer == "none":  # none of its tokens come from the latent, so none of a subset do
            continue
        if answer == "all":
            origins.setdefault(node, t)
            continue
        if node.op == "placeholder":
            origins[node] = t
            continue
        shape = shape_of(node) if not isinstance(node.meta.get("val"), (tuple, list)) else None
        target = node.target
        if target is operator.getitem and node.args[0].target in ATTENTION:
            # an attention output's tokens are its queries' tokens (a joint attention's second output: the joint ones)
            attention = node.args[0]
            stack.append((attention.args[3] if attention.target is joint_sdpa and node.args[1] == 1 else
                          attention.args[0], t, span))
            continue
        if target is aten.scaled_dot_product_attention.default:
            stack.append((node.args[0], t, span))
            continue
        last = len(shape) - 1
        if target is aten.permute.default:
            stack.append((node.args[0], list(node.args[1])[t], span))
        elif target is aten.reshape.default:
            d = reshape_dim_map(shape, shape_of(node.args[0]), t)
            if d is None:
                origins.setdefault(node, t)  # the reshape makes the token dim (patchify)
            else:
                stack.append((node.args[0], d, span))
        elif (target in UNARY or is_row_wise(node)) and t != last:
            stack.append((node.args[0], t, span))
        elif target in BINARY:
            for operand in node.args[:2]:
                if isinstance(operand, fx.Node):
                    od = t - (len(shape) - len(shape_of(operand)))
                    if od >= 0 and shape_of(operand)[od] == shape[t]:  # broadcast operands carry no tokens
                        stack.append((operand, od, span))
        elif target is aten.slice.Tensor and node.args[1] % len(shape) != t:
            stack.append((node.args[0], t, span))
        elif target is aten.slice.Tensor and through_slices:
            stack.append((node.args[0], t, _sliced_span(node, span)))
        elif target is aten.constant_pad_nd.default and through_slices:
            # padding adds constant positions: the others are the input's (Mochi pads each prompt's attention
            # output back to the full prompt length)
            reaches, inner = _padded_span(node, t, span)
            if reaches:
                stack.append((node.args[0], t, inner))
        elif target is aten.cat.default and (node.args[1] if len(node.args) > 1 else 0) % len(shape) != t:
            stack.extend((part, t, span) for part in node.args[0])
        elif target is aten.cat.default and through_slices:
            lo, hi = span or (0, shape[t])
            start = 0
            for part in node.args[0]:
                size = shape_of(part)[t]
                if start < hi and lo < start + size:
                    stack.append((part, t, (max(lo, start) - start, min(hi, start + size) - start)))
                start += size
        else:
            origins.setdefault(node, t)
    return origins


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
        # answers so far: a later block's walk stops at an earlier block's attention queries instead of walking the
        # whole residual stream back to the inputs again (quadratic in the blocks otherwise)
        self._answers: dict = {}

    def is_main(self, node: fx.Node, dim: int) -> bool | None:
        """True when the token dim `dim` of `node` originates in the latent input, False when it does not, None
        when the graph has no latent input to tell by. The graph must not change between calls."""
        if self.latent is None:
            return None
        key = (node, dim)
        if key not in self._answers:
            found = [o in self.from_latent for o in token_origins(node, dim, through_slices=True, known=self._answers)]
            self._answers[key] = "all" if found and all(found) else "some" if any(found) else "none"
        return self._answers[key] != "none"
