"""Latency-driven slimming (EfficientFormer §4.2, Alg. 1) and the MES objective of
EfficientFormerV2: supernet, latency lookup table, slimming, pipeline; EfficientFormerV2's
slimmable supernet (search space, switchable layers, subnet extraction)."""
from mmeff.search.lut import LatencyLUT, build_lut, measure_network_ms
from mmeff.search.mes import mes
from mmeff.search.slimming import candidate_actions, importance_scores, initial_subnet, slim
from mmeff.search.space import Subnet
from mmeff.search.sandwich import SandwichClassifier
from mmeff.search.supernet import EfficientFormerSupernet, MetaPath
from mmeff.search.v2_space import V2SearchSpace
from mmeff.search.v2_supernet import (EfficientFormerV2Supernet, EfficientFormerV2SupernetHead,
                                      extract_subnet)

__all__ = ['LatencyLUT', 'build_lut', 'measure_network_ms', 'mes', 'candidate_actions',
           'importance_scores', 'initial_subnet', 'slim', 'Subnet', 'EfficientFormerSupernet',
           'MetaPath', 'V2SearchSpace', 'EfficientFormerV2Supernet',
           'EfficientFormerV2SupernetHead', 'extract_subnet', 'SandwichClassifier']
