"""Weight transforms: how the host prepares a program weight from a model constant, named by lowering and applied
by the runtime.

A rule asks for `b.weight(node, TRANSPOSE)`; the transform says what the prepared array's shape is, where each
model dim lands (so a sharded dim keeps its placement), and how to make it. The runtime (Program) applies it to the
constant's real values, once, into an array the program owns. Transforms are values of the program IR: printable,
comparable, and named in the weight's name (`...to_q.weight:transpose`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class WeightTransform:
    name: str  # how it shows in the weight's name; "" for none

    def shape(self, shape: tuple) -> tuple:
        """The prepared array's shape."""
        return tuple(shape)

    def dim(self, dim: int, rank: int) -> int:
        """Where dim `dim` of the model constant lands in the prepared array."""
        return dim

    def float_output(self) -> bool:
        """Whether the prepared array is float whatever the constant's dtype (a mask becomes additive)."""
        return False

    def values(self, value: torch.Tensor) -> torch.Tensor:
        return value

    def prepare(self, value: torch.Tensor, *more: torch.Tensor) -> np.ndarray:
        """The host array the device gets: contiguous float32 (int32 for integers), owned by the program.

        The constants of a ModelGraph are the module's (or the given state dict's) own tensors: this is where the
        program takes its copy. A transform that makes a new tensor (a transpose made contiguous, a cast, a mask)
        already is one; a weight that would still be a view of the module's storage is copied, so a module changed
        after lower() cannot change the program, and a large model's weights are not copied twice."""
        source = value.detach().cpu()
        prepared = self.values(source, *(m.detach().cpu() for m in more))
        prepared = prepared.to(torch.float32 if prepared.is_floating_point() else torch.int32).contiguous()
        if prepared.untyped_storage().data_ptr() == source.untyped_storage().data_ptr():
            prepared = prepared.clone()
        return prepared.numpy()

    def __str__(self):
        return self.name or "identity"


class _Transpose(WeightTransform):
    """[out, in] -> [in, out]: ttnn.linear multiplies by the weight as stored."""

    def shape(self, shape):
        return tuple(shape[:-2]) + (shape[-1], shape[-2])

    def dim(self, dim, rank):
        return {rank - 1: rank - 2, rank - 2: rank - 1}.get(dim, dim)

    def values(self, value):
        return value.transpose(-1, -2)


class _Row(WeightTransform):
    """A vector (bias, norm weight) as one row [1, n]: ttnn broadcasts rows."""

    def shape(self, shape):
        return (1, shape[0])

    def dim(self, dim, rank):
        return 1

    def values(self, value):
        return value.reshape(1, -1)


class _AdditiveMask(WeightTransform):
    """A boolean attention mask as the additive mask ttnn's SDPA takes: 0 where attended, -inf where masked."""

    def float_output(self):
        return True

    def values(self, value):
        return torch.zeros(value.shape).masked_fill(~value.bool(), float("-inf"))


@dataclass(frozen=True)
class HeadsFused(WeightTransform):
    """q, k and v projections (weights [out, in] or biases [out], made as `base` makes one) fused along their output
    dim for one ttnn.linear followed by ttnn.transformer.split_query_key_value_and_split_heads. That op reads each
    device's columns as all of q's heads, then k's, then v's; with the output dim split over `groups` devices
    (column-parallel tp), the columns are interleaved per device, [q_0 k_0 v_0 | q_1 k_1 v_1 | ...] where q_i is
    device i's whole heads of q, as TT-DiT's head-interleaved to_qkv is. Heads are whole per device: sharding cut
    q, k and v by heads, and split_query_key_value_and_split_heads divides each device's width by 3 x its heads."""
    base: WeightTransform = None
    groups: int = 1

    def shape(self, shape):
        out = self.base.shape(shape)
        return tuple(out[:-1]) + (3 * out[-1],)

    def dim(self, dim, rank):
        return self.base.dim(dim, rank)

    def values(self, *qkv):
        if len(qkv) != 3:
            raise ValueError(f"HeadsFused takes the q, k and v constants, got {len(qkv)}")
        parts = [self.base.values(x) for x in qkv]  # each [..., out]
        if parts[0].shape[-1] % self.groups:
            raise ValueError(f"HeadsFused: output width {parts[0].shape[-1]} does not split over {self.groups} devices")
        lead = tuple(parts[0].shape[:-1])
        per_device = [p.reshape(*lead, self.groups, -1) for p in parts]
        return torch.cat(per_device, dim=-1).reshape(*lead, -1)


def heads_fused(base: WeightTransform, groups: int) -> HeadsFused:
    return HeadsFused(f"qkv{groups}" if base.name == "transpose" else f"{base.name}_qkv{groups}", base, groups)


IDENTITY = WeightTransform("")
TRANSPOSE = _Transpose("transpose")
ROW = _Row("row")
ADDITIVE_MASK = _AdditiveMask("additive_mask")
