"""Client-compatibility tests: real S3 clients against a real `nuage serve`.

Each test owns its buckets (random suffix) and cleans nothing up on failure on
purpose: the server's data dir is a temp dir that goes away with the session,
and a failed test's leftovers help whoever reads the server log.

The clients and what each exercises:
- aws CLI v1 `s3`: high-level transfers (s3transfer multipart, sync, ls).
- aws CLI v1 `s3api`: one request at a time (checksums, listing, multipart,
  ranges, presigned URLs).
- boto3: pagination, batch delete, versioning, virtual-host addressing.
- rclone (aws-sdk-go): tree copy, hash check, presigned single-part PUT.
- s3cmd: its own SigV4 implementation and multipart code.
- curl: anonymous access, errors, its own `--aws-sigv4` signer.
"""

from __future__ import annotations

import base64
import concurrent.futures
import hashlib
import json
import os
import random
import re
import socket
import time
import xml.etree.ElementTree as ElementTree
import zlib
from pathlib import Path

import pytest

from conftest import Server, run, require_tool, unique_bucket, _isolated_env

MIB = 1024 * 1024
BIG_FILE_BYTES = 100 * MIB
# s3transfer's default multipart_threshold and multipart_chunksize are both
# 8 MiB, so `aws s3 cp` of BIG_FILE_BYTES uploads ceil(100 / 8) = 13 parts.
AWS_CLI_DEFAULT_CHUNK_BYTES = 8 * MIB
S3_MIN_PART_BYTES = 5 * MIB
# How long a presigned URL with a 1 s expiry may keep working before we call
# it a bug. SigV4 dates have 1 s granularity, so expiry lands within ~2 s of
# signing; 15 s leaves room for a loaded CI machine.
PRESIGN_EXPIRY_DEADLINE_S = 15.0
PRESIGN_POLL_INTERVAL_S = 0.2
S3_NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"
# curl 7.88's --aws-sigv4 neither sends x-amz-content-sha256 (which S3 requires
# on header-signed requests) nor reads it: it always signs the hash of the
# body. For a body-less GET we send the hash of the empty string ourselves,
# which makes the header and the signature agree (checked against botocore).
EMPTY_SHA256_HEX = hashlib.sha256(b"").hexdigest()


# --- shared local data --------------------------------------------------------


def write_random_file(path: Path, size_bytes: int, seed: int | None = None) -> Path:
    """Incompressible content; with a seed, reproducible."""
    rng = random.Random(seed) if seed is not None else None
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        remaining = size_bytes
        while remaining:
            step = min(remaining, MIB)
            handle.write(rng.randbytes(step) if rng else os.urandom(step))
            remaining -= step
    return path


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(MIB), b""):
            digest.update(block)
    return digest.hexdigest()


def multipart_etag(path: Path, part_bytes: int) -> str:
    """The ETag S3 gives an object uploaded in `part_bytes` parts: md5(md5s)-N."""
    digests = []
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(part_bytes), b""):
            digests.append(hashlib.md5(block).digest())
    return f'"{hashlib.md5(b"".join(digests)).hexdigest()}-{len(digests)}"'


