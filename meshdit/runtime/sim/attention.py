"""Attention ops: ttnn.transformer.scaled_dot_product_attention, joint_scaled_dot_product_attention (prompt
tokens appended to the image tokens) and ring_joint_scaled_dot_product_attention (sequence sharded over a mesh axis).

The ring op is simulated as the hardware runs it, not as a gather followed by attention: K/V chunks travel around the
ring between the devices' shards and each device folds them in with an online softmax, masking the padded keys
beyond logical_n. A sharding bug in what each device holds, or a mask that lets padding in, shows up in the numbers.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ...ir import sdpa as sdpa_facts
from ..numerics import round_to
from .registry import sim_op
from .tensor import _check_device, _f, _map, _out, float32


def _check_dtypes(*tensors):
    """ttnn's attention kernels read bfloat16 / bfloat8_b (bfloat4_b) operands only (sdpa_device_operation.cpp,
    ring_joint_sdpa_device_operation.cpp)."""
    for t in tensors:
        if t is not None and t.dtype.name not in ("bfloat16", "bfloat8_b", "bfloat4_b"):
            raise RuntimeError(f"TT_FATAL (simulated) @ sdpa_device_operation: input_tensor->dtype() == "
                               f"DataType::BFLOAT16 || BFLOAT8_B || BFLOAT4_B (got {t.dtype.name})")


def _check_program(kind, program_config, q, q_lengths, k_lengths):
    """What ttnn refuses of a program config's chunk sizes for these shapes (ir/sdpa.py: chunks that are not whole
    tiles, circular buffers beyond L1). Without a config the kernels use 32 x 32 chunks on the whole grid."""
    if program_config is None:
        chunks, grid = sdpa_facts.Chunks(), q.device().GRID
    else:
        chunks = sdpa_facts.Chunks(program_config.q_chunk_size, program_config.k_chunk_size)
        grid = program_config.compute_with_storage_grid_size
    cores, shape = grid.x * grid.y, q.padded_shape
    why = sdpa_facts.refusal(kind, chunks, shape[-1], shape[0] * shape[1], q_lengths, k_lengths, cores)
    if why is not None:
        raise RuntimeError(f"TT_FATAL (simulated) @ {kind} SDPA: {why}")


def _attention(q, k, v, mask=None, scale=None, causal=False):
    scale = scale if scale is not None else 1.0 / math.sqrt(q.shape[-1])
    if k.shape[-3] != q.shape[-3]:  # grouped-query attention: each K/V head serves a group of Q heads
        if q.shape[-3] % k.shape[-3]:
            raise RuntimeError("TT_FATAL (simulated): Q num_heads must be >= K num_heads and divisible by K num_heads")
        group = q.shape[-3] // k.shape[-3]
        k, v = k.repeat_interleave(group, dim=-3), v.repeat_interleave(group, dim=-3)
    return F.scaled_dot_product_attention(_f(q), _f(k), _f(v), attn_mask=_f(mask) if mask is not None else None,
                                          is_causal=causal, scale=scale)


@sim_op("transformer.scaled_dot_product_attention")
def _scaled_dot_product_attention(input_tensor_q, input_tensor_k, input_tensor_v, *, attn_mask=None,
                                  is_causal=True, scale=None, memory_config=None, program_config=None,
                                  compute_kernel_config=None, **_):
    _check_dtypes(input_tensor_q, input_tensor_k, input_tensor_v, attn_mask)
    _check_program("sdpa", program_config, input_tensor_q, [input_tensor_q.padded_shape[-2]],
                   [input_tensor_k.padded_shape[-2]])
    if attn_mask is not None:
        _check_mask(attn_mask, input_tensor_q, input_tensor_k, program_config)
    inputs = (input_tensor_q, input_tensor_k, input_tensor_v) + ((attn_mask,) if attn_mask is not None else ())
    return _map(lambda q, k, v, m=None: _attention(q, k, v, m, scale, is_causal), *inputs)


def _check_mask(mask, q, k, program_config):
    """What ttnn's SDPA validates of a mask: tilized, [batch, 1 or heads, q tokens, k tokens] exactly (no broadcast
    over tokens), and both sequence lengths whole q/k chunks (32 without a program config)."""
    ms, qs, ks = tuple(mask.shards[0].shape), tuple(q.shards[0].shape), tuple(k.shards[0].shape)
    q_chunk = getattr(program_config, "q_chunk_size", 32) if program_config is not None else 32
    k_chunk = getattr(program_config, "k_chunk_size", 32) if program_config is not None else 32
    problems = []
    if mask.layout.name != "TILE":
        problems.append("When mask is provided to SDPA, it must be tilized")
    if len(ms) != 4 or ms[0] != qs[0] or ms[1] not in (1, qs[1]) or ms[2] != qs[2] or ms[3] != ks[2]:
        problems.append(f"mask shape {list(ms)} must be [{qs[0]}, 1 or {qs[1]}, {qs[2]}, {ks[2]}] (Q {list(qs)}, "
                        f"K {list(ks)})")
    if qs[2] % q_chunk or ks[2] % k_chunk:
        problems.append(f"If mask is provided, Q and K sequence lengths ({qs[2]}, {ks[2]}) must be divisible by "
                        f"q_chunk_size {q_chunk} and k_chunk_size {k_chunk}")
    if problems:
        raise RuntimeError("TT_FATAL (simulated) @ sdpa_device_operation: " + "; ".join(problems))


@sim_op("transformer.joint_scaled_dot_product_attention")
def _joint_scaled_dot_product_attention(input_tensor_q, input_tensor_k, input_tensor_v, joint_tensor_q,
                                        joint_tensor_k, joint_tensor_v, *, joint_strategy, program_config,
                                        scale=None, compute_kernel_config=None):
    if joint_strategy != "rear":
        raise RuntimeError(f"TT_FATAL (simulated): joint_strategy must be 'rear', got {joint_strategy!r}")
    if program_config is None:
        raise TypeError("joint_scaled_dot_product_attention(): program_config is required")
    _check_dtypes(input_tensor_q, input_tensor_k, input_tensor_v, joint_tensor_q, joint_tensor_k, joint_tensor_v)
    _check_device(input_tensor_q, joint_tensor_q)
    _check_program("joint", program_config, input_tensor_q,
                   [t.padded_shape[-2] for t in (input_tensor_q, joint_tensor_q)],
                   [t.padded_shape[-2] for t in (input_tensor_k, joint_tensor_k)])
    n = input_tensor_q.shape[-2]
    outs, joint_outs = [], []
    for i in range(len(input_tensor_q.shards)):
        q = torch.cat([input_tensor_q.shards[i], joint_tensor_q.shards[i]], dim=-2)
        k = torch.cat([input_tensor_k.shards[i], joint_tensor_k.shards[i]], dim=-2)
        v = torch.cat([input_tensor_v.shards[i], joint_tensor_v.shards[i]], dim=-2)
        o = _attention(q, k, v, scale=scale)
        outs.append(o[..., :n, :])
        joint_outs.append(o[..., n:, :])
    return _out(input_tensor_q, outs), _out(joint_tensor_q, joint_outs)


@sim_op("transformer.ring_joint_scaled_dot_product_attention")
def _ring_joint_scaled_dot_product_attention(
        input_tensor_q, input_tensor_k, input_tensor_v, joint_tensor_q=None, joint_tensor_k=None,
        joint_tensor_v=None, *, persistent_output_buffer_k, persistent_output_buffer_v, joint_strategy, logical_n,
        program_config, scale=None, compute_kernel_config=None, dim, multi_device_global_semaphore, num_links,
        cluster_axis, mesh_device, topology, ccl_core_grid_offset, **_):
    """Ring attention over the sequence-sharded main stream, prompt ("joint") tokens appended once.

    Each device starts with its own K/V chunk; at every step it attends to the chunk it holds, then passes that
    chunk to the next device on the ring (real data movement between shards), accumulating with an online
    softmax. After ring-size steps every device has seen every chunk. The gathered K/V land in the persistent
    buffers, as the real op's all-gather does. Keys at global sequence positions >= logical_n (the padding that
    makes every shard whole tiles) are masked out, as the real op does. Returns (output, joint output, lse)."""
    if joint_strategy != "rear" or dim != 2:
        raise RuntimeError("TT_FATAL (simulated): ring joint SDPA supports joint_strategy='rear', dim=2")
    _check_dtypes(input_tensor_q, input_tensor_k, input_tensor_v, joint_tensor_q, joint_tensor_k, joint_tensor_v)
    if input_tensor_q.padded_shape[-2] > input_tensor_k.padded_shape[-2]:  # kv_stripe_split is 1 here
        raise RuntimeError(
            "TT_FATAL (simulated) @ ring_joint_sdpa_device_operation: N_local_q <= N_local_kv * kv_stripe_split "
            f"(per-device Q seq length {input_tensor_q.padded_shape[-2]} > K/V seq length "
            f"{input_tensor_k.padded_shape[-2]})")
    _check_device(input_tensor_q)
    has_joint = joint_tensor_q is not None
    joint_len = joint_tensor_q.padded_shape[-2] if has_joint else 0
    _check_program("ring", program_config, input_tensor_q, [input_tensor_q.padded_shape[-2], joint_len],
                   [input_tensor_k.padded_shape[-2], joint_len, logical_n])
    n_dev = len(input_tensor_q.shards)
    outs, joint_outs, lses = [None] * n_dev, [None] * n_dev, [None] * n_dev
    k_buf, v_buf = [None] * n_dev, [None] * n_dev
    for line in mesh_device.lines(cluster_axis):
        ring = len(line)
        held = [(_f(input_tensor_k.shards[i]), _f(input_tensor_v.shards[i]), pos) for pos, i in enumerate(line)]
        state = {}
        for pos, i in enumerate(line):
            q = _f(input_tensor_q.shards[i])
            queries = torch.cat([q, _f(joint_tensor_q.shards[i])], dim=-2) if has_joint else q
            sc = scale if scale is not None else 1.0 / math.sqrt(q.shape[-1])
            state[i] = [queries, sc, None, None, None, [None] * ring, [None] * ring]
            if has_joint:  # the prompt K/V join once
                _online_step(state[i], _f(joint_tensor_k.shards[i]), _f(joint_tensor_v.shards[i]))
        for _step in range(ring):
            for pos, i in enumerate(line):
                k, v, origin = held[pos]
                first = origin * k.shape[-2]  # global position of the chunk's first key
                valid = torch.arange(first, first + k.shape[-2]) < logical_n
                _online_step(state[i], k, v, valid)
                state[i][5][origin], state[i][6][origin] = k, v
            held = [held[(pos - 1) % ring] for pos in range(ring)]  # each device passes its chunk on
        for pos, i in enumerate(line):
            queries, _sc, m, l, acc, ks, vs = state[i]
            out = acc / l
            n_local = input_tensor_q.shards[i].shape[-2]
            outs[i], joint_outs[i] = out[..., :n_local, :], out[..., n_local:, :]
            lses[i] = m + torch.log(l)
            k_buf[i], v_buf[i] = torch.cat(ks, dim=-2), torch.cat(vs, dim=-2)
    persistent_output_buffer_k.shards = [round_to(t, persistent_output_buffer_k.dtype.name) for t in k_buf]
    persistent_output_buffer_v.shards = [round_to(t, persistent_output_buffer_v.dtype.name) for t in v_buf]
    joint_ref = joint_tensor_q if has_joint else input_tensor_q
    return (_out(input_tensor_q, outs), _out(joint_ref, joint_outs), _out(input_tensor_q, lses, float32))


def _online_step(state, k, v, valid=None):
    """Fold one K/V chunk into a running softmax (max m, denominator l, numerator acc).

    valid: per key, whether it is a real token; masked keys score -inf. A chunk of padding only (a device whose
    shard is all padding) leaves the running max at -inf; exp() is then taken against 0, giving 0, not NaN."""
    queries, scale, m, l, acc = state[:5]
    scores = torch.matmul(queries, k.transpose(-1, -2)) * scale
    if valid is not None:
        scores = scores.masked_fill(~valid, float("-inf"))
    chunk_max = scores.amax(-1, keepdim=True)
    new_m = chunk_max if m is None else torch.maximum(m, chunk_max)
    shift = torch.where(torch.isinf(new_m), torch.zeros_like(new_m), new_m)  # -inf - -inf would be NaN
    p = torch.exp(scores - shift)
    correction = torch.exp(m - shift) if m is not None else None
    l_new = p.sum(-1, keepdim=True) + (l * correction if l is not None else 0)
    acc_new = torch.matmul(p, v) + (acc * correction if acc is not None else 0)
    state[2], state[3], state[4] = new_m, l_new, acc_new
