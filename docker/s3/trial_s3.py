"""moto's S3 server on 0.0.0.0:5000 with the trial bucket (E2I_S3_BUCKET) created at start."""

import os
import threading

import boto3
from moto.server import ThreadedMotoServer

PORT = int(os.environ.get("E2I_S3_PORT", "5000"))


def main() -> None:
    server = ThreadedMotoServer(ip_address="0.0.0.0", port=PORT, verbose=False)  # noqa: S104 - the stack's internal networks only
    server.start()
    # moto accepts any key; boto3 only needs one to sign (the store itself holds no secret).
    client = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{PORT}",
                          region_name=os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
                          aws_access_key_id="trial", aws_secret_access_key="trial")  # noqa: S106
    for bucket in os.environ.get("E2I_S3_BUCKET", "e2i").split(","):
        client.create_bucket(Bucket=bucket.strip())
    print(f"trial S3 on port {PORT}, buckets: {os.environ.get('E2I_S3_BUCKET', 'e2i')}", flush=True)  # noqa: T201
    threading.Event().wait()


if __name__ == "__main__":
    main()
