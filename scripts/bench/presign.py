"""Creates the benchmark bucket and objects, prints presigned URLs (one per line):
GET 4 KiB, GET 64 MiB, PUT (4 KiB body), PUT (64 MiB body).

Presigned URLs let wrk drive S3 without signing each request itself; the server
still verifies every signature."""
import os
import sys
import tomllib

import boto3
from botocore.config import Config

data_dir, endpoint = sys.argv[1], sys.argv[2]
creds = tomllib.load(open(os.path.join(data_dir, "credentials.toml"), "rb"))
s3 = boto3.client(
    "s3",
    endpoint_url=endpoint,
    aws_access_key_id=creds["access_key_id"],
    aws_secret_access_key=creds["secret_access_key"],
    region_name=creds["region"],
    config=Config(s3={"addressing_style": "path"}, signature_version="s3v4"),
)
s3.create_bucket(Bucket="bench")
s3.put_object(Bucket="bench", Key="small", Body=os.urandom(4096))
s3.put_object(Bucket="bench", Key="large", Body=os.urandom(64 << 20))
for method, key in [("get_object", "small"), ("get_object", "large"), ("put_object", "small-put"), ("put_object", "large-put")]:
    print(s3.generate_presigned_url(method, Params={"Bucket": "bench", "Key": key}, ExpiresIn=3600))
