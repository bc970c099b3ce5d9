"""`toothseg models get`: a catalogue archive served over real HTTP is checked, unpacked safely and
installed; a wrong hash, an escaping member, a wrong model and a missing checksum install nothing."""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import threading
import zipfile
from pathlib import Path

import pytest
import torch

from toothseg.core import InputError
from toothseg.core.networks import build_network
from toothseg.core.models.catalog import load_catalog
from toothseg.core.models.download import download_model
from toothseg.core.models.folder import save_model_folder
from toothseg.core.progress import Progress

from .test_model_folders import tiny_card


@pytest.fixture
def server(tmp_path):
    """A real HTTP server on localhost serving ``tmp_path / 'www'``."""
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *args: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def _zip_model(tmp_path: Path, root: Path, model_id: str = "tiny", extra: dict | None = None) -> str:
    torch.manual_seed(0)
    folder = save_model_folder(build_network("unet2d", num_classes=3, base_channels=4), tiny_card(model_id),
                               tmp_path / "build" / model_id)
    archive = root / f"{model_id}.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        for path in folder.iterdir():
            zipped.write(path, f"{model_id}/{path.name}")
        for name, data in (extra or {}).items():
            zipped.writestr(name, data)
    return hashlib.sha256(archive.read_bytes()).hexdigest()


def _catalog(tmp_path: Path, url: str, sha256: str | None, model_id: str = "tiny"):
    path = tmp_path / "catalog.json"
    path.write_text(json.dumps({"schema_version": 1, "models": [
        {"id": model_id, "name": "Tiny", "input_kind": "2d",
         "source": {"how": "ask the authors", "archive": {"url": url, "sha256": sha256}}}]}), encoding="utf-8")
    return load_catalog(path)


@pytest.fixture(autouse=True)
def store(tmp_path, monkeypatch):
    monkeypatch.setenv("TOOTHSEG_MODELS_DIR", str(tmp_path / "store"))
    return tmp_path / "store"


def test_download_checks_and_installs(tmp_path, server, store):
    root, base = server
    sha = _zip_model(tmp_path, root)
    catalog = _catalog(tmp_path, f"{base}/tiny.zip", sha)
    assert not catalog.get("tiny").available
    seen = []
    entry = download_model(catalog, "tiny", Progress(lambda f, s: seen.append((f, s))))
    assert entry.available and entry.folder == store / "tiny" and entry.status() == "installed"
    assert seen[-1] == (1.0, "installed tiny") and all(a[0] <= b[0] for a, b in zip(seen, seen[1:]))
    assert [p.name for p in store.iterdir()] == ["tiny"]  # no temporary files left
    assert load_catalog(tmp_path / "catalog.json").get("tiny").available  # seen again after a restart


def test_wrong_hash_installs_nothing(tmp_path, server, store):
    root, base = server
    _zip_model(tmp_path, root)
    with pytest.raises(InputError, match="does not match the catalogue's SHA-256"):
        download_model(_catalog(tmp_path, f"{base}/tiny.zip", "0" * 64), "tiny")
    assert list(store.iterdir()) == []


def test_escaping_member_is_refused(tmp_path, server, store):
    root, base = server
    sha = _zip_model(tmp_path, root, extra={"../../evil.txt": "x"})
    with pytest.raises(InputError, match="outside the model folder"):
        download_model(_catalog(tmp_path, f"{base}/tiny.zip", sha), "tiny")
    assert list(store.iterdir()) == [] and not (tmp_path / "evil.txt").exists()


def test_archive_of_another_model_is_refused(tmp_path, server, store):
    root, base = server
    sha = _zip_model(tmp_path, root, model_id="other")
    with pytest.raises(InputError, match="holds model 'other'"):
        download_model(_catalog(tmp_path, f"{base}/other.zip", sha), "tiny")
    assert list(store.iterdir()) == []


def test_no_checksum_no_download_and_missing_file(tmp_path, server):
    _, base = server
    with pytest.raises(InputError, match="records no SHA-256"):
        download_model(_catalog(tmp_path, f"{base}/tiny.zip", None), "tiny")
    with pytest.raises(InputError, match="cannot download"):
        download_model(_catalog(tmp_path, f"{base}/absent.zip", "0" * 64), "tiny")


def test_bundled_catalogue_entries_say_how_instead():
    entry = load_catalog(include_user=False).get("rail-cbct")
    with pytest.raises(InputError, match="no downloadable archive; download the authors' checkpoints"):
        download_model(load_catalog(include_user=False), entry.id)


def test_cli_get_installs_and_explains(tmp_path, server, store):
    import os
    import subprocess
    import sys

    root, base = server
    sha = _zip_model(tmp_path, root)
    catalog = tmp_path / "catalog.json"
    _catalog(tmp_path, f"{base}/tiny.zip", sha)
    env = dict(os.environ, TOOTHSEG_MODELS_DIR=str(store), PYTHONWARNINGS="ignore")
    code = ("import sys; from toothseg.core.models import catalog as c; from pathlib import Path; "
            f"c.resources_dir = lambda: Path({str(tmp_path)!r}) / 'res'; "
            "from toothseg.cli import main; sys.exit(main(sys.argv[1:]))")
    (tmp_path / "res" / "Models").mkdir(parents=True)
    catalog.replace(tmp_path / "res" / "Models" / "catalog.json")
    got = subprocess.run([sys.executable, "-c", code, "models", "get", "tiny", "--progress-lines"],
                         capture_output=True, text=True, env=env, timeout=120)
    assert got.returncode == 0, got.stderr
    assert "progress 1.0000 installed tiny" in got.stdout and (store / "tiny" / "model.json").is_file()
    bundled = subprocess.run([sys.executable, "-m", "toothseg.cli", "models", "get", "rail-cbct"],
                             capture_output=True, text=True, env=env, timeout=120)
    assert bundled.returncode == 1 and "Traceback" not in bundled.stderr
    assert "no downloadable archive" in bundled.stderr and "import-checkpoint" in bundled.stderr


def test_cancel_during_download_installs_nothing(tmp_path, server, store):
    from toothseg.core.errors import CancelledError
    from toothseg.core.progress import CancelToken

    root, base = server
    sha = _zip_model(tmp_path, root)
    token = CancelToken()
    with pytest.raises(CancelledError):
        download_model(_catalog(tmp_path, f"{base}/tiny.zip", sha), "tiny",
                       Progress(lambda fraction, stage: token.cancel(), token))
    assert list(store.iterdir()) == []  # neither the model nor the temporary download folder


def test_a_bundled_model_id_cannot_be_shadowed(tmp_path):
    from toothseg.core import OutputExistsError
    from toothseg.core.models.catalog import CatalogEntry

    torch.manual_seed(0)
    folder = save_model_folder(build_network("unet2d", num_classes=3, base_channels=4), tiny_card("tiny"),
                               tmp_path / "user-tiny")
    catalog = load_catalog(include_user=False)
    catalog.entries.append(CatalogEntry(id="tiny", name="bundled tiny", input_kind="2d", folder=folder))
    with pytest.raises(OutputExistsError, match="ID of a bundled model"):
        catalog.add_folder(folder)
