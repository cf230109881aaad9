#!/usr/bin/env python
"""Print the model-zoo Markdown tables (docs/model_zoo.md) from a benchmark JSON.

    python tools/benchmarks/zoo_tables.py docs/benchmark/benchmark.json \
        --dense docs/benchmark/dense_512.json docs/benchmark/dense_800x1216.json \
        docs/benchmark/dense_train.json --official docs/benchmark/official_dense.csv

One table per family: params and GMACs measured by tools/benchmark.py next to the papers',
CPU latency (eager and fused PyTorch, ONNX Runtime) and the in-session ratios against timm's
implementation and ResNet-50; then the reference CNNs. With ``--dense``, one more table per
family for the dense backbones (``backbone/<variant>`` rows): eager / fused / ONNX Runtime
milliseconds at 512x512 and 800x1216 and the training step (forward + backward, train mode),
and, with ``--official``, the speed-ups over the official dense code measured side by side
(docs/benchmark/official_dense.csv: official ms / mmeff ms, higher = mmeff faster).
"""
import argparse
import csv
import json
import sys
from typing import Dict, List, Optional, Sequence, Tuple

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


TRAIN_INPUT = '512x512'
#: the dense columns: (title, backend, input); the training step is read at any batch
DENSE_COLUMNS = [('512 eager', 'eager', '512x512'), ('512 fused', 'fused', '512x512'),
                 ('512 ORT', 'onnxruntime', '512x512'),
                 ('800x1216 eager', 'eager', '800x1216'), ('800x1216 fused', 'fused', '800x1216'),
                 ('800x1216 ORT', 'onnxruntime', '800x1216'), ('train step', 'train', TRAIN_INPUT)]
#: speed-ups over the official dense code: (title, mode, input) of official_dense.csv rows
OFFICIAL_COLUMNS = [('train vs official', 'train', TRAIN_INPUT),
                    ('800x1216 eval vs official', 'eval', '800x1216')]

DenseKey = Tuple[str, str, str]  # (variant, backend, input)


def dense_latencies(paths: Sequence[str]) -> Tuple[Dict[DenseKey, object], Optional[int]]:
    """The ``backbone/<variant>`` rows of benchmark JSONs (sessions of a file pooled), keyed
    (variant, backend, input), and the batch of the training-step rows (None when there are
    none). A later file replaces an earlier one's rows of the same key: a re-measurement."""
    out: Dict[DenseKey, object] = {}
    for path in paths:
        rows, _ = load_results([path])
        for size in dict.fromkeys(r.input for r in rows):
            for r in aggregate([r for r in rows if r.input == size]):
                if r.model.startswith('backbone/') and r.status == 'ok':
                    out[(r.model[len('backbone/'):], r.backend, size)] = r
    train_batches = {r.batch for (_, backend, size), r in out.items()
                     if backend == 'train' and size == TRAIN_INPUT}
    return out, (max(train_batches) if train_batches else None)


def official_speedups(path: str) -> Dict[Tuple[str, str, str], float]:
    """(variant, mode, input) -> official ms / mmeff ms from official_dense.csv."""
    with open(path, newline='') as f:
        return {(r['variant'], r['mode'], r['input']): float(r['official_ms']) /
                float(r['mmeff_ms']) for r in csv.DictReader(f)}


def dense_tables(paths: Sequence[str], official: Optional[str] = None) -> str:
    """One Markdown table per family of the dense backbones (see the module docstring)."""
    pooled, train_batch = dense_latencies(paths)
    speedups = official_speedups(official) if official else {}
    columns = [f'{title} ms' if backend != 'train' or train_batch is None else
               f'train step {train_batch}x{TRAIN_INPUT} ms' for title, backend, _ in DENSE_COLUMNS]
    extra = [title for title, _, _ in OFFICIAL_COLUMNS] if official else []
    out: List[str] = []
    for family in FAMILIES:
        out += [f'### {family.name} backbone (dense)', '',
                '| model | ' + ' | '.join(columns + extra) + ' |',
                '|---' * (1 + len(columns) + len(extra)) + '|']
        for v in variants(family.name):
            cells = [pooled.get((v.name, backend, size)) for _, backend, size in DENSE_COLUMNS]
            if not any(cells):
                continue
            line = [_fmt(c.median_ms if c else None, '.0f') for c in cells]
            line += [_fmt(speedups.get((v.name, mode, size)), '.2f') + 'x'
                     if (v.name, mode, size) in speedups else '–'
                     for _, mode, size in OFFICIAL_COLUMNS] if official else []
            out.append(f'| {v.name} | ' + ' | '.join(line) + ' |')
        out.append('')
    return '\n'.join(out)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('json', nargs='?', default='docs/benchmark/benchmark.json')
    parser.add_argument('--dense', nargs='+', default=None, metavar='JSON',
                        help='benchmark JSONs of backbone/<variant> rows (dense sizes, train)')
    parser.add_argument('--official', default=None, metavar='CSV',
                        help='side-by-side figures of the official dense code '
                             '(docs/benchmark/official_dense.csv)')
    args = parser.parse_args(argv)
    for path in [args.json] + list(args.dense or []):
        try:
            with open(path) as f:
                json.load(f)  # fail early on a broken file
        except (OSError, ValueError) as err:
            print(f'[zoo_tables] error: cannot read {path}: {err}', file=sys.stderr)
            return 2
    if args.official and not args.dense:
        print('[zoo_tables] error: --official needs --dense (the tables it adds columns to)',
              file=sys.stderr)
        return 2
    print(tables(args.json))
    if args.dense:
        print()
        print(dense_tables(args.dense, args.official))
    return 0


if __name__ == '__main__':
    sys.exit(main())
