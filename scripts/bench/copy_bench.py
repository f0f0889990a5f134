"""Times one CopyObject of a 256 MiB object (SSE-S3) through boto3 and prints
the wall time, for docs/performance.md ("CopyObject"). Not an assertion:
numbers depend on the machine.

    python scripts/bench/copy_bench.py DATA_DIR http://127.0.0.1:PORT"""
import os
import sys
import time
import tomllib

import boto3
from botocore.config import Config

data_dir, endpoint = sys.argv[1], sys.argv[2]
size = 256 << 20
creds = tomllib.load(open(os.path.join(data_dir, "credentials.toml"), "rb"))
s3 = boto3.client(
    "s3",
    endpoint_url=endpoint,
    aws_access_key_id=creds["access_key_id"],
    aws_secret_access_key=creds["secret_access_key"],
    region_name=creds["region"],
    config=Config(s3={"addressing_style": "path"}, signature_version="s3v4"),
)
s3.create_bucket(Bucket="copy-bench")
s3.put_object(Bucket="copy-bench", Key="source", Body=os.urandom(size))
for i in range(3):
    start = time.monotonic()
    s3.copy_object(Bucket="copy-bench", Key=f"copy-{i}", CopySource="copy-bench/source")
    print(f"CopyObject of 256 MiB, run {i + 1}: {time.monotonic() - start:.3f} s")
