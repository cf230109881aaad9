"""Export an mmeff-based model to ONNX, CoreML (ML Program) or TorchScript, with parity checks.

Every export takes the same route:

1. a reference copy of the part to export is kept unfused (eager PyTorch, eval mode);
2. the part goes down the deploy path (:func:`~mmeff.deploy.deploy_path.deploy`: BN folded,
   DropPath/Dropout removed, attention biases frozen as constants for ``--shape``);
3. the deployed part is traced and its graph inspected: no BN, dropout, random or bicubic op,
   and no attention-bias table in the computation — a violation aborts the export;
4. the file is written and checked: ONNX through ONNX Runtime against the *unfused*
   reference (max abs / relative error), TorchScript by reloading and running it, CoreML
   structurally (op-type histogram, op set of the target, precision, I/O names and shapes;
   running it needs macOS).

Dynamic shapes. ``dynamic_batch`` is always possible. Dynamic H/W is refused for models with
attention biases: the deploy path bakes each bias as a constant for one grid (this keeps the
bicubic table resize and the offset gather out of the graph, which CoreML and mobile NPUs
need, and makes the exported graph as cheap as a conv net's). Export one file per input size
instead. Models without attention biases get dynamic H/W and are verified at a second size.
"""
import contextlib
import copy
import dataclasses
import functools
import io
import os
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
import torch
from torch import nn

from mmeff.deploy.deploy_path import (ChannelAffine, StableGroupNorm, all_finite,
                                      attention_biases, deploy, deploy_violations,
                                      nan_bias_tables, traced_op_kinds)
from mmeff.deploy.parity import TOLERANCE, Parity, compare, example_input, output_list
from mmeff.deploy.parts import ExportPart

FORMATS = ('onnx', 'coreml', 'torchscript')
SUFFIX = {'onnx': '.onnx', 'coreml': '.mlpackage', 'torchscript': '.pt'}
COREML_TARGETS = ('iOS15', 'iOS16', 'iOS17', 'iOS18')


class ExportError(RuntimeError):
    """The export was written but failed a check (deploy path or parity)."""


@dataclass
class ExportOptions:
    """What to export and how.

    Args:
        fmt: 'onnx', 'coreml' or 'torchscript'.
        input_hw: (H, W) of the exported graph.
        batch: batch size of the example input (and of the graph unless dynamic).
        fp16: half precision (CoreML: fp16 compute precision; ONNX/TorchScript: CUDA only).
        dynamic: dynamic batch, H and W (ONNX only; refused for attention-bias models).
        dynamic_batch: dynamic batch only (ONNX only).
        opset: ONNX opset.
        coreml_target: minimum deployment target of the ML Program.
        tolerance: relative-error bound for parity (default 1e-4 fp32, 1e-2 fp16).
        seed: seed of the random example input.
    """
    fmt: str = 'onnx'
    input_hw: Tuple[int, int] = (224, 224)
    batch: int = 1
    fp16: bool = False
    dynamic: bool = False
    dynamic_batch: bool = False
    opset: int = 17
    coreml_target: str = 'iOS16'
    tolerance: Optional[float] = None
    seed: int = 0

    @property
    def input_shape(self) -> Tuple[int, int, int, int]:
        return (self.batch, 3, int(self.input_hw[0]), int(self.input_hw[1]))

    @property
    def precision(self) -> str:
        return 'fp16' if self.fp16 else 'fp32'

    @property
    def rel_tolerance(self) -> float:
        """Bound on the relative error of what is compared (CoreML's check runs in fp32)."""
        if self.tolerance is not None:
            return self.tolerance
        return TOLERANCE['fp32' if self.fmt == 'coreml' else self.precision]


