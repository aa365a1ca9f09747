"""The artifact store: files an evaluator attached, under any fsspec URL (``file://``, ``s3://``),
keyed generation/candidate/name; tensors as safetensors, never pickle."""

from __future__ import annotations

import hashlib
import json
import mimetypes
import os
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import fsspec
from billiard.exceptions import SoftTimeLimitExceeded
from fsspec.core import url_to_fs

from workers.contract import ArtifactRef, EvaluationResult

SAFETENSORS = "application/safetensors"
OCTET = "application/octet-stream"
TEXT = "text/plain; charset=utf-8"
JSON = "application/json"
GENERATION_MARKER = ".evofleet-generation"  # in each generation's folder: cleanup deletes only those
OPTIONS_ENV = "EVOFLEET_ARTIFACT_STORE_OPTIONS"
_CHUNK = 4 << 20
_KIND = "evofleet"  # safetensors metadata key: tensor | tensors | array | arrays


class ArtifactStoreError(OSError):
    """The artifact store could not be opened, reached or written; the message names it."""


class ArtifactCorrupt(ValueError):
    """The stored bytes no longer match the sha256 recorded in the result."""


def env_options() -> dict[str, Any]:
    """fsspec storage options from ``EVOFLEET_ARTIFACT_STORE_OPTIONS`` (a JSON object)."""
    raw = os.environ.get(OPTIONS_ENV, "").strip()
    if not raw:
        return {}
    options = json.loads(raw)
    if not isinstance(options, dict):
        raise ValueError(f"{OPTIONS_ENV} must be a JSON object, got {raw[:80]!r}")
    return options


def as_store_url(location: str) -> str:
    """A store location as a URL: a plain path becomes an absolute ``file://`` URL."""
    if "://" in location:
        return location.rstrip("/")
    return Path(location).expanduser().resolve().as_uri()


def check_store_url(url: str) -> str:
    """``url`` if fsspec knows its protocol; raises ValueError saying what is missing."""
    protocol = url.split("://", 1)[0] if "://" in url else "file"
    if protocol not in fsspec.available_protocols():
        raise ValueError(f"artifact store {url!r}: fsspec knows no protocol {protocol!r}")
    return url


def segment(text: str) -> str:
    """``text`` as one path segment, the same on every filesystem and object store: no ``/``,
    and never ``.`` or ``..``, so a candidate id cannot reach another candidate's files."""
    quoted = urllib.parse.quote(text, safe="")
    return "%2E" + quoted[1:] if quoted.startswith(".") else quoted


def _is_tensor(value: Any) -> bool:
    torch = sys.modules.get("torch")  # a tensor exists only where torch was imported
    return torch is not None and isinstance(value, torch.Tensor)


def _is_array(value: Any) -> bool:
    numpy = sys.modules.get("numpy")
    return numpy is not None and isinstance(value, numpy.ndarray)


def encode(value: Any) -> tuple[bytes | Path, str]:
    """An artifact value as (bytes or a file to copy, media type); raises TypeError."""
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value), OCTET
    if isinstance(value, str):
        return value.encode(), TEXT
    if isinstance(value, os.PathLike):
        path = Path(value)
        if not path.is_file():
            raise ValueError(f"{str(path)!r} is not a file")
        return path, mimetypes.guess_type(path.name)[0] or OCTET
    if _is_tensor(value):
        return _torch_bytes({"tensor": value}, "tensor"), SAFETENSORS
    if _is_array(value):
        return _numpy_bytes({"array": value}, "array"), SAFETENSORS
    if isinstance(value, Mapping) and value:
        if all(_is_tensor(v) for v in value.values()):
            return _torch_bytes(dict(value), "tensors"), SAFETENSORS
        if all(_is_array(v) for v in value.values()):
            return _numpy_bytes(dict(value), "arrays"), SAFETENSORS
    raise TypeError(
        f"cannot store a {type(value).__name__}: give bytes, str, a pathlib.Path, a torch tensor, "
        "a dict of tensors or a numpy array (a dict of arrays)"
    )


