"""Baseline: a Flask + gensim service behaving like the original one.

``GET /api/v1/popular`` returns the 10 most ordered aids; ``GET /api/v1/recommendations/<aid>``
calls gensim ``KeyedVectors.most_similar(str(aid), topn=10)`` on every request and returns the
aids. Served by Flask's threaded development server, as the original was.
``python bench/baselines/flask_gensim.py MODEL_DIR --port 8002``
"""
from __future__ import annotations

import argparse
import logging
import sys

import numpy as np
from flask import Flask, abort, jsonify
from gensim.models import KeyedVectors


def build_app(model_dir: str) -> Flask:
    vectors = np.load(f"{model_dir}/vectors.npy", allow_pickle=False)
    aids = np.load(f"{model_dir}/aids.npy", allow_pickle=False)
    try:
        popular = np.load(f"{model_dir}/popular.npy", allow_pickle=False)[2, :10].tolist()
    except FileNotFoundError:
        popular = []
    kv = KeyedVectors(vector_size=vectors.shape[1])
    kv.add_vectors([str(a) for a in aids.tolist()], vectors)
    kv.fill_norms()
    app = Flask("flask_gensim")

    @app.route("/api/v1/popular")
    def get_popular():
        return jsonify(popular)

    @app.route("/api/v1/recommendations/<aid>")
    def get_recommendations(aid):
        if str(aid) not in kv.key_to_index:
            abort(404)
        return jsonify([int(k) for k, _ in kv.most_similar(str(aid), topn=10)])

    return app


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="Flask + gensim recommendation service (benchmark baseline).")
    p.add_argument("model_dir", help="model directory (vectors.npy, aids.npy, popular.npy)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind")
    p.add_argument("--port", type=int, default=8002, help="port")
    args = p.parse_args(argv)
    app = build_app(args.model_dir)
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    print(f"flask: listening on http://{args.host}:{args.port}", flush=True)
    app.run(host=args.host, port=args.port, threaded=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
