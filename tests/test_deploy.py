"""The docker compose install: the compose file is valid, it is wired the way docs/deploy.md says, and
.env.example documents exactly the variables the settings class reads.

Nothing here starts a container (no Docker engine is needed): the compose file is validated by Debian's
`docker-compose config` and otherwise parsed as YAML. Field lists are taken from `Settings.model_fields`
at test time, so a new setting fails these tests until it is documented in .env.example.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import types
import typing
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import TypeAdapter, ValidationError

from core.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
DEPLOY_DOC = ROOT / "docs" / "deploy.md"

# The line in .env.example after which only compose's own variables follow.
COMPOSE_ONLY_MARKER = "docker compose only"
# Variables docker compose itself reads from .env (they configure compose and are not interpolated in the file).
COMPOSE_CLI_VARS = {"COMPOSE_PROFILES", "COMPOSE_PROJECT_NAME", "COMPOSE_FILE"}
# Services built from this repository's Dockerfile.
BRAIN_IMAGE = "second-brain:local"

ENV_LINE = re.compile(r"^(?P<comment>#\s?)?(?P<name>[A-Z][A-Z0-9_]*)=(?P<value>\S*)\s*$")
# ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?err}, ${VAR?err} and $VAR, but not the escaped $${...} / $$VAR.
INTERPOLATION = re.compile(
    r"(?<!\$)\$(?:\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?P<rest>[^}]*)\}|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))"
)


# --------------------------------------------------------------------------------------------- helpers
def settings_vars() -> dict[str, str]:
    """Environment variable name -> settings field, from the settings class as it is now."""
    return {name.upper(): name for name in Settings.model_fields}


@cache
def env_example() -> tuple[dict[str, tuple[str, bool]], dict[str, tuple[str, bool]]]:
    """(settings section, compose-only section) of .env.example: name -> (value, commented out)."""
    sections: tuple[dict[str, tuple[str, bool]], dict[str, tuple[str, bool]]] = ({}, {})
    current = 0
    for lineno, line in enumerate(ENV_EXAMPLE.read_text(encoding="utf-8").splitlines(), start=1):
        if line.startswith("#") and COMPOSE_ONLY_MARKER in line:
            current = 1
            continue
        m = ENV_LINE.match(line)
        if not m:
            continue
        name = m["name"]
        for section in sections:
            assert name not in section, f".env.example:{lineno}: {name} is listed twice"
        sections[current][name] = (m["value"], m["comment"] is not None)
    return sections


@cache
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))


def services() -> dict[str, dict[str, Any]]:
    return compose()["services"]


def interpolated_vars(text: str) -> set[str]:
    return {m["braced"] or m["bare"] for m in INTERPOLATION.finditer(text)}


def resolve_defaults(value: str) -> str:
    """`${VAR:-default}` -> `default`, as compose resolves it when .env leaves VAR unset."""
    return INTERPOLATION.sub(lambda m: (m["rest"] or "")[2:] if (m["rest"] or "").startswith(":-") else "", value)


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def healthcheck_text(service: dict[str, Any]) -> str:
    test = service["healthcheck"]["test"]
    return test if isinstance(test, str) else " ".join(test)


def named_volumes(service: dict[str, Any]) -> dict[str, str]:
    """Named volumes a service mounts: volume name -> mount spec."""
    declared = set(compose().get("volumes") or {})
    out = {}
    for spec in service.get("volumes") or []:
        source = spec.split(":", 1)[0]
        if source in declared:
            out[source] = spec
    return out


def bind_mounts(service: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(source, target, mode) of the host folders a service mounts."""
    declared = set(compose().get("volumes") or {})
    out = []
    for spec in service.get("volumes") or []:
        # The source may itself contain `${VAR:-./path}`; split on the last ':'s of the target part.
        parts = resolve_defaults(spec).split(":")
        source, target, mode = parts[0], parts[1], (parts[2] if len(parts) > 2 else "rw")
        if spec.split(":", 1)[0] not in declared:
            out.append((source, target, mode))
    return out