def _torch_bytes(tensors: dict[str, Any], kind: str) -> bytes:
    from safetensors.torch import save

    plain = {str(k): v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    return save(plain, metadata={_KIND: kind})


def _numpy_bytes(arrays: dict[str, Any], kind: str) -> bytes:
    import numpy as np
    from safetensors.numpy import save

    return save({str(k): np.ascontiguousarray(v) for k, v in arrays.items()}, metadata={_KIND: kind})


def decode_safetensors(data: bytes) -> Any:
    """Tensors back as they were given: a tensor, a dict of tensors, an array or a dict of arrays."""
    length = int.from_bytes(data[:8], "little")
    kind = (json.loads(data[8 : 8 + length]).get("__metadata__") or {}).get(_KIND, "tensors")
    if kind in ("array", "arrays"):
        from safetensors.numpy import load as load_numpy

        arrays = load_numpy(data)
        return arrays["array"] if kind == "array" else arrays
    from safetensors.torch import load as load_torch

    tensors = load_torch(data)
    return tensors["tensor"] if kind == "tensor" else tensors


class ArtifactStore:
    """One store URL; objects live at ``<url>/<generation>/<candidate>/<name>``."""

    def __init__(self, url: str, options: Mapping[str, Any] | None = None) -> None:
        self.url = url.rstrip("/")
        try:
            self.fs, self.root = url_to_fs(self.url, **dict(options or {}))
        except Exception as exc:  # an unknown protocol, a missing s3fs, bad options
            raise ArtifactStoreError(f"artifact store {self.url}: {type(exc).__name__}: {exc}") from exc
        self.root = self.root.rstrip("/")
        self.local = "file" in _protocols(self.fs)
        self._marked: set[str] = set()

    def path(self, generation_id: str, candidate_id: str | None = None, name: str | None = None) -> str:
        parts = [self.root, segment(generation_id)]
        if candidate_id is not None:
            parts.append(segment(candidate_id))
        if name is not None:
            parts.append(segment(name))
        return "/".join(parts)

    def put(self, generation_id: str, candidate_id: str, name: str, value: Any) -> ArtifactRef:
        """Write one artifact (replacing this candidate's earlier one of that name).

        Raises TypeError/ValueError for a value that cannot be stored, ArtifactStoreError
        naming the store when the store fails.
        """
        if not isinstance(name, str) or not name or len(name) > 200:
            raise ValueError(f"artifact names are non-empty strings of at most 200 characters: {name!r}")
        payload, media_type = encode(value)
        path = self.path(generation_id, candidate_id, name)
        try:
            self._mark(generation_id)
            if self.local:
                self.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
            digest = hashlib.sha256()
            size = 0
            with self.fs.open(path, "wb") as out:
                if isinstance(payload, bytes):
                    out.write(payload)
                    digest.update(payload)
                    size = len(payload)
                else:
                    with payload.open("rb") as source:
                        while chunk := source.read(_CHUNK):
                            out.write(chunk)
                            digest.update(chunk)
                            size += len(chunk)
        except SoftTimeLimitExceeded:  # the evaluation's time is up: not the store's fault
            raise
        except Exception as exc:
            raise ArtifactStoreError(
                f"artifact store {self.url} could not store {name!r}: {type(exc).__name__}: {exc}"
            ) from exc
        return ArtifactRef(
            uri=self.fs.unstrip_protocol(path), size=size, sha256=digest.hexdigest(),
            media_type=media_type,
        )

    def _mark(self, generation_id: str) -> None:
        """Leave the marker `cleanup` looks for, once per process and generation."""
        if generation_id in self._marked:
            return
        marker = f"{self.path(generation_id)}/{GENERATION_MARKER}"
        if self.local:
            self.fs.makedirs(self.path(generation_id), exist_ok=True)
        with self.fs.open(marker, "wb") as out:
            out.write(json.dumps({"generation_id": generation_id, "at": time.time()}).encode())
        self._marked.add(generation_id)

    def generations(self) -> list[str]:
        """Ids of the generations with artifacts here (folders holding the marker)."""
        try:
            found = self.fs.glob(f"{self.root}/*/{GENERATION_MARKER}")
        except FileNotFoundError:
            return []
        ids = []
        for marker in found:
            folder = str(marker).rsplit("/", 2)[-2]
            ids.append(urllib.parse.unquote(folder))
        return sorted(ids)

    def delete_generation(self, generation_id: str) -> bool:
        """Remove every artifact of a generation; False if it had none here."""
        path = self.path(generation_id)
        try:
            if not self.fs.exists(path):
                return False
            self.fs.rm(path, recursive=True)
        except FileNotFoundError:
            return False
        except Exception as exc:
            raise ArtifactStoreError(
                f"artifact store {self.url} could not delete {generation_id!r}: {type(exc).__name__}: {exc}"
            ) from exc
        return True


def _protocols(fs: Any) -> tuple[str, ...]:
    protocol = fs.protocol
    return (protocol,) if isinstance(protocol, str) else tuple(protocol)


def read_ref(ref: ArtifactRef, options: Mapping[str, Any] | None = None) -> bytes:
    """The stored bytes of ``ref``, checked against its sha256 (raises ArtifactCorrupt)."""
    fs, path = url_to_fs(ref.uri, **dict(env_options() if options is None else options))
    data: bytes = fs.cat_file(path)
    if hashlib.sha256(data).hexdigest() != ref.sha256:
        raise ArtifactCorrupt(f"artifact {ref.uri}: sha256 differs from the one recorded")
    return data


def load_artifact(
    result: EvaluationResult,
    name: str,
    *,
    as_path: bool = False,
    options: Mapping[str, Any] | None = None,
) -> Any:
    """An artifact of ``result``: tensors (a tensor, a dict of tensors, numpy arrays) back as
    they were given, anything else as bytes; with ``as_path``, a local file (the stored one for
    a ``file://`` store, else a downloaded copy). The sha256 is checked.

    ``options``: fsspec storage options (default ``$EVOFLEET_ARTIFACT_STORE_OPTIONS``).
    """
    ref = result.artifacts.get(name)
    if ref is None:
        known = ", ".join(sorted(result.artifacts)) or "none"
        raise KeyError(f"candidate {result.candidate_id!r} has no artifact {name!r} (it has: {known})")
    if as_path:
        return ref_path(ref, options)
    data = read_ref(ref, options)
    return decode_safetensors(data) if ref.media_type == SAFETENSORS else data


def ref_path(ref: ArtifactRef, options: Mapping[str, Any] | None = None) -> Path:
    """A local file holding ``ref``'s bytes (checked): the stored file itself when local."""
    fs, path = url_to_fs(ref.uri, **dict(env_options() if options is None else options))
    if "file" in _protocols(fs):
        local = Path(path)
        digest = hashlib.sha256()
        with local.open("rb") as source:
            while chunk := source.read(_CHUNK):
                digest.update(chunk)
        if digest.hexdigest() != ref.sha256:
            raise ArtifactCorrupt(f"artifact {ref.uri}: sha256 differs from the one recorded")
        return local
    folder = Path(tempfile.mkdtemp(prefix="evofleet-artifact-"))
    target = folder / path.rsplit("/", 1)[-1]
    target.write_bytes(read_ref(ref, options))
    return target
