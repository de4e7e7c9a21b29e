import pytest

from meshdit import MeshConfig
from meshdit.errors import ConfigError


def test_string_forms():
    assert MeshConfig.parse("1x1").shape == (1, 1)
    cfg = MeshConfig.parse("2x4 cfg2@1 sp2@0 tp2@1")
    assert (cfg.cfg.factor, cfg.cfg.axis, cfg.sp.factor, cfg.sp.axis, cfg.tp.factor, cfg.tp.axis) == (2, 1, 2, 0, 2, 1)
    assert str(cfg) == "2x4 cfg2@1 sp2@0 tp2@1"
    assert MeshConfig.parse("4x8 sp4@0 tp8@1 ulysses4").ulysses == 4


def test_hybrid_ulysses_takes_its_own_mesh_axis():
    """USP: the sequence group is ring (sp axis) x ulysses (the other axis); cfg may share either axis."""
    hybrid = MeshConfig.parse("2x4 sp4@1 ulysses2@0")
    assert hybrid.hybrid and hybrid.sequence_group == 8 and (hybrid.ulysses, hybrid.ulysses_axis) == (2, 0)
    assert str(hybrid) == "2x4 sp4@1 ulysses2@0" and MeshConfig.parse(str(hybrid)) == hybrid
    galaxy = MeshConfig.parse("4x8 cfg2@0 sp8@1 ulysses2@0")
    assert galaxy.sequence_group == 16
    same_axis = MeshConfig.parse("1x4 sp4@1 ulysses4")
    assert not same_axis.hybrid and same_axis.sequence_group == 4
    assert MeshConfig.parse("1x2 ulysses2@1") == MeshConfig.parse("1x2 sp2@1 ulysses2")  # ulysses alone: sp axis


def test_seed_tuple_forms():
    sd35 = MeshConfig.from_tuples((4, 8), ((2, 1), (4, 0), (4, 1)))
    assert str(sd35) == "4x8 cfg2@1 sp4@0 tp4@1"
    flux = MeshConfig.from_tuples((2, 4), ((2, 0), (4, 1)))
    assert (flux.cfg.factor, flux.sp.factor, flux.tp.factor) == (1, 2, 4)


@pytest.mark.parametrize("text, message", [
    ("2x4", "axis 0"),
    ("2x4 sp2@0 tp2@1", "multiply to 2, but the axis has 4"),
    ("2x4 sp2@0 tp4@1 ulysses3", "ulysses3"),
    ("1x4 sp4@1 ulysses2", "ulysses2 x ring2 on one mesh axis needs an all-to-all and a ring over sub-groups"),
    ("4x4 sp4@1 tp2@0 ulysses2@0", "tp and ulysses are both on axis 0"),
    ("2x4 sp4@1 ulysses4@0", "factors on axis 0 \\(ulysses\\) multiply to 4, but the axis has 2"),
    ("x4", "must start with the mesh shape"),
    ("2x4 sp2@2 tp4@1", "cannot read 'sp2@2'"),
    ("2x4 sp2@0 sp2@0 tp4@1", "sp given twice"),
])
def test_invalid_configs_name_the_cause(text, message):
    with pytest.raises(ConfigError, match=message):
        MeshConfig.parse(text)


def test_non_string_config_is_rejected_with_hint():
    with pytest.raises(ConfigError, match="from_tuples"):
        MeshConfig.parse(((2, 0), (4, 1)))
