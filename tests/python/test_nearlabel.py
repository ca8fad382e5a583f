"""The nearlabel Python module against the CLI on real images, models and SQLite stores."""
import glob
import os
import sqlite3
import threading

import numpy as np
import pytest
from PIL import Image

import nearlabel
from conftest import cli


def rgb(path):
    return np.asarray(Image.open(path).convert("RGB"))


def queries(query_dir):
    return sorted(glob.glob(str(query_dir / "*" / "*.png")))


def test_a_numpy_array_gets_the_label_and_float32_distances_the_cli_gives(fmnist):
    store, _, qdir = fmnist
    col = nearlabel.open(store)
    for path in queries(qdir)[:6]:
        want = cli("--json", "classify", store, path, "--k", "5")[0]
        got = col.classify(rgb(path), k=5)
        assert got.label == want["label"]
        assert [n.id for n in got.neighbors] == [n["id"] for n in want["neighbors"]]
        # The CLI prints the float32 distance as a double: the same float32, bit for bit.
        assert [np.float32(n.distance) for n in got.neighbors] == [
            np.float32(n["distance"]) for n in want["neighbors"]]
        assert got.image == "<array 0>" and got.confidence == pytest.approx(want["confidence"])


def test_a_path_bytes_and_pixels_of_one_image_give_one_answer(fmnist):
    store, _, qdir = fmnist
    col = nearlabel.open(store)
    path = queries(qdir)[0]
    answers = col.search([path, open(path, "rb").read(), rgb(path)], k=4)
    assert [a.image for a in answers] == [path, "<bytes 1>", "<array 2>"]
    ids = [[n.id for n in a.neighbors] for a in answers]
    assert ids[0] == ids[1] == ids[2] and len(ids[0]) == 4
    assert answers[0].label is None  # a search result votes nothing


def test_many_images_come_back_in_order_with_the_cli_labels(fmnist):
    store, _, qdir = fmnist
    paths = queries(qdir)
    want = {r["image"]: r["label"] for r in cli("--json", "classify", store, *paths)}
    got = nearlabel.open(store).classify(paths)
    assert [r.image for r in got] == paths
    assert [r.label for r in got] == [want[p] for p in paths]


def test_vectors_are_a_read_only_view_equal_to_what_sqlite3_reads(fmnist):
    store, _, _ = fmnist
    col = nearlabel.open(store)
    v, ids = col.vectors(), col.ids()
    db = sqlite3.connect(store)
    rows = db.execute("SELECT id, embedding FROM items ORDER BY id").fetchall()
    want = np.stack([np.frombuffer(blob, "<f4") for _, blob in rows])
    assert v.dtype == np.float32 and v.shape == want.shape == (len(col), col.info()["dims"])
    assert np.array_equal(ids, [i for i, _ in rows]) and np.array_equal(v, want)
    assert not v.flags.writeable and not v.flags.owndata  # a view over the mapped segment
    with pytest.raises(ValueError):
        v[0, 0] = 1.0
    meta = col.metadata()
    assert len(meta) == len(ids) and all(m["label"] for m in meta)


def test_rows_ingested_through_the_collection_are_searched_and_in_vectors(fmnist, tmp_path):
    store, sdir, qdir = fmnist
    copy = str(tmp_path / "copy.db")
    cli("ingest", copy, str(sdir))
    col = nearlabel.open(copy)
    before = col.vectors()
    calls = []
    rep = col.ingest(qdir, progress=lambda done, total: calls.append((done, total)))
    assert rep["inserted"] == len(queries(qdir)) and calls and calls[-1][0] == calls[-1][1]
    assert len(col) == len(before) + rep["inserted"]
    assert col.vectors().shape[0] == len(col) and before.shape[0] == len(col) - rep["inserted"]
    hit = col.search(queries(qdir)[3], k=1)
    assert hit.neighbors[0].distance == pytest.approx(0, abs=1e-5)


def test_a_progress_callback_that_raises_stops_the_ingest_and_is_reraised(fmnist, tmp_path):
    _, sdir, _ = fmnist

    def stop(done, total):
        raise KeyboardInterrupt("stop here")

    with pytest.raises(KeyboardInterrupt):
        nearlabel.ingest(str(tmp_path / "s.db"), sdir, batch=8, progress=stop)
    # Committed batches stay: the same call resumes.
    rep = nearlabel.ingest(str(tmp_path / "s.db"), sdir, batch=8)
    assert rep["already_stored"] >= 8 and rep["inserted"] + rep["already_stored"] == rep["listed"]


