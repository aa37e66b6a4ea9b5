"""Tests of the checked, atomic, resumable download (served from 127.0.0.1, no network)."""

import functools
import gzip
import hashlib
import http.server
import os
import socket
import threading

import pytest

from gmg_jax.data import download

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB


class _RangeHandler(http.server.SimpleHTTPRequestHandler):
  """Static files with HTTP Range support (the stdlib handler has none)."""

  ranges: list = []

  def log_message(self, *args):
    pass

  def do_GET(self):
    header = self.headers.get("Range")
    path = self.translate_path(self.path)
    if not header or not os.path.isfile(path):
      return super().do_GET()
    start = int(header.split("=")[1].split("-")[0])
    body = open(path, "rb").read()[start:]
    self.ranges.append(start)
    self.send_response(206)
    self.send_header("Content-Length", str(len(body)))
    self.end_headers()
    self.wfile.write(body)


@pytest.fixture
def server(tmp_path):
  root = tmp_path / "srv"
  root.mkdir()
  (root / "blob.bin").write_bytes(PAYLOAD)
  (root / "m.mat.gz").write_bytes(gzip.compress(PAYLOAD[:1000]))
  _RangeHandler.ranges = []
  httpd = http.server.ThreadingHTTPServer(
    ("127.0.0.1", 0), functools.partial(_RangeHandler, directory=str(root))
  )
  thread = threading.Thread(target=httpd.serve_forever, daemon=True)
  thread.start()
  yield f"http://127.0.0.1:{httpd.server_address[1]}", root
  httpd.shutdown()


def test_verified_download_is_atomic(server, tmp_path):
  url, _ = server
  dest = tmp_path / "out" / "blob.bin"
  download.download_file(
    f"{url}/blob.bin", str(dest), sha256=hashlib.sha256(PAYLOAD).hexdigest(), progress=False
  )
  assert dest.read_bytes() == PAYLOAD
  assert not os.path.exists(str(dest) + ".part")


def test_wrong_checksum_leaves_no_file(server, tmp_path):
  url, _ = server
  dest = tmp_path / "blob.bin"
  with pytest.raises(download.ChecksumError, match="checksum mismatch"):
    download.download_file(f"{url}/blob.bin", str(dest), sha256="0" * 64, progress=False)
  assert os.listdir(tmp_path) == ["srv"]
  with pytest.raises(download.ChecksumError):
    download.download_file(f"{url}/blob.bin", str(dest), md5="0" * 32, progress=False)
  assert not dest.exists() and not os.path.exists(str(dest) + ".part")


def test_resumes_a_partial_download_with_range(server, tmp_path):
  url, _ = server
  dest = tmp_path / "blob.bin"
  (tmp_path / "blob.bin.part").write_bytes(PAYLOAD[:300_000])
  download.download_file(
    f"{url}/blob.bin", str(dest), md5=hashlib.md5(PAYLOAD).hexdigest(), progress=False
  )
  assert _RangeHandler.ranges == [300_000]
  assert dest.read_bytes() == PAYLOAD


def test_corrupt_partial_download_is_discarded(server, tmp_path):
  url, _ = server
  dest = tmp_path / "blob.bin"
  (tmp_path / "blob.bin.part").write_bytes(b"garbage" * 10)
  with pytest.raises(download.ChecksumError):
    download.download_file(
      f"{url}/blob.bin", str(dest), sha256=hashlib.sha256(PAYLOAD).hexdigest(), progress=False
    )
  # The next run starts from scratch and succeeds.
  download.download_file(
    f"{url}/blob.bin", str(dest), sha256=hashlib.sha256(PAYLOAD).hexdigest(), progress=False
  )
  assert dest.read_bytes() == PAYLOAD


