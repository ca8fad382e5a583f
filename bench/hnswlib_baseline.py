#!/usr/bin/python3
"""Baseline for bench/search: Debian's python3-hnswlib on the same vectors, same parameters.

Usage: hnswlib_baseline.py DIR N D M EF_CONSTRUCTION K (started by bench/search, which writes
DIR/base.f32, DIR/queries.f32 and DIR/truth.i64). Builds the index, prints {"build_s": ...},
then answers each line "EF" on stdin with one timed pass over the queries,
{"ef": .., "recall": .., "qps": ..}, so bench/search can alternate its passes with ours.
"""
import json
import sys
import time

import hnswlib
import numpy as np


def main():
    folder, n, d, m, efc, k = sys.argv[1], *map(int, sys.argv[2:7])
    base = np.fromfile(folder + "/base.f32", dtype=np.float32).reshape(n, d)
    queries = np.fromfile(folder + "/queries.f32", dtype=np.float32).reshape(-1, d)
    truth = np.fromfile(folder + "/truth.i64", dtype=np.int64).reshape(len(queries), k)
    index = hnswlib.Index(space="ip", dim=d)
    index.init_index(max_elements=n, M=m, ef_construction=efc, random_seed=100)
    index.set_num_threads(2)
    t = time.perf_counter()
    index.add_items(base, np.arange(n))
    print(json.dumps({"build_s": time.perf_counter() - t}), flush=True)
    index.set_num_threads(1)
    for line in sys.stdin:
        ef = int(line)
        index.set_ef(max(ef, k))
        t = time.perf_counter()
        labels = [index.knn_query(q, k=k)[0][0] for q in queries]  # one query at a time
        seconds = time.perf_counter() - t
        hits = sum(len(set(l.tolist()) & set(tr.tolist())) for l, tr in zip(labels, truth))
        print(json.dumps({"ef": ef, "recall": hits / truth.size, "qps": len(queries) / seconds}),
              flush=True)


if __name__ == "__main__":
    main()
