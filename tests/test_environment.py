"""environment.yml, pyproject.toml, the Makefile, the README and CI tell the same story."""
import re
import tomllib

import yaml

from energy_utils import checkpoints, paths

ROOT = paths.REPO_ROOT


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    deps = env["dependencies"]
    assert "python=3.11" in deps
    assert project["requires-python"].startswith(">=3.11")
    pip = next(d["pip"] for d in deps if isinstance(d, dict) and "pip" in d)
    assert "-e .[dev]" in pip, "environment.yml must install the project with its dev extra"
    torch_pin = next(d for d in project["dependencies"] if d.startswith("torch"))
    assert torch_pin in pip, f"environment.yml must pin torch as pyproject does ({torch_pin})"
    assert "dev" in project["optional-dependencies"]


def test_readme_opens_with_the_two_make_commands_and_ci_calls_the_test_one():
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"```bash\n(.*?)```", readme, re.S).group(1)
    commands = [line.split("#")[0].strip() for line in block.splitlines() if line.strip()]
    assert commands == ["make run", "make test"]
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^run:", makefile, re.M) and re.search(r"^test:", makefile, re.M)
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in ci


def test_checkpoint_manifest_is_consistent():
    assert checkpoints.verify_manifest() == []


def test_benchmark_data_not_committed():
    for name in ("BSD400", "Set12", "Set68", "Set5", "Set14", "BSD100", "MNIST"):
        assert not (ROOT / "data" / name).exists(), f"data/{name} must not be committed; use ENERGY_DATA_DIR"
