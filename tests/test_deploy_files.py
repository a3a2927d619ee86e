"""The deploy files, read without Docker: Dockerfile, deploy/mlflow.Dockerfile,
docker-compose.yml and deploy/nginx.conf.template agree with each other and with the project.

Docker cannot run here, so what a build would catch is checked by reading: every file a COPY
names exists and is not ignored, the image installs `.` without extras as a non-root user with
a health check, and every module the service imports ships with a runtime dependency (the
image has no test or demo extras, so no full MLflow). tests/test_e2e_deploy.py runs the stack.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import re
import shlex
import sys
import tomllib
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from service.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
TEMPLATE = (ROOT / "deploy" / "nginx.conf.template").read_text()
INSIGHTS_PREFIXES = ("/api/3.0/mlflow/traces/insights/", "/ajax-api/3.0/mlflow/traces/insights/")


def pinned_mlflow_version() -> str:
    for dep in PYPROJECT["project"]["dependencies"]:
        req = Requirement(dep)
        if req.name == "mlflow-skinny":
            (spec,) = req.specifier
            assert spec.operator == "=="
            return spec.version
    raise AssertionError("pyproject.toml pins no mlflow-skinny")


# --------------------------------------------------------------------------- Dockerfiles


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str
    stage: int  # index of the FROM it belongs to (-1 before the first)


def parse_dockerfile(path: Path) -> tuple[list[Instruction], dict[str, str]]:
    """Instructions (continuations joined, comments dropped) and the ARG defaults before FROM."""
    logical: list[str] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    assert not pending, f"{path.name}: dangling line continuation"
    instructions, global_args, stage = [], {}, -1
    for line in logical:
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            stage += 1
        if keyword == "ARG" and stage == -1 and "=" in args:
            name, _, default = args.strip().partition("=")
            global_args[name] = default
        instructions.append(Instruction(keyword, args.strip(), stage))
    return instructions, global_args


def exec_form(args: str) -> list[str]:
    value = json.loads(args)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), args
    return value


def final_stage(instructions: list[Instruction]) -> list[Instruction]:
    last = max(i.stage for i in instructions)
    return [i for i in instructions if i.stage == last]


def base_images(instructions: list[Instruction], args: dict[str, str]) -> list[str]:
    images = []
    for i in instructions:
        if i.keyword == "FROM":
            image = i.args.split()[0]
            images.append(re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], image))
    return images


def assert_runs_as_non_root(instructions: list[Instruction]) -> None:
    stage = final_stage(instructions)
    users = [i for i in stage if i.keyword == "USER"]
    assert users, "the final stage must switch to a non-root USER"
    user = users[-1].args.split(":")[0]
    assert user not in ("root", "0"), user
    last_user = max(n for n, i in enumerate(stage) if i.keyword == "USER")
    assert all(i.keyword != "RUN" for i in stage[last_user + 1 :]), "RUN after USER runs as it"


def dockerignored(path: str) -> bool:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    first = path.split("/")[0]
    return any(p in (first, path) for p in patterns)


DOCKERFILE, DOCKERFILE_ARGS = parse_dockerfile(ROOT / "Dockerfile")
MLFLOW_DOCKERFILE, MLFLOW_DOCKERFILE_ARGS = parse_dockerfile(ROOT / "deploy" / "mlflow.Dockerfile")


def test_dockerfile_is_python_311_slim_and_multi_stage() -> None:
    images = base_images(DOCKERFILE, DOCKERFILE_ARGS)
    assert len(images) >= 2
    assert all(image == "python:3.11-slim" for image in images), images
    copies_from_build = [i for i in final_stage(DOCKERFILE) if i.keyword == "COPY"]
    assert copies_from_build and all("--from=" in i.args for i in copies_from_build), (
        "the runtime stage takes only the built virtualenv, not the sources"
    )


def test_dockerfile_installs_the_package_without_extras() -> None:
    installs = []
    for i in DOCKERFILE:
        if i.keyword != "RUN":
            continue
        for command in i.args.split("&&"):
            words = shlex.split(command)
            if "pip" in " ".join(words[:2]) and "install" in words:
                installs.append(words[words.index("install") + 1 :])
    assert installs == [["."]], installs  # `.`: no [test]/[demo] extras, not editable


def test_dockerfile_copies_only_files_that_exist_and_are_not_ignored() -> None:
    copied = []
    for i in DOCKERFILE:
        if i.keyword == "COPY" and "--from=" not in i.args:
            *sources, _target = i.args.split()
            copied += sources
    assert copied
    for source in copied:
        assert (ROOT / source).exists(), f"COPY {source}: no such file"
        assert not dockerignored(source), f"COPY {source}: excluded by .dockerignore"
    # What `pip install .` needs: pyproject.toml, the readme it names and every package.
    needed = {"pyproject.toml", PYPROJECT["project"]["readme"]}
    needed |= {
        p.rstrip("*") for p in PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]
    }
    assert needed <= {s.rstrip("/").removeprefix("./") for s in copied}, needed


def healthcheck_command(instructions: list[Instruction]) -> list[str]:
    """The exec-form command of the final stage's HEALTHCHECK."""
    (healthcheck,) = [i for i in final_stage(instructions) if i.keyword == "HEALTHCHECK"]
    return exec_form(re.split(r"\bCMD\b", healthcheck.args, maxsplit=1)[1])


