"""Benchmark results: aggregation, ratio and result tables, JSON/CSV files and the plot.

Rows come per session (see :func:`mmeff.benchmark.runner.plan_sessions`). Ratios are taken
within a session (an mmeff model against timm's implementation and ResNet-50 measured
round-robin with it); the per-model tables and the plot pool all sessions of a model.
"""
import csv
import json
import os
import platform
import time
from dataclasses import asdict, dataclass, replace
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

from mmeff.benchmark.runner import BenchConfig, Row
from mmeff.benchmark.timer import cpu_name

OURS_BACKEND, REF_BACKEND = 'fused', 'eager'


def aggregate(rows: List[Row]) -> List[Row]:
    """One row per (model, backend): samples of every session pooled."""
    merged: Dict[tuple, Row] = {}
    for row in rows:
        key = (row.model, row.backend)
        if key not in merged:
            merged[key] = replace(row, session=-1, samples_ms=list(row.samples_ms))
        elif row.status == 'ok':
            target = merged[key]
            if target.status != 'ok':
                merged[key] = replace(row, session=-1, samples_ms=list(row.samples_ms))
            else:
                target.samples_ms.extend(row.samples_ms)
    for row in merged.values():
        if row.status == 'ok' and row.samples_ms:
            row.summarise()
    return list(merged.values())


def _latency(rows: List[Row], model: Optional[str], backend: str,
             session: Optional[int] = None) -> Optional[float]:
    for r in rows:
        if r.model == model and r.backend == backend and r.status == 'ok' and \
                (session is None or r.session == session):
            return r.median_ms
    return None


def ratio_rows(rows: List[Row], anchor: str = 'timm/resnet50') -> List[Dict[str, object]]:
    """Per mmeff model, within its session: fused/eager, fused / timm eager, fused / ResNet-50
    eager, ORT / timm ORT, ORT / ResNet-50 ORT (lower = faster)."""
    from mmeff.benchmark.registry import bench_models
    registry = bench_models()
    counterpart = {m.counterpart: m.name for m in registry.values() if m.counterpart}
    out = []
    seen = set()
    for row in rows:
        name, sid = row.model, row.session
        if name in seen or name.startswith('timm/'):
            continue
        seen.add(name)
        ref = counterpart.get(name)

        def lat(model, backend):
            return _latency(rows, model, backend, sid)

        def ratio(a, b):
            return a / b if a and b else None
        fused, ort = lat(name, 'fused'), lat(name, 'onnxruntime')
        out.append({'model': name,
                    'fused_over_eager': ratio(fused, lat(name, 'eager')),
                    'fused_over_timm_eager': ratio(fused, lat(ref, 'eager')),
                    'fused_over_resnet50': ratio(fused, lat(anchor, 'eager')),
                    'ort_over_timm_ort': ratio(ort, lat(ref, 'onnxruntime')),
                    'ort_over_resnet50_ort': ratio(ort, lat(anchor, 'onnxruntime'))})
    return out


def compression_table(rows: List[Row]) -> str:
    """Per model and session: fp32 ONNX Runtime latency and each compressed ONNX Runtime
    backend's latency and speedup over it (higher = faster); '' when none was timed."""
    from mmeff.benchmark.timer import COMPRESSED_ORT
    present = [b for b in COMPRESSED_ORT if any(r.backend == b and r.status == 'ok'
                                                for r in rows)]
    if not present:
        return ''
    width = max([22] + [len(r.model) for r in rows])
    head = f'{"model":{width}s} {"ORT fp32 ms":>11s}' + ''.join(
        f' {b[len("onnxruntime-"):] + " ms (x)":>22s}' for b in present)
    lines = [head, '-' * len(head)]
    for name, sid in dict.fromkeys((r.model, r.session) for r in rows):
        base = _latency(rows, name, 'onnxruntime', sid)
        cells = []
        for b in present:
            ms = _latency(rows, name, b, sid)
            speedup = f'{base / ms:5.2f}x' if ms and base else f'{"-":>6s}'
            cells.append(f' {f"{ms:8.2f}" if ms else "-":>14s} {speedup:>7s}')
        if base is None and not any(_latency(rows, name, b, sid) for b in present):
            continue
        lines.append(f'{name:{width}s} {f"{base:11.2f}" if base else "-":>11s}' + ''.join(cells))
    return '\n'.join(lines)


RATIO_COLUMNS = [('fused_over_eager', 'fused/eager'), ('fused_over_timm_eager', 'fused/timm'),
                 ('fused_over_resnet50', 'fused/R50'), ('ort_over_timm_ort', 'ORT/timm ORT'),
                 ('ort_over_resnet50_ort', 'ORT/R50 ORT')]


