"""merc.io.file_digest / hash_file: the one file-hashing helper (weights checksums, model ids, media keys)."""
from __future__ import annotations

import hashlib

from merc.io import file_digest, hash_file


def test_file_digest_is_sha256_of_the_bytes_in_order(tmp_path):
    a, b = tmp_path / "a.bin", tmp_path / "b.bin"
    a.write_bytes(b"x" * 3_000_001)  # more than one read block
    b.write_bytes(b"yz")
    full = hashlib.sha256(a.read_bytes()).hexdigest()
    assert file_digest(a, chars=None) == full
    assert file_digest(a) == full[:16]
    assert file_digest(a, b, chars=None) == hashlib.sha256(a.read_bytes() + b.read_bytes()).hexdigest()
    assert file_digest(b, a) != file_digest(a, b)


def test_head_reads_the_first_and_last_bytes_of_large_files_only(tmp_path):
    big, small = tmp_path / "big.bin", tmp_path / "small.bin"
    data = bytes(range(256)) * 40  # 10240 bytes
    big.write_bytes(data)
    small.write_bytes(data[:150])
    assert file_digest(big, chars=None, head=100) == hashlib.sha256(data[:100] + data[-100:]).hexdigest()
    assert file_digest(small, chars=None, head=100) == hashlib.sha256(data[:150]).hexdigest()  # <= 2*head: all
    big.write_bytes(data[:5000] + b"\0" + data[5001:])  # a change in the middle goes unseen with head ...
    assert file_digest(big, head=100) == hashlib.sha256(data[:100] + data[-100:]).hexdigest()[:16]
    assert file_digest(big) != file_digest(small)  # ... and not without


def test_hash_file_extends_a_hash_the_caller_started(tmp_path):
    p = tmp_path / "f.txt"
    p.write_bytes(b"body")
    h = hashlib.sha256(b"prefix\0")
    assert hash_file(h, p) is h
    assert h.hexdigest() == hashlib.sha256(b"prefix\0body").hexdigest()
