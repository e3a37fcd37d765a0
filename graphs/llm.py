"""The chat model the graph talks to: `ChatOpenAI` against the packaged llama.cpp server or any
OpenAI-compatible endpoint (Ollama `/v1`, vLLM, LM Studio, a hosted API)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlparse

from langchain_openai import ChatOpenAI

from core.settings import Settings
from graphs.llm_server import ensure_llm, local_api_key

# Per read, not per answer (streaming): on a CPU the first token of a long prompt can take a few minutes
# (~23 prompt tok/s for the 1.5B model on one core), so the read timeout must cover the whole prefill.
DEFAULT_TIMEOUT_S = 300.0
_CONNECT_TIMEOUT_S = 10.0


def _is_openai_hosted(base_url: str) -> bool:
    host = urlparse(base_url).hostname or ""
    return host.endswith("openai.com") or host.endswith("openai.azure.com")


def make_chat_model(
    settings: Settings,
    base_url: str | None = None,
    streaming: bool = True,
    *,
    timeout: float = DEFAULT_TIMEOUT_S,
    **overrides: Any,
) -> ChatOpenAI:
    """A `ChatOpenAI` configured from the `LLM_*` settings.

    `base_url` defaults to `ensure_llm(settings)`: `LLM_BASE_URL` when set, otherwise the packaged local server
    (started on first use, which can take a few seconds). The API key is `LLM_API_KEY` (from the environment or
    `.env`, never from code), except for the packaged server, which uses its own per-process key.
    `overrides` are passed to `ChatOpenAI` last (e.g. `temperature=0` for a query rewrite).
    """
    url = (base_url or ensure_llm(settings)).rstrip("/")
    kwargs: dict[str, Any] = {
        "model": settings.llm_model,
        "base_url": url,
        "api_key": local_api_key(url) or settings.llm_api_key,
        "temperature": settings.llm_temperature,
        "streaming": streaming,
        # (connect, read, write, pool): a plain tuple, since openai>=3 uses httpx2 and rejects httpx.Timeout.
        "timeout": (_CONNECT_TIMEOUT_S, timeout, timeout, timeout),
        # A retry re-runs the whole prefill on a CPU server; one is enough for a dropped connection.
        "max_retries": 1,
        "max_tokens": settings.llm_max_tokens,
    }
    if not _is_openai_hosted(url):
        # langchain-openai sends `max_tokens` as `max_completion_tokens`, which llama_cpp.server (0.3.x) and older
        # Ollama ignore, so answers would run on to the context limit; send the classic field as well.
        kwargs["extra_body"] = {"max_tokens": settings.llm_max_tokens}
    kwargs.update(overrides)
    return ChatOpenAI(**kwargs)


def check_connection(settings: Settings, timeout: float = 10.0) -> tuple[bool, str]:
    """Test the configured LLM endpoint by listing its models; returns (ok, message for the user).

    Without `LLM_BASE_URL` this starts the packaged local server if it is not running yet. Not ok when the
    endpoint cannot be reached, rejects the key, or does not serve the configured `LLM_MODEL`.
    """
    from openai import APIConnectionError, APIStatusError, AuthenticationError, OpenAI

    try:
        url = ensure_llm(settings)
    except Exception as exc:  # the message is the result
        return False, f"could not start the packaged LLM server: {exc}"
    client = OpenAI(base_url=url, api_key=local_api_key(url) or settings.llm_api_key, timeout=timeout,
                    max_retries=0)
    try:
        models = [m.id for m in client.models.list()]
    except AuthenticationError:
        return False, f"{url} rejected the API key (set LLM_API_KEY)"
    except APIConnectionError as exc:
        return False, f"cannot reach {url}: {exc.__cause__ or exc}"
    except APIStatusError as exc:
        return False, f"{url} answered {exc.status_code} to GET /models: {exc.message}"
    except Exception as exc:  # e.g. a non-JSON answer from a wrong URL
        return False, f"{url} did not answer like an OpenAI-compatible API: {exc}"
    finally:
        client.close()
    if models and settings.llm_model not in models:
        shown = ", ".join(models[:20]) + (" …" if len(models) > 20 else "")
        return False, f"{url} is reachable but does not serve LLM_MODEL={settings.llm_model!r}; it serves: {shown}"
    return True, f"{url} is reachable and serves {settings.llm_model!r}"