def ratio_table(rows: List[Row]) -> str:
    ratios = ratio_rows(rows)
    width = max([22] + [len(r['model']) for r in ratios])
    head = f'{"model":{width}s}' + ''.join(f' {title:>13s}' for _, title in RATIO_COLUMNS)
    lines = [head, '-' * len(head)]
    for r in ratios:
        lines.append(f'{r["model"]:{width}s}' + ''.join(
            f' {r[key]:13.2f}' if r[key] is not None else f' {"-":>13s}'
            for key, _ in RATIO_COLUMNS))
    return '\n'.join(lines)


def results_table(rows: List[Row], backends: Sequence[str]) -> str:
    """Per model (all sessions pooled): params, MACs vs paper, median (p90) ms per backend."""
    rows = aggregate(rows)
    models = list(dict.fromkeys(r.model for r in rows))
    width = max([26] + [len(name) for name in models])
    head = f'{"model":{width}s} {"params M":>8s} {"GMACs":>7s} {"paper":>6s} {"diff":>6s}'
    head += ''.join(f' {b + " ms":>17s}' for b in backends)
    lines = [head, '-' * len(head)]
    for name in models:
        mine = [r for r in rows if r.model == name]
        r0 = mine[0]
        diff = r0.macs_vs_paper_pct
        paper = f'{r0.paper_gmacs:6.3f}' if r0.paper_gmacs else f'{"-":>6s}'
        line = (f'{name:{width}s} {r0.params_m:8.2f} {r0.gmacs:7.3f} {paper} '
                f'{("%+5.1f%%" % diff) if diff is not None else "-":>6s}')
        for b in backends:
            r = next((x for x in mine if x.backend == b), None)
            line += f' {"-":>17s}' if r is None or r.status != 'ok' else \
                f' {r.median_ms:8.2f} ({r.p90_ms:6.2f})'
        lines.append(line)
    return '\n'.join(lines)


# ------------------------------------------------------------------------------------- files
def machine_info(config: BenchConfig) -> Dict[str, object]:
    cpu = cpu_name()
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = None
    return {'cpu': cpu, 'logical_cores': os.cpu_count(), 'threads': config.threads,
            'batch': config.batch, 'warmup': config.warmup, 'runs': config.runs,
            'clock': config.clock,
            'load_average_at_start': load,
            'gpu': torch.cuda.get_device_name() if torch.cuda.is_available() else None,
            'torch': torch.__version__, 'python': platform.python_version(),
            'date': time.strftime('%Y-%m-%d %H:%M:%S')}


def format_meta(meta: Dict[str, object]) -> str:
    load = meta.get('load_average_at_start')
    return (f'machine: {meta["cpu"]}, {meta["logical_cores"]} logical cores'
            + (f' (load average {load:.1f} at start)' if load is not None else '')
            + f', {meta["threads"]} thread(s), batch {meta["batch"]}, {meta["warmup"]} warm-up '
            f'+ {meta["runs"]} timed runs per backend (round-robin within a session'
            + ('; process CPU time' if meta.get('clock') == 'cpu' else '') + '); torch '
            f'{meta["torch"]}' + (f'; GPU {meta["gpu"]}' if meta.get('gpu') else '; no GPU'))


def row_dict(row: Row) -> Dict[str, object]:
    out = asdict(row)
    out['macs_vs_paper_pct'] = row.macs_vs_paper_pct
    return out


def write_json(rows: List[Row], meta: Dict[str, object], path: str) -> None:
    with open(path, 'w') as f:
        json.dump({'meta': meta, 'rows': [row_dict(r) for r in rows],
                   'ratios': ratio_rows(rows)}, f, indent=1)


def load_results(paths: Sequence[str]) -> tuple:
    """(rows, metas) of earlier JSON results; session ids are kept apart per file, so the
    in-session ratios of each file survive the merge."""
    rows: List[Row] = []
    metas = []
    fields = set(Row.__dataclass_fields__)
    for path in paths:
        with open(path) as f:
            data = json.load(f)
        offset = 1 + max([r.session for r in rows], default=-1)
        for item in data['rows']:
            row = Row(**{k: v for k, v in item.items() if k in fields})
            row.session += offset
            rows.append(row)
        metas.append(data.get('meta', {}))
    return rows, metas