@pytest.fixture(scope="session")
def big_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One 100 MiB random file shared read-only by the large-transfer tests."""
    return write_random_file(tmp_path_factory.mktemp("big") / "big.bin", BIG_FILE_BYTES)


# Names chosen to trip SigV4 canonicalisation and listing code: spaces, '+',
# non-ASCII, an empty file, nesting four levels deep.
TREE_SPECIAL_NAMES = ["with space.txt", "plus+sign.txt", "unicodé-ü.txt", "empty.txt"]


def make_tree(root: Path, seed: int) -> dict[str, str]:
    """Create 50 files under `root`; return {relative posix path: sha256}."""
    rng = random.Random(seed)
    layout = {
        "": 5,
        "alpha": 10,
        "alpha/beta": 10,
        "alpha/beta/gamma": 10,
        "delta": 11,  # plus TREE_SPECIAL_NAMES: 50 files in all
    }
    files: dict[str, str] = {}
    for directory, count in layout.items():
        for index in range(count):
            relative = f"{directory}/file-{index:02d}.dat" if directory else f"file-{index:02d}.dat"
            files[relative] = ""
    for name in TREE_SPECIAL_NAMES:
        files[f"delta/{name}"] = ""
    assert len(files) == 50, len(files)
    for relative in files:
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        if relative.endswith("empty.txt"):
            size = 0
        elif relative == "alpha/beta/file-00.dat":
            size = MIB + 17  # one file bigger than a typical read buffer
        else:
            size = rng.randint(1, 64 * 1024)
        path.write_bytes(rng.randbytes(size))
        files[relative] = file_sha256(path)
    return files


def tree_hashes(root: Path) -> dict[str, str]:
    return {
        path.relative_to(root).as_posix(): file_sha256(path)
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


# --- client wrappers ----------------------------------------------------------


class AwsCli:
    def __init__(self, server: Server, env: dict):
        require_tool("aws")
        self.server = server
        self.env = env

    def __call__(self, *args: str, check: bool = True):
        if args[:1] == ("s3",) and args[1:2] and args[1] in ("cp", "mv", "sync"):
            args = (*args[:2], "--no-progress", *args[2:])
        return run(["aws", "--endpoint-url", self.server.endpoint, *args], self.env, check=check)

    def api(self, operation: str, *args: str) -> dict:
        result = self("s3api", operation, "--output", "json", *args)
        return json.loads(result.stdout) if result.stdout.strip() else {}

    def api_error(self, operation: str, *args: str):
        """Run an s3api call that must fail; return the CLI result."""
        result = self("s3api", operation, "--output", "json", *args, check=False)
        assert result.returncode != 0, "expected an error:\n" + result.describe()
        return result


@pytest.fixture
def aws(server: Server, aws_env: dict) -> AwsCli:
    return AwsCli(server, aws_env)


def curl_get(url: str, out: Path, *extra: str, method: str = "GET") -> int:
    """Fetch `url` with curl into `out`; return the HTTP status code."""
    require_tool("curl")
    result = run(
        ["curl", "-sS", "--noproxy", "*", "-X", method, "-o", str(out), "-w", "%{http_code}",
         "--max-time", "60", *extra, url],
        {**os.environ},
    )
    return int(result.stdout.strip())


def curl_sigv4_args(region: str) -> list[str]:
    """curl options to sign a body-less request with SigV4 (see EMPTY_SHA256_HEX)."""
    return ["--aws-sigv4", f"aws:amz:{region}:s3", "-H", f"x-amz-content-sha256: {EMPTY_SHA256_HEX}"]


def s3_error(body: bytes) -> dict[str, str]:
    """Parse an S3 XML error body into {child tag: text}."""
    root = ElementTree.fromstring(body)
    tag = root.tag.removeprefix(S3_NS)
    assert tag == "Error", f"error body root is <{tag}>, not <Error>: {body!r}"
    return {child.tag.removeprefix(S3_NS): (child.text or "") for child in root}


def boto3_client(endpoint: str, server: Server, *, region: str | None = None,
                 addressing_style: str = "path"):
    import boto3
    from botocore.config import Config

    return boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=server.access_key_id,
        aws_secret_access_key=server.secret_access_key,
        region_name=region or server.region,
        # No retries: a retried 5xx would hide a server bug from the test.
        config=Config(
            s3={"addressing_style": addressing_style},
            retries={"mode": "standard", "max_attempts": 1},
            max_pool_connections=16,
        ),
    )


@pytest.fixture
def s3(server: Server, monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    # Keep the developer's ~/.aws out of the in-process client.
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "aws-config-absent"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "aws-credentials-absent"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    return boto3_client(server.endpoint, server)


def create_bucket(client, bucket: str) -> None:
    """CreateBucket as AWS documents it: outside us-east-1, name the region."""
    region = client.meta.region_name
    if region == "us-east-1":
        client.create_bucket(Bucket=bucket)
    else:
        client.create_bucket(
            Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": region}
        )


def client_error_code(excinfo) -> tuple[str, int]:
    response = excinfo.value.response
    return response["Error"]["Code"], response["ResponseMetadata"]["HTTPStatusCode"]


# --- server contract ----------------------------------------------------------


def test_credentials_file_is_private_and_complete(server: Server):
    mode = server.credentials_path.stat().st_mode & 0o777
    assert mode == 0o600, f"credentials.toml has mode {mode:o}, want 600"
    assert server.region == "fr-par"
    assert server.access_key_id and server.secret_access_key
    assert server.access_key_id != server.secret_access_key


# --- aws CLI: s3 --------------------------------------------------------------


def test_aws_s3_small_object_roundtrip(aws: AwsCli, tmp_path: Path):
    bucket = unique_bucket("cli-small")
    source = write_random_file(tmp_path / "small.bin", 4321)
    fetched = tmp_path / "fetched.bin"

    aws("s3", "mb", f"s3://{bucket}")
    listing = aws("s3", "ls").stdout
    assert any(line.split()[-1] == bucket for line in listing.splitlines()), listing

    aws("s3", "cp", str(source), f"s3://{bucket}/dir/small.bin")
    aws("s3", "cp", f"s3://{bucket}/dir/small.bin", str(fetched))
    assert fetched.read_bytes() == source.read_bytes()

    lines = aws("s3", "ls", f"s3://{bucket}/dir/").stdout.splitlines()
    assert len(lines) == 1, lines
    assert lines[0].split()[2:] == ["4321", "small.bin"], lines

    # A bucket with an object in it cannot be removed.
    refused = aws("s3", "rb", f"s3://{bucket}", check=False)
    assert refused.returncode != 0 and "BucketNotEmpty" in refused.stderr, refused.describe()

    aws("s3", "rm", f"s3://{bucket}/dir/small.bin")
    assert aws("s3", "ls", f"s3://{bucket}", "--recursive").stdout.strip() == ""
    aws("s3", "rb", f"s3://{bucket}")
    gone = aws("s3", "ls", f"s3://{bucket}", check=False)
    assert gone.returncode != 0 and "NoSuchBucket" in gone.stderr, gone.describe()


def test_aws_s3_cp_100mib_multipart(aws: AwsCli, big_file: Path, tmp_path: Path):
    bucket = unique_bucket("cli-big")
    aws("s3", "mb", f"s3://{bucket}")
    aws("s3", "cp", str(big_file), f"s3://{bucket}/big.bin")

    head = aws.api("head-object", "--bucket", bucket, "--key", "big.bin")
    assert head["ContentLength"] == BIG_FILE_BYTES
    # The ETag proves the CLI went multipart (13 parts of 8 MiB) and that the
    # server assembled the parts in order.
    assert head["ETag"] == multipart_etag(big_file, AWS_CLI_DEFAULT_CHUNK_BYTES), head

    fetched = tmp_path / "big.fetched"
    aws("s3", "cp", f"s3://{bucket}/big.bin", str(fetched))
    assert fetched.stat().st_size == BIG_FILE_BYTES
    assert file_sha256(fetched) == file_sha256(big_file)


def test_aws_s3_sync_tree_and_ls(aws: AwsCli, tmp_path: Path):
    bucket = unique_bucket("cli-sync")
    local = tmp_path / "up"
    expected = make_tree(local, seed=1)
    # Local files older than any upload, so the second sync below has nothing
    # to do unless the server reports a wrong size or LastModified (sync
    # re-uploads when the local file looks newer than the object).
    a_day_ago = time.time() - 86_400
    for path in local.rglob("*"):
        os.utime(path, (a_day_ago, a_day_ago))
    aws("s3", "mb", f"s3://{bucket}")

    upload = aws("s3", "sync", str(local), f"s3://{bucket}/tree").stdout
    assert upload.count("upload:") == 50, upload

    # --recursive lists every key with its size.
    recursive = aws("s3", "ls", "--recursive", f"s3://{bucket}/").stdout.splitlines()
    listed = {}
    for line in recursive:
        _date, _time, size, key = line.split(maxsplit=3)
        listed[key] = int(size)
    assert set(listed) == {f"tree/{name}" for name in expected}
    for name in expected:
        assert listed[f"tree/{name}"] == (local / name).stat().st_size, name

    # Without --recursive: one level, directories as PRE entries.
    top = aws("s3", "ls", f"s3://{bucket}/tree/").stdout.splitlines()
    prefixes = sorted(line.split()[1] for line in top if line.split()[0] == "PRE")
    files = sorted(line.split(maxsplit=3)[3] for line in top if line.split()[0] != "PRE")
    assert prefixes == ["alpha/", "delta/"], top
    assert files == [f"file-{i:02d}.dat" for i in range(5)], top

    nested = aws("s3", "ls", f"s3://{bucket}/tree/alpha/beta/").stdout.splitlines()
    assert [line.split()[1] for line in nested if line.split()[0] == "PRE"] == ["gamma/"], nested
    assert len([line for line in nested if line.split()[0] != "PRE"]) == 10, nested

    # A second sync has nothing to do: sizes and LastModified must round-trip.
    again = aws("s3", "sync", str(local), f"s3://{bucket}/tree").stdout
    assert "upload:" not in again, again

    down = tmp_path / "down"
    aws("s3", "sync", f"s3://{bucket}/tree", str(down))
    assert tree_hashes(down) == expected

    aws("s3", "rm", "--recursive", f"s3://{bucket}/")
    aws("s3", "rb", f"s3://{bucket}")


# --- aws CLI: s3api -----------------------------------------------------------


@pytest.mark.parametrize(
    "algorithm, field, local_checksum",
    [
        ("SHA256", "ChecksumSHA256", lambda data: hashlib.sha256(data).digest()),
        ("CRC32", "ChecksumCRC32", lambda data: zlib.crc32(data).to_bytes(4, "big")),
    ],
)
def test_s3api_put_object_checksum(aws: AwsCli, tmp_path: Path, algorithm, field, local_checksum):
    bucket = unique_bucket(f"api-ck-{algorithm.lower()}")
    body = write_random_file(tmp_path / "body.bin", 70_000)
    want = base64.b64encode(local_checksum(body.read_bytes())).decode()
    aws("s3", "mb", f"s3://{bucket}")

    put = aws.api("put-object", "--bucket", bucket, "--key", "obj", "--body", str(body),
                  "--checksum-algorithm", algorithm)
    assert put.get(field) == want, put

    head = aws.api("head-object", "--bucket", bucket, "--key", "obj", "--checksum-mode", "ENABLED")
    assert head.get(field) == want, head
    assert head["ContentLength"] == 70_000


def test_s3api_rejects_wrong_checksum_and_stores_nothing(aws: AwsCli, tmp_path: Path):
    bucket = unique_bucket("api-badck")
    body = write_random_file(tmp_path / "body.bin", 10_000)
    wrong_sha256 = base64.b64encode(hashlib.sha256(b"something else").digest()).decode()
    wrong_md5 = base64.b64encode(hashlib.md5(b"something else").digest()).decode()
    aws("s3", "mb", f"s3://{bucket}")

    bad = aws.api_error("put-object", "--bucket", bucket, "--key", "sha", "--body", str(body),
                        "--checksum-sha256", wrong_sha256)
    assert re.search(r"BadDigest|XAmzContentChecksumMismatch", bad.stderr), bad.describe()

    bad = aws.api_error("put-object", "--bucket", bucket, "--key", "md5", "--body", str(body),
                        "--content-md5", wrong_md5)
    assert "BadDigest" in bad.stderr, bad.describe()

    for key in ("sha", "md5"):
        missing = aws.api_error("head-object", "--bucket", bucket, "--key", key)
        assert "404" in missing.stderr, missing.describe()


def test_s3api_list_objects_v2_delimiter_and_prefix(aws: AwsCli, tmp_path: Path):
    bucket = unique_bucket("api-list")
    body = write_random_file(tmp_path / "b", 10)
    aws("s3", "mb", f"s3://{bucket}")
    for key in ["a/1", "a/2", "b/c/3", "b/d", "top.txt"]:
        aws.api("put-object", "--bucket", bucket, "--key", key, "--body", str(body))

    root = aws.api("list-objects-v2", "--bucket", bucket, "--delimiter", "/")
    assert [p["Prefix"] for p in root.get("CommonPrefixes", [])] == ["a/", "b/"], root
    assert [o["Key"] for o in root.get("Contents", [])] == ["top.txt"], root

    under_b = aws.api("list-objects-v2", "--bucket", bucket, "--delimiter", "/", "--prefix", "b/")
    assert [p["Prefix"] for p in under_b.get("CommonPrefixes", [])] == ["b/c/"], under_b
    assert [o["Key"] for o in under_b.get("Contents", [])] == ["b/d"], under_b

    under_a = aws.api("list-objects-v2", "--bucket", bucket, "--prefix", "a/")
    assert [o["Key"] for o in under_a.get("Contents", [])] == ["a/1", "a/2"], under_a
    assert "CommonPrefixes" not in under_a, under_a
    assert all(o["Size"] == 10 for o in under_a["Contents"]), under_a

    nothing = aws.api("list-objects-v2", "--bucket", bucket, "--prefix", "zzz")
    assert "Contents" not in nothing or nothing["Contents"] == [], nothing


def test_s3api_multipart_upload(aws: AwsCli, tmp_path: Path):
    bucket = unique_bucket("api-mpu")
    part1 = write_random_file(tmp_path / "p1", S3_MIN_PART_BYTES)
    part2 = write_random_file(tmp_path / "p2", MIB + 3)
    aws("s3", "mb", f"s3://{bucket}")

    upload_id = aws.api("create-multipart-upload", "--bucket", bucket, "--key", "mp")["UploadId"]
    assert upload_id
    in_progress = aws.api("list-multipart-uploads", "--bucket", bucket)
    assert [u["UploadId"] for u in in_progress.get("Uploads", [])] == [upload_id], in_progress

    etags = []
    for number, part in ((1, part1), (2, part2)):
        result = aws.api("upload-part", "--bucket", bucket, "--key", "mp", "--upload-id", upload_id,
                         "--part-number", str(number), "--body", str(part))
        assert result["ETag"] == f'"{hashlib.md5(part.read_bytes()).hexdigest()}"', result
        etags.append(result["ETag"])

    parts = aws.api("list-parts", "--bucket", bucket, "--key", "mp", "--upload-id", upload_id)
    assert [(p["PartNumber"], p["Size"], p["ETag"]) for p in parts["Parts"]] == [
        (1, S3_MIN_PART_BYTES, etags[0]),
        (2, MIB + 3, etags[1]),
    ], parts

    manifest = tmp_path / "parts.json"
    manifest.write_text(json.dumps(
        {"Parts": [{"ETag": etag, "PartNumber": n} for n, etag in enumerate(etags, start=1)]}
    ))
    done = aws.api("complete-multipart-upload", "--bucket", bucket, "--key", "mp",
                   "--upload-id", upload_id, "--multipart-upload", f"file://{manifest}")
    want_etag = hashlib.md5(b"".join(bytes.fromhex(e.strip('"')) for e in etags)).hexdigest()
    assert done["ETag"] == f'"{want_etag}-2"', done

    head = aws.api("head-object", "--bucket", bucket, "--key", "mp")
    assert head["ETag"].endswith('-2"') and head["ETag"] == done["ETag"], head
    assert head["ContentLength"] == S3_MIN_PART_BYTES + MIB + 3

    fetched = tmp_path / "mp.out"
    aws.api("get-object", "--bucket", bucket, "--key", "mp", str(fetched))
    assert fetched.read_bytes() == part1.read_bytes() + part2.read_bytes()

    left = aws.api("list-multipart-uploads", "--bucket", bucket)
    assert not left.get("Uploads"), left

    # An aborted upload leaves no object and no upload behind.
    aborted_id = aws.api("create-multipart-upload", "--bucket", bucket, "--key", "gone")["UploadId"]
    aws.api("upload-part", "--bucket", bucket, "--key", "gone", "--upload-id", aborted_id,
            "--part-number", "1", "--body", str(part2))
    aws.api("abort-multipart-upload", "--bucket", bucket, "--key", "gone", "--upload-id", aborted_id)
    assert not aws.api("list-multipart-uploads", "--bucket", bucket).get("Uploads")
    missing = aws.api_error("head-object", "--bucket", bucket, "--key", "gone")
    assert "404" in missing.stderr, missing.describe()


def test_s3api_get_object_range(aws: AwsCli, tmp_path: Path):
    bucket = unique_bucket("api-range")
    source = write_random_file(tmp_path / "src", 1000)
    data = source.read_bytes()
    aws("s3", "mb", f"s3://{bucket}")
    aws.api("put-object", "--bucket", bucket, "--key", "r", "--body", str(source))

    cases = [("bytes=100-199", 100, 199), ("bytes=-10", 990, 999), ("bytes=995-", 995, 999),
             ("bytes=900-5000", 900, 999)]
    for spec, first, last in cases:
        out = tmp_path / f"range-{first}"
        meta = aws.api("get-object", "--bucket", bucket, "--key", "r", "--range", spec, str(out))
        assert out.read_bytes() == data[first:last + 1], spec
        assert meta["ContentLength"] == last - first + 1, (spec, meta)
        assert meta["ContentRange"] == f"bytes {first}-{last}/1000", (spec, meta)

    unsatisfiable = aws.api_error("get-object", "--bucket", bucket, "--key", "r",
                                  "--range", "bytes=2000-3000", str(tmp_path / "none"))
    assert "InvalidRange" in unsatisfiable.stderr, unsatisfiable.describe()


def test_presigned_url_get_and_expiry(aws: AwsCli, tmp_path: Path):
    bucket = unique_bucket("api-presign")
    source = write_random_file(tmp_path / "src", 33_333)
    aws("s3", "mb", f"s3://{bucket}")
    aws("s3", "cp", str(source), f"s3://{bucket}/shared.bin")

    url = aws("s3", "presign", f"s3://{bucket}/shared.bin", "--expires-in", "600").stdout.strip()
    assert "X-Amz-Signature=" in url, url
    out = tmp_path / "fetched"
    assert curl_get(url, out) == 200, out.read_bytes()[:2000]
    assert out.read_bytes() == source.read_bytes()

    # A tampered signature is refused.
    signature = re.search(r"X-Amz-Signature=([0-9a-f]+)", url).group(1)
    flipped = signature[:-1] + ("0" if signature[-1] != "0" else "1")
    tampered = url.replace(signature, flipped)
    denied = tmp_path / "denied"
    assert curl_get(tampered, denied) == 403, denied.read_bytes()[:2000]
    assert s3_error(denied.read_bytes())["Code"] == "SignatureDoesNotMatch"

    # A URL that expires after 1 s stops working; poll for it rather than sleep.
    short = aws("s3", "presign", f"s3://{bucket}/shared.bin", "--expires-in", "1").stdout.strip()
    deadline = time.monotonic() + PRESIGN_EXPIRY_DEADLINE_S
    expired = tmp_path / "expired"
    while True:
        status = curl_get(short, expired)
        if status == 403:
            break
        assert status == 200, (status, expired.read_bytes()[:2000])
        assert time.monotonic() < deadline, "presigned URL still valid long after its 1 s expiry"
        time.sleep(PRESIGN_POLL_INTERVAL_S)
    assert s3_error(expired.read_bytes())["Code"] == "AccessDenied", expired.read_bytes()


# --- boto3 --------------------------------------------------------------------


def test_boto3_put_get_and_errors(s3, server: Server):
    from botocore.exceptions import ClientError

    bucket = unique_bucket("boto-basic")
    create_bucket(s3, bucket)
    body = os.urandom(12_345)
    put = s3.put_object(Bucket=bucket, Key="k", Body=body, ContentType="application/x-test",
                        Metadata={"colour": "bleu"})
    assert put["ETag"] == f'"{hashlib.md5(body).hexdigest()}"'

    got = s3.get_object(Bucket=bucket, Key="k")
    assert got["Body"].read() == body
    assert got["ContentType"] == "application/x-test"
    assert got["Metadata"] == {"colour": "bleu"}
    assert got["ETag"] == put["ETag"]

    with pytest.raises(ClientError) as missing_key:
        s3.get_object(Bucket=bucket, Key="absent")
    assert client_error_code(missing_key) == ("NoSuchKey", 404)

    with pytest.raises(ClientError) as missing_bucket:
        s3.get_object(Bucket=unique_bucket("nope"), Key="k")
    assert client_error_code(missing_bucket) == ("NoSuchBucket", 404)

    with pytest.raises(ClientError) as taken:
        create_bucket(s3, bucket)
    assert client_error_code(taken)[0] in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists")

    # The contract says clients may sign for us-east-1 as well as fr-par.
    east = boto3_client(server.endpoint, server, region="us-east-1")
    assert east.get_object(Bucket=bucket, Key="k")["Body"].read() == body
    assert bucket in [b["Name"] for b in east.list_buckets()["Buckets"]]


def test_boto3_paginate_1050_keys_and_batch_delete(s3):
    bucket = unique_bucket("boto-page")
    create_bucket(s3, bucket)
    # Unpadded numbers, so lexicographic order differs from insertion order;
    # uploaded in shuffled order so the server must really sort.
    keys = [f"obj/{i}" for i in range(1050)] + ["obj/é-unicode", "obj/Z-upper", "obj/a b"]
    shuffled = keys[:]
    random.Random(7).shuffle(shuffled)
    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda k: s3.put_object(Bucket=bucket, Key=k, Body=k.encode()), shuffled))
    expected = sorted(keys, key=lambda k: k.encode())
    total = len(expected)

    v2 = s3.get_paginator("list_objects_v2")
    pages = list(v2.paginate(Bucket=bucket))
    assert [p["KeyCount"] for p in pages] == [1000, total - 1000]
    assert [p["IsTruncated"] for p in pages] == [True, False]
    assert [o["Key"] for p in pages for o in p["Contents"]] == expected

    pages = list(v2.paginate(Bucket=bucket, PaginationConfig={"PageSize": 100}))
    assert [len(p["Contents"]) for p in pages] == [100] * 10 + [total - 1000]
    assert [o["Key"] for p in pages for o in p["Contents"]] == expected

    after = s3.list_objects_v2(Bucket=bucket, StartAfter=expected[499], MaxKeys=3)
    assert [o["Key"] for o in after["Contents"]] == expected[500:503]

    v1 = s3.get_paginator("list_objects")
    pages = list(v1.paginate(Bucket=bucket, PaginationConfig={"PageSize": 300}))
    assert [len(p["Contents"]) for p in pages] == [300, 300, 300, total - 900]
    assert [o["Key"] for p in pages for o in p["Contents"]] == expected

    first = s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in expected[:1000]]})
    assert not first.get("Errors"), first.get("Errors")
    assert sorted(d["Key"] for d in first["Deleted"]) == sorted(expected[:1000])

    # Quiet mode reports only errors; deleting an absent key is not an error.
    rest = [{"Key": k} for k in expected[1000:]] + [{"Key": "never-existed"}]
    second = s3.delete_objects(Bucket=bucket, Delete={"Objects": rest, "Quiet": True})
    assert not second.get("Errors"), second.get("Errors")
    assert not second.get("Deleted"), second.get("Deleted")

    assert s3.list_objects_v2(Bucket=bucket)["KeyCount"] == 0
    s3.delete_bucket(Bucket=bucket)


def test_boto3_versioning(s3):
    from botocore.exceptions import ClientError

    bucket = unique_bucket("boto-ver")
    create_bucket(s3, bucket)
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    assert s3.get_bucket_versioning(Bucket=bucket).get("Status") == "Enabled"

    first = s3.put_object(Bucket=bucket, Key="doc", Body=b"version one")
    second = s3.put_object(Bucket=bucket, Key="doc", Body=b"version two!")
    v1, v2 = first.get("VersionId"), second.get("VersionId")
    assert v1 and v2 and v1 != v2 and "null" not in (v1, v2), (first, second)

    listing = s3.list_object_versions(Bucket=bucket, Prefix="doc")
    versions = listing.get("Versions", [])
    assert [(v["VersionId"], v["IsLatest"]) for v in versions] == [(v2, True), (v1, False)], versions
    assert [v["Size"] for v in versions] == [12, 11]

    assert s3.get_object(Bucket=bucket, Key="doc")["Body"].read() == b"version two!"
    old = s3.get_object(Bucket=bucket, Key="doc", VersionId=v1)
    assert old["Body"].read() == b"version one" and old["VersionId"] == v1

    deleted = s3.delete_object(Bucket=bucket, Key="doc")
    assert deleted.get("DeleteMarker") is True, deleted
    marker = deleted.get("VersionId")
    assert marker and marker not in (v1, v2), deleted

    with pytest.raises(ClientError) as hidden:
        s3.get_object(Bucket=bucket, Key="doc")
    assert client_error_code(hidden) == ("NoSuchKey", 404)
    assert s3.list_objects_v2(Bucket=bucket)["KeyCount"] == 0

    listing = s3.list_object_versions(Bucket=bucket, Prefix="doc")
    assert [(m["VersionId"], m["IsLatest"]) for m in listing.get("DeleteMarkers", [])] == [(marker, True)]
    assert sorted(v["VersionId"] for v in listing.get("Versions", [])) == sorted([v1, v2])
    assert not any(v["IsLatest"] for v in listing["Versions"])

    # Older versions stay readable; removing the marker brings the object back.
    assert s3.get_object(Bucket=bucket, Key="doc", VersionId=v1)["Body"].read() == b"version one"
    s3.delete_object(Bucket=bucket, Key="doc", VersionId=marker)
    assert s3.get_object(Bucket=bucket, Key="doc")["Body"].read() == b"version two!"

    # Deleting a specific version removes it for good.
    s3.delete_object(Bucket=bucket, Key="doc", VersionId=v1)
    with pytest.raises(ClientError) as purged:
        s3.get_object(Bucket=bucket, Key="doc", VersionId=v1)
    assert client_error_code(purged)[1] == 404
    remaining = s3.list_object_versions(Bucket=bucket, Prefix="doc").get("Versions", [])
    assert [v["VersionId"] for v in remaining] == [v2]


def test_boto3_virtual_host_addressing(vhost_server: Server, monkeypatch: pytest.MonkeyPatch,
                                       tmp_path: Path):
    # glibc here does not resolve *.localhost (RFC 6761 says it should be
    # loopback); map those names to 127.0.0.1 for this test only, so the
    # request still goes out with Host: BUCKET.localhost:PORT.
    real_getaddrinfo = socket.getaddrinfo

    def loopback_localhost(host, *args, **kwargs):
        if isinstance(host, str) and (host == "localhost" or host.endswith(".localhost")):
            host = "127.0.0.1"
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", loopback_localhost)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "aws-config-absent"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "aws-credentials-absent"))

    sent_hosts: list[str] = []
    endpoint = f"http://localhost:{vhost_server.port}"
    client = boto3_client(endpoint, vhost_server, addressing_style="virtual")
    client.meta.events.register(
        "before-send.s3", lambda request, **_: sent_hosts.append(request.url)
    )

    bucket = unique_bucket("vhost")
    create_bucket(client, bucket)
    client.put_object(Bucket=bucket, Key="dir/key.txt", Body=b"hello vhost")
    assert client.get_object(Bucket=bucket, Key="dir/key.txt")["Body"].read() == b"hello vhost"
    assert [o["Key"] for o in client.list_objects_v2(Bucket=bucket)["Contents"]] == ["dir/key.txt"]
    assert sent_hosts and all(
        url.startswith(f"http://{bucket}.localhost:{vhost_server.port}/") for url in sent_hosts
    ), sent_hosts

    # Path style keeps working on the same server.
    path_client = boto3_client(endpoint, vhost_server, addressing_style="path")
    assert path_client.get_object(Bucket=bucket, Key="dir/key.txt")["Body"].read() == b"hello vhost"

    # And curl, which resolves *.localhost to loopback itself, signing with SigV4.
    out = tmp_path / "curl.out"
    status = curl_get(
        f"http://{bucket}.localhost:{vhost_server.port}/dir/key.txt", out,
        *curl_sigv4_args(vhost_server.region),
        "--user", f"{vhost_server.access_key_id}:{vhost_server.secret_access_key}",
    )
    assert status == 200, out.read_bytes()[:2000]
    assert out.read_bytes() == b"hello vhost"


# --- rclone -------------------------------------------------------------------


@pytest.fixture
def rclone_env(server: Server, client_home: Path) -> dict:
    require_tool("rclone")
    env = _isolated_env(client_home)
    config = client_home / "rclone.conf"
    config.write_text("")
    env.update(
        RCLONE_CONFIG=str(config),
        RCLONE_CONFIG_NUAGE_TYPE="s3",
        RCLONE_CONFIG_NUAGE_PROVIDER="Other",
        RCLONE_CONFIG_NUAGE_ENV_AUTH="false",
        RCLONE_CONFIG_NUAGE_ENDPOINT=server.endpoint,
        RCLONE_CONFIG_NUAGE_ACCESS_KEY_ID=server.access_key_id,
        RCLONE_CONFIG_NUAGE_SECRET_ACCESS_KEY=server.secret_access_key,
        RCLONE_CONFIG_NUAGE_REGION=server.region,
        # A retried failure would hide a server bug.
        RCLONE_RETRIES="1",
        RCLONE_LOW_LEVEL_RETRIES="1",
    )
    return env


def test_rclone_tree_copy_lsf_check(rclone_env: dict, tmp_path: Path):
    bucket = unique_bucket("rclone-tree")
    local = tmp_path / "tree"
    expected = make_tree(local, seed=2)
    run(["rclone", "mkdir", f"nuage:{bucket}"], rclone_env)
    run(["rclone", "copy", str(local), f"nuage:{bucket}/tree"], rclone_env)

    listed = run(["rclone", "lsf", "-R", "--files-only", f"nuage:{bucket}/tree"], rclone_env)
    assert sorted(listed.stdout.splitlines()) == sorted(expected)

    top = run(["rclone", "lsf", f"nuage:{bucket}/tree"], rclone_env).stdout.splitlines()
    assert sorted(top) == ["alpha/", "delta/"] + [f"file-{i:02d}.dat" for i in range(5)]

    checked = run(["rclone", "check", str(local), f"nuage:{bucket}/tree"], rclone_env)
    assert "0 differences found" in checked.stderr, checked.describe()

    # The check compares content hashes, not just sizes: flip one byte.
    uploaded = dict(expected)
    victim = local / "alpha/beta/gamma/file-03.dat"
    data = bytearray(victim.read_bytes())
    data[0] ^= 0xFF
    victim.write_bytes(bytes(data))
    differs = run(["rclone", "check", str(local), f"nuage:{bucket}/tree"], rclone_env, check=False)
    assert differs.returncode != 0, differs.describe()
    assert "1 differences found" in differs.stderr, differs.describe()

    down = tmp_path / "down"
    run(["rclone", "copy", f"nuage:{bucket}/tree", str(down)], rclone_env)
    assert tree_hashes(down) == uploaded


def test_rclone_100mib_and_multipart(rclone_env: dict, big_file: Path, tmp_path: Path):
    bucket = unique_bucket("rclone-big")
    run(["rclone", "mkdir", f"nuage:{bucket}"], rclone_env)

    # Default settings: 100 MiB is under rclone's 200 MiB upload cutoff, so
    # this is one streamed PUT.
    run(["rclone", "copyto", str(big_file), f"nuage:{bucket}/big.bin"], rclone_env)
    size = json.loads(run(["rclone", "size", "--json", f"nuage:{bucket}/big.bin"], rclone_env).stdout)
    assert (size["count"], size["bytes"]) == (1, BIG_FILE_BYTES), size
    md5 = run(["rclone", "md5sum", f"nuage:{bucket}/big.bin"], rclone_env).stdout.split()[0]
    assert md5 == hashlib.md5(big_file.read_bytes()).hexdigest()
    fetched = tmp_path / "big.back"
    run(["rclone", "copyto", f"nuage:{bucket}/big.bin", str(fetched)], rclone_env)
    assert file_sha256(fetched) == file_sha256(big_file)

    # rclone's own multipart code: 12 MiB in 5 MiB chunks is 3 parts.
    mid = write_random_file(tmp_path / "mid.bin", 12 * MIB)
    run(["rclone", "copyto", "--s3-upload-cutoff", "5M", "--s3-chunk-size", "5M",
         str(mid), f"nuage:{bucket}/mid.bin"], rclone_env)
    run(["rclone", "check", "--download", str(tmp_path), f"nuage:{bucket}",
         "--include", "mid.bin"], rclone_env)
    mid_back = tmp_path / "mid.back"
    run(["rclone", "copyto", f"nuage:{bucket}/mid.bin", str(mid_back)], rclone_env)
    assert file_sha256(mid_back) == file_sha256(mid)


# --- s3cmd --------------------------------------------------------------------


@pytest.fixture
def s3cmd(server: Server, client_home: Path):
    require_tool("s3cmd")
    config = client_home / ".s3cfg"
    host = f"127.0.0.1:{server.port}"
    config.write_text(
        "[default]\n"
        f"access_key = {server.access_key_id}\n"
        f"secret_key = {server.secret_access_key}\n"
        f"host_base = {host}\n"
        f"host_bucket = {host}\n"
        f"bucket_location = {server.region}\n"
        "use_https = False\n"
        "signature_v2 = False\n"
        "check_ssl_certificate = False\n"
        "progress_meter = False\n"
    )
    env = _isolated_env(client_home)

    def invoke(*args: str, check: bool = True):
        return run(["s3cmd", "-c", str(config), *args], env, check=check)

    return invoke


def test_s3cmd_basic(s3cmd, tmp_path: Path):
    bucket = unique_bucket("s3cmd")
    small = write_random_file(tmp_path / "small.bin", 2048)
    large = write_random_file(tmp_path / "large.bin", 17 * MIB + 5)

    s3cmd("mb", f"s3://{bucket}")
    assert f"s3://{bucket}" in s3cmd("ls").stdout

    s3cmd("put", str(small), f"s3://{bucket}/small.bin")
    # s3cmd's own multipart path: 5 MiB chunks, 4 parts.
    s3cmd("put", "--multipart-chunk-size-mb=5", str(large), f"s3://{bucket}/large.bin")

    listing = s3cmd("ls", f"s3://{bucket}").stdout.splitlines()
    rows = sorted((line.split()[2], line.split()[3]) for line in listing)
    assert rows == [(str(17 * MIB + 5), f"s3://{bucket}/large.bin"),
                    ("2048", f"s3://{bucket}/small.bin")], listing

    for name, source in (("small.bin", small), ("large.bin", large)):
        out = tmp_path / f"{name}.got"
        s3cmd("get", "--force", f"s3://{bucket}/{name}", str(out))
        assert file_sha256(out) == file_sha256(source), name

    s3cmd("del", f"s3://{bucket}/small.bin", f"s3://{bucket}/large.bin")
    assert s3cmd("ls", f"s3://{bucket}").stdout.strip() == ""
    s3cmd("rb", f"s3://{bucket}")
    assert f"s3://{bucket}" not in s3cmd("ls").stdout


# --- curl: anonymous access, errors, curl's own signer --------------------------


def test_curl_anonymous_requests_are_denied(server: Server, s3, tmp_path: Path):
    bucket = unique_bucket("curl-anon")
    create_bucket(s3, bucket)
    s3.put_object(Bucket=bucket, Key="private.txt", Body=b"secret")

    for path in ("/", f"/{bucket}", f"/{bucket}/private.txt"):
        out = tmp_path / "body"
        status = curl_get(server.endpoint + path, out)
        body = out.read_bytes()
        assert status == 403, (path, status, body[:2000])
        assert b"<Code>AccessDenied</Code>" in body, (path, body[:2000])
        assert s3_error(body)["Code"] == "AccessDenied"

    out = tmp_path / "put-body"
    status = curl_get(server.endpoint + f"/{bucket}/intruder.txt", out, "--data-binary", "x",
                      method="PUT")
    assert status == 403, (status, out.read_bytes()[:2000])
    assert s3.list_objects_v2(Bucket=bucket)["KeyCount"] == 1


def test_error_body_carries_request_id(server: Server, tmp_path: Path):
    out = tmp_path / "body"
    assert curl_get(server.endpoint + "/", out) == 403
    error = s3_error(out.read_bytes())
    assert error.get("RequestId"), f"S3 error body has no RequestId: {out.read_bytes()!r}"


def test_curl_sigv4(server: Server, s3, tmp_path: Path):
    bucket = unique_bucket("curl-sig")
    create_bucket(s3, bucket)
    s3.put_object(Bucket=bucket, Key="hello.txt", Body=b"bonjour")
    url = f"{server.endpoint}/{bucket}/hello.txt"
    sigv4 = curl_sigv4_args(server.region)

    out = tmp_path / "ok"
    status = curl_get(url, out, *sigv4, "--user", f"{server.access_key_id}:{server.secret_access_key}")
    assert status == 200, out.read_bytes()[:2000]
    assert out.read_bytes() == b"bonjour"

    bad_secret = tmp_path / "bad-secret"
    status = curl_get(url, bad_secret, *sigv4, "--user", f"{server.access_key_id}:not-the-secret")
    assert status == 403, bad_secret.read_bytes()[:2000]
    assert s3_error(bad_secret.read_bytes())["Code"] == "SignatureDoesNotMatch"


def test_unknown_access_key_is_invalid_access_key_id(server: Server, s3, tmp_path: Path):
    # What AWS answers for a key id it has never issued; clients and people
    # debugging credentials look for exactly this code.
    bucket = unique_bucket("curl-key")
    create_bucket(s3, bucket)
    s3.put_object(Bucket=bucket, Key="hello.txt", Body=b"bonjour")
    url = f"{server.endpoint}/{bucket}/hello.txt"
    sigv4 = curl_sigv4_args(server.region)
    bad_key = tmp_path / "bad-key"
    status = curl_get(url, bad_key, *sigv4, "--user", f"NOSUCHKEY0000000000:{server.secret_access_key}")
    assert status == 403, bad_key.read_bytes()[:2000]
    assert s3_error(bad_key.read_bytes())["Code"] == "InvalidAccessKeyId"


def test_boto3_sse_c_and_bucket_default_encryption(s3, tmp_path: Path):
    """SSE-C as boto3 sends it (the key base64-encoded and its MD5 computed
    by botocore), through single PUTs, s3transfer's multipart upload and
    copies; then a bucket default of SSE-S3 put, read back and deleted."""
    import io

    from botocore.exceptions import ClientError

    bucket = unique_bucket("sse-c")
    create_bucket(s3, bucket)
    key = os.urandom(32)
    other = os.urandom(32)
    sse_c = {"SSECustomerAlgorithm": "AES256", "SSECustomerKey": key}
    data = os.urandom(200_000)
    put = s3.put_object(Bucket=bucket, Key="secret", Body=data, **sse_c)
    key_md5 = base64.b64encode(hashlib.md5(key).digest()).decode()
    assert put["SSECustomerKeyMD5"] == key_md5
    assert "ServerSideEncryption" not in put
    got = s3.get_object(Bucket=bucket, Key="secret", Range="bytes=1000-70999", **sse_c)
    assert got["Body"].read() == data[1000:71000]
    assert got["SSECustomerAlgorithm"] == "AES256"
    with pytest.raises(ClientError) as excinfo:
        s3.get_object(Bucket=bucket, Key="secret")
    assert client_error_code(excinfo) == ("InvalidRequest", 400)
    with pytest.raises(ClientError) as excinfo:
        s3.get_object(Bucket=bucket, Key="secret", SSECustomerAlgorithm="AES256", SSECustomerKey=other)
    assert client_error_code(excinfo) == ("AccessDenied", 403)

    # s3transfer's multipart upload sends the key with every part.
    from boto3.s3.transfer import TransferConfig

    big = os.urandom(12 * 1024 * 1024)
    config = TransferConfig(multipart_threshold=5 * 1024 * 1024, multipart_chunksize=5 * 1024 * 1024)
    s3.upload_fileobj(io.BytesIO(big), bucket, "big", ExtraArgs=sse_c, Config=config)
    out = io.BytesIO()
    s3.download_fileobj(bucket, "big", out, ExtraArgs=sse_c, Config=config)
    assert out.getvalue() == big

    # Copy from SSE-C to SSE-S3.
    copy = s3.copy_object(
        Bucket=bucket, Key="plain", CopySource={"Bucket": bucket, "Key": "secret"},
        CopySourceSSECustomerAlgorithm="AES256", CopySourceSSECustomerKey=key,
    )
    assert copy["ServerSideEncryption"] == "AES256"
    assert s3.get_object(Bucket=bucket, Key="plain")["Body"].read() == data

    # Bucket default encryption: put, get, delete.
    s3.put_bucket_encryption(
        Bucket=bucket,
        ServerSideEncryptionConfiguration={
            "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"},
                       "BucketKeyEnabled": True}]
        },
    )
    rule = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"][0]
    assert rule["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    assert rule["BucketKeyEnabled"] is True
    with pytest.raises(ClientError) as excinfo:
        s3.put_bucket_encryption(
            Bucket=bucket,
            ServerSideEncryptionConfiguration={
                "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms"}}]
            },
        )
    assert client_error_code(excinfo) == ("InvalidArgument", 400)
    s3.delete_bucket_encryption(Bucket=bucket)
    rule = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"][0]
    assert rule.get("BucketKeyEnabled") in (None, False)
