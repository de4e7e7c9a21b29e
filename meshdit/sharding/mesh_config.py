"""MeshConfig: the mesh shape and the parallel factors, each on a mesh axis.

Accepted forms:
  MeshConfig(...) objects;
  strings: "1x1", "2x4 cfg2@1 sp2@0 tp2@1", "4x8 sp4@0 tp8@1 ulysses2" (factor@axis; ulysses shares the sp axis);
  the seeds' tuples on a mesh: ((cfg, cfg_axis), (sp, sp_axis), (tp, tp_axis)) or ((sp, sp_axis), (tp, tp_axis)),
  given with the mesh shape: MeshConfig.from_tuples((2, 4), ((2, 1), (2, 0), (2, 1))).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

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
    ulysses: int = 1  # heads all-to-all degree inside the sp group (USP: ulysses x ring = sp)

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
            parts.append(f"ulysses{self.ulysses}")
        return " ".join(parts)

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
            m = re.fullmatch(r"(cfg|sp|tp)(\d+)@([01])|(ulysses)(\d+)", token)
            if not m:
                raise ConfigError(f"mesh_config {text!r}: cannot read {token!r}; write e.g. 'sp2@0', 'tp4@1', "
                                  "'cfg2@1' (factor@mesh axis) or 'ulysses2'")
            if m.group(4):
                fields["ulysses"] = int(m.group(5))
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
        """Check the factors against the mesh: each axis's factors multiply to at most that axis's size."""
        if self.rows < 1 or self.cols < 1:
            raise ConfigError(f"mesh {self.rows}x{self.cols}: both dimensions must be at least 1")
        used = {0: 1, 1: 1}
        for name in ("cfg", "sp", "tp"):
            pf = getattr(self, name)
            if pf.factor < 1 or pf.axis not in (0, 1):
                raise ConfigError(f"{name}{pf}: factor must be >= 1 and axis 0 or 1")
            used[pf.axis] *= pf.factor
        for axis, size in enumerate(self.shape):
            if used[axis] != size and not (used[axis] == 1 and size == 1):
                names = [n for n in ("cfg", "sp", "tp") if getattr(self, n).axis == axis and getattr(self, n).factor > 1]
                raise ConfigError(
                    f"mesh {self.rows}x{self.cols}: the factors on axis {axis} ({', '.join(names) or 'none'}) "
                    f"multiply to {used[axis]}, but the axis has {size} devices; they must multiply to {size}"
                )
        if self.ulysses < 1 or self.sp.factor % self.ulysses:
            raise ConfigError(f"ulysses{self.ulysses}: must divide the sp factor {self.sp.factor}")
        return self
