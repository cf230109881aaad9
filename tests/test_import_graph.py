"""mmeff's import graph has no cycle: between modules, and between the subpackages of every
package (docs/design.md, "Dependencies"). Function-level (lazy) imports count too: a cycle held
together by import order is still a cycle.

The graph is read from the source with ``ast``, so the test sees every import statement,
including those inside functions that a run would never reach.
"""
import ast
from collections import defaultdict
from pathlib import Path
from typing import Dict, List, Optional, Set

import pytest

PACKAGE_ROOT = Path(__file__).resolve().parents[1] / 'mmeff'


def module_files(root: Path = PACKAGE_ROOT) -> Dict[str, Path]:
    """Dotted module name -> file, for every module and package under ``root``."""
    found = {}
    for path in root.rglob('*.py'):
        parts = list(path.relative_to(root.parent).with_suffix('').parts)
        if parts[-1] == '__init__':
            parts = parts[:-1]
        found['.'.join(parts)] = path
    return found


def _resolve(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    if not node.level:
        return node.module or ''
    base = module.split('.') if is_package else module.split('.')[:-1]
    base = base[:len(base) - (node.level - 1)]
    return '.'.join(base + ([node.module] if node.module else []))


def import_edges(modules: Dict[str, Path]) -> Dict[str, Set[str]]:
    """module -> the mmeff modules it imports anywhere in its source."""
    edges: Dict[str, Set[str]] = defaultdict(set)
    for name, path in modules.items():
        is_package = path.name == '__init__.py'
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: List[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(node, name, is_package)
                for alias in node.names:
                    sub = f'{base}.{alias.name}'
                    targets.append(sub if sub in modules else base)
            for target in targets:
                # `import a.b.c` depends on a.b.c; the closest known module stands for it
                while target and target not in modules:
                    target = target.rpartition('.')[0]
                if target and target != name:
                    edges[name].add(target)
    return edges


def find_cycle(edges: Dict[str, Set[str]]) -> Optional[List[str]]:
    """One cycle of the directed graph as a list of nodes (first == last), or None."""
    state: Dict[str, int] = {}
    stack: List[str] = []

    def visit(node: str) -> Optional[List[str]]:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def subpackage_edges(edges: Dict[str, Set[str]], package: str) -> Dict[str, Set[str]]:
    """Edges between the direct children of ``package`` (its own __init__ left out: it only
    gathers its children)."""
    prefix = package + '.'

    def child(module: str) -> Optional[str]:
        if not module.startswith(prefix):
            return None
        return prefix + module[len(prefix):].split('.')[0]

    grouped: Dict[str, Set[str]] = defaultdict(set)
    for source, targets in edges.items():
        a = child(source)
        for target in targets:
            b = child(target)
            if a and b and a != b:
                grouped[a].add(b)
    return grouped


MODULES = module_files()
EDGES = import_edges(MODULES)
PACKAGES = sorted(name for name, path in MODULES.items() if path.name == '__init__.py')


def test_the_graph_is_read():
    # the reader must see real edges, or "no cycle" would prove nothing
    assert len(MODULES) > 80
    assert 'mmeff.checkpoint.io' in EDGES['mmeff.checkpoint.loader']
    assert 'mmeff.models.layers.attention_bias' in \
        EDGES['mmeff.models.backbones.efficientformer.checkpoint']


def test_no_cycle_between_modules():
    cycle = find_cycle(EDGES)
    assert cycle is None, 'import cycle: ' + ' -> '.join(cycle)


@pytest.mark.parametrize('package', PACKAGES)
def test_no_cycle_between_subpackages(package):
    cycle = find_cycle(subpackage_edges(EDGES, package))
    assert cycle is None, f'subpackages of {package} import each other: ' + ' -> '.join(cycle)


def test_checkpoint_package_imports_no_model():
    offenders = {m: sorted(t for t in ts if t.startswith('mmeff.models'))
                 for m, ts in EDGES.items() if m.startswith('mmeff.checkpoint')}
    assert not any(offenders.values()), offenders


def test_detector_catches_a_cycle():
    assert find_cycle({'a': {'b'}, 'b': {'c'}, 'c': {'a'}}) == ['a', 'b', 'c', 'a']
    assert find_cycle({'a': {'b'}, 'b': {'c'}}) is None
    grouped = subpackage_edges({'p.x.m': {'p.y.n'}, 'p.y.n': {'p.x.k'}}, 'p')
    assert find_cycle(grouped) is not None
