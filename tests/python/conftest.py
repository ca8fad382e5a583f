"""Fixtures of the Python module's tests: a small store built by the nearlabel CLI (so the
module is checked against the command line), the shared data through NEARLABEL_DATASETS /
NEARLABEL_MODELS. Without them every test is skipped (exit 77, CTest SKIP_RETURN_CODE)."""
import json
import os
import shutil
import subprocess

import pytest

DATA = os.environ.get("NEARLABEL_DATASETS")
MODELS = os.environ.get("NEARLABEL_MODELS")
NL = os.environ.get("NEARLABEL_BIN", "build/nearlabel")


def pytest_sessionstart(session):
    if not DATA or not MODELS:
        pytest.exit("tests/python: NEARLABEL_DATASETS / NEARLABEL_MODELS unset: skipped", returncode=77)


def cli(*args):
    """Runs the nearlabel CLI; returns its stdout (parsed when --json)."""
    r = subprocess.run([NL, *args], capture_output=True, text=True)
    assert r.returncode == 0, f"nearlabel {' '.join(args)}: {r.stderr}"
    return json.loads(r.stdout) if args[0] == "--json" else r.stdout


@pytest.fixture(scope="session")
def fmnist(tmp_path_factory):
    """fashion-mnist (PNG, lossless: numpy pixels equal the file's): 20 images per class in
    a store, 5 more per class as queries; returns (store path, store dir, query dir)."""
    root = tmp_path_factory.mktemp("fm")
    src = os.path.join(DATA, "fashion-mnist")
    for cls in sorted(os.listdir(src)):
        d = os.path.join(src, cls)
        if not os.path.isdir(d):
            continue
        files = sorted(f for f in os.listdir(d) if f.endswith(".png"))
        for part, chosen in (("store", files[:20]), ("query", files[20:25])):
            os.makedirs(root / part / cls)
            for f in chosen:
                shutil.copy(os.path.join(d, f), root / part / cls / f)
    store = str(root / "fm.db")
    cli("ingest", store, str(root / "store"))
    return store, root / "store", root / "query"
