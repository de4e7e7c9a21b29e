"""MeshConfig: the mesh shape and the parallel factors, each on a mesh axis.

Accepted forms:
  MeshConfig(...) objects;
  strings: "1x1", "2x4 cfg2@1 sp2@0 tp2@1" (factor@mesh axis);
  ulysses (USP: the sequence group is ulysses x ring): "1x4 sp4@1 ulysses4" puts the all-to-all on the sp axis
  itself (attention by heads, no ring); "2x4 sp4@1 ulysses2@0" is the hybrid, a ring of 4 on axis 1 times an
  all-to-all over 2 on axis 0, so the sequence is sharded 8 ways. ttnn's all-to-all and ring attention each span
  a whole mesh axis (cluster_axis), so a hybrid takes one axis for each; 1 < ulysses < sp on one axis is refused;
  the seeds' tuples on a mesh: ((cfg, cfg_axis), (sp, sp_axis), (tp, tp_axis)) or ((sp, sp_axis), (tp, tp_axis)),
  given with the mesh shape: MeshConfig.from_tuples((2, 4), ((2, 1), (2, 0), (2, 1))).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from ..errors import ConfigError


@dataclass(frozen=True)
class ParallelFactor:
    factor: int = 1
    axis: int = 0

    def __str__(self):
        return f"{self.factor}@{self.axis}"


@dataclass(frozen=True)
class MeshConfig:
    rows: int = 1
    cols: int = 1
    cfg: ParallelFactor = ParallelFactor()
    sp: ParallelFactor = ParallelFactor()
    tp: ParallelFactor = ParallelFactor()
    ulysses: int = 1  # heads all-to-all degree (USP: the sequence group is ulysses x ring)
    ulysses_axis: int | None = None  # None: on the sp axis (ulysses = sp, no ring); else its own mesh axis (hybrid)

    @property
    def shape(self) -> tuple:
        return (self.rows, self.cols)

    @property
    def num_devices(self) -> int:
        return self.rows * self.cols

    def __str__(self):
        parts = [f"{self.rows}x{self.cols}"]
        for name in ("cfg", "sp", "tp"):
            pf = getattr(self, name)
            if pf.factor > 1:
                parts.append(f"{name}{pf}")
        if self.ulysses > 1:
            parts.append(f"ulysses{self.ulysses}" + (f"@{self.ulysses_axis}" if self.hybrid else ""))
        return " ".join(parts)

    @property
    def hybrid(self) -> bool:
        """Ulysses on its own mesh axis times a ring on the sp axis."""
        return self.ulysses > 1 and self.ulysses_axis is not None and self.ulysses_axis != self.sp.axis

    @property
    def sequence_group(self) -> int:
        """How many ways the image/video tokens are sharded: ring x ulysses."""
        return self.sp.factor * (self.ulysses if self.hybrid else 1)

    @classmethod
    def parse(cls, value) -> "MeshConfig":
        if isinstance(value, MeshConfig):
            return value
        if isinstance(value, str):
            return cls._from_string(value)
        raise ConfigError(
            f"mesh_config must be a MeshConfig or a string such as '1x1' or '2x4 cfg2@1 sp2@0 tp2@1', "
            f"got {type(value).__name__}; for the seeds' tuple form use MeshConfig.from_tuples(mesh_shape, tuples)"
        )

    @classmethod
    def _from_string(cls, text: str) -> "MeshConfig":
        tokens = text.split()
        if not tokens or not re.fullmatch(r"\d+x\d+", tokens[0]):
            raise ConfigError(f"mesh_config {text!r}: must start with the mesh shape ROWSxCOLS, e.g. '2x4'")
        rows, cols = (int(v) for v in tokens[0].split("x"))
        fields = {}
        for token in tokens[1:]:
            m = re.fullmatch(r"(cfg|sp|tp)(\d+)@([01])|(ulysses)(\d+)(?:@([01]))?", token)
            if not m:
                raise ConfigError(f"mesh_config {text!r}: cannot read {token!r}; write e.g. 'sp2@0', 'tp4@1', "
                                  "'cfg2@1' (factor@mesh axis), 'ulysses4' (on the sp axis) or 'ulysses2@0' "
                                  "(hybrid: its own mesh axis)")
            if m.group(4):
                fields["ulysses"] = int(m.group(5))
                fields["ulysses_axis"] = int(m.group(6)) if m.group(6) is not None else None
            else:
                if m.group(1) in fields:
                    raise ConfigError(f"mesh_config {text!r}: {m.group(1)} given twice")
                fields[m.group(1)] = ParallelFactor(int(m.group(2)), int(m.group(3)))
        return cls(rows, cols, **fields).validated()

    @classmethod
    def from_tuples(cls, mesh_shape, tuples) -> "MeshConfig":
        tuples = tuple(tuple(t) for t in tuples)
        if len(tuples) == 3:
            cfg, sp, tp = tuples
        elif len(tuples) == 2:
            (sp, tp), cfg = tuples, (1, 0)
        else:
            raise ConfigError(f"parallel config {tuples}: expected ((cfg, axis), (sp, axis), (tp, axis)) "
                              "or ((sp, axis), (tp, axis))")
        rows, cols = mesh_shape
        return cls(rows, cols, ParallelFactor(*cfg), ParallelFactor(*sp), ParallelFactor(*tp)).validated()

    def validated(self) -> "MeshConfig":
        """Check the factors against the mesh: each axis's factors multiply to that axis's size."""
        if self.rows < 1 or self.cols < 1:
            raise ConfigError(f"mesh {self.rows}x{self.cols}: both dimensions must be at least 1")
        if self.ulysses < 1 or self.ulysses_axis not in (None, 0, 1):
            raise ConfigError(f"ulysses{self.ulysses}: the degree must be >= 1 and its axis 0 or 1")
        if self.ulysses > 1 and self.ulysses_axis is not None and self.sp.factor == 1:
            # ulysses alone on an axis is plain ulysses with that axis as the sp axis
            return MeshConfig(self.rows, self.cols, self.cfg, ParallelFactor(self.ulysses, self.ulysses_axis),
                              self.tp, self.ulysses).validated()
        if self.ulysses_axis is not None and self.ulysses_axis == self.sp.axis:
            return replace(self, ulysses_axis=None).validated()  # on the sp axis is what no axis means
        used = {0: 1, 1: 1}
        names = {0: [], 1: []}
        factors = [(name, getattr(self, name)) for name in ("cfg", "sp", "tp")]
        if self.hybrid:
            factors.append(("ulysses", ParallelFactor(self.ulysses, self.ulysses_axis)))
        for name, pf in factors:
            if pf.factor < 1 or pf.axis not in (0, 1):
                raise ConfigError(f"{name}{pf}: factor must be >= 1 and axis 0 or 1")
            used[pf.axis] *= pf.factor
            if pf.factor > 1:
                names[pf.axis].append(name)
        for axis, size in enumerate(self.shape):
            if used[axis] != size and not (used[axis] == 1 and size == 1):
                raise ConfigError(
                    f"mesh {self.rows}x{self.cols}: the factors on axis {axis} ({', '.join(names[axis]) or 'none'}) "
                    f"multiply to {used[axis]}, but the axis has {size} devices; they must multiply to {size}"
                )
        if self.hybrid:
            if self.tp.factor > 1 and self.tp.axis == self.ulysses_axis:
                raise ConfigError(
                    f"mesh {self}: tp and ulysses are both on axis {self.ulysses_axis}; both split attention heads "
                    f"and each needs the whole axis. Use tp1 with the hybrid, or ulysses on the sp axis")
        elif self.ulysses > 1 and self.ulysses != self.sp.factor:
            if self.sp.factor % self.ulysses == 0:
                raise ConfigError(
                    f"mesh {self}: ulysses{self.ulysses} x ring{self.sp.factor // self.ulysses} on one mesh axis needs "
                    f"an all-to-all and a ring over sub-groups of axis {self.sp.axis}, but ttnn's all-to-all and ring "
                    f"attention each span a whole mesh axis (cluster_axis). Use ulysses{self.sp.factor} (all-to-all "
                    f"only), no ulysses (ring only), or the hybrid on two axes: ulysses on the other mesh axis, e.g. "
                    f"'{self.ulysses}x{self.sp.factor // self.ulysses} sp{self.sp.factor // self.ulysses}@1 "
                    f"ulysses{self.ulysses}@0'")
            raise ConfigError(f"ulysses{self.ulysses}: must divide the sp factor {self.sp.factor}")
        return self