def markdown_table(heading_text: str) -> list[dict[str, str]]:
    """The first pipe table after the line containing `heading_text` in docs/deploy.md, as dicts."""
    lines = DEPLOY_DOC.read_text(encoding="utf-8").splitlines()
    start = next(i for i, line in enumerate(lines) if heading_text in line)
    rows: list[list[str]] = []
    for line in lines[start:]:
        if line.startswith("|"):
            rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
        elif rows:
            break
    header, body = rows[0], rows[2:]  # rows[1] is the |---| separator
    return [dict(zip(header, r, strict=True)) for r in body]


def code_spans(cell: str) -> list[str]:
    return re.findall(r"`([^`]+)`", cell)


# --------------------------------------------------------------------------------------------- .env.example
def test_env_example_documents_exactly_the_settings_fields() -> None:
    documented, _ = env_example()
    fields = settings_vars()
    missing = sorted(set(fields) - set(documented))
    unknown = sorted(set(documented) - set(fields))
    assert not missing, f"settings fields not documented in .env.example (add a commented line each): {missing}"
    assert not unknown, f".env.example lists variables the settings class does not read: {unknown}"


def _non_default_sample(field: str) -> tuple[str, Any] | None:
    """An environment value for `field` that parses to something other than its default."""
    info = Settings.model_fields[field]
    annotation = info.annotation
    base = annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):  # `X | None` -> X
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        base = args[0] if len(args) == 1 else annotation
    documented, _ = env_example()
    candidates: list[str] = []
    if base is bool:
        candidates = ["false" if info.default else "true"]
    elif base is int:
        candidates = [str((info.default or 0) + 7)]
    elif base is float:
        candidates = [str((info.default or 0.0) + 0.25)]
    elif base is Path:
        candidates = ["/tmp/second-brain-env-test"]
    elif typing.get_origin(base) is typing.Literal:
        candidates = [str(v) for v in typing.get_args(base) if v != info.default]
    elif base is str:
        candidates = ["env-test-value"]
    candidates.append(documented.get(field.upper(), ("", True))[0])
    adapter = TypeAdapter(annotation)
    for raw in candidates:
        if not raw:
            continue
        try:
            value = adapter.validate_python(raw)
        except ValidationError:
            try:
                value = adapter.validate_json(raw)
            except ValidationError:
                continue
        if value != info.default:
            return raw, value
    return None


