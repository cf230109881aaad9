"""ONNX graph inspection and ONNX Runtime execution for parity checks."""
from collections import Counter
from typing import Dict, List, Sequence, Union

import numpy as np

#: ONNX op types that must not appear after the deploy path
FORBIDDEN_ONNX_OPS = {
    'BatchNormalization': 'BatchNorm not folded',
    'Dropout': 'dropout left in the graph',
    'Bernoulli': 'stochastic depth left in the graph',
    'RandomUniform': 'random op', 'RandomUniformLike': 'random op',
    'RandomNormal': 'random op', 'RandomNormalLike': 'random op',
}


def _walk_nodes(graph):
    for node in graph.node:
        yield node
        for attr in node.attribute:
            if attr.g is not None and len(attr.g.node):
                yield from _walk_nodes(attr.g)
            for sub in attr.graphs:
                yield from _walk_nodes(sub)


def op_histogram(model) -> Dict[str, int]:
    return dict(Counter(node.op_type for node in _walk_nodes(model.graph)))


def graph_violations(model) -> List[str]:
    """Deploy-path violations visible in an ONNX graph (training ops, BN, bicubic resize)."""
    import onnx
    problems = []
    hist = op_histogram(model)
    for op, why in FORBIDDEN_ONNX_OPS.items():
        if hist.get(op):
            problems.append(f'{hist[op]} x {op}: {why}')
    for node in _walk_nodes(model.graph):
        if node.op_type == 'Resize':
            modes = [onnx.helper.get_attribute_value(a) for a in node.attribute
                     if a.name == 'mode']
            if modes and modes[0] == b'cubic':
                problems.append(f'cubic Resize {node.name}: attention bias not frozen')
    tables = [init.name for init in model.graph.initializer if init.name.endswith('.table')]
    if tables:
        problems.append(f'attention-bias tables are graph inputs: {tables[:3]}')
    return problems


def io_shapes(model) -> Dict[str, List]:
    """{'inputs': [(name, dims)], 'outputs': [...]}; symbolic dims appear as names."""
    def dims(value):
        return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]
    return {'inputs': [(v.name, dims(v)) for v in model.graph.input],
            'outputs': [(v.name, dims(v)) for v in model.graph.output]}


def ort_session(path: Union[str, bytes], providers: Sequence[str] = ('CPUExecutionProvider',),
                threads: int = 0):
    """An ONNX Runtime session of a model file (or its serialized bytes); ``threads`` > 0
    sets the intra-op threads (one inter-op thread)."""
    import onnxruntime as ort
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(path, options, providers=list(providers))


def run_ort(session, array: np.ndarray) -> List[np.ndarray]:
    name = session.get_inputs()[0].name
    return session.run(None, {name: array})
