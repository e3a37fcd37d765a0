"""The packaged llama.cpp model served over the OpenAI API by a child `llama_cpp.server` process.

The app always talks to an LLM through the OpenAI API; when no external endpoint is configured
(`LLM_BASE_URL`), `ensure_llm` starts this server once per process on the assembled packaged GGUF model.
"""

from __future__ import annotations

import atexit
import importlib.util
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import IO

from core.gguf import packaged_gguf
from core.settings import Settings

log = logging.getLogger(__name__)

LLAMA_CPP_REQUIREMENT = "llama-cpp-python[server]==0.3.36"
# Modules `python -m llama_cpp.server` imports; the plain `llama-cpp-python` install lacks the web ones.
_SERVER_MODULES = ("llama_cpp", "uvicorn", "fastapi", "sse_starlette", "starlette_context", "pydantic_settings")

# Runs in the child before the server. Reasons not to use `python -m llama_cpp.server` directly:
# - llama_cpp.server reads every setting from same-named environment variables as well (HOST and PORT even
#   override the command line, so HOST=0.0.0.0 in the user's shell would expose the server); scrub them so
#   only our arguments count.
# - the server runs in its own session (so Ctrl-C in a terminal doesn't kill it mid-answer and stop() can
#   kill the group), which means nothing stops it if the parent is SIGKILLed; a watchdog thread exits when
#   the parent is gone instead of leaving a 1 GB orphan holding the port.
# - the API key comes through the environment: a command line is readable by every local user (`ps`).
# - llama.cpp's extra CPU buffer types are off: a -march=native build on a CPU that lists AMX uses AMX tile
#   kernels for them, and where the VM does not enable AMX the first matmul dies with SIGILL (measured here:
#   `tileloadd` trapping in libggml-cpu.so, the server gone mid-answer).
_BOOTSTRAP = """\
import os, runpy, sys, threading, time
from llama_cpp.server.settings import ConfigFileSettings, Settings
names = {*Settings.model_fields, *ConfigFileSettings.model_fields, "host", "port", "config_file"}
for key in [k for k in os.environ if k.lower() in names]:
    del os.environ[key]
parent = int(os.environ.pop("SECOND_BRAIN_LLM_PARENT"))
sys.argv.append("--api_key=" + os.environ.pop("SECOND_BRAIN_LLM_KEY"))  # "=": a key may start with "-"
def _watch():
    while True:
        time.sleep(1.0)
        if os.getppid() != parent:
            os._exit(0)
if os.name == "posix":
    threading.Thread(target=_watch, daemon=True).start()
import llama_cpp.llama_cpp as _lc
_model_defaults = _lc.llama_model_default_params
def _no_extra_buffers():
    params = _model_defaults()
    params.use_extra_bufts = False
    return params
_lc.llama_model_default_params = _no_extra_buffers
runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)
"""

_LOG_TAIL_BYTES = 4000


class LlamaServerError(RuntimeError):
    """The llama.cpp server is not installed, did not start, or died."""