def test_evaluate_gives_the_cli_figures_and_a_numpy_confusion_matrix(fmnist, tmp_path):
    store, _, qdir = fmnist
    col = nearlabel.open(store)
    loo = col.evaluate(k=1)
    want = cli("--json", "eval", store)
    assert (loo.n, loo.correct) == (want["n"], want["correct"])
    assert loo.classes == want["classes"] and loo.confusion.tolist() == want["confusion"]
    assert loo.confusion.sum() == loo.n and loo.confusion.dtype == np.int64
    held = col.evaluate(queries=qdir, k=5, vote="distance")
    labels = {r.image: r.label for r in col.classify(queries(qdir), k=5, vote="distance")}
    wrong = {p: l for p, l in labels.items() if l != os.path.basename(os.path.dirname(p))}
    assert held.n == len(labels) and held.correct == len(labels) - len(wrong)
    assert {m["source"]: m["predicted"] for m in held.mismatches} == wrong
    held.to_html(str(tmp_path / "r.html"))
    html = open(tmp_path / "r.html").read()
    assert "Mistakes (%d)" % len(wrong) in html and 'class="nothumb"' not in html


def test_errors_are_nearlabel_exceptions_with_the_cli_messages(fmnist, tmp_path):
    store, _, qdir = fmnist
    with pytest.raises(nearlabel.NotFoundError) as e:
        nearlabel.open(str(tmp_path / "missing.db"))
    assert isinstance(e.value, nearlabel.Error) and isinstance(e.value, LookupError)
    col = nearlabel.open(store)
    with pytest.raises(nearlabel.InvalidArgumentError) as e:
        col.classify(queries(qdir)[0], where="1); DELETE FROM items; --")
    assert isinstance(e.value, ValueError)
    with pytest.raises(nearlabel.InvalidArgumentError, match="uint8"):
        col.classify(np.zeros((8, 8, 3), np.float64))
    with pytest.raises(nearlabel.InvalidArgumentError, match="HxWx3"):
        col.classify(np.zeros((8, 8, 4), np.uint8))
    with pytest.raises(TypeError, match="expected a path, bytes"):
        col.classify(42)
    with pytest.raises(nearlabel.Error, match="not an image"):
        col.classify(b"not an image")
    kept = col.classify([queries(qdir)[0], b"not an image"], on_error="keep")
    assert kept[0].label and isinstance(kept[1], nearlabel.ImageError)
    assert "not an image" in kept[1].message and kept[1].image == "<bytes 1>"


def test_two_threads_classifying_at_once_give_the_answers_of_one(fmnist):
    store, _, qdir = fmnist
    col = nearlabel.open(store)
    paths = queries(qdir)
    alone = [(r.label, [n.id for n in r.neighbors]) for r in col.classify(paths)]
    out = [None, None]

    def work(i):
        out[i] = [(r.label, [n.id for n in r.neighbors]) for r in col.classify(paths)]

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert out[0] == alone and out[1] == alone


def test_embed_and_models(fmnist):
    _, _, qdir = fmnist
    paths = queries(qdir)[:3]
    v = nearlabel.embed(paths)
    assert v.shape == (3, 1280) and v.dtype == np.float32
    assert np.allclose(np.linalg.norm(v, axis=1), 1, atol=1e-5)
    assert np.array_equal(nearlabel.embed(rgb(paths[0])), v[0])
    names = [m["name"] for m in nearlabel.models()]
    assert "mobilenetv2-12-int8" in names


def test_help_teaches_and_every_public_name_has_a_docstring():
    assert "numpy" in nearlabel.__doc__ and "nearlabel.open" in nearlabel.__doc__
    for name in ["open", "ingest", "embed", "models"]:
        assert getattr(nearlabel, name).__doc__
    for name in ["classify", "search", "evaluate", "vectors", "ids", "metadata", "ingest"]:
        assert getattr(nearlabel.Collection, name).__doc__
