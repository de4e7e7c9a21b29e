"""Recognise DiT structure as graph patterns. Nothing here knows a model's name.

Rewrites (each keeps the graph's value):
  x * rsqrt(mean(x*x, -1) + eps) [* w]          -> aten.rms_norm          (RMSNorm written out by hand)
  sdpa(cat(q_a, q_b), cat(k_a, k_b), cat(v_a, v_b)) -> ops.joint_sdpa     (joint attention over two streams;
                                                   run after passes/streams.py has pushed cats down to attention;
                                                   a main stream inside a nested cat is taken out of it, and
                                                   all the other streams form the joint one)
Annotations (recorded in ModelGraph.patterns, used by the plan and by sharding):
  linear                     every aten.linear
  mlp                        linear -> activation (gelu, gelu-tanh, silu, swiglu/geglu gate) -> linear
  adaln_modulation           silu(c) -> linear [-> reshape] -> split into shift/scale/gate chunks
  modulate                   norm(x) * (1 + scale) [+ shift]
  attention / joint_attention  the sdpa node with the linears producing its q, k, v
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field

import torch
import torch.fx as fx

from ..errors import node_location
from ..ir import ops
from ..ir.graph import ModelGraph, calls, emit, finalize, is_const, replace_node
from ..ir.op_classes import ACTIVATIONS, LAYOUT, NORMS
from ..ir.tokens import StreamOracle, token_origins

aten = torch.ops.aten

# Ops that move or reshape data without mixing values across tokens; patterns look through them.
PASS_THROUGH = LAYOUT | NORMS


@dataclass
class Pattern:
    kind: str
    nodes: dict  # role -> node name
    info: dict = field(default_factory=dict)

    def __str__(self):
        extra = ", ".join(f"{k}={v}" for k, v in self.info.items())
        return f"{self.kind}({extra})" if extra else self.kind


def _is_scalar(x):
    return isinstance(x, (int, float))


def _other(node, first):
    a, b = node.args[0], node.args[1]
    return b if a is first else a if b is first else None


# --- rewrites ---------------------------------------------------------------------------------------------------
def fuse_rms_norm(mg: ModelGraph) -> int:
    graph = mg.gm.graph
    fused = 0
    for rsqrt in calls(graph, aten.rsqrt.default):
        var_eps = rsqrt.args[0]
        if not (isinstance(var_eps, fx.Node) and var_eps.target is aten.add.Tensor):
            continue
        mean, eps = var_eps.args
        if not (isinstance(mean, fx.Node) and mean.target is aten.mean.dim and _is_scalar(eps)):
            continue
        square = mean.args[0]
        dims = list(mean.args[1])
        keepdim = mean.args[2] if len(mean.args) > 2 else mean.kwargs.get("keepdim", False)
        if not (square.target is aten.mul.Tensor and square.args[0] is square.args[1] and keepdim):
            continue
        x = square.args[0]
        rank = len(x.meta["val"].shape)
        if [d % rank for d in dims] != [rank - 1] or len(rsqrt.users) != 1:
            continue
        normed = next(iter(rsqrt.users))
        if normed.target is not aten.mul.Tensor or _other(normed, rsqrt) is not x:
            continue
        width = x.meta["val"].shape[-1]
        weight, out = None, normed
        if len(normed.users) == 1:
            user = next(iter(normed.users))
            w = _other(user, normed) if user.target is aten.mul.Tensor else None
            if is_const(w) and list(w.meta["val"].shape) == [width]:
                weight, out = w, user
        with graph.inserting_before(out):
            fused_node = emit(graph, aten.rms_norm.default, (x, [width], weight, float(eps)), like=out)
        replace_node(out, fused_node)
        fused += 1
    finalize(mg)
    return fused


def _stream_parts(node):
    """The token streams a cat along the sequence dim (-2) of a rank-4 [B, H, S, D] tensor joins, nested cats
    flattened (a stream that is itself a concatenation: learned register tokens in front of the image tokens), or
    None when node is no such cat."""
    if not (isinstance(node, fx.Node) and node.target is aten.cat.default):
        return None
    dim = node.args[1] if len(node.args) > 1 else 0
    rank = len(node.meta["val"].shape)
    if rank != 4 or dim % rank != 2:
        return None
    parts = []
    for part in node.args[0]:
        parts.extend(_stream_parts(part) or [part])
    return parts


def _main_group(flat: list, top: list, oracle: StreamOracle):
    """Indices into the flattened streams `flat` of the main stream when the model concatenated learned tokens (no
    runtime input behind them: register tokens) in front of or behind it: the run of streams whose tokens come from
    the latent input, taken out of the concatenation it shares with them, so that the image tokens are sharded from
    their patch embedding on and the learned ones join the joint stream. None when the model's own parts `top` are
    to be kept (no such concatenation, or one that also holds runtime tokens, such as history latents)."""
    latent = [oracle.is_main(p, 2) for p in flat]
    if None in latent or all(latent) or not any(latent):
        return None
    run = [i for i, from_latent in enumerate(latent) if from_latent]
    if run != list(range(run[0], run[-1] + 1)):
        return None
    main = flat[run[0]:run[-1] + 1]
    for part in top:
        members = _stream_parts(part) or [part]
        if members == main:
            return None  # the model's own parts already hold the main stream apart
        if main[0] in members:
            learned = [m for m in members if m not in main]
            return run if all(not token_origins(m, 2, through_slices=True) for m in learned) else None
    return None


def fuse_joint_attention(mg: ModelGraph) -> int:
    """sdpa over concatenated streams -> joint_sdpa(main stream, joint stream). With more than two streams the
    joint stream is the concatenation of all but the main one: key order does not change attention, and each
    stream's output is sliced back out in the model's order."""
    graph = mg.gm.graph
    oracle = StreamOracle(mg)
    fused = 0
    for sdpa in calls(graph, aten.scaled_dot_product_attention.default):
        q, k, v = sdpa.args[:3]
        extra = dict(zip(["attn_mask", "dropout_p", "is_causal"], sdpa.args[3:]))
        extra.update(sdpa.kwargs)
        if extra.get("attn_mask") is not None or extra.get("is_causal") or extra.get("dropout_p", 0.0):
            continue
        flat = [_stream_parts(t) for t in (q, k, v)]
        if any(s is None for s in flat):
            continue
        run = _main_group(flat[0], list(q.args[0]), oracle)
        streams = flat if run is not None else [list(t.args[0]) for t in (q, k, v)]
        sizes = [[p.meta["val"].shape[2] for p in s] for s in streams]
        if len(sizes[0]) < 2 or not (sizes[0] == sizes[1] == sizes[2]):
            continue
        if run is None:
            # A first guess (the longest stream); orient_joint_attention decides structurally once streams are apart.
            run = [max(range(len(sizes[0])), key=lambda i: sizes[0][i])]
        groups = (run, [i for i in range(len(sizes[0])) if i not in run])
        with graph.inserting_before(sdpa):
            args = [s[g[0]] if len(g) == 1 else emit(graph, aten.cat.default, ([s[i] for i in g], 2), like=t)
                    for g in groups for s, t in zip(streams, (q, k, v))]
            node = emit(graph, ops.joint_sdpa, tuple(args), {"scale": extra.get("scale"), "joint_first": run[0] > 0},
                        like=sdpa)
            outs = [emit(graph, operator.getitem, (node, i), like=sdpa) for i in (0, 1)]
            # the model saw one concatenated output; sink_concats then cancels this cat against its splits
            pieces = {}
            for out, group in zip(outs, groups):
                start = 0
                for i in group:
                    pieces[i] = out if len(group) == 1 else \
                        emit(graph, aten.slice.Tensor, (out, 2, start, start + sizes[0][i]), like=sdpa)
                    start += sizes[0][i]
            merged = emit(graph, aten.cat.default, ([pieces[i] for i in range(len(sizes[0]))], 2), like=sdpa)
        replace_node(sdpa, merged)
        fused += 1
    finalize(mg)
    return fused


def orient_joint_attention(mg: ModelGraph) -> int:
    """Make each joint attention's main stream the one whose tokens come from the latent input (ir/tokens.py), not
    the longer one: a 256 x 256 Flux image has 256 image tokens against 512 prompt tokens. Swaps the streams of a
    joint attention that has them the other way round (its value does not change: joint_first keeps the model's
    concatenation order); returns how many were swapped. Without a latent input to tell by, the guess stays and the
    plan says so."""
    oracle = StreamOracle(mg)
    swapped = 0
    for node in calls(mg.gm.graph, ops.joint_sdpa):
        main, joint = oracle.is_main(node.args[0], 2), oracle.is_main(node.args[3], 2)
        if main is None or main == joint:
            mg.notes.append(f"joint attention at {node_location(node)}: neither stream alone comes from the latent "
                            "input; the longer one is taken as the image/video stream")
            continue
        if main:
            continue
        node.args = tuple(node.args[3:6]) + tuple(node.args[:3])
        node.kwargs = {**node.kwargs, "joint_first": not node.kwargs.get("joint_first", False)}
        node.meta["val"] = tuple(reversed(node.meta["val"]))
        for user in list(node.users):
            user.args = (node, 1 - user.args[1])
        swapped += 1
    return swapped


# --- annotations ------------------------------------------------------------------------------------------------
def _through(node, forward=True, limit=6):
    """Follow single-consumer pass-through ops forward (or producers backward) from node."""
    for _ in range(limit):
        if forward:
            if len(node.users) != 1:
                return node
            nxt = next(iter(node.users))
            if nxt.target not in PASS_THROUGH:
                return node
            node = nxt
        else:
            if node.op != "call_function" or node.target not in PASS_THROUGH:
                return node
            node = node.args[0]
    return node


def _source_linear(node):
    src = _through(node, forward=False)
    return src if isinstance(src, fx.Node) and src.target is aten.linear.default else None


def annotate(mg: ModelGraph) -> list:
    graph = mg.gm.graph
    found: list = []
    linears = calls(graph, aten.linear.default)
    for lin in linears:
        w = lin.args[1].meta["val"].shape
        found.append(Pattern("linear", {"linear": lin.name}, {"in": w[1], "out": w[0]}))
    for up in linears:
        users = list(up.users)
        act, gate = None, None
        if len(users) == 1 and users[0].target in ACTIVATIONS:
            act = users[0]
            kind = ACTIVATIONS[act.target]
            if act.target is aten.gelu.default and act.kwargs.get("approximate", "none") == "tanh":
                kind = "gelu-tanh"
        elif len(users) == 2 and all(u.target is aten.slice.Tensor for u in users):
            # gated activation: up -> (a, b) halves -> act(a) * b
            for half in users:
                if len(half.users) == 1 and next(iter(half.users)).target in ACTIVATIONS:
                    act = next(iter(half.users))
                    gate = act.users and next(iter(act.users))
            if gate is not None and gate.target is aten.mul.Tensor:
                kind = ("swiglu" if act.target is aten.silu.default else "geglu")
                act = gate
            else:
                act = None
        if act is None or len(act.users) != 1:
            continue
        down = next(iter(act.users))
        if down.target is aten.linear.default and down.args[0] is act:
            found.append(Pattern("mlp", {"up": up.name, "act": act.name, "down": down.name},
                                 {"act": kind, "hidden": up.args[1].meta["val"].shape[0]}))
    for mul in calls(graph, aten.mul.Tensor):
        # gated MLP written (or split) as two projections of one input: act(x @ A) * (x @ B) -> down
        a, b = mul.args[0], mul.args[1]
        for act, gate in ((a, b), (b, a)):
            if not (isinstance(act, fx.Node) and act.target in ACTIVATIONS and isinstance(gate, fx.Node)):
                continue
            up = act.args[0]
            if not (up.target is aten.linear.default and gate.target is aten.linear.default
                    and up.args[0] is gate.args[0] and len(mul.users) == 1):
                continue
            down = next(iter(mul.users))
            if down.target is aten.linear.default and down.args[0] is mul:
                kind = "swiglu" if act.target is aten.silu.default else "geglu"
                found.append(Pattern("mlp", {"up": up.name, "up_gate": gate.name, "act": mul.name,
                                             "down": down.name},
                                     {"act": kind, "hidden": up.args[1].meta["val"].shape[0]}))
            break
    for silu in calls(graph, aten.silu.default):
        for lin in silu.users:
            if lin.target is not aten.linear.default:
                continue
            out = _through(lin)  # a reshape between the linear and its chunks: emb[:, None].chunk(6, -1)
            chunks = [u for u in out.users if u.target is aten.slice.Tensor]
            if len(chunks) >= 2 and len(chunks) == len(out.users):
                found.append(Pattern("adaln_modulation", {"silu": silu.name, "linear": lin.name},
                                     {"chunks": len(chunks)}))
    for mul in calls(graph, aten.mul.Tensor):
        for side, other in ((0, 1), (1, 0)):
            scale = mul.args[other]
            normed = mul.args[side]
            if not (isinstance(scale, fx.Node) and scale.target is aten.add.Tensor and 1 in scale.args[1:]):
                continue
            if not (isinstance(normed, fx.Node) and normed.target in NORMS):
                continue
            roles = {"norm": normed.name, "scale": scale.name, "mul": mul.name}
            if len(mul.users) == 1 and next(iter(mul.users)).target is aten.add.Tensor:
                roles["shift"] = next(iter(mul.users)).name
            found.append(Pattern("modulate", roles))
            break
    for node in graph.nodes:
        if node.op != "call_function":
            continue
        if node.target is aten.scaled_dot_product_attention.default:
            q, k, v = node.args[:3]
            qkv = [_source_linear(t) for t in (q, k, v)]
            shape = q.meta["val"].shape
            found.append(Pattern("attention", {"sdpa": node.name, **{r: l.name for r, l in zip("qkv", qkv) if l}},
                                 {"heads": shape[1], "head_dim": shape[-1], "seq": shape[-2]}))
        elif node.target is ops.joint_sdpa:
            shape, jshape = node.args[0].meta["val"].shape, node.args[3].meta["val"].shape
            found.append(Pattern("joint_attention", {"sdpa": node.name},
                                 {"heads": shape[1], "head_dim": shape[-1], "seq": shape[-2],
                                  "joint_seq": jshape[-2]}))
    mg.patterns = found
    return found