@dataclass
class ExportReport:
    """Everything the export checked; ``text()`` is what the tool prints."""
    path: str
    fmt: str
    part: str
    input_shape: Tuple[int, ...]
    precision: str
    output_names: List[str]
    output_shapes: List[Tuple[int, ...]]
    seconds: float = 0.0
    fused_parity: Optional[Parity] = None
    runtime_parity: Optional[Parity] = None
    runtime: str = ''
    extra_parity: Dict[str, Parity] = field(default_factory=dict)
    tolerance: float = 1e-4
    graph_ops: Dict[str, int] = field(default_factory=dict)
    violations: List[str] = field(default_factory=list)
    coreml: Optional[object] = None
    frozen_biases: int = 0
    notes: List[str] = field(default_factory=list)
    #: compressed versions of the file and their drift (mmeff.deploy.compress /
    #: coreml_compress reports: ``ok``, ``text()``)
    compressed: List[object] = field(default_factory=list)
    #: 'tensor' (normalised NCHW) or 'image' (pixels; normalisation inside the graph)
    input_kind: str = 'tensor'
    #: CoreML: the graph coremltools converted, as a function of the part's input (an
    #: array; pixels for an image input) -> output arrays; what the framework parity runs
    converted: Optional[Callable[[np.ndarray], List[np.ndarray]]] = None

    @property
    def ok(self) -> bool:
        parities = [p for p in (self.fused_parity, self.runtime_parity) if p is not None]
        parities += list(self.extra_parity.values())
        coreml_ok = self.coreml is None or not (self.coreml.outside_op_set or
                                                self.coreml.forbidden)
        return (not self.violations and coreml_ok
                and all(p.ok(self.tolerance) for p in parities)
                and all(c.ok for c in self.compressed))

    def text(self) -> str:
        shapes = ', '.join(f'{n} {list(s)}' for n, s in zip(self.output_names,
                                                            self.output_shapes))
        lines = [f'[export] {self.fmt} ({self.precision}) of the {self.part}: {self.path} '
                 f'({self.seconds:.1f} s)',
                 f'  input {list(self.input_shape)} ({self._input_text()}) -> {shapes}',
                 f'  deploy path: {self.frozen_biases} attention biases frozen as constants; '
                 + ('graph clean (no BN / dropout / DropPath / random / bicubic ops)'
                    if not self.violations else f'VIOLATIONS: {self.violations}')]
        if self.graph_ops:
            top = sorted(self.graph_ops.items(), key=lambda kv: (-kv[1], kv[0]))
            lines.append('  graph ops: ' + ', '.join(f'{k}:{v}' for k, v in top))
        if self.fused_parity is not None:
            lines.append(f'  fused PyTorch vs eager PyTorch: {self.fused_parity.text()}')
        if self.runtime_parity is not None:
            lines.append(f'  {self.runtime} vs eager PyTorch: {self.runtime_parity.text()}')
        for what, parity in self.extra_parity.items():
            lines.append(f'  {what}: {parity.text()}')
        if self.coreml is not None:
            lines.append(self.coreml.text())
        lines.extend(f'  note: {n}' for n in self.notes)
        lines.extend(c.text() for c in self.compressed)
        verdict = 'PASS' if self.ok else 'FAIL'
        scope = ('; framework rows: their own tolerances, stated on each'
                 if self.extra_parity else '')
        lines.append(f'  parity {verdict} (tolerance: relative error <= {self.tolerance:g} for '
                     f'the tensor comparisons{scope})')
        return '\n'.join(lines)

    def _input_text(self) -> str:
        if self.input_kind == 'image':
            return 'image: pixels 0..255, mean/std inside the graph'
        return "normalised as the config's data preprocessor does"


@dataclass
class ExportJob:
    """One export under way: what a writer (``_export_onnx``, ``_export_coreml``,
    ``_export_torchscript``) needs to write the file and check it.

    Args:
        module: the deployed part (fused; in half precision for fp16 ONNX/TorchScript).
        traced: its ``torch.jit.trace`` graph, the one that passed the deploy-path checks.
        x: the example input, on the module's device and in its dtype.
        ref_out: the outputs of the unfused (eager) reference for the example input.
        names: the output names.
        path: the file to write.
        options: what to export and how.
        report: what the checks found; the writer fills in its part.
        verbose: show converter progress.
    """
    module: nn.Module
    traced: torch.jit.ScriptModule
    x: torch.Tensor
    ref_out: List[torch.Tensor]
    names: List[str]
    path: str
    options: ExportOptions
    report: ExportReport
    verbose: bool = False


