"""Downloads the original dataset files, verified against checksums pinned here.

    python -m gmg_jax.data.download NAME [NAME ...] --data_dir=DIR   (NAME may be "all")

Each file lists one or more mirror URLs, tried in order; a mirror whose file does not match
the pinned digest is skipped like an unreachable one, and when every mirror fails the error
names each URL tried, the destination and how to place the file by hand. Each file is streamed
into `<file>.part` (resumed with an HTTP Range request when the server allows it, restarted
cleanly otherwise), hashed, and only renamed into place when the digest matches; a mismatch
deletes the partial file. Archives (.gz, the Cars3D .tar.gz) are unpacked into a temporary name
and renamed too, so an interrupted run never leaves a half file under a final name. Files
already present are checked and skipped, so a file copied by hand to its destination (from a
machine with network access) is verified, unpacked and used.

Pins: sha256 from TFDS's checksums.tsv (dSprites .hdf5, 3dshapes.h5, SmallNORB). Where no
published sha256 was found the published md5 is pinned instead (dSprites .npz, Cars3D, MPI3D;
md5 from nmichlo/disent and the `latte` dSprites loader); set a sha256 when one is published.
"""

from __future__ import annotations

import argparse
import dataclasses
import gzip
import hashlib
import http.client
import os
import shutil
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
from collections.abc import Sequence

from tqdm import tqdm

from gmg_jax.atomic import atomic_write
from gmg_jax.data.base import default_data_dir

_CHUNK = 1 << 20


@dataclasses.dataclass(frozen=True)
class RemoteFile:
  """One published file.

  Attributes:
    urls: mirrors where it is published, tried in order (a single str is one mirror).
    path: where the downloaded file goes, relative to the data directory.
    sha256: pinned sha256 hex digest (preferred).
    md5: pinned md5 hex digest, used only when no sha256 is known.
    unpack: None, "gunzip" (-> path without .gz) or "cars_tar" (-> cars/*.mat).
  """

  urls: tuple[str, ...]
  path: str
  sha256: str | None = None
  md5: str | None = None
  unpack: str | None = None

  def __post_init__(self):
    if isinstance(self.urls, str):
      object.__setattr__(self, "urls", (self.urls,))

  @property
  def pin(self) -> str:
    """The pinned digest, e.g. "sha256 0a0f...", as error messages show it."""
    return f"sha256 {self.sha256}" if self.sha256 else f"md5 {self.md5}"


_NORB_URL = "https://cs.nyu.edu/~ylclab/data/norb-v1.0-small/"
_NORB_SHA256 = {  # TFDS tensorflow_datasets/datasets/smallnorb/checksums.tsv
  ("46789", "training", "dat"): "5ffd6272a07d32695ee1082a26a41a93a37aab8c28da047f8c34ed348d214873",
  ("46789", "training", "cat"): "2784e542c1922060691090952b6cd6278879a216c90f81476f0f00256d42cdaa",
  ("46789", "training", "info"): "de7eb932ebe7a4ee16217fead60660d0eb3d23632c2f4d1c51f88c501c17bf32",
  ("01235", "testing", "dat"): "cf7104eed3e51174d2f65b66d1e5878b9da233b886f161b0d88f4510ba2c7474",
  ("01235", "testing", "cat"): "ecaf6d5bb8c3bc5eab9cf0258f6d2198dd474e016e374836fc097f2e5ff509ff",
  ("01235", "testing", "info"): "16adf314226327ee006d1a44db8cfef52773c06c829951d5653a9f6f310248a2",
}
# The maintainers moved the files in 2024; the old bucket (dead since 2023) stays as a mirror.
_MPI3D_URLS = (
  "https://storage.googleapis.com/mpi3d_disentanglement_dataset/data/",
  "https://storage.googleapis.com/disentanglement_dataset/Final_Dataset/",
)
_MPI3D_MD5 = {
  "toy": "55889cb7c7dfc655d6e0277beee88868",
  "realistic": "59a6225b88b635365f70c91b3e52f70f",
  "real": "0f33f609918fb5c97996692f91129802",
}
_DSPRITES = "dsprites_ndarray_co1sh3sc6or40x32y32_64x64"

