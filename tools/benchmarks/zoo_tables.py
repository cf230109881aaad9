#!/usr/bin/env python
"""Print the model-zoo Markdown tables (docs/model_zoo.md) from a benchmark JSON.

    python tools/benchmarks/zoo_tables.py docs/benchmark/benchmark.json

One table per family: params and GMACs measured by tools/benchmark.py next to the papers',
CPU latency (eager and fused PyTorch, ONNX Runtime) and the in-session ratios against timm's
implementation and ResNet-50; then the reference CNNs.
"""
import argparse
import json
import sys

from mmeff.benchmark.report import aggregate, load_results, ratio_rows
from mmeff.models.zoo import FAMILIES, variants


def _fmt(value, spec='.1f', missing='–'):
    return missing if value is None else format(value, spec)


def tables(path: str) -> str:
    rows, metas = load_results([path])
    pooled = {(r.model, r.backend): r for r in aggregate(rows)}
    ratios = {r['model']: r for r in ratio_rows(rows)}
    out = []
    for family in FAMILIES:
        out += [f'### {family.name}', '',
                '| model | params (M) | paper | GMACs | paper | CPU eager ms | CPU fused ms | '
                'ONNX Runtime ms | fused / timm eager | fused / ResNet-50 | ORT / timm ORT |',
                '|---|---|---|---|---|---|---|---|---|---|---|']
        for v in variants(family.name):
            eager = pooled.get((v.name, 'eager'))
            if eager is None:
                continue
            fused = pooled.get((v.name, 'fused'))
            ort = pooled.get((v.name, 'onnxruntime'))
            r = ratios.get(v.name, {})
            out.append(
                f'| {v.name} | {eager.params_m:.2f} | {v.paper_params_m} | {eager.gmacs:.3f} | '
                f'{v.paper_gmacs} | {_fmt(eager.median_ms)} | '
                f'{_fmt(fused.median_ms if fused else None)} | '
                f'{_fmt(ort.median_ms if ort else None)} | '
                f'{_fmt(r.get("fused_over_timm_eager"), ".2f")} | '
                f'{_fmt(r.get("fused_over_resnet50"), ".2f")} | '
                f'{_fmt(r.get("ort_over_timm_ort"), ".2f")} |')
        out.append('')
    out += ['### Reference CNNs (timm, eager PyTorch / ONNX Runtime)', '',
            '| model | params (M) | paper | GMACs | paper | CPU eager ms | ONNX Runtime ms |',
            '|---|---|---|---|---|---|---|']
    for (name, backend), r in pooled.items():
        if r.group == 'CNN reference' and backend == 'eager':
            ort = pooled.get((name, 'onnxruntime'))
            out.append(f'| {name.replace("timm/", "")} | {r.params_m:.2f} | {r.paper_params_m} | '
                       f'{r.gmacs:.3f} | {r.paper_gmacs} | {_fmt(r.median_ms)} | '
                       f'{_fmt(ort.median_ms if ort else None)} |')
    return '\n'.join(out)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('json', nargs='?', default='docs/benchmark/benchmark.json')
    args = parser.parse_args(argv)
    with open(args.json) as f:
        json.load(f)  # fail early on a broken file
    print(tables(args.json))
    return 0


if __name__ == '__main__':
    sys.exit(main())