def check_options(options: ExportOptions, part: nn.Module) -> None:
    """Refuse unsupported combinations with a message that says what to do instead."""
    if options.fmt not in FORMATS:
        raise ValueError(f'unknown format {options.fmt!r}; choose one of {FORMATS}')
    h, w = options.input_hw
    if h <= 0 or w <= 0 or options.batch <= 0:
        raise ValueError(f'--shape must be positive (got {h}x{w}, batch {options.batch})')
    if options.fmt == 'coreml':
        if options.dynamic or options.dynamic_batch:
            raise ValueError('CoreML export is static-shape: the attention biases are '
                             f'constants for {h}x{w}. Drop --dynamic and export one model per '
                             'input size with --shape H W')
        if options.coreml_target not in COREML_TARGETS:
            raise ValueError(f'unknown CoreML target {options.coreml_target!r}; choose one of '
                             f'{COREML_TARGETS}')
    elif options.fp16 and not torch.cuda.is_available():
        raise ValueError(
            f'--fp16 {options.fmt} is checked for parity on a CUDA device and none is present '
            '(ONNX Runtime and PyTorch lack CPU kernels for much of an fp16 graph, so a CPU '
            f'parity check is not meaningful). Export fp32 here, or use --format coreml --fp16 '
            'for the iPhone')
    if getattr(part, 'part', '') == 'detector' and options.fmt == 'coreml' and options.fp16:
        raise ValueError(
            'a whole detector is exported to CoreML in fp32 only: its per-class NMS moves the '
            'boxes of class c by c * (image size + 1) (up to ~80x the image size), where fp16 '
            'keeps no pixel precision (spacing 32 at 50,000; overflow past 65,504), so IoUs '
            'and boxes would be wrong. Drop --fp16, or export --part detector-head --fp16 '
            '(raw head maps, post-processing in the app)')
    if getattr(part, 'part', '') == 'detector' and (options.batch != 1 or options.dynamic or
                                                    options.dynamic_batch):
        raise ValueError('the whole detector (NMS in the graph) is exported for one image of '
                         'one size: use --batch 1 and no --dynamic / --dynamic-batch')
    if options.dynamic and options.fmt != 'onnx':
        raise ValueError(f'--dynamic is only supported for ONNX, not {options.fmt}')
    if options.dynamic and attention_biases(part):
        raise ValueError(
            f'--dynamic H/W is refused: this model has {len(attention_biases(part))} attention '
            f'biases that the deploy path freezes as constants for {h}x{w} (no bicubic resize '
            'or gather in the graph). Export one file per input size with --shape H W, or use '
            '--dynamic-batch for a dynamic batch dimension only')


def export(part: ExportPart, path: str, options: ExportOptions,
           verbose: bool = False) -> ExportReport:
    """Deploy, export and check ``part`` (modified in place: it ends fused). See module doc."""
    check_options(options, part)
    start = time.time()
    path = _with_suffix(path, options.fmt)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    device = torch.device('cuda' if options.fp16 and options.fmt != 'coreml' else 'cpu')

    part = part.float().to(device).eval()
    x = example_input(options.input_shape, options.seed).to(device)
    reference = copy.deepcopy(part).eval()
    with torch.no_grad():
        ref_out = output_list(reference(x))
    del reference

    deployed = deploy(part, options.input_shape)
    frozen = sum(b.frozen is not None for b in attention_biases(deployed))
    with torch.no_grad(), nan_bias_tables(deployed):  # finite only if every bias is constant
        fused_out = output_list(deployed(x))
    names = deployed.output_names(len(fused_out))
    fused_parity = _compare(deployed, ref_out, fused_out, names)

    traced = _trace(deployed, x)
    violations = deploy_violations(deployed, traced, all_finite(fused_out))
    report = ExportReport(
        path=path, fmt=options.fmt, part=deployed.part, input_shape=options.input_shape,
        precision=options.precision, output_names=names,
        output_shapes=[tuple(t.shape) for t in fused_out], fused_parity=fused_parity,
        tolerance=options.rel_tolerance, violations=violations, frozen_biases=frozen,
        input_kind='image' if hasattr(deployed, 'image_type_args') else 'tensor')
    if violations:
        raise ExportError('the deploy path left training-time ops in the graph; nothing was '
                          'written:\n' + report.text())

    if options.fp16 and options.fmt != 'coreml':  # CoreML: fp32 graph, fp16 compute precision
        deployed, x = deployed.half(), x.half()
        traced = _trace(deployed, x)
    writer = {'onnx': _export_onnx, 'coreml': _export_coreml,
              'torchscript': _export_torchscript}[options.fmt]
    writer(ExportJob(module=deployed, traced=traced, x=x, ref_out=ref_out, names=names,
                     path=path, options=options, report=report, verbose=verbose))
    report.seconds = time.time() - start
    return report


