"""S3 export: our whole export (stage, checksum, upload to a staging prefix, verify, publish, manifest)
vs a raw boto3 ``upload_file`` of the same files, against a local moto S3 server, side by side in one run.

The "model" is a directory of safetensors-sized random files plus small JSON files. Both sides use the
same client settings; each side's fastest of ``--repeat`` alternating runs counts.

    python benchmarks/export.py [--megabytes 512] [--files 4] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import socket
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--megabytes", type=int, default=512, help="total size of the weight files")
    parser.add_argument("--files", type=int, default=4, help="weight shards")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    from moto.server import ThreadedMotoServer

    from kubetune.s3 import client
    from kubetune.steps.export import export
    from kubetune.steps.publish import _transfer_config

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    os.environ.update(
        AWS_ENDPOINT_URL=f"http://127.0.0.1:{port}",
        AWS_ACCESS_KEY_ID="bench",
        AWS_SECRET_ACCESS_KEY="bench",
        AWS_DEFAULT_REGION="us-east-1",
    )
    try:
        with tempfile.TemporaryDirectory() as tmp:
            model = Path(tmp) / "model"
            model.mkdir()
            shard = args.megabytes * 2**20 // args.files
            for i in range(args.files):
                (model / f"model-{i:05d}-of-{args.files:05d}.safetensors").write_bytes(os.urandom(shard))
            (model / "config.json").write_text('{"model_type": "llama"}')
            size = sum(p.stat().st_size for p in model.iterdir())
            s3 = client()
            s3.create_bucket(Bucket="bench")
            best = {"kubetune export": float("inf"), "boto3 upload_file": float("inf")}
            for run in range(args.repeat):
                start = time.perf_counter()
                export(model, f"s3://bench/ours-{run}")
                best["kubetune export"] = min(best["kubetune export"], time.perf_counter() - start)
                start = time.perf_counter()
                for path in model.iterdir():
                    s3.upload_file(str(path), "bench", f"raw-{run}/{path.name}", Config=_transfer_config())
                best["boto3 upload_file"] = min(best["boto3 upload_file"], time.perf_counter() - start)
            print(f"{size / 1e6:,.0f} MB in {args.files + 1} files to a local moto S3 server")
            for name, seconds in best.items():
                print(f"{name:>18}: {seconds:6.2f} s  {size / 1e6 / seconds:8.1f} MB/s")
            ratio = best["boto3 upload_file"] / best["kubetune export"]
            print(f"ratio (fastest runs): kubetune export runs at {ratio:.2f}x the MB/s of a raw upload_file")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
