"""Uploads fixture stores to an S3-compatible server (moto in tests): s3_upload.py ENDPOINT BUCKET DIR...

Each DIR (a zarr directory) lands under its own name in BUCKET, key for key.
"""
import os
import sys

import boto3

endpoint, bucket, dirs = sys.argv[1], sys.argv[2], sys.argv[3:]
s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                  aws_access_key_id="annql", aws_secret_access_key="annql-secret")
s3.create_bucket(Bucket=bucket)
for d in dirs:
    base = os.path.basename(d.rstrip("/"))
    for root, _, files in os.walk(d):
        for f in files:
            path = os.path.join(root, f)
            key = base + "/" + os.path.relpath(path, d).replace(os.sep, "/")
            s3.upload_file(path, bucket, key)
print("uploaded", flush=True)