def write_csv(rows: List[Row], path: str) -> None:
    """Flat table (no per-run samples: those are in the JSON)."""
    if not rows:
        return
    fields = [k for k in row_dict(rows[0]) if k != 'samples_ms']
    with open(path, 'w', newline='') as f:
        writer = csv.DictWriter(f, fieldnames=fields, extrasaction='ignore')
        writer.writeheader()
        for row in rows:
            writer.writerow(row_dict(row))


def _relative_to_anchor(rows: List[Row], anchor: str) -> Dict[tuple, float]:
    """(model, backend) -> median latency / the anchor's eager median in the same session,
    averaged over sessions (geometric mean)."""
    anchor_ms = {r.session: r.median_ms for r in rows
                 if r.model == anchor and r.backend == REF_BACKEND and r.status == 'ok'}
    ratios: Dict[tuple, List[float]] = {}
    for r in rows:
        if r.status == 'ok' and anchor_ms.get(r.session):
            ratios.setdefault((r.model, r.backend), []).append(r.median_ms /
                                                               anchor_ms[r.session])
    return {k: float(np.exp(np.mean(np.log(v)))) for k, v in ratios.items()}


def plot_latency_vs_params(rows: List[Row], path: str, title: str = '',
                           anchor: str = 'timm/resnet50') -> None:
    """Latency vs parameters, one line per family (the papers' Fig. 1 with the speed axis):
    mmeff models fused, timm's implementations and the reference CNNs eager. Left: median
    ms; right: relative to ResNet-50 timed round-robin in the same session (robust to load)."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    pooled = aggregate(rows)
    relative = _relative_to_anchor(rows, anchor)
    panels = [('latency per image (ms, median)', lambda r: r.median_ms)]
    if relative:
        panels.append((f'latency relative to {anchor.replace("timm/", "")} (same session)',
                       lambda r: relative.get((r.model, r.backend))))
    fig, axes = plt.subplots(1, len(panels), figsize=(7.5 * len(panels), 5.5), squeeze=False)
    for ax, (ylabel, value) in zip(axes[0], panels):
        for group in dict.fromkeys(r.group for r in pooled):
            reference = group in ('timm', 'CNN reference')
            backend = REF_BACKEND if reference else OURS_BACKEND
            pts = sorted((r.params_m, value(r), r.model) for r in pooled
                         if r.group == group and r.backend == backend and r.status == 'ok'
                         and value(r))
            if not pts:
                continue
            xs, ys, names = zip(*pts)
            if group == 'timm':
                ax.scatter(xs, ys, marker='x', color='gray', label='timm, same variants (eager)')
            elif group == 'CNN reference':
                ax.scatter(xs, ys, marker='s', color='black', label='CNN references (eager)')
            else:
                ax.plot(xs, ys, marker='o', label=f'{group} (mmeff, fused)')
            for x, y, name in pts:
                label = name.replace('timm/', '')
                if group != 'CNN reference':
                    label = label.split('_')[-1]
                ax.annotate(label, (x, y), fontsize=7, xytext=(3, 3), textcoords='offset points')
        ax.set_xlabel('parameters (M)')
        ax.set_ylabel(ylabel)
        ax.set_xscale('log')
        ax.set_yscale('log')
        plain = matplotlib.ticker.FuncFormatter(lambda v, _: f'{v:g}')
        for axis in (ax.xaxis, ax.yaxis):
            axis.set_major_formatter(plain)
            axis.set_minor_formatter(plain)
        ax.tick_params(which='minor', labelsize=7)
        ax.grid(True, which='both', alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title or 'Latency vs parameters', fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


@dataclass
class BenchOutputs:
    json: str
    csv: str
    png: Optional[str] = None


def save_outputs(rows: List[Row], meta: Dict[str, object], out_dir: str, stem: str,
                 plot_path: Optional[str] = None) -> BenchOutputs:
    os.makedirs(out_dir, exist_ok=True)
    outputs = BenchOutputs(json=os.path.join(out_dir, f'{stem}.json'),
                           csv=os.path.join(out_dir, f'{stem}.csv'))
    write_json(rows, meta, outputs.json)
    write_csv(rows, outputs.csv)
    if plot_path and any(r.status == 'ok' for r in rows):
        if os.path.dirname(plot_path):
            os.makedirs(os.path.dirname(plot_path), exist_ok=True)
        title = (f'Latency vs parameters, 224x224 — {meta.get("cpu")}, {meta.get("threads")} '
                 f'thread(s), batch {meta.get("batch")}')
        plot_latency_vs_params(rows, plot_path, title=title)
        outputs.png = plot_path
    return outputs