def test_dockerfile_runs_non_root_with_health_check_and_entrypoint() -> None:
    assert_runs_as_non_root(DOCKERFILE)
    stage = final_stage(DOCKERFILE)
    assert "/health" in " ".join(healthcheck_command(DOCKERFILE))  # run in test_e2e_deploy
    (entrypoint,) = [i for i in stage if i.keyword == "ENTRYPOINT"]
    assert exec_form(entrypoint.args) == ["insights-server", "--host", "0.0.0.0"]
    (expose,) = [i for i in stage if i.keyword == "EXPOSE"]
    assert expose.args == str(Settings.model_fields["port"].default)


def test_mlflow_dockerfile_pins_the_projects_mlflow() -> None:
    version = pinned_mlflow_version()
    (arg,) = [i for i in MLFLOW_DOCKERFILE if i.keyword == "ARG" and "MLFLOW_VERSION" in i.args]
    assert arg.args == f"MLFLOW_VERSION={version}"
    run = " ".join(i.args for i in MLFLOW_DOCKERFILE if i.keyword == "RUN")
    assert '"mlflow==${MLFLOW_VERSION}"' in run and "psycopg2-binary" in run
    assert base_images(MLFLOW_DOCKERFILE, MLFLOW_DOCKERFILE_ARGS) == ["python:3.11-slim"]
    assert_runs_as_non_root(MLFLOW_DOCKERFILE)
    assert any(i.keyword == "HEALTHCHECK" and "/health" in i.args for i in MLFLOW_DOCKERFILE)


# --------------------------------------------------------------------------- compose and nginx


def interpolate(value: str) -> str:
    """Compose's variable syntax, with every variable unset: ${X:-default} -> default."""
    value = re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", value)
    assert not re.search(r"\$\{?\w", value.replace("$$", "")), value
    return value.replace("$$", "$")


def service(name: str) -> dict[str, Any]:
    services: dict[str, Any] = COMPOSE["services"]
    return services[name]


def env(name: str) -> dict[str, str]:
    return {k: interpolate(str(v)) for k, v in service(name).get("environment", {}).items()}


def test_compose_has_the_stack() -> None:
    assert set(COMPOSE["services"]) == {"postgres", "mlflow", "readonly-role", "insights", "nginx"}
    for name, spec in COMPOSE["services"].items():
        build = spec.get("build")
        if build:
            assert (ROOT / build["context"] / build["dockerfile"]).is_file(), name
        for volume in spec.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (ROOT / source).exists(), f"{name}: mounts missing {source}"


