"""Latency-driven slimming (EfficientFormer §4.2, Alg. 1) and the MES objective of
EfficientFormerV2: supernet, latency lookup table, slimming, pipeline; EfficientFormerV2's
slimmable supernet (search space, switchable layers, subnet extraction) and its MES-driven
slimming (V2 Alg. 1: v2_search, on the one greedy loop of slimming)."""
from mmeff.search.bn_calibration import bn_recalibrated, recalibrate_bn
from mmeff.search.lut import LatencyLUT, build_lut, build_v2_lut, measure_network_ms
from mmeff.search.mes import mes
from mmeff.search.slimming import (Goal, candidate_actions, greedy_slim, importance_scores,
                                    initial_subnet, slim)
from mmeff.search.space import Subnet
from mmeff.search.sandwich import SandwichClassifier
from mmeff.search.supernet import EfficientFormerSupernet, MetaPath
from mmeff.search.v2_search import slim_v2, slimming_actions
from mmeff.search.v2_space import V2SearchSpace
from mmeff.search.v2_subnet import V2ParamCounter, V2Subnet
from mmeff.search.v2_supernet import (EfficientFormerV2Supernet, EfficientFormerV2SupernetHead,
                                      extract_subnet)

__all__ = ['LatencyLUT', 'build_lut', 'measure_network_ms', 'mes', 'candidate_actions',
           'importance_scores', 'initial_subnet', 'slim', 'Subnet', 'EfficientFormerSupernet',
           'MetaPath', 'V2SearchSpace', 'EfficientFormerV2Supernet',
           'EfficientFormerV2SupernetHead', 'extract_subnet', 'SandwichClassifier', 'build_v2_lut',
           'Goal', 'greedy_slim', 'slim_v2', 'slimming_actions', 'V2ParamCounter', 'V2Subnet',
           'recalibrate_bn', 'bn_recalibrated']