def test_cli_fetches_and_unpacks(server, tmp_path, monkeypatch, capsys):
  url, root = server
  digest = hashlib.sha256((root / "m.mat.gz").read_bytes()).hexdigest()
  monkeypatch.setattr(
    download,
    "REMOTE_FILES",
    {
      "toy": (
        download.RemoteFile(f"{url}/m.mat.gz", "toy/m.mat.gz", sha256=digest, unpack="gunzip"),
      )
    },
  )
  out = tmp_path / "data"
  assert download.main(["toy", f"--data_dir={out}"]) == 0
  assert (out / "toy" / "m.mat").read_bytes() == PAYLOAD[:1000]
  assert sorted(os.listdir(out / "toy")) == ["m.mat"]
  assert "toy:" in capsys.readouterr().out
  # A second run finds the file and downloads nothing.
  (root / "m.mat.gz").unlink()
  assert download.main(["toy", f"--data_dir={out}"]) == 0


def test_every_dataset_has_a_pinned_digest():
  for name, remotes in download.REMOTE_FILES.items():
    for remote in remotes:
      digest = remote.sha256 or remote.md5
      assert digest and len(digest) in (32, 64), name
      assert int(digest, 16) >= 0
  assert {
    "dsprites",
    "shapes3d",
    "mpi3d_toy",
    "mpi3d_realistic",
    "mpi3d_real",
    "smallnorb",
    "cars3d",
  } <= set(download.REMOTE_FILES)


def _closed_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _sha(data):
  return hashlib.sha256(data).hexdigest()


def test_mirrors_tried_in_order_until_one_has_the_pinned_file(server, tmp_path):
  url, root = server
  (root / "other.bin").write_bytes(b"not the file")
  remote = download.RemoteFile(
    (f"{url}/missing.bin", f"{url}/other.bin", f"{url}/blob.bin"), "x/blob.bin", _sha(PAYLOAD)
  )
  dest = tmp_path / "data" / "x" / "blob.bin"
  assert download.download_mirrors(remote, str(dest), progress=False) == str(dest)
  assert dest.read_bytes() == PAYLOAD  # 404, then a wrong hash (skipped), then the good one
  assert sorted(os.listdir(dest.parent)) == ["blob.bin"]  # no partial file left


def test_all_mirrors_failing_names_every_url_the_destination_and_the_manual_fix(
  server, tmp_path, monkeypatch, capsys
):
  url, root = server
  (root / "other.bin").write_bytes(b"not the file")
  dead = f"http://127.0.0.1:{_closed_port()}/blob.bin"  # connection refused, like offline
  urls = (dead, f"{url}/missing.bin", f"{url}/other.bin")
  remote = download.RemoteFile(urls, "x/blob.bin", md5=hashlib.md5(PAYLOAD).hexdigest())
  monkeypatch.setattr(download, "REMOTE_FILES", {"toy": (remote,)})
  assert download.main(["toy", f"--data_dir={tmp_path / 'data'}"]) == 1
  err = capsys.readouterr().err
  dest = tmp_path / "data" / "x" / "blob.bin"
  for u in urls:
    assert u in err
  assert "Connection refused" in err and "404" in err and "checksum mismatch" in err
  assert f"copy it to\n  {dest}" in err and hashlib.md5(PAYLOAD).hexdigest() in err
  assert not dest.exists()
  # Placed by hand as the message says, the same command checks it and succeeds offline.
  dest.write_bytes(PAYLOAD)
  monkeypatch.setattr(
    download, "REMOTE_FILES", {"toy": (download.RemoteFile(dead, "x/blob.bin", _sha(PAYLOAD)),)}
  )
  assert download.main(["toy", f"--data_dir={tmp_path / 'data'}"]) == 0


def test_mpi3d_maintainers_current_bucket_first_old_one_kept():
  for variant in ("toy", "realistic", "real"):
    (remote,) = download.REMOTE_FILES[f"mpi3d_{variant}"]
    assert remote.urls == (
      f"https://storage.googleapis.com/mpi3d_disentanglement_dataset/data/mpi3d_{variant}.npz",
      f"https://storage.googleapis.com/disentanglement_dataset/Final_Dataset/mpi3d_{variant}.npz",
    )
