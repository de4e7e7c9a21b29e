import pytest

from meshdit import MeshConfig
from meshdit.errors import ConfigError


def test_string_forms():
    assert MeshConfig.parse("1x1").shape == (1, 1)
    cfg = MeshConfig.parse("2x4 cfg2@1 sp2@0 tp2@1")
    assert (cfg.cfg.factor, cfg.cfg.axis, cfg.sp.factor, cfg.sp.axis, cfg.tp.factor, cfg.tp.axis) == (2, 1, 2, 0, 2, 1)
    assert str(cfg) == "2x4 cfg2@1 sp2@0 tp2@1"
    assert MeshConfig.parse("4x8 sp4@0 tp8@1 ulysses2").ulysses == 2


def test_seed_tuple_forms():
    sd35 = MeshConfig.from_tuples((4, 8), ((2, 1), (4, 0), (4, 1)))
    assert str(sd35) == "4x8 cfg2@1 sp4@0 tp4@1"
    flux = MeshConfig.from_tuples((2, 4), ((2, 0), (4, 1)))
    assert (flux.cfg.factor, flux.sp.factor, flux.tp.factor) == (1, 2, 4)


@pytest.mark.parametrize("text, message", [
    ("2x4", "axis 0"),
    ("2x4 sp2@0 tp2@1", "multiply to 2, but the axis has 4"),
    ("2x4 sp2@0 tp4@1 ulysses3", "ulysses3"),
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