def _missing_server_modules() -> list[str]:
    return [m for m in _SERVER_MODULES if importlib.util.find_spec(m) is None]


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        if os.name == "posix":
            # uvicorn binds with SO_REUSEADDR, so a port in TIME_WAIT from our last run is usable.
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class LlamaServer:
    """A `llama_cpp.server` child process serving one GGUF model, owned (started and stopped) by the caller.

    Use as a context manager, or call `start()` / `stop()`. The server requires `api_key` (random per instance
    unless given) because llama_cpp.server allows CORS from any origin: without a key any web page open in
    the user's browser could drive the local model.
    """

    def __init__(
        self,
        model_path: Path,
        *,
        model_alias: str,
        host: str = "127.0.0.1",
        port: int = 8765,
        n_threads: int = 1,
        n_ctx: int = 4096,
        log_dir: Path | None = None,
        api_key: str | None = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        """Describe the server; nothing starts until `start()`. `extra_args` go to llama_cpp.server verbatim."""
        self.model_path = Path(model_path)
        self.model_alias = model_alias
        self.host = host
        self.port = port
        self.n_threads = n_threads
        self.n_ctx = n_ctx
        self.log_dir = Path(log_dir) if log_dir is not None else Path.cwd() / "logs"
        self.api_key = api_key or secrets.token_urlsafe(24)
        self.extra_args = list(extra_args)
        self.log_path: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @classmethod
    def from_settings(cls, settings: Settings, *, progress: bool = False) -> LlamaServer:
        """A server for the packaged model `settings.llm_variant`, assembling the GGUF first if needed."""
        model = packaged_gguf(settings.llm_variant, settings.cache, progress=progress)
        return cls(
            model,
            model_alias=settings.llm_model,
            port=settings.llm_port,
            n_threads=settings.llm_threads,
            n_ctx=settings.llm_ctx,
            log_dir=settings.data_dir / "logs",
        )

    @property
    def base_url(self) -> str:
        """The OpenAI-compatible base URL (ends in `/v1`); the port is final only after `start()`."""
        return f"http://{self.host}:{self.port}/v1"

    @property
    def is_running(self) -> bool:
        """True while the child process is alive."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        """The child's process id (also its process group id), or None before `start()`."""
        return self._proc.pid if self._proc is not None else None

    def command(self) -> list[str]:
        """The child's command line."""
        return [
            sys.executable, "-c", _BOOTSTRAP,
            "--model", str(self.model_path),
            "--model_alias", self.model_alias,
            "--host", self.host,
            "--port", str(self.port),
            "--n_ctx", str(self.n_ctx),
            "--n_threads", str(self.n_threads),
            # Its default is every CPU: on 2 cores shared with the embedder, prompt processing then stalls.
            "--n_threads_batch", str(self.n_threads),
            # The default True keeps logits for every prompt token (n_ctx x 152k vocab floats) and computes
            # the output layer for all of them; only logprobs need that.
            "--logits_all", "false",
            # The default mlock pins the whole model in RAM on a laptop; mmap + page cache is enough.
            "--use_mlock", "false",
            # The default lets a new request abort a streaming answer (e.g. a background memory write would
            # cut off the chat); queue requests instead.
            "--interrupt_requests", "false",
            # Per-request timings go to the log file.
            "--verbose", "true",
            # --api_key is appended by the bootstrap from SECOND_BRAIN_LLM_KEY.
            # No --chat_format: the server then uses the chat template stored in the GGUF (Qwen's ChatML).
            *self.extra_args,
        ]

    def start(self, timeout: float = 120.0) -> str:
        """Start the server and wait until `GET /v1/models` answers; return the base URL.

        Picks a free port when the configured one is taken (or is 0). Raises `LlamaServerError` when llama-cpp-python is
        not installed, or when the server exits or does not answer within `timeout` seconds (with the log tail).
        """
        if self.is_running:
            return self.base_url
        missing = _missing_server_modules()
        if missing:
            raise LlamaServerError(
                f"the packaged LLM needs llama-cpp-python with its server extra (missing modules: "
                f"{', '.join(missing)}); install it with: pip install '{LLAMA_CPP_REQUIREMENT}' "
                f"(builds from source, ~15 min on 2 cores), or set LLM_BASE_URL to an OpenAI-compatible endpoint"
            )
        if not self.model_path.is_file():
            raise LlamaServerError(f"model file not found: {self.model_path}")
        if self.port <= 0 or not _port_free(self.host, self.port):
            busy, self.port = self.port, _free_port(self.host)
            log.warning("port %s is busy; starting the LLM server on port %s instead", busy, self.port)

        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.log_dir / f"llama-server-{self.port}.log"
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - lives as long as the child; append: keep failures
        env = {**os.environ, "SECOND_BRAIN_LLM_PARENT": str(os.getpid()), "SECOND_BRAIN_LLM_KEY": self.api_key}
        popen_kw: dict[str, object] = {}
        if os.name == "posix":
            popen_kw["start_new_session"] = True
        else:
            popen_kw["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP  # type: ignore[attr-defined]
        started = time.monotonic()
        log.info("starting LLM server: %s on %s (log %s)", self.model_path.name, self.base_url, self.log_path)
        self._proc = subprocess.Popen(
            self.command(), stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT, env=env,
            **popen_kw,  # type: ignore[arg-type]
        )
        try:
            self._wait_ready(started + timeout)
        except BaseException:
            self.stop()
            raise
        log.info("LLM server ready in %.1f s at %s", time.monotonic() - started, self.base_url)
        return self.base_url

    def _wait_ready(self, deadline: float) -> None:
        request = urllib.request.Request(
            f"{self.base_url}/models", headers={"Authorization": f"Bearer {self.api_key}"}
        )
        while True:
            assert self._proc is not None
            code = self._proc.poll()
            if code is not None:
                raise LlamaServerError(
                    f"the LLM server exited with code {code} while starting; log {self.log_path}:\n{self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(request, timeout=2.0) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                pass  # not listening yet: the model loads before the port opens
            if time.monotonic() > deadline:
                raise LlamaServerError(
                    f"the LLM server did not answer on {self.base_url} in time; log {self.log_path}:\n"
                    f"{self.log_tail()}"
                )
            time.sleep(0.25)

    def log_tail(self, max_bytes: int = _LOG_TAIL_BYTES) -> str:
        """The last part of the server log (empty before the first start)."""
        if self.log_path is None or not self.log_path.exists():
            return ""
        with open(self.log_path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - max_bytes))
            return f.read().decode("utf-8", errors="replace")

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server and everything in its process group: SIGTERM, then SIGKILL after `timeout` s."""
        proc, self._proc = self._proc, None
        if proc is not None:
            self._signal_group(proc, signal.SIGTERM if os.name == "posix" else None)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._signal_group(proc, signal.SIGKILL if os.name == "posix" else None)
                proc.wait(timeout)
        if self._log is not None:
            self._log.close()
            self._log = None

    @staticmethod
    def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals | None) -> None:
        try:
            if sig is None:
                proc.terminate()
            else:
                # The child is a session leader, so its pid is the group id.
                os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def __enter__(self) -> LlamaServer:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


# --- the process-wide packaged server ---------------------------------------------------------------

_lock = threading.Lock()
_server: LlamaServer | None = None
_server_key: tuple[object, ...] | None = None
_atexit_registered = False


def _key(settings: Settings) -> tuple[object, ...]:
    return (settings.llm_variant, str(settings.cache), settings.llm_model, settings.llm_port, settings.llm_threads,
            settings.llm_ctx, str(settings.data_dir))


def ensure_llm(settings: Settings, *, progress: bool = False, timeout: float = 120.0) -> str:
    """The OpenAI-compatible base URL to use for `settings`.

    `settings.llm_base_url` when set (Ollama, vLLM, LM Studio, a hosted API); otherwise the packaged model's
    local server, started on first use and reused for the rest of the process (restarted if it died or the
    LLM settings changed), and stopped at interpreter exit.
    """
    global _server, _server_key, _atexit_registered
    if settings.llm_base_url:
        return settings.llm_base_url.rstrip("/")
    key = _key(settings)
    with _lock:
        if _server is not None and _server.is_running and _server_key == key:
            return _server.base_url
        if _server is not None:
            if _server_key == key:
                log.warning("the LLM server died; restarting it. Log tail:\n%s", _server.log_tail())
            _server.stop()
            _server = None
        server = LlamaServer.from_settings(settings, progress=progress)
        server.start(timeout)
        _server, _server_key = server, key
        if not _atexit_registered:
            atexit.register(stop_llm)
            _atexit_registered = True
        return server.base_url


def stop_llm() -> None:
    """Stop the process-wide packaged server, if one was started."""
    global _server, _server_key
    with _lock:
        if _server is not None:
            _server.stop()
        _server, _server_key = None, None


def local_api_key(base_url: str) -> str | None:
    """The API key of the process-wide packaged server when `base_url` is its URL, else None."""
    server = _server
    if server is not None and server.base_url == base_url.rstrip("/"):
        return server.api_key
    return None