def _compare(module: nn.Module, reference: List, got: List, names: List[str]):
    """Elementwise parity, or the part's own rule (``compare_outputs``: detection lists are
    compared as matched sets, since their length and order may differ)."""
    rule = getattr(module, 'compare_outputs', None)
    return compare(reference, got, names) if rule is None else rule(reference, got, names)


def _with_suffix(path: str, fmt: str) -> str:
    root, ext = os.path.splitext(path)
    return path if ext == SUFFIX[fmt] else root + SUFFIX[fmt]


def _trace(module: nn.Module, x: torch.Tensor) -> torch.jit.ScriptModule:
    with torch.no_grad(), _quiet_tracer():
        return torch.jit.trace(module, (x,), check_trace=False, strict=False)


@contextlib.contextmanager
def _quiet_tracer():
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', category=torch.jit.TracerWarning)
        warnings.simplefilter('ignore', category=UserWarning)
        warnings.simplefilter('ignore', category=DeprecationWarning)
        warnings.simplefilter('ignore', category=FutureWarning)
        yield


# ------------------------------------------------------------------------------------- ONNX
def _export_onnx(job: ExportJob) -> None:
    import onnx

    from mmeff.deploy.onnx_check import graph_violations, op_histogram, ort_session, run_ort

    options, report = job.options, job.report
    dynamic_axes = _dynamic_axes(options, job.names)
    sink = io.StringIO()
    with torch.no_grad(), _quiet_tracer(), contextlib.redirect_stdout(sink):
        # the traced graph that passed the deploy checks is what gets exported
        torch.onnx.export(job.traced, (job.x,), job.path, opset_version=options.opset,
                          dynamo=False, input_names=['input'], output_names=list(job.names),
                          dynamic_axes=dynamic_axes, do_constant_folding=True)
    model = onnx.load(job.path)
    onnx.checker.check_model(model)
    report.graph_ops = op_histogram(model)
    report.violations = graph_violations(model)

    providers = ['CUDAExecutionProvider'] if options.fp16 else ['CPUExecutionProvider']
    session = ort_session(job.path, providers, threads=1)  # a check, not a benchmark
    array = job.x.detach().cpu().numpy()
    report.runtime = f'ONNX Runtime ({providers[0]})'
    report.runtime_parity = _compare(job.module, job.ref_out, run_ort(session, array),
                                     job.names)
    if dynamic_axes:
        _check_second_shape(job, session)


def _dynamic_axes(options: ExportOptions, names: List[str]) -> Optional[Dict[str, Dict]]:
    """``torch.onnx.export``'s dynamic axes of the input and every output; None if static."""
    if not (options.dynamic or options.dynamic_batch):
        return None
    dynamic_axes = {'input': {0: 'batch'}}
    if options.dynamic:
        dynamic_axes['input'].update({2: 'height', 3: 'width'})
    for name in names:
        dynamic_axes[name] = {0: 'batch'}
        if options.dynamic:
            dynamic_axes[name].update({2: f'{name}_h', 3: f'{name}_w'})
    return dynamic_axes


def _check_second_shape(job: ExportJob, session) -> None:
    """A dynamic graph must also be right at another batch (and size, if H/W are dynamic)."""
    from mmeff.deploy.onnx_check import run_ort
    options, x = job.options, job.x
    h, w = options.input_hw
    shape = (x.shape[0] + 1, 3) + ((h + 32, w + 32) if options.dynamic else (h, w))
    x2 = example_input(shape, options.seed + 1).to(x.device, x.dtype)
    with torch.no_grad():
        ref2 = output_list(job.module(x2))
    job.report.extra_parity[f'ONNX Runtime at {list(shape)} (dynamic axes) vs PyTorch'] = \
        compare(ref2, run_ort(session, x2.detach().cpu().numpy()), job.names)


