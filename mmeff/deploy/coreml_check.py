"""Structural inspection of a CoreML ML Program (what can be checked without macOS).

CoreML predictions only run on Apple platforms, so on Linux we check the converted program
instead: its op-type histogram, that every op belongs to the core MIL op set of the deployment
target (no custom/dialect ops, nothing the device runtime lacks), the tensor precisions used,
and the input/output names and shapes.
"""
from collections import Counter
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

#: MIL ops that must not appear after the deploy path (``batch_norm`` beyond the per-channel
#: affines coremltools itself fuses into that op)
FORBIDDEN_MIL_OPS = {'batch_norm': 'BatchNorm not folded',
                     'random_bernoulli': 'stochastic depth left in the graph',
                     'random_uniform': 'random op in the graph',
                     'random_normal': 'random op in the graph'}


@dataclass
class CoreMLStructure:
    op_types: Dict[str, int]
    inputs: List[Tuple[str, Tuple[int, ...], str]]
    outputs: List[Tuple[str, Tuple[int, ...], str]]
    precisions: Dict[str, int]
    opset: str
    outside_op_set: List[str] = field(default_factory=list)
    forbidden: List[str] = field(default_factory=list)
    #: per image input: {'color': 'RGB' / 'BGR' / 'GRAYSCALE', 'scale': float, 'bias': [...]},
    #: read from the ImageType and the program's first ``mul`` / ``add`` of that input
    image_inputs: Dict[str, Dict[str, object]] = field(default_factory=dict)

    @property
    def compute_precision(self) -> str:
        """'fp16' when every floating tensor but the I/O casts is half, 'fp32' when none is."""
        fp16, fp32 = self.precisions.get('FLOAT16', 0), self.precisions.get('FLOAT32', 0)
        if fp16 and fp16 >= fp32:
            return 'fp16'
        return 'fp32' if not fp16 else 'mixed'

    def text(self) -> str:
        ops = ', '.join(f'{k}:{v}' for k, v in sorted(self.op_types.items(),
                                                      key=lambda kv: (-kv[1], kv[0])))
        io = lambda items: ', '.join(f'{n} {list(s)} {t}' for n, s, t in items)  # noqa: E731
        lines = [f'  ML Program opset {self.opset}, {sum(self.op_types.values())} ops: {ops}',
                 f'  inputs:  {io(self.inputs)}',
                 f'  outputs: {io(self.outputs)}',
                 *(f"  image input {name}: {info['color']}, scale {info['scale']:.6g}, bias "
                   f"{[round(b, 6) for b in info['bias']]} (pixel * scale + bias in the graph)"
                   for name, info in self.image_inputs.items()),
                 f'  precision: {self.compute_precision} (op outputs by dtype: '
                 f'{dict(sorted(self.precisions.items()))})',
                 '  op set: ' + ('all ops in the core MIL op set of the target' if
                                 not self.outside_op_set else
                                 f'OUTSIDE the target op set: {self.outside_op_set}')]
        if self.forbidden:
            lines.append(f'  FORBIDDEN ops: {self.forbidden}')
        return '\n'.join(lines)


def _walk_ops(block):
    for op in block.operations:
        yield op
        for inner in op.blocks:
            yield from _walk_ops(inner)


def _feature(desc, program_types: Optional[Dict[str, object]] = None
             ) -> Tuple[str, Tuple[int, ...], str]:
    """(name, shape, type): an image is (1, channels, H, W) and 'IMAGE_<colour space>'; an
    array whose size is decided at run time (detections) has -1 for that dimension, read
    from the program's own type of the value (``program_types``)."""
    from coremltools.proto import FeatureTypes_pb2
    if desc.type.WhichOneof('Type') == 'imageType':
        image = desc.type.imageType
        space = FeatureTypes_pb2.ImageFeatureType.ColorSpace.Name(image.colorSpace)
        channels = 1 if space == 'GRAYSCALE' else 3
        return desc.name, (1, channels, int(image.height), int(image.width)), f'IMAGE_{space}'
    arr = desc.type.multiArrayType
    dtype = FeatureTypes_pb2.ArrayFeatureType.ArrayDataType.Name(arr.dataType)
    tensor = (program_types or {}).get(desc.name)
    if not arr.shape and tensor is not None and tensor.rank > 0:
        return desc.name, tuple(int(d.constant.size) if d.WhichOneof('dimension') ==
                                'constant' else -1 for d in tensor.dimensions), dtype
    return desc.name, tuple(int(s) for s in arr.shape), dtype


