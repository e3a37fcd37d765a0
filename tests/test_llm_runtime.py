"""The LLM runtime: assembling the packaged GGUF, the llama.cpp server's lifecycle, the ChatOpenAI wiring."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import socket
from pathlib import Path

import pytest

from core import gguf
from core.gguf import ModelAssemblyError, ModelPackageMissing, PackagedGGUF, packaged_gguf
from core.settings import Settings
from graphs import llm_server
from graphs.llm import check_connection, make_chat_model
from graphs.llm_server import LlamaServer, LlamaServerError, ensure_llm, stop_llm

HAS_LLAMA_CPP = importlib.util.find_spec("llama_cpp") is not None


# --- assembly on small fake part packages --------------------------------------------------------------


@pytest.fixture
def fake_parts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """Three fake part packages of a variant "test", found through a patched `package_dir`."""
    installed: dict[str, Path] = {}
    blobs = [os.urandom(1000), os.urandom(1000), os.urandom(17)]
    for n, blob in enumerate(blobs, start=1):
        pkg = tmp_path / "site" / f"fake_part{n}"
        (pkg / "data").mkdir(parents=True)
        (pkg / "data" / f"part{n:02d}.bin").write_bytes(blob)
        installed[f"fake_part{n}"] = pkg
    joined = b"".join(blobs)
    spec = PackagedGGUF(filename="test.gguf", dist="fake-part{n}", module="fake_part{n}",
                        part_file="data/part{n:02d}.bin", parts=3, version="1.0", size=len(joined),
                        sha256=hashlib.sha256(joined).hexdigest())
    monkeypatch.setitem(gguf.PACKAGED_GGUF, "test", spec)

    def package_dir(module: str) -> Path:
        if module not in installed:
            raise ModuleNotFoundError(module)
        return installed[module]

    monkeypatch.setattr(gguf, "package_dir", package_dir)
    (tmp_path / "expected.bin").write_bytes(joined)
    return installed


def test_assembles_parts_in_order_and_verifies(tmp_path: Path, fake_parts: dict[str, Path]) -> None:
    path = packaged_gguf("test", tmp_path / "cache")
    assert path == tmp_path / "cache" / "models" / "test.gguf"
    assert path.read_bytes() == (tmp_path / "expected.bin").read_bytes()
    assert gguf.is_assembled("test", tmp_path / "cache")
    assert [p.name for p in path.parent.iterdir() if p.name.endswith(".tmp")] == []


def test_second_call_is_a_cheap_no_op(tmp_path: Path, fake_parts: dict[str, Path],
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    path = packaged_gguf("test", tmp_path / "cache")
    mtime = path.stat().st_mtime_ns

    def fail(*_: object) -> None:
        raise AssertionError("re-assembled or re-hashed an assembled model")

    monkeypatch.setattr(gguf, "_assemble", fail)
    monkeypatch.setattr(gguf, "part_files", fail)
    assert packaged_gguf("test", tmp_path / "cache") == path
    assert path.stat().st_mtime_ns == mtime


def test_damaged_model_is_reassembled(tmp_path: Path, fake_parts: dict[str, Path]) -> None:
    path = packaged_gguf("test", tmp_path / "cache")
    path.write_bytes(b"truncated")
    assert packaged_gguf("test", tmp_path / "cache").read_bytes() == (tmp_path / "expected.bin").read_bytes()


def test_missing_part_names_the_pip_package(tmp_path: Path, fake_parts: dict[str, Path]) -> None:
    del fake_parts["fake_part2"]
    with pytest.raises(ModelPackageMissing, match=r"pip install .*fake-part2==1\.0"):
        packaged_gguf("test", tmp_path / "cache")
    assert not (tmp_path / "cache" / "models" / "test.gguf").exists()


def test_missing_part_file_names_the_pip_package(tmp_path: Path, fake_parts: dict[str, Path]) -> None:
    (fake_parts["fake_part3"] / "data" / "part03.bin").unlink()
    with pytest.raises(ModelPackageMissing, match=r"fake-part3==1\.0"):
        packaged_gguf("test", tmp_path / "cache")


def test_wrong_digest_raises_and_leaves_nothing(tmp_path: Path, fake_parts: dict[str, Path],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    spec = gguf.PACKAGED_GGUF["test"]
    monkeypatch.setitem(gguf.PACKAGED_GGUF, "test", PackagedGGUF(**{**spec.__dict__, "sha256": "0" * 64}))
    with pytest.raises(ModelAssemblyError, match="does not match the pinned digest"):
        packaged_gguf("test", tmp_path / "cache")
    models = tmp_path / "cache" / "models"
    assert [p.name for p in models.iterdir() if not p.name.endswith(".lock")] == []


def test_unknown_variant() -> None:
    with pytest.raises(ValueError, match="unknown packaged model variant"):
        packaged_gguf("huge", Path("/nonexistent"))


@pytest.mark.parametrize("variant", sorted(gguf.PACKAGED_GGUF))
def test_pinned_sizes_match_installed_parts(variant: str) -> None:
    try:
        parts = gguf.part_files(variant)
    except ModelPackageMissing:
        pytest.skip(f"part packages of {variant!r} not installed")
    assert sum(p.stat().st_size for p in parts) == gguf.PACKAGED_GGUF[variant].size


# --- server and client without a model -------------------------------------------------------------


def test_missing_llama_cpp_says_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(llm_server, "_SERVER_MODULES", ("no_such_module_llama",))
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF")
    with pytest.raises(LlamaServerError, match=r"pip install 'llama-cpp-python\[server\]"):
        LlamaServer(model, model_alias="m", log_dir=tmp_path).start()


@pytest.mark.skipif(not HAS_LLAMA_CPP, reason="llama-cpp-python not installed")
def test_server_dying_on_start_reports_the_log(tmp_path: Path) -> None:
    model = tmp_path / "broken.gguf"
    model.write_bytes(b"not a gguf file" * 100)
    server = LlamaServer(model, model_alias="m", port=0, log_dir=tmp_path)
    with pytest.raises(LlamaServerError, match="exited with code") as info:
        server.start(timeout=60)
    assert "broken.gguf" in str(info.value)  # the log tail is in the message
    assert server.port > 0 and server.log_path == tmp_path / f"llama-server-{server.port}.log"
    assert not server.is_running


def test_external_endpoint_is_used_as_is(tmp_path: Path) -> None:
    settings = Settings(_env_file=None, data_dir=tmp_path, llm_base_url="http://localhost:11434/v1/")
    assert ensure_llm(settings) == "http://localhost:11434/v1"
    chat = make_chat_model(settings)
    assert chat.openai_api_base == "http://localhost:11434/v1"
    assert chat.max_tokens == settings.llm_max_tokens
    # llama.cpp and Ollama ignore the `max_completion_tokens` that langchain-openai sends.
    assert chat.extra_body == {"max_tokens": settings.llm_max_tokens}


def test_check_connection_reports_an_unreachable_endpoint(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = Settings(_env_file=None, data_dir=tmp_path, llm_base_url=f"http://127.0.0.1:{port}/v1")
    ok, message = check_connection(settings, timeout=2)
    assert not ok
    assert "cannot reach" in message


# --- the real packaged model -----------------------------------------------------------------------


@pytest.mark.llm
@pytest.mark.skipif(not HAS_LLAMA_CPP, reason="llama-cpp-python not installed")
def test_real_fast_model_answers_through_chat_openai(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    try:
        gguf.part_files("fast")
    except ModelPackageMissing as exc:
        pytest.skip(str(exc))
    # Keep the configured port busy, and set the env vars llama_cpp.server would otherwise obey: the server
    # must move to a free port on 127.0.0.1 all the same.
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        busy = blocker.getsockname()[1]
        monkeypatch.setenv("PORT", str(busy))
        monkeypatch.setenv("HOST", "0.0.0.0")
        settings = settings.model_copy(update={"llm_variant": "fast", "llm_threads": 1, "llm_port": busy,
                                               "llm_max_tokens": 8, "llm_temperature": 0.0})
        try:
            url = ensure_llm(settings)
            server = llm_server._server
            assert server is not None and server.is_running and server.pid is not None
            assert server.port != busy and url == f"http://127.0.0.1:{server.port}/v1"
            assert ensure_llm(settings) == url  # once per process
            assert f"Uvicorn running on http://127.0.0.1:{server.port}" in server.log_tail(100_000)

            ok, message = check_connection(settings)
            assert ok, message

            reply = make_chat_model(settings).invoke([("user", "Write the numbers from 1 to 50, one per line.")])
            assert isinstance(reply.content, str) and reply.content.strip()
            # llm_max_tokens must reach llama.cpp (it ignores `max_completion_tokens`).
            assert reply.response_metadata.get("finish_reason") == "length"
            pid = server.pid
        finally:
            stop_llm()
    assert not server.is_running
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


@pytest.mark.llm
@pytest.mark.skipif(not HAS_LLAMA_CPP, reason="llama-cpp-python not installed")
def test_a_random_key_that_starts_with_a_dash_still_starts_the_server(tmp_path: Path) -> None:
    # The per-process key is secrets.token_urlsafe(): 1 start in 64 drew a leading "-", which argparse then read
    # as a missing value ("usage: ..." and exit code 2) — seen once in a browser-test run.
    import urllib.request

    try:
        model = packaged_gguf("fast", Path.home() / ".cache" / "second-brain")
    except ModelAssemblyError as exc:
        pytest.skip(str(exc))
    server = LlamaServer(model, model_alias="fast", port=0, n_threads=1, n_ctx=512, log_dir=tmp_path,
                         api_key="-dash-first-key")
    try:
        url = server.start()
        request = urllib.request.Request(f"{url}/models", headers={"Authorization": "Bearer -dash-first-key"})
        with urllib.request.urlopen(request, timeout=10) as resp:
            assert resp.status == 200
    finally:
        server.stop()