# ------------------------------------------------------------------------------ TorchScript
def _export_torchscript(job: ExportJob) -> None:
    job.traced.save(job.path)
    loaded = torch.jit.load(job.path, map_location=job.x.device)
    job.report.graph_ops = {k.replace('aten::', ''): v
                            for k, v in traced_op_kinds(loaded).items() if k.startswith('aten::')}
    with torch.no_grad():
        got = output_list(loaded(job.x))
    job.report.runtime = 'reloaded TorchScript'
    job.report.runtime_parity = compare(job.ref_out, got, job.names)


# ----------------------------------------------------------------------------------- CoreML
#: ATen ops coremltools' torch.export frontend lacks; decomposed before conversion
COREML_DECOMPOSE = ('lerp',)


def _capture(module, x, report):
    """A static ``torch.export`` program of the deployed module, constants folded.

    ``torch.jit.trace`` keeps shape arithmetic (``aten::size``/``aten::Int`` chains) that
    coremltools 9 cannot always fold (``h * w`` in a reshape fails); torch.export specialises
    all shapes for the static input, which is what a CoreML model is anyway. Everything that
    does not depend on the image (index tables built in forward, weight-derived matrices) is
    then folded into constants, so the converter sees only the image's computation. Returns
    None when the module cannot be captured (the traced graph is converted instead).
    """
    from torch.fx.experimental.const_fold import split_const_subgraphs
    try:
        with _quiet_tracer():
            program = torch.export.export(module, (x,), strict=False)
            folded = split_const_subgraphs(program.module())
            folded.run_folding()
            return torch.export.export(folded, (x,), strict=False)
    except Exception as err:  # noqa: BLE001  (any capture failure: use the traced graph)
        report.notes.append(f'torch.export failed ({type(err).__name__}: {err}); converted '
                            'the torch.jit.trace graph instead')
        return None


def _decompose(program, op_names):
    """Decompose only the named ATen ops (the default table would also split linear/softmax
    into primitives that the Neural Engine runs worse)."""
    from torch._decomp import core_aten_decompositions, get_decompositions
    core = core_aten_decompositions()
    table = {}
    for name in op_names:
        packet = getattr(torch.ops.aten, name, None)
        if packet is None:
            continue
        table.update(get_decompositions([packet]))
        for overload in packet.overloads():
            op = getattr(packet, overload)
            if op in core:
                table[op] = core[op]
    return program.run_decompositions(table)


def _convert_coreml(job: ExportJob):
    """Convert with coremltools; an ATen op its frontend lacks is decomposed and retried."""
    import re

    import coremltools as ct

    module, x, names, options, report = job.module, job.x, job.names, job.options, job.report
    target = getattr(ct.target, options.coreml_target)
    precision = ct.precision.FLOAT16 if options.fp16 else ct.precision.FLOAT32
    program = _capture(module, x, report)
    to_decompose = list(COREML_DECOMPOSE)
    for _ in range(8):
        source = _decompose(program, to_decompose) if program is not None else _trace(module, x)
        progress = contextlib.nullcontext() if job.verbose else \
            contextlib.redirect_stderr(io.StringIO())
        try:
            with _quiet_tracer(), progress:
                mlmodel = ct.convert(
                    source, inputs=[_coreml_input(ct, module, x)],
                    outputs=_coreml_outputs(ct, names, job.ref_out), convert_to='mlprogram',
                    minimum_deployment_target=target, compute_precision=precision)
        except NotImplementedError as err:
            found = re.search(r'Unsupported fx node \S+, kind ([\w.:]+)', str(err))
            name = found.group(1).split('::')[-1].split('.')[0].strip('_') if found else ''
            if program is None or not name or name in to_decompose:
                raise
            to_decompose.append(name)
            continue
        except Exception as err:
            if program is None:  # say why the preferred route was not taken
                raise ExportError('coremltools could not convert the torch.jit.trace graph '
                                  f'({type(err).__name__}: {err}); it was used because '
                                  + '; '.join(report.notes)) from err
            raise
        route = 'torch.export' if program is not None else 'torch.jit.trace'
        run = runnable(source) if program is not None else source
        return mlmodel, route, run, target, to_decompose
    raise RuntimeError('coremltools kept failing on unsupported ops: ' + str(to_decompose))