def _value_types(block) -> Dict[str, object]:
    """The program's tensor type of every named op output."""
    return {out.name: out.type.tensorType for op in _walk_ops(block) for out in op.outputs
            if out.type.WhichOneof('type') == 'tensorType'}


def _const_values(op) -> List[float]:
    value = op.attributes['val'].immediateValue.tensor
    return [float(v) for v in value.floats.values]


def image_preprocessing(block, inputs) -> Dict[str, Dict[str, object]]:
    """The scale and bias coremltools put in front of each image input (an ML Program keeps
    them as its first ``mul`` by a constant and ``add`` of a constant)."""
    consts = {op.outputs[0].name: op for op in block.operations if op.type == 'const'}
    users = {}
    for op in block.operations:
        if op.type in ('mul', 'add'):
            users.setdefault(op.inputs['x'].arguments[0].name, op)
    found = {}
    for name, _, kind in inputs:
        if not kind.startswith('IMAGE_'):
            continue
        info: Dict[str, object] = {'color': kind[len('IMAGE_'):], 'scale': 1.0, 'bias': []}
        op, current = users.get(name), name
        for step, key in (('mul', 'scale'), ('add', 'bias')):
            if op is not None and op.type == step:
                values = _const_values(consts[op.inputs['y'].arguments[0].name])
                info[key] = values[0] if key == 'scale' and len(values) == 1 else values
                current = op.outputs[0].name
                op = users.get(current)
        found[name] = info
    return found


def inspect_mlprogram(mlmodel, target, affine_layers: int = 0) -> CoreMLStructure:
    """Inspect a converted ``coremltools.models.MLModel`` (ML Program) for ``target``.

    Args:
        affine_layers: per-channel ``x * s + t`` layers in the source (BNs with no conv to fold
            into); coremltools turns each into its ``batch_norm`` op, so that many are expected.
    """
    from coremltools.converters.mil.mil.ops.registry import SSAOpRegistry
    from coremltools.proto import MIL_pb2

    spec = mlmodel.get_spec()
    if spec.WhichOneof('Type') != 'mlProgram':
        raise ValueError(f'expected an ML Program, got a {spec.WhichOneof("Type")} model')
    function = spec.mlProgram.functions['main']
    block = function.block_specializations[function.opset]
    types, dtypes = Counter(), Counter()
    for op in _walk_ops(block):
        types[op.type] += 1
        for out in op.outputs:
            if out.type.WhichOneof('type') == 'tensorType':
                dtypes[MIL_pb2.DataType.Name(out.type.tensorType.dataType)] += 1
    outside = sorted(t for t in types if t not in SSAOpRegistry.core_ops or
                     target not in SSAOpRegistry.core_ops[t])
    counts = dict(types)
    counts['batch_norm'] = max(0, counts.get('batch_norm', 0) - affine_layers)
    forbidden = sorted(f'{counts[t]} x {t}: {why}' for t, why in FORBIDDEN_MIL_OPS.items()
                       if counts.get(t))
    inputs = [_feature(d) for d in spec.description.input]
    return CoreMLStructure(
        op_types=dict(types), opset=function.opset, inputs=inputs,
        image_inputs=image_preprocessing(block, inputs),
        outputs=[_feature(d, _value_types(block)) for d in spec.description.output],
        precisions=dict(dtypes), outside_op_set=outside, forbidden=forbidden)