REMOTE_FILES: dict[str, tuple[RemoteFile, ...]] = {
  "dsprites": (
    RemoteFile(
      (
        f"https://github.com/google-deepmind/dsprites-dataset/raw/master/{_DSPRITES}.npz",
        f"https://github.com/deepmind/dsprites-dataset/raw/master/{_DSPRITES}.npz",
      ),
      f"dsprites/{_DSPRITES}.npz",
      md5="7da33b31b13a06f4b04a70402ce90c2e",
    ),
  ),
  "dsprites_hdf5": (
    RemoteFile(
      (
        f"https://github.com/google-deepmind/dsprites-dataset/raw/master/{_DSPRITES}.hdf5",
        f"https://github.com/deepmind/dsprites-dataset/raw/master/{_DSPRITES}.hdf5",
      ),
      f"dsprites/{_DSPRITES}.hdf5",
      sha256="729fa22e884c9c500e1f17415d580746b4c5894fbbb780a1319bbcfa39a745bb",
    ),
  ),
  "shapes3d": (
    RemoteFile(
      (
        "https://storage.googleapis.com/3d-shapes/3dshapes.h5",
        "https://storage.googleapis.com/storage/v1/b/3d-shapes/o/3dshapes.h5?alt=media",
      ),
      "shapes3d/3dshapes.h5",
      sha256="0a0f6ed98baff276a50f3a081a7434d788da63cb135a98189b2a5b5769be1785",
    ),
  ),
  **{
    f"mpi3d_{variant}": (
      RemoteFile(
        tuple(f"{base}mpi3d_{variant}.npz" for base in _MPI3D_URLS),
        f"mpi3d_{variant}/mpi3d_{variant}.npz",
        md5=md5,
      ),
    )
    for variant, md5 in _MPI3D_MD5.items()
  },
  "smallnorb": tuple(
    RemoteFile(
      f"{_NORB_URL}smallnorb-5x{ids}x9x18x6x2x96x96-{split}-{kind}.mat.gz",
      f"small_norb/smallnorb-5x{ids}x9x18x6x2x96x96-{split}-{kind}.mat.gz",
      sha256=digest,
      unpack="gunzip",
    )
    for (ids, split, kind), digest in _NORB_SHA256.items()
  ),
  "cars3d": (
    RemoteFile(
      "http://www.scottreed.info/files/nips2015-analogy-data.tar.gz",
      "nips2015-analogy-data.tar.gz",
      md5="4e866a7919c1beedf53964e6f7a23686",
      unpack="cars_tar",
    ),
  ),
}


class ChecksumError(RuntimeError):
  """A downloaded file does not match its pinned digest."""


class DownloadError(OSError):
  """No mirror of a file gave the pinned file; the message names every URL tried."""


def _digest(path: str, algorithm: str) -> str:
  h = hashlib.new(algorithm)
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(_CHUNK), b""):
      h.update(block)
  return h.hexdigest()


def verify(path: str, sha256: str | None = None, md5: str | None = None) -> bool:
  """Whether `path` matches its pin (sha256 if given, else md5; True when nothing pinned)."""
  if sha256:
    return _digest(path, "sha256") == sha256.lower()
  if md5:
    return _digest(path, "md5") == md5.lower()
  return True


def download_file(
  url: str, dest: str, sha256: str | None = None, md5: str | None = None, progress: bool = True
) -> str:
  """Downloads `url` to `dest` atomically, resuming a previous partial download.

  Args:
    url: http(s) URL.
    dest: final path; the data goes to `dest + ".part"` until it is verified.
    sha256: pinned digest (preferred).
    md5: pinned digest used when no sha256 is given.
    progress: show a tqdm bar.

  Returns:
    `dest`.

  Raises:
    ChecksumError: the digest did not match; neither `dest` nor the partial file is left.
  """
  if os.path.exists(dest) and verify(dest, sha256, md5):
    return dest
  os.makedirs(os.path.dirname(os.path.abspath(dest)), exist_ok=True)
  part = dest + ".part"
  have = os.path.getsize(part) if os.path.exists(part) else 0
  request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
  try:
    response = urllib.request.urlopen(request, timeout=60)
  except urllib.error.HTTPError as e:
    if e.code != 416 or not have:  # 416: the partial file is already complete
      raise
    response = None
  if response is not None:
    with response:
      # 206 = the server honoured the Range; anything else restarts from byte 0.
      resumed = have and response.status == 206
      mode, start = ("ab", have) if resumed else ("wb", 0)
      length = response.headers.get("Content-Length")
      total = start + int(length) if length is not None else None
      with (
        open(part, mode) as f,
        tqdm(
          total=total,
          initial=start,
          unit="B",
          unit_scale=True,
          desc=os.path.basename(dest),
          disable=not progress,
        ) as bar,
      ):
        for block in iter(lambda: response.read(_CHUNK), b""):
          f.write(block)
          bar.update(len(block))
  if not verify(part, sha256, md5):
    os.remove(part)
    raise ChecksumError(
      f"{url}: checksum mismatch ({'sha256 ' + sha256 if sha256 else 'md5 ' + str(md5)} "
      "expected); the partial download was deleted, run the command again."
    )
  os.replace(part, dest)
  return dest


