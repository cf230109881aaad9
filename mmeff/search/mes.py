"""Mobile Efficiency Score (EfficientFormerV2 §4): one number that rewards size AND speed.

``MES = Score * prod_i (M_i / U_i) ** (-alpha_i)`` with Score = 100, U_size = 3 M parameters,
U_latency = 1 ms, alpha_size = 0.5 and alpha_latency = 1.0 (the paper's values). A network of
3 M parameters running in 1 ms scores 100; halving latency doubles MES, halving size
multiplies it by sqrt(2). Searching on MES avoids trading one metric away for the other.
"""
from typing import Dict, Optional

#: the paper's units and exponents
MES_UNITS: Dict[str, float] = {'size': 3.0, 'latency': 1.0}  # M params, ms
MES_ALPHAS: Dict[str, float] = {'size': 0.5, 'latency': 1.0}


def mes(latency_ms: float, params_m: float, score: float = 100.0,
        alphas: Optional[Dict[str, float]] = None,
        units: Optional[Dict[str, float]] = None) -> float:
    """MES of a network with ``latency_ms`` latency and ``params_m`` million parameters."""
    if latency_ms <= 0 or params_m <= 0:
        raise ValueError(f'MES needs positive latency (ms) and size (M params), got '
                         f'latency_ms={latency_ms!r}, params_m={params_m!r}')
    alphas = {**MES_ALPHAS, **(alphas or {})}
    units = {**MES_UNITS, **(units or {})}
    metrics = {'size': params_m, 'latency': latency_ms}
    value = score
    for key, metric in metrics.items():
        value *= (metric / units[key]) ** (-alphas[key])
    return value
