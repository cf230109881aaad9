"""mmeff's registries: children of mmengine's root registries under the scope ``mmeff``.

Being children of the root (the mmpretrain convention) is what lets an MMDet or MMSeg config
say ``type='mmeff.EfficientFormer'``: the scoped lookup walks from the root to the child whose
scope is ``mmeff``. ``locations`` makes the lookup import the modules that register.
"""
from mmengine.registry import DATASETS as MMENGINE_DATASETS
from mmengine.registry import HOOKS as MMENGINE_HOOKS
from mmengine.registry import METRICS as MMENGINE_METRICS
from mmengine.registry import MODELS as MMENGINE_MODELS
from mmengine.registry import OPTIM_WRAPPER_CONSTRUCTORS as MMENGINE_OPTIM_WRAPPER_CONSTRUCTORS
from mmengine.registry import TRANSFORMS as MMENGINE_TRANSFORMS
from mmengine.registry import Registry

MODELS = Registry('model', parent=MMENGINE_MODELS, scope='mmeff', locations=['mmeff.models'])
DATASETS = Registry('dataset', parent=MMENGINE_DATASETS, scope='mmeff',
                    locations=['mmeff.datasets'])
TRANSFORMS = Registry('transform', parent=MMENGINE_TRANSFORMS, scope='mmeff',
                      locations=['mmeff.datasets'])
METRICS = Registry('metric', parent=MMENGINE_METRICS, scope='mmeff',
                   locations=['mmeff.evaluation'])
HOOKS = Registry('hook', parent=MMENGINE_HOOKS, scope='mmeff', locations=['mmeff.engine'])
OPTIM_WRAPPER_CONSTRUCTORS = Registry('optimizer wrapper constructor',
                                      parent=MMENGINE_OPTIM_WRAPPER_CONSTRUCTORS, scope='mmeff',
                                      locations=['mmeff.engine'])