def runnable(program) -> nn.Module:
    """The module of a torch.export program as coremltools converts it: without the program's
    run-time assertions on data-dependent sizes, which the ML Program does not have (MIL has
    no assert op). torch.export asserts that an NMS keeps at least 2 boxes (its size-like
    symbol is assumed not to be 0 or 1), so the graph would refuse an image with no
    detection, where the ML Program returns N = 0."""
    module = program.module()
    for node in list(module.graph.nodes):
        if node.op == 'call_function' and node.target is torch.ops.aten._assert_scalar.default:
            module.graph.erase_node(node)
    module.graph.eliminate_dead_code()
    module.recompile()
    return module


def _coreml_outputs(ct, names: List[str], reference: List[torch.Tensor]) -> list:
    """Named outputs; integer ones (detection labels) as int32, CoreML's integer type (left
    to itself the converter declares them float)."""
    return [ct.TensorType(name=n, dtype=np.int32) if not (t.is_floating_point() or
                                                          t.is_complex()) else
            ct.TensorType(name=n) for n, t in zip(names, reference)]


def _coreml_input(ct, module: nn.Module, x: torch.Tensor):
    """An ImageType (scale / bias from the config's normalisation) for an image-input part
    (:class:`~mmeff.deploy.parts.ScaledImagePart`), else a TensorType."""
    args = getattr(module, 'image_type_args', None)
    if args is None:
        return ct.TensorType(name='input', shape=tuple(x.shape))
    layout = getattr(ct.colorlayout, args['color_layout'])
    return ct.ImageType(name='input', shape=tuple(x.shape), scale=args['scale'],
                        bias=args['bias'], color_layout=layout)


def _coreml_graph(job: ExportJob) -> ExportJob:
    """An image-input part is converted as the graph behind CoreML's ImageType scale / bias,
    and checked on the input that scale / bias give it."""
    view = getattr(job.module, 'coreml_view', None)
    if view is None:
        return job
    scaled = view()
    return dataclasses.replace(job, module=scaled, x=scaled.prescale(job.x))


def _run_converted(run, prescale, feed: np.ndarray) -> List[np.ndarray]:
    """The converted graph on the part's input (through the ImageType's scale / bias)."""
    x = torch.from_numpy(np.ascontiguousarray(feed)).float()
    with torch.no_grad():
        return [t.numpy() for t in output_list(run(x if prescale is None else prescale(x)))]


def _export_coreml(job: ExportJob) -> None:
    from mmeff.deploy.coreml_check import inspect_mlprogram

    job = _coreml_graph(job)
    report, path = job.report, job.path
    mlmodel, route, run, target, _ = _convert_coreml(job)
    with torch.no_grad():
        got = output_list(run(job.x))
    report.converted = functools.partial(_run_converted, run, getattr(job.module, 'prescale',
                                                                      None))
    report.extra_parity[f'{route} graph given to coremltools vs eager PyTorch'] = \
        _compare(job.module, job.ref_out, got, job.names)
    if os.path.isdir(path):
        import shutil
        shutil.rmtree(path)
    mlmodel.save(path)
    # per-channel affines coremltools fuses into its batch_norm op: BNs with nothing to fold
    # into, and the weight / bias of a GroupNorm (a dense EfficientFormer's output norms)
    affines = sum(isinstance(m, ChannelAffine) or (isinstance(m, StableGroupNorm) and
                                                   m.weight is not None)
                  for m in job.module.modules())
    structure = inspect_mlprogram(mlmodel, target, affine_layers=affines)
    report.coreml = structure
    report.graph_ops = {}
    report.notes.append('CoreML predictions need macOS: checked structurally; numerics are '
                        f'covered by the {route} graph that was converted')
    if structure.forbidden:
        report.violations.extend(structure.forbidden)
    required = getattr(getattr(job.module, 'inner', job.module), 'coreml_ops', {})
    report.violations.extend(
        f'{n} x {op} expected in the ML Program, {structure.op_types.get(op, 0)} found'
        for op, n in required.items() if structure.op_types.get(op, 0) != n)
