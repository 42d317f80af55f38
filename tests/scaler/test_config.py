"""Scaler config loading and validation."""

import pytest

from e2i_pipelines.scaler.config import (
    CONFIG_ENV,
    DEFAULT_CONFIG_PATH,
    ScalerConfigError,
    config_path,
    load_config,
    parse_config,
)


def test_defaults_when_empty():
    cfg = parse_config(None)
    assert (cfg.min_heavy_runs, cfg.max_heavy_runs, cfg.interval_seconds) == (0, 4, 30)
    assert cfg.capacity_source == "auto"
    assert cfg.capacity.cpus is None and cfg.heavy_profile.memory_bytes is None


def test_packaged_file_is_valid_and_default():
    cfg = load_config(DEFAULT_CONFIG_PATH)
    assert (cfg.min_heavy_runs, cfg.max_heavy_runs, cfg.interval_seconds) == (0, 4, 30)


def test_env_var_selects_the_file(tmp_path, monkeypatch):
    path = tmp_path / "s.yaml"
    path.write_text("max_heavy_runs: 2\ninterval_seconds: 5\n"
                    "heavy_profile: {cpus: 0.5, memory: 256m}\ncapacity: {source: host, cpus: 3}\n")
    monkeypatch.setenv(CONFIG_ENV, str(path))
    assert config_path() == path
    cfg = load_config()
    assert (cfg.max_heavy_runs, cfg.interval_seconds) == (2, 5)
    assert cfg.heavy_profile.cpus == 0.5 and cfg.heavy_profile.memory_bytes == 256 * 1024**2
    assert cfg.capacity_source == "host" and cfg.capacity.cpus == 3.0
    assert cfg.capacity.memory_bytes is None
    monkeypatch.delenv(CONFIG_ENV)
    assert config_path() == DEFAULT_CONFIG_PATH


def test_reserve_per_service():
    cfg = parse_config({"capacity": {"reserve": {"postgres": {"cpus": 0.5, "memory": "1g"},
                                                 "webserver": {"memory": "768m"}}}})
    assert cfg.reserve["postgres"].cpus == 0.5 and cfg.reserve["postgres"].memory_bytes == 1024**3
    assert cfg.reserve["webserver"].cpus is None and cfg.reserve["webserver"].memory_bytes == 768 * 1024**2
    assert parse_config(None).reserve == {}


@pytest.mark.parametrize("data,needle", [
    ({"min_heavy_runs": 3, "max_heavy_runs": 2}, "max_heavy_runs (2) is less than min_heavy_runs (3)"),
    ({"min_heavy_runs": -1}, "min_heavy_runs must be >= 0"),
    ({"max_heavy_runs": -2}, "max_heavy_runs must be >= 0"),
    ({"interval_seconds": 0}, "interval_seconds must be >= 1"),
    ({"max_heavy_runs": "four"}, "max_heavy_runs must be an integer"),
    ({"max_heavy_runs": True}, "max_heavy_runs must be an integer"),
    ({"max_heavy_run": 2}, "unknown key(s) max_heavy_run"),
    ({"capacity": {"cpu": 2}}, "unknown key(s) capacity.cpu"),
    ({"heavy_profile": {"memory": "1g", "pids": 9}}, "unknown key(s) heavy_profile.pids"),
    ({"capacity": {"source": "k8s"}}, "capacity.source is 'k8s'"),
    ({"capacity": {"cpus": -1}}, "capacity.cpus must be a positive number"),
    ({"heavy_profile": {"memory": "lots"}}, "heavy_profile.memory"),
    ({"heavy_profile": {"memory": "0"}}, "heavy_profile.memory must be positive"),
    ({"capacity": [1, 2]}, "capacity must be a mapping"),
    ({"capacity": {"reserve": ["postgres"]}}, "capacity.reserve must be a mapping"),
    ({"capacity": {"reserve": {"postgres": {}}}}, "capacity.reserve.postgres needs cpus and/or memory"),
    ({"capacity": {"reserve": {"postgres": {"disk": 1}}}}, "unknown key(s) capacity.reserve.postgres.disk"),
    ({"capacity": {"reserve": {"api": {"memory": "big"}}}}, "capacity.reserve.api.memory"),
])
def test_invalid_config_names_the_key(data, needle):
    with pytest.raises(ScalerConfigError) as err:
        parse_config(data, source="x.yaml")
    assert needle in str(err.value)
    assert "x.yaml" in str(err.value)


def test_unreadable_and_non_yaml_files(tmp_path):
    with pytest.raises(ScalerConfigError, match="cannot read scaler config"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("max_heavy_runs: [\n")
    with pytest.raises(ScalerConfigError, match="not valid YAML"):
        load_config(bad)
    top = tmp_path / "list.yaml"
    top.write_text("- 1\n")
    with pytest.raises(ScalerConfigError, match="top level must be a mapping"):
        load_config(top)
