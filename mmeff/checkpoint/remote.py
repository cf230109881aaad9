"""Checkpoints named by URL or by a timm pretrained tag, fetched once into the usual caches.

``checkpoint=`` (in ``init_cfg``, ``load_from``, ``tools/*.py``) takes three kinds of names:

* a local path, used as it is;
* ``http(s)://...``: downloaded once into torch hub's cache, ``$TORCH_HOME/hub/checkpoints``
  (``torch.hub.get_dir()``), the directory mmengine's own ``load_from_http`` uses, so a file
  fetched by either is found by the other. The download goes to a temporary file in that
  directory and is renamed only once complete: its size must equal the server's Content-Length
  and, when the file name carries torch hub's ``-<sha256 prefix>`` suffix, its hash must match.
  A failed or cut download therefore never leaves a file that a later run would take for the
  checkpoint;
* ``timm:<model>.<tag>`` (e.g. ``timm:efficientformer_l1.snap_dist_in1k``): timm's pretrained
  config names the Hugging Face hub repository; ``huggingface_hub`` fetches the file into its own
  cache (``HF_HOME`` / ``HF_HUB_CACHE``) and honours ``HF_HUB_OFFLINE=1`` (cache only).

The file is then read like any local checkpoint (``io.load_file``: ``weights_only=True``).
"""
import hashlib
import os
import re
import tempfile
import urllib.request
from typing import Optional
from urllib.parse import urlparse

import torch

URL_SCHEMES = ('http://', 'https://')
TIMM_PREFIX = 'timm:'
#: the files a timm hub repository holds its weights in, preferred first (as timm reads them)
HUB_WEIGHT_FILES = ('model.safetensors', 'pytorch_model.bin')
_CHUNK = 1 << 20
#: torch hub's / OpenMMLab's ``name-<sha256 prefix>.pth``; 8+ hex digits, so that a name such
#: as ``weights-a.pth`` is not taken for a one-digit hash
_HASH_IN_NAME = re.compile(r'-([a-f0-9]{8,})\.')


class CheckpointDownloadError(RuntimeError):
    """A URL or hub checkpoint could not be fetched; the message names source and cache path."""


def is_remote(name: str) -> bool:
    """Whether ``name`` is a URL or a timm tag rather than a local path."""
    return isinstance(name, str) and (name.startswith(URL_SCHEMES)
                                      or name.startswith(TIMM_PREFIX))


def resolve_checkpoint(name: str) -> str:
    """The local file behind ``name``: a path as it is, a URL or timm tag fetched (once)."""
    if not isinstance(name, str):
        name = os.fspath(name)
    if name.startswith(URL_SCHEMES):
        return download_url(name)
    if name.startswith(TIMM_PREFIX):
        return download_timm(name[len(TIMM_PREFIX):])
    return name


# ---------------------------------------------------------------------------------------- URLs
def url_cache_dir() -> str:
    """torch hub's checkpoint cache (where mmengine's ``load_from_http`` keeps its files too)."""
    return os.path.join(torch.hub.get_dir(), 'checkpoints')


def url_cache_path(url: str) -> str:
    """Where ``url`` is cached: torch hub's rule (the URL path's file name); a URL whose path has
    no file name (``.../download?id=..``) gets a name derived from the whole URL."""
    name = os.path.basename(urlparse(url).path)
    if not name or '.' not in name:
        name = f'{name or "checkpoint"}-{hashlib.sha256(url.encode()).hexdigest()[:16]}.pth'
    return os.path.join(url_cache_dir(), name)


def _expected_hash_prefix(path: str) -> Optional[str]:
    """torch hub's convention: ``name-<at least 8 hex digits of sha256>.ext`` pins the content."""
    match = _HASH_IN_NAME.search(os.path.basename(path))
    return match.group(1) if match else None


def download_url(url: str) -> str:
    """Fetch ``url`` into :func:`url_cache_dir` unless it is there already; return the path."""
    dst = url_cache_path(url)
    if os.path.isfile(dst):
        return dst
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix='.partial-', suffix='.tmp', dir=os.path.dirname(dst))
    try:
        with os.fdopen(fd, 'wb') as out:
            digest = _stream(url, out)
        expected = _expected_hash_prefix(dst)
        if expected and not digest.startswith(expected):
            raise ValueError(f'sha256 {digest[:len(expected)]}... does not match the prefix '
                             f'{expected} in the file name')
        os.replace(tmp, dst)
    except BaseException as err:
        if os.path.exists(tmp):
            os.remove(tmp)
        if isinstance(err, Exception):
            raise CheckpointDownloadError(
                f'could not download the checkpoint {url} into the cache file {dst}: {err}. '
                'Nothing was kept in the cache. Check the URL and the network (set TORCH_HOME '
                'to use another cache), or download the file yourself and pass its local path '
                f'(or put it at {dst}).') from err
        raise
    return dst


def _stream(url: str, out) -> str:
    """Copy the response body into ``out``; check its length; return its sha256 hex digest."""
    sha = hashlib.sha256()
    received = 0
    request = urllib.request.Request(url, headers={'User-Agent': 'mmeff'})
    with urllib.request.urlopen(request, timeout=60) as response:
        length = response.headers.get('Content-Length')
        while True:
            chunk = response.read(_CHUNK)
            if not chunk:
                break
            out.write(chunk)
            sha.update(chunk)
            received += len(chunk)
    if length is not None and received != int(length):
        raise OSError(f'the download stopped after {received} of {length} bytes')
    if received == 0:
        raise OSError('the server sent an empty file')
    return sha.hexdigest()


# ----------------------------------------------------------------------------------------- hub
def timm_hub_repo(tag: str) -> str:
    """The Hugging Face repository of a timm pretrained tag (``efficientvit_m4.r224_in1k``)."""
    from timm.models import get_pretrained_cfg  # optional dependency, only for timm: names
    cfg = get_pretrained_cfg(tag) if '.' in tag else None
    repo = getattr(cfg, 'hf_hub_id', None)
    if not repo:
        raise ValueError(
            f'timm:{tag} is not a timm pretrained tag with hub weights; write it as '
            "timm:<model>.<tag>, e.g. 'timm:efficientformer_l1.snap_dist_in1k' "
            "(timm.list_pretrained('efficientformer*') lists them; docs/weights.md)")
    return repo


def download_timm(tag: str) -> str:
    """Fetch the weights of a timm tag through ``huggingface_hub`` (its cache, offline mode)."""
    from huggingface_hub import constants, hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    repo = timm_hub_repo(tag)
    errors = []
    for filename in HUB_WEIGHT_FILES:
        try:
            return hf_hub_download(repo, filename)
        except EntryNotFoundError as err:  # the repository has the other file
            errors.append(f'{filename}: {err}')
        except Exception as err:  # offline without a cached copy, network, auth
            errors.append(f'{filename}: {type(err).__name__}: {err}')
    offline = ' (HF_HUB_OFFLINE is set: only the cache is read)' if constants.HF_HUB_OFFLINE \
        else ''
    raise CheckpointDownloadError(
        f'could not get the weights of timm:{tag} from the Hugging Face hub repository {repo} '
        f'(cache {constants.HF_HUB_CACHE}){offline}: ' + '; '.join(errors) + '. Download them '
        'once with network access (huggingface-cli download ' + repo + '), or pass a local file.')

