"""Checkpoints by URL (an HTTP server on 127.0.0.1, torch hub's cache) and by timm tag (a
pre-populated Hugging Face cache, offline mode). Nothing here reaches the internet."""
import hashlib
import http.server
import io
import threading
from pathlib import Path
from typing import Dict, Iterator, Tuple

import pytest
import timm
import torch
from safetensors.torch import save_file

from mmeff.checkpoint import CheckpointDownloadError, load_pretrained, url_cache_dir
from mmeff.models.backbones import EfficientViT
from mmeff.testing import randomize_

TAG = 'efficientvit_m0.r224_in1k'
PRETRAINED = dict(type='Pretrained')


class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves ``server.files``; ``/cut/...`` announces more bytes than it sends."""

    def do_GET(self):  # noqa: N802 (http.server's name)
        self.server.requests.append(self.path)
        body = self.server.files.get(self.path.replace('/cut', '', 1))
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        self.wfile.write(body[:len(body) // 2] if self.path.startswith('/cut/') else body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server() -> Iterator[Tuple[str, http.server.HTTPServer]]:
    httpd = http.server.ThreadingHTTPServer(('127.0.0.1', 0), _Handler)
    httpd.files, httpd.requests = {}, []
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f'http://127.0.0.1:{httpd.server_address[1]}', httpd
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def torch_home(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch'))
    return Path(url_cache_dir())


def _saved(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def _backbone_state(seed: int = 1) -> Dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return randomize_(EfficientViT('m0'), seed).state_dict()


def _pretrained(checkpoint: str) -> EfficientViT:
    model = EfficientViT('m0', init_cfg=dict(PRETRAINED, checkpoint=checkpoint))
    model.init_weights()
    return model


def _assert_equal_state(model: torch.nn.Module, expected: Dict[str, torch.Tensor]) -> None:
    got = model.state_dict()
    differing = [k for k, v in expected.items() if not torch.equal(got[k], v)]
    assert not differing, differing[:5]


# ------------------------------------------------------------------------------------- URLs
def test_url_downloads_once_into_torch_hub_cache(server, torch_home):
    base, httpd = server
    state = _backbone_state()
    httpd.files['/weights/efficientvit_m0_rand.pth'] = _saved({'state_dict': state})
    url = base + '/weights/efficientvit_m0_rand.pth'

    _assert_equal_state(_pretrained(url), state)
    assert (torch_home / 'efficientvit_m0_rand.pth').is_file()
    _assert_equal_state(_pretrained(url), state)  # the second load reads the cache
    assert httpd.requests == ['/weights/efficientvit_m0_rand.pth']


def test_mmengine_loads_urls_through_the_same_cache(server, torch_home):
    """``load_from`` / init_detector / Pretrained init of any module: mmengine's loader."""
    from mmengine.runner.checkpoint import _load_checkpoint
    base, httpd = server
    state = _backbone_state(seed=2)
    httpd.files['/det.pth'] = _saved({'state_dict': state, 'meta': {'epoch': 12}})
    loaded = _load_checkpoint(base + '/det.pth', map_location='cpu')
    assert loaded['meta'] == {'epoch': 12}
    assert all(torch.equal(loaded['state_dict'][k], v) for k, v in state.items())
    assert (torch_home / 'det.pth').is_file()


@pytest.mark.parametrize('loader', ['mmeff', 'mmengine'])
def test_url_file_is_still_loaded_with_weights_only(server, torch_home, loader):
    from mmengine.runner.checkpoint import _load_checkpoint
    base, httpd = server
    httpd.files['/evil.pth'] = _saved({'state_dict': {}, 'payload': threading.Lock})
    with pytest.raises(RuntimeError, match='weights_only=True'):
        if loader == 'mmeff':
            _pretrained(base + '/evil.pth')
        else:
            _load_checkpoint(base + '/evil.pth', map_location='cpu')


@pytest.mark.parametrize('path', ['/cut/m0.pth', '/missing.pth'])
def test_failed_download_names_url_and_cache_and_leaves_nothing(server, torch_home, path):
    base, httpd = server
    httpd.files['/m0.pth'] = _saved(_backbone_state())
    url = base + path
    with pytest.raises(CheckpointDownloadError) as err:
        _pretrained(url)
    name = Path(path).name
    assert url in str(err.value) and str(torch_home / name) in str(err.value)
    why = 'the download stopped after' if path.startswith('/cut/') else 'HTTP Error 404'
    assert why in str(err.value)
    assert list(torch_home.iterdir()) == []  # no partial file, no temporary file


def test_hash_in_file_name_is_checked(server, torch_home):
    base, httpd = server
    state = _backbone_state()
    body = _saved(state)
    httpd.files['/m0-deadbeef.pth'] = body
    with pytest.raises(CheckpointDownloadError, match='sha256'):
        _pretrained(base + '/m0-deadbeef.pth')
    assert list(torch_home.iterdir()) == []
    good = f'/m0-{hashlib.sha256(body).hexdigest()[:8]}.pth'
    httpd.files[good] = httpd.files['/m0-a.pth'] = body  # '-a' is no hash
    for name in (good, '/m0-a.pth'):
        _assert_equal_state(_pretrained(base + name), state)


# ---------------------------------------------------------------------------------- timm hub
@pytest.fixture
def offline_hub(tmp_path, monkeypatch) -> Path:
    """An empty Hugging Face cache in offline mode; any request would go to a closed port."""
    from huggingface_hub import constants
    cache = tmp_path / 'hf'
    monkeypatch.setattr(constants, 'HF_HUB_CACHE', str(cache))
    monkeypatch.setattr(constants, 'HF_HUB_OFFLINE', True)
    monkeypatch.setattr(constants, 'ENDPOINT', 'http://127.0.0.1:9')
    return cache


def _populate(cache: Path, repo: str, filename: str, state: Dict[str, torch.Tensor]) -> None:
    """The layout huggingface_hub leaves after a download: refs/main -> snapshots/<commit>/."""
    commit = '0123456789abcdef0123456789abcdef01234567'
    root = cache / ('models--' + repo.replace('/', '--'))
    (root / 'refs').mkdir(parents=True)
    (root / 'refs' / 'main').write_text(commit)
    (root / 'snapshots' / commit).mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in state.items()},
              str(root / 'snapshots' / commit / filename))


def test_timm_tag_loads_from_the_hub_cache_offline(offline_hub):
    torch.manual_seed(0)
    timm_state = randomize_(timm.create_model('efficientvit_m0'), 2).state_dict()
    _populate(offline_hub, 'timm/' + TAG, 'model.safetensors', timm_state)

    model = _pretrained('timm:' + TAG)
    reference = EfficientViT('m0')
    report = load_pretrained(reference, dict(timm_state), reference.checkpoint_converter(),
                             prefix='backbone.')
    assert not report.missing
    _assert_equal_state(model, reference.state_dict())


def test_timm_tag_offline_without_cache_says_where_it_looked(offline_hub):
    with pytest.raises(CheckpointDownloadError) as err:
        _pretrained('timm:' + TAG)
    message = str(err.value)
    assert 'timm/' + TAG in message and str(offline_hub) in message
    assert 'HF_HUB_OFFLINE' in message


def test_unknown_timm_tag_names_the_form():
    with pytest.raises(ValueError, match=r'timm:<model>\.<tag>'):
        _pretrained('timm:efficientvit_m0')
