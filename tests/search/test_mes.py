"""Mobile Efficiency Score with the EfficientFormerV2 constants."""
import pytest

from mmeff.search.mes import mes


def test_reference_point_and_exponents():
    assert mes(1.0, 3.0) == pytest.approx(100.0)  # U_latency = 1 ms, U_size = 3 M
    assert mes(0.5, 3.0) == pytest.approx(200.0)  # alpha_latency = 1
    assert mes(1.0, 12.0) == pytest.approx(50.0)  # alpha_size = 0.5
    assert mes(2.0, 0.75) == pytest.approx(100.0 / 2 * 2)


def test_custom_alphas_and_bad_values():
    assert mes(2.0, 3.0, alphas={'latency': 0.0}) == pytest.approx(100.0)
    for lat, size in ((0.0, 3.0), (1.0, -1.0)):
        with pytest.raises(ValueError, match='positive latency'):
            mes(lat, size)