@pytest.mark.parametrize("var", sorted(settings_vars()))
def test_every_documented_variable_is_read_from_the_environment(var: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Setting the variable changes the field: the name is really the one the settings class reads (an alias or
    env prefix added to a field would change it, and `extra="ignore"` would hide the mistake)."""
    field = settings_vars()[var]
    sample = _non_default_sample(field)
    if sample is None:
        pytest.skip(f"no non-default sample value for {var} (type {Settings.model_fields[field].annotation})")
    raw, expected = sample
    for other in settings_vars():
        monkeypatch.delenv(other, raising=False)
    monkeypatch.setenv(var, raw)
    assert getattr(Settings(_env_file=None), field) == expected


def test_env_example_defaults_match_the_settings_class() -> None:
    """A commented `# VAR=value` line shows the default; it must still be the default."""
    documented, _ = env_example()
    wrong = []
    for var, (raw, commented) in documented.items():
        field = settings_vars().get(var)
        if field is None or not commented or raw == "":
            continue
        info = Settings.model_fields[field]
        value = TypeAdapter(info.annotation).validate_python(raw)
        if value != info.default:
            wrong.append(f"{var}: .env.example says {raw!r}, the default is {info.default!r}")
    assert not wrong, "\n".join(wrong)


def test_copied_env_example_is_a_valid_configuration(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`cp .env.example .env` must start: the uncommented lines parse, the compose-only ones are ignored."""
    for var in settings_vars():
        monkeypatch.delenv(var, raising=False)
    env_file = tmp_path / ".env"
    shutil.copy(ENV_EXAMPLE, env_file)
    settings = Settings(_env_file=env_file)
    assert settings.qdrant_url is None  # the template keeps the embedded default for the host


def test_compose_only_variables_are_documented_and_used() -> None:
    """Every variable compose interpolates is a setting or documented in the compose-only section, and every
    compose-only variable is used by docker-compose.yml (or is one of compose's own)."""
    _, compose_only = env_example()
    used = interpolated_vars(COMPOSE.read_text(encoding="utf-8"))
    undocumented = sorted(used - set(settings_vars()) - set(compose_only))
    assert not undocumented, f"docker-compose.yml uses variables .env.example does not document: {undocumented}"
    unused = sorted(set(compose_only) - used - COMPOSE_CLI_VARS)
    assert not unused, f".env.example documents compose variables docker-compose.yml does not use: {unused}"
    shadowing = sorted(set(compose_only) & set(settings_vars()))
    assert not shadowing, f"settings listed in the compose-only section of .env.example: {shadowing}"


# --------------------------------------------------------------------------------------------- docker-compose
def test_compose_file_validates_with_docker_compose(tmp_path: Path) -> None:
    """`docker-compose config` (Debian's 1.29) accepts the file with the .env a user gets from the template."""
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.skip("Debian's docker-compose is not installed (scripts/test.sh installs it: "
                    "apt-get install docker-compose)")
    # A copy, so the developer's own .env (and their shell's settings) cannot change the outcome.
    shutil.copy(COMPOSE, tmp_path / "docker-compose.yml")
    shutil.copy(ENV_EXAMPLE, tmp_path / ".env")
    shutil.copy(DOCKERFILE, tmp_path / "Dockerfile")
    env = {k: v for k, v in os.environ.items()
           if k in ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR")}
    run = subprocess.run([binary, "-f", "docker-compose.yml", "config"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, f"docker-compose config failed:\n{run.stderr}\n{run.stdout}"
    resolved = yaml.safe_load(run.stdout)
    assert set(resolved["services"]) == set(services())
    assert "127.0.0.1:8501:8501" in str(resolved["services"]["app"]["ports"])
    listed = subprocess.run([binary, "-f", "docker-compose.yml", "config", "--profiles"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0, listed.stderr
    assert set(listed.stdout.split()) == {"llamacpp", "ollama", "postgres"}


def test_services_match_the_deploy_doc() -> None:
    """docs/deploy.md's service table: the same services, images, profiles, healthchecks, volumes, dependencies."""
    rows = {code_spans(r["service"])[0]: r for r in markdown_table("defines these services")}
    assert set(rows) == set(services()), "docs/deploy.md's service table and docker-compose.yml differ"
    for name, svc in services().items():
        row = rows[name]
        assert code_spans(row["image"]) == [svc["image"]], f"{name}: image"
        profiles = svc.get("profiles") or []
        assert code_spans(row["profile"]) == profiles, f"{name}: profiles"
        # The healthcheck column names what the probe checks; each such name appears in the probe itself.
        probe = healthcheck_text(svc)
        for token in code_spans(row["healthcheck"]):
            assert token.strip("`") in probe, f"{name}: the doc says the healthcheck uses {token!r}: {probe}"
        assert set(code_spans(row["volumes"])) == set(named_volumes(svc)), f"{name}: named volumes"
        assert ("drop folder" in row["volumes"]) == bool(bind_mounts(svc)), f"{name}: drop folder mount"
        assert ("read-only" in row["volumes"]) == any(m == "ro" for *_, m in bind_mounts(svc)), f"{name}: ro"
        waits = {dep: cond["condition"] for dep, cond in (svc.get("depends_on") or {}).items()}
        assert waits == {d: "service_healthy" for d in code_spans(row["waits for"])}, f"{name}: depends_on"


def test_environment_wiring_matches_the_deploy_doc() -> None:
    """docs/deploy.md's table of the values compose sets in the containers is complete and correct."""
    rows = markdown_table("| variable | value in the containers | services |")
    documented: dict[tuple[str, str], str] = {}
    for row in rows:
        var, value = code_spans(row["variable"])[0], code_spans(row["value in the containers"])[0]
        for svc in code_spans(row["services"]):
            documented[(svc, var)] = value
    actual = {
        (name, var): resolve_defaults(value)
        for name, svc in services().items() if svc.get("image") == BRAIN_IMAGE
        for var, value in environment(svc).items() if var in settings_vars()
    }
    assert actual == documented


def test_every_service_has_a_healthcheck_and_restarts() -> None:
    for name, svc in services().items():
        hc = svc.get("healthcheck")
        assert hc and hc.get("test"), f"{name} has no healthcheck"
        assert {"interval", "timeout", "retries", "start_period"} <= set(hc), f"{name}: incomplete healthcheck"
        assert svc.get("restart") == "unless-stopped", f"{name}: restart policy"


def test_images_are_pinned() -> None:
    for name, svc in services().items():
        image = svc["image"]
        if image == BRAIN_IMAGE:
            assert svc.get("build"), f"{name} uses the local image but does not build it"
            continue
        repo, _, tag = image.rpartition(":")
        assert repo and tag and tag != "latest", f"{name}: image {image!r} is not pinned"
    assert re.fullmatch(r"qdrant/qdrant:v\d+\.\d+\.\d+", services()["qdrant"]["image"]), "pin Qdrant to x.y.z"


def test_qdrant_server_and_client_versions_are_compatible() -> None:
    """qdrant-client warns when the server is more than one minor version away; keep the pinned image, the
    installed client and the Dockerfile's client range within that window."""
    from importlib.metadata import version

    import qdrant_client.common.version_check as vc

    server = services()["qdrant"]["image"].rsplit(":v", 1)[1]
    client = version("qdrant-client")
    assert vc.is_compatible(client, server), f"qdrant-client {client} vs pinned server {server}"
    spec = re.search(r'ARG QDRANT_CLIENT_SPEC="qdrant-client>=([\d.]+),<([\d.]+)"', DOCKERFILE.read_text())
    assert spec, "Dockerfile: QDRANT_CLIENT_SPEC"
    # The range allows client minors low..high-1; all of them must be within one minor of the server.
    low, high = vc.parse_version(spec[1] + ".0").minor, vc.parse_version(spec[2] + ".0").minor
    minor = vc.parse_version(server).minor
    assert minor - 1 <= low <= minor and minor <= high - 1 <= minor + 1, (spec[0], server)


def test_qdrant_healthcheck_needs_no_curl() -> None:
    """The official Qdrant image has neither curl nor wget; the probe must use bash alone."""
    probe = healthcheck_text(services()["qdrant"])
    assert services()["qdrant"]["healthcheck"]["test"][:2] == ["CMD", "bash"]
    assert "/dev/tcp/127.0.0.1/6333" in probe and "/readyz" in probe
    assert not re.search(r"\b(curl|wget|nc)\b", probe)
    # Escaped for compose ($$), so the shell, not compose, expands the variable.
    assert "$$status" in probe


def test_server_mode_wiring() -> None:
    """The app and the worker share one Qdrant server, one data volume and the same drop folder path."""
    svc = services()
    app, worker = environment(svc["app"]), environment(svc["worker"])
    for name, env in (("app", app), ("worker", worker)):
        assert env["QDRANT_URL"] == "http://qdrant:6333", name
        assert svc[name]["env_file"] == ".env" or svc[name]["env_file"] == [".env"], name
        assert svc[name]["depends_on"] == {"qdrant": {"condition": "service_healthy"}}, name
        assert named_volumes(svc[name]).get("brain_data", "").split(":")[1] == env["DATA_DIR"], name
    # Same drop folder, same path inside both containers (the chunks' paths must mean the same in both).
    (app_src, app_dst, app_mode), = bind_mounts(svc["app"])
    (w_src, w_dst, w_mode), = bind_mounts(svc["worker"])
    assert app_src == w_src and app_dst == w_dst == app["INBOX_DIR"] == worker["INBOX_DIR"]
    assert (app_mode, w_mode) == ("rw", "ro"), "uploads need a writable folder; the worker only reads it"
    # The worker is `brain watch` on that folder, and stops on SIGINT (what `brain watch` handles).
    assert svc["worker"]["command"] == ["brain", "watch", worker["INBOX_DIR"]]
    assert svc["worker"]["stop_signal"] == "SIGINT"
    # The app reaches the bundled llm service on the port that service listens on.
    llm_port = environment(svc["llm"])["LLM_PORT"]
    assert resolve_defaults(app["LLM_BASE_URL"]) == f"http://llm:{llm_port}/v1"
    assert "--host" in svc["llm"]["command"] and "0.0.0.0" in svc["llm"]["command"]


def test_nothing_is_published_beyond_loopback() -> None:
    for name, svc in services().items():
        for port in svc.get("ports") or []:
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} on all interfaces"


def test_volumes_are_declared_and_used() -> None:
    declared = set(compose().get("volumes") or {})
    used = {v for svc in services().values() for v in named_volumes(svc)}
    assert used == declared


def test_streamlit_entry_point_exists() -> None:
    """The compose `app` service and the image's default command run `streamlit run app/main.py`."""
    assert (ROOT / "app" / "main.py").is_file(), "docker-compose.yml and the Dockerfile run app/main.py"
    assert "app/main.py" in services()["app"]["command"]


def _brain_commands() -> list[tuple[str, list[str]]]:
    return [(name, svc["command"]) for name, svc in services().items()
            if svc.get("image") == BRAIN_IMAGE and svc.get("command") and svc["command"][0] == "brain"]


@pytest.mark.parametrize(("service", "command"), _brain_commands(), ids=[n for n, _ in _brain_commands()])
def test_brain_commands_compose_runs_exist(service: str, command: list[str]) -> None:
    """Each `brain ...` command line a service runs is accepted by the CLI, options included."""
    run = subprocess.run([sys.executable, "-m", "brain", *command[1:], "--help"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, f"the {service} service runs `{' '.join(command)}`, which the CLI rejects:\n" \
                                f"{run.stdout}{run.stderr}"


# --------------------------------------------------------------------------------------------- Dockerfile
def test_dockerfile_builds_an_offline_non_root_cpu_image() -> None:
    text = DOCKERFILE.read_text(encoding="utf-8")
    stages = re.findall(r"^FROM\s+\S+\s+AS\s+(\S+)", text, flags=re.MULTILINE | re.IGNORECASE)
    assert len(stages) >= 2, "multi-stage build"
    # CPU torch from PyTorch's index (PyPI's Linux wheel pulls CUDA), before the project.
    torch_line = "pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu"
    assert torch_line in text
    assert text.index(torch_line) < text.index("pip install \"$LLAMA_CPP_SPEC\"") < text.index('pip install ".[')
    # The last USER is not root.
    users = re.findall(r"^USER\s+(\S+)", text, flags=re.MULTILINE)
    assert users and users[-1] not in ("root", "0"), "runs as a non-root user"
    # Models are assembled at build time and nothing reaches for a hub at run time.
    assert "python -m core.gguf" in text and "HF_HUB_OFFLINE=1" in text
    # The llama.cpp version is the one the runtime code asks for.
    from graphs.llm_server import LLAMA_CPP_REQUIREMENT

    assert f'ARG LLAMA_CPP_SPEC="{LLAMA_CPP_REQUIREMENT}"' in text
    # The compose file passes the build args the Dockerfile declares.
    args = set(services()["app"]["build"]["args"])
    assert args <= set(re.findall(r"^ARG\s+([A-Z_]+)", text, flags=re.MULTILINE))


def test_dockerfile_installs_what_the_llm_extra_lists() -> None:
    """The image installs llama-cpp-python itself and takes the models from the `models` stage instead of the
    `llm` extra (whose part packages would add 1.6 GB twice); so the extra may hold nothing else."""
    import tomllib

    from core.gguf import PACKAGED_GGUF

    extra = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["optional-dependencies"]
    parts = {model.requirement(n) for model in PACKAGED_GGUF.values() for n in range(1, model.parts + 1)}
    spec = re.search(r'ARG LLAMA_CPP_SPEC="([^"]+)"', DOCKERFILE.read_text(encoding="utf-8"))
    assert spec
    rest = {re.sub(r"\s+", "", r) for r in extra.get("llm", [])} - parts
    assert rest <= {spec[1]}, f"the llm extra lists {sorted(rest - {spec[1]})}, which the Dockerfile does not install"


def test_dockerignore_keeps_the_library_and_secrets_out() -> None:
    patterns = {line.strip() for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
                if line.strip() and not line.startswith("#")}
    assert {"data/", ".env", ".venv/", ".git/"} <= patterns
    assert "!.env.example" in patterns
    # What the Dockerfile copies by name must not be ignored.
    for copied in ("core/", "app/", "pyproject.toml"):
        assert copied not in patterns
