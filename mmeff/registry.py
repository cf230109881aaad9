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
from mmengine.registry import root

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

# Children for every other registry the Runner builds from. Without them, a config with
# default_scope='mmeff' still works (mmengine falls back to its root registries) but warns
# "Failed to search registry with scope 'mmeff'" for each sampler/optimizer/loop/... it builds.
RUNNERS = Registry('runner', parent=root.RUNNERS, scope='mmeff')
RUNNER_CONSTRUCTORS = Registry('runner constructor', parent=root.RUNNER_CONSTRUCTORS,
                               scope='mmeff')
LOOPS = Registry('loop', parent=root.LOOPS, scope='mmeff')
DATA_SAMPLERS = Registry('data sampler', parent=root.DATA_SAMPLERS, scope='mmeff')
MODEL_WRAPPERS = Registry('model_wrapper', parent=root.MODEL_WRAPPERS, scope='mmeff')
WEIGHT_INITIALIZERS = Registry('weight initializer', parent=root.WEIGHT_INITIALIZERS,
                               scope='mmeff')
OPTIMIZERS = Registry('optimizer', parent=root.OPTIMIZERS, scope='mmeff')
OPTIM_WRAPPERS = Registry('optim_wrapper', parent=root.OPTIM_WRAPPERS, scope='mmeff')
PARAM_SCHEDULERS = Registry('parameter scheduler', parent=root.PARAM_SCHEDULERS, scope='mmeff')
EVALUATOR = Registry('evaluator', parent=root.EVALUATOR, scope='mmeff')
TASK_UTILS = Registry('task util', parent=root.TASK_UTILS, scope='mmeff')
VISUALIZERS = Registry('visualizer', parent=root.VISUALIZERS, scope='mmeff')
VISBACKENDS = Registry('vis_backend', parent=root.VISBACKENDS, scope='mmeff')
LOG_PROCESSORS = Registry('log_processor', parent=root.LOG_PROCESSORS, scope='mmeff')
FUNCTIONS = Registry('function', parent=root.FUNCTIONS, scope='mmeff')


def build_model(cfg):
    """Build a model config inside mmeff's scope, whatever scope is current.

    mmengine resolves unscoped type names in the *current default scope*; after MMDet or MMSeg
    code ran, that is 'mmdet'/'mmseg' and ``type='EfficientFormer'`` would not be found. Scoped
    names (``'mmdet.FPN'``) still resolve in their own registry.
    """
    from mmengine.registry import DefaultScope
    with DefaultScope.overwrite_default_scope('mmeff'):
        return MODELS.build(cfg)