def test_compose_mlflow_is_the_pinned_version_on_postgres() -> None:
    mlflow = service("mlflow")
    assert mlflow["build"]["dockerfile"] == "deploy/mlflow.Dockerfile"
    assert mlflow["build"]["args"]["MLFLOW_VERSION"] == pinned_mlflow_version()
    command = [interpolate(str(c)) for c in mlflow["command"]]
    store = command[command.index("--backend-store-uri") + 1]
    assert store.startswith("postgresql+psycopg2://") and "@postgres:5432/" in store
    assert mlflow["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_compose_insights_logs_in_as_the_role_the_job_creates() -> None:
    job, insights = env("readonly-role"), env("insights")
    assert service("readonly-role")["depends_on"]["mlflow"]["condition"] == "service_healthy"
    condition = service("insights")["depends_on"]["readonly-role"]["condition"]
    assert condition == "service_completed_successfully"
    owner = job["MLFLOW_DATABASE_URL"]
    mlflow_command = [interpolate(str(c)) for c in service("mlflow")["command"]]
    assert owner in mlflow_command, "the job must run as MLflow's own login (the tables' owner)"
    url = Settings(database_url=insights["INSIGHTS_DATABASE_URL"]).async_database_url
    assert url.username == job["INSIGHTS_READER_ROLE"]
    assert url.password == job["INSIGHTS_READER_PASSWORD"]
    assert url.database == owner.rsplit("/", 1)[1]


def test_nginx_template_and_compose_agree() -> None:
    placeholders = set(re.findall(r"\$\{(\w+)\}", TEMPLATE))
    assert placeholders == {"NGINX_LISTEN", "NGINX_MLFLOW_UPSTREAM", "NGINX_INSIGHTS_UPSTREAM"}
    nginx = service("nginx")
    variables = env("nginx")
    assert placeholders <= set(variables)
    # The image substitutes the variables whose names match the filter (awk's `~`: a search).
    envsubst_filter = variables["NGINX_ENVSUBST_FILTER"]
    assert all(re.search(envsubst_filter, name) for name in placeholders)
    assert not re.search(envsubst_filter, "host")  # nginx's own $host stays
    mounts = [v for v in nginx["volumes"] if v.startswith("./deploy/nginx.conf.template:")]
    (mount,) = mounts
    assert re.fullmatch(r"/etc/nginx/templates/[\w.-]+\.conf\.template", mount.split(":")[1])
    assert variables["NGINX_MLFLOW_UPSTREAM"] == "mlflow:5000"
    assert variables["NGINX_INSIGHTS_UPSTREAM"] == f"insights:{env('insights')['INSIGHTS_PORT']}"
    published = interpolate(nginx["ports"][0]).rsplit(":", 1)[1]
    assert published == variables["NGINX_LISTEN"]


def nginx_locations(template: str) -> dict[str, str]:
    """``location [modifier] path { body }`` -> body, nested blocks (``if``) included."""
    locations = {}
    for match in re.finditer(r"location\s+(?:(?:\^~|~\*?|=)\s+)?(\S+)\s*\{", template):
        depth, end = 1, match.end()
        while depth:
            depth += {"{": 1, "}": -1}.get(template[end], 0)
            end += 1
        locations[match.group(1)] = template[match.end() : end - 1]
    return locations


TRACE_METRICS_PATHS = [
    f"/{prefix}/3.0/mlflow/traces/{route}"
    for prefix in ("api", "ajax-api")
    for route in ("metrics", "calculate-filter-correlation")
]


def test_nginx_template_routes_insights_to_the_service_and_the_rest_to_mlflow() -> None:
    locations = nginx_locations(TEMPLATE)
    for prefix in INSIGHTS_PREFIXES:
        assert "proxy_pass http://trace_insights;" in locations[prefix]
    assert "proxy_pass http://mlflow_server;" in locations["/"]
    assert "proxy_pass http://mlflow_server;" in locations["@mlflow_server"]
    assert "proxy_pass http://trace_insights;" in locations["/insights/"]  # the Insights page
    (metrics,) = set(locations) - {*INSIGHTS_PREFIXES, "/insights/", "/", "@mlflow_server"}
    # The regex location takes MLflow's two trace-metrics routes under both prefixes, and only
    # them: its sibling paths (a trace id, .../metricsx) stay MLflow's.
    pattern = re.compile(metrics)
    assert all(pattern.search(path) for path in TRACE_METRICS_PATHS)
    for path in (
        "/api/3.0/mlflow/traces/metricsx",
        "/api/3.0/mlflow/traces/tr-123",
        "/api/2.0/mlflow/traces/metrics",
        "/api/3.0/mlflow/traces/metrics/x",
    ):
        assert not pattern.search(path), path


def test_nginx_sends_only_post_trace_metrics_to_the_service_and_falls_back_to_mlflow() -> None:
    """POST goes to the service; any other method (a GET on .../traces/metrics is MLflow's
    get-trace route) and any answer the service cannot give (502, 503, 504) go to MLflow."""
    (body,) = [v for k, v in nginx_locations(TEMPLATE).items() if k.startswith("^")]
    lines = [line.split("#")[0].strip() for line in body.splitlines()]
    assert "proxy_pass http://trace_insights;" in lines
    assert "error_page 418 = @mlflow_server;" in lines
    assert re.search(r"if \(\$request_method != POST\) \{\s*return 418;\s*\}", body)
    assert "proxy_intercept_errors on;" in lines
    fallback = next(line for line in lines if line.startswith("error_page 50"))
    codes = set(fallback.removesuffix(";").split()[1:])
    assert codes == {"502", "503", "504", "=", "@mlflow_server"}


# --------------------------------------------------------------------------- runtime dependencies


def runtime_distributions() -> set[str]:
    """pyproject's runtime dependencies and everything they require, as installed here."""
    seen: set[tuple[str, frozenset[str]]] = set()
    queue = [Requirement(d) for d in PYPROJECT["project"]["dependencies"]]
    while queue:
        req = queue.pop()
        key = (canonicalize_name(req.name), frozenset(req.extras))
        if key in seen:
            continue
        seen.add(key)
        for text in metadata.distribution(req.name).requires or []:
            sub = Requirement(text)
            extras = req.extras or {""}
            if sub.marker is None or any(sub.marker.evaluate({"extra": e}) for e in extras):
                queue.append(sub)
    return {name for name, _ in seen}


def imported_modules() -> set[str]:
    """Every module named by an import in service/, but service/demo (it needs the demo extra)."""
    modules: set[str] = set()
    for path in (ROOT / "service").rglob("*.py"):
        if "demo" in path.relative_to(ROOT / "service").parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                modules.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                modules.add(node.module)
                modules.update(f"{node.module}.{alias.name}" for alias in node.names)
    return modules


def test_every_module_the_service_imports_ships_with_a_runtime_dependency() -> None:
    """What `pip install .` (the image) brings is enough: each import resolves to a file owned
    by a runtime dependency. This caught httpx, once only in the test extra."""
    owned: set[Path] = set()
    for name in runtime_distributions():
        dist = metadata.distribution(name)
        owned.update(Path(str(dist.locate_file(f))).resolve() for f in dist.files or [])
    unowned = []
    for module in sorted(imported_modules()):
        top = module.split(".")[0]
        if top in sys.stdlib_module_names or top in ("service", "migrations_readonly"):
            continue
        try:
            spec = importlib.util.find_spec(module)
        except ModuleNotFoundError:
            spec = None
        if spec is None:  # `from package import name` where name is not a module
            continue
        if spec.origin in (None, "built-in", "frozen"):
            continue
        if Path(spec.origin).resolve() not in owned:
            unowned.append(f"{module} ({spec.origin})")
    assert not unowned, "imported but not installed by `pip install .`: " + ", ".join(unowned)


def test_ci_installs_the_end_to_end_dependencies() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    assert "deploy/install-e2e-deps.sh" in ci
    assert ci.index("deploy/install-e2e-deps.sh") < ci.index("make test")


def test_e2e_deps_script_is_executable() -> None:
    path = ROOT / "deploy" / "install-e2e-deps.sh"
    assert path.read_text().startswith("#!/usr/bin/env bash")
    assert path.stat().st_mode & 0o111


def test_compose_keeps_the_store_on_a_named_volume_the_image_lets_it_write() -> None:
    insights = COMPOSE["services"]["insights"]
    store_dir = str(Path(insights["environment"]["INSIGHTS_STORE_PATH"]).parent)
    mounts = dict(volume.split(":", 1) for volume in insights["volumes"])
    by_target = {target: source for source, target in mounts.items()}
    assert store_dir in by_target, f"no volume at {store_dir}: {insights['volumes']}"
    assert by_target[store_dir] in COMPOSE["volumes"], "the store's volume is not a named volume"
    # A named volume takes the ownership of the image's directory: the image must create it for
    # the non-root user, or the service could not write its store.
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert f"install -d -o insights -g insights {store_dir}" in dockerfile