def download_mirrors(remote: RemoteFile, dest: str, progress: bool = True) -> str:
  """Downloads `remote` to `dest` from the first mirror that serves the pinned file.

  Args:
    remote: the file and its mirrors.
    dest: final path.
    progress: show a tqdm bar.

  Returns:
    `dest`.

  Raises:
    DownloadError: every mirror failed (unreachable, HTTP error or wrong digest); the message
      names each URL with its error, the destination and how to place the file by hand.
  """
  failures = []
  for url in remote.urls:
    try:
      return download_file(url, dest, remote.sha256, remote.md5, progress)
    except (OSError, http.client.HTTPException, ChecksumError) as e:
      reason = f"checksum mismatch (expected {remote.pin})" if isinstance(e, ChecksumError) else e
      failures.append(f"  {url}\n    -> {reason}")
  raise DownloadError(
    f"Could not download {os.path.basename(dest)}; tried {len(remote.urls)} URL(s):\n"
    + "\n".join(failures)
    + f"\nTo place it by hand, fetch it from one of these URLs on a machine with network "
    f"access and copy it to\n  {dest}\nthen run the same command again: it checks the file "
    f"({remote.pin}) and unpacks it if needed."
  )


def _gunzip(src: str, dest: str) -> None:
  with gzip.open(src, "rb") as fin:
    atomic_write(dest, lambda fout: shutil.copyfileobj(fin, fout, _CHUNK), text=False)


def _unpack_cars(src: str, data_dir: str) -> None:
  """Extracts data/cars/*.mat of the analogy archive into `data_dir/cars` atomically."""
  final = os.path.join(data_dir, "cars")
  with tempfile.TemporaryDirectory(dir=data_dir) as tmp, tarfile.open(src) as tar:
    # Only plain .mat files under data/cars/, no ".." (path traversal) in their names.
    members = [
      m
      for m in tar.getmembers()
      if m.isfile()
      and m.name.startswith("data/cars/")
      and m.name.endswith(".mat")
      and ".." not in m.name
    ]
    tar.extractall(tmp, members=members)
    if os.path.isdir(final):
      shutil.rmtree(final)
    os.replace(os.path.join(tmp, "data", "cars"), final)


def fetch(
  name: str,
  data_dir: str,
  progress: bool = True,
  remote_files: dict[str, tuple[RemoteFile, ...]] | None = None,
) -> list[str]:
  """Downloads, verifies and unpacks every file of dataset `name` into `data_dir`.

  Args:
    name: a key of `REMOTE_FILES`.
    data_dir: destination root (the loaders' data directory).
    progress: show tqdm bars.
    remote_files: override of `REMOTE_FILES` (tests).

  Returns:
    The paths of the usable files.
  """
  out = []
  for remote in (remote_files or REMOTE_FILES)[name]:
    dest = os.path.join(data_dir, remote.path)
    if remote.unpack == "gunzip" and os.path.exists(dest[: -len(".gz")]):
      out.append(dest[: -len(".gz")])
      continue
    if remote.unpack == "cars_tar" and os.path.isdir(os.path.join(data_dir, "cars")):
      out.append(os.path.join(data_dir, "cars"))
      continue
    download_mirrors(remote, dest, progress)
    if remote.unpack == "gunzip":
      _gunzip(dest, dest[: -len(".gz")])
      os.remove(dest)
      dest = dest[: -len(".gz")]
    elif remote.unpack == "cars_tar":
      _unpack_cars(dest, data_dir)
      os.remove(dest)
      dest = os.path.join(data_dir, "cars")
    out.append(dest)
  return out


def main(argv: Sequence[str] | None = None) -> int:
  """CLI entry point; returns the exit status."""
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("names", nargs="+", choices=sorted(REMOTE_FILES) + ["all"])
  parser.add_argument(
    "--data_dir", default="", help="destination (default: $GMG_DATA_DIR, then ~/gmg_data)"
  )
  args = parser.parse_args(argv)
  data_dir = default_data_dir(args.data_dir)
  names = sorted(REMOTE_FILES) if "all" in args.names else args.names
  for name in names:
    try:
      for path in fetch(name, data_dir):
        print(f"{name}: {path}")
    except (ChecksumError, OSError, http.client.HTTPException) as e:
      print(f"{name}: FAILED: {e}", file=sys.stderr)
      return 1
  return 0


if __name__ == "__main__":
  sys.exit(main())
