"""DESIGN.md section 1: envs imports no torch/agents/rlopt; agents imports no envs/rlopt; stable_baselines3 lives
in exactly one rlopt module. Checked statically from the source (imports inside functions count too)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _imports(package: str) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module.split(".")[0])
        found[str(path.relative_to(ROOT))] = names
    return found


def test_envs_import_only_numpy_gymnasium_and_stdlib() -> None:
    for path, names in _imports("envs").items():
        forbidden = names & {"torch", "agents", "rlopt", "stable_baselines3"}
        assert not forbidden, f"{path} imports {sorted(forbidden)}"


def test_agents_never_import_envs_or_rlopt() -> None:
    for path, names in _imports("agents").items():
        forbidden = names & {"envs", "rlopt", "stable_baselines3"}
        assert not forbidden, f"{path} imports {sorted(forbidden)}"


def test_stable_baselines3_is_imported_in_exactly_one_rlopt_module() -> None:
    users = [path for path, names in _imports("rlopt").items() if "stable_baselines3" in names]
    assert users == ["rlopt/sb3_ppo.py"], users


def test_importing_envs_registers_every_id() -> None:
    import gymnasium as gym

    import envs

    assert len(envs.ENV_IDS) >= 5
    for env_id in envs.ENV_IDS:
        assert env_id in gym.registry
