"""Every input error of the search package stops with a message naming the problem and the
fix (issue 19 point 7: these raise sites were never triggered by a test)."""
from pathlib import Path

import pytest
from mmengine.config import Config

from mmeff.search.lut import LatencyLUT, build_lut, check_backend
from mmeff.search.outputs import write_outputs
from mmeff.search.pipeline import run
from mmeff.search.slimming import slim
from mmeff.search.space import Subnet
from mmeff.search.supernet import MetaPath

from .helpers import full_subnet, synthetic_lut, uniform_importance


def test_lut_entries_refuse_bad_stage_and_negative_or_nan_latency():
    lut = LatencyLUT()
    with pytest.raises(ValueError, match=r'LUT stage must be 0..3 \(0-based\), got 4'):
        lut.add('mb4d', 4, None, 16, 1.0)
    for bad in (-0.1, float('nan')):
        with pytest.raises(ValueError, match='latency must be >= 0 ms, got .* for mb4d'):
            lut.add('mb4d', 0, None, 16, bad)


def test_calibration_needs_points():
    with pytest.raises(ValueError, match=r'at least one \(subnet, measured_ms\) pair'):
        synthetic_lut().calibrate([])


def test_csv_without_required_columns_or_with_a_bad_row(tmp_path):
    path = tmp_path / 'lut.csv'
    path.write_text('op,stage,latency_ms\nmb4d,0,1.0\n')
    with pytest.raises(ValueError, match=r"lacks columns \['width'\]; expected op,"):
        LatencyLUT.load(str(path))
    path.write_text('op,stage,width,latency_ms\nmb4d,0,16,1.0\nmb4d,zero,16,1.0\n')
    with pytest.raises(ValueError, match=r"bad LUT row 2 .*'stage': 'zero'"):
        LatencyLUT.load(str(path))


def test_measurement_refuses_unknown_backend_and_wrong_number_of_widths():
    with pytest.raises(ValueError, match=r"unknown latency backend 'tensorrt'; choose one of"):
        check_backend('tensorrt')
    with pytest.raises(ValueError, match=r'one width per stage \(4\), got \(32, 64, 96\)'):
        build_lut(32, (32, 64, 96))


def test_subnet_refuses_wrong_stage_count_choice_and_inexpressible_order():
    with pytest.raises(ValueError, match='4 widths and 4 block tuples, got 3 and 3'):
        Subnet((16, 32, 48), (('4d',), ('4d',), ('4d',)))
    with pytest.raises(ValueError, match=r"stage 0 allows choices .*, got \['3d'\]"):
        Subnet.create((16, 32, 48, 64), [['3d'], ['4d'], ['4d'], ['4d']])
    mb3d_first = Subnet.create((16, 32, 48, 64), [['4d'], ['4d'], ['4d'], ['3d', '4d']])
    with pytest.raises(ValueError, match=r'not expressible .*call \.normalized\(\)'):
        mb3d_first.to_arch()
    assert mb3d_first.normalized().to_arch()['num_vit'] == 1  # the fix the message names


def test_slimming_gives_up_after_max_steps():
    lut = synthetic_lut()
    with pytest.raises(ValueError, match='did not reach 0.001 ms in 2 steps'):
        slim(full_subnet(), uniform_importance(), 0.001, lut.predict, lambda s: 50.0,
             lambda s: 1.0, max_steps=2)


def test_supernet_metapath_refuses_unknown_choice():
    with pytest.raises(ValueError, match=r"choices are '4d', '3d', 'id', got '5d'"):
        MetaPath(16, ['4d', '5d'])


def test_outputs_need_the_search_config_and_run_needs_a_target(tmp_path):
    with pytest.raises(ValueError, match='search_config.py is missing: .*dump the search '
                                         'config there first'):
        write_outputs(full_subnet().to_arch(), 1.0, [], tmp_path, 'x', 10, 1e-5, '')
    with pytest.raises(ValueError, match='at least one --target-latency'):
        run(Config(), work_dir=str(tmp_path))
    assert not list(Path(tmp_path).iterdir())  # refused before writing anything
