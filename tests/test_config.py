"""Tests for typed configuration: defaults, TOML presets, `--section.key=value` overrides."""

from __future__ import annotations

import dataclasses
import io
import json
from pathlib import Path

import pytest

import chatsmith.common.config as config_module
from chatsmith.common.config import (
    Config,
    ModelConfig,
    RunConfig,
    TrainConfig,
    available_presets,
    from_dict,
    load_preset,
    make_config,
    parse_override,
    presets_dir,
    to_dict,
)
from chatsmith.common.errors import ChatsmithError

if __import__("sys").version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def _write(tmp_path: Path, text: str, name: str = "mine.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# --- defaults ------------------------------------------------------------------------------


def test_defaults_load_as_typed_dataclasses() -> None:
    cfg = make_config()
    assert cfg == Config()
    assert isinstance(cfg.model, ModelConfig) and isinstance(cfg.run, RunConfig)
    assert isinstance(cfg.pretrain, TrainConfig) and isinstance(cfg.sft, TrainConfig)
    assert cfg.model.depth == 4 and cfg.model.tie_embeddings is False
    assert cfg.run.seed == 1337
    # SFT has its own defaults, and the two stages do not share one object.
    assert cfg.sft.lr == 1e-3 and cfg.pretrain.lr == 3e-3
    assert cfg.sft is not cfg.pretrain


def test_configs_are_independent() -> None:
    a, b = make_config(), make_config()
    a.model.depth = 99
    assert b.model.depth == 4 and Config().model.depth == 4


def test_every_field_has_a_supported_type() -> None:
    """A field of a type `_coerce` cannot convert would make every override of it fail."""

    def walk(obj: object, prefix: str) -> None:
        for f in dataclasses.fields(obj):  # type: ignore[arg-type]
            value = getattr(obj, f.name)
            if dataclasses.is_dataclass(value):
                walk(value, f"{prefix}{f.name}.")
            else:
                assert type(value) in (int, float, str, bool), f"{prefix}{f.name}"
                make_config(overrides=[f"--{prefix}{f.name}={str(value).lower()}"])

    walk(Config(), "")


# --- presets -------------------------------------------------------------------------------


def test_presets_dir_holds_demo() -> None:
    assert presets_dir().is_dir()
    assert "demo" in available_presets()
    assert available_presets() == sorted(available_presets())


def test_demo_preset_values_land_in_the_dataclasses() -> None:
    raw = tomllib.loads((presets_dir() / "demo.toml").read_text(encoding="utf-8"))
    assert load_preset("demo") == raw
    cfg = make_config("demo")
    checked = 0
    for section, table in raw.items():
        for key, value in table.items():
            got = getattr(getattr(cfg, section), key)
            assert got == value and type(got) is type(getattr(Config(), section).__dict__[key]), (
                f"{section}.{key}"
            )
            checked += 1
    assert checked > 10
    # Spot checks, including values that differ from the defaults.
    defaults = Config()
    assert cfg.sft.steps == raw["sft"]["steps"] != defaults.sft.steps
    assert cfg.sft.lr == raw["sft"]["lr"] != defaults.sft.lr and isinstance(cfg.sft.lr, float)
    assert cfg.data.corpus_mb == raw["data"]["corpus_mb"] != defaults.data.corpus_mb
    assert cfg.model.tie_embeddings is True is not defaults.model.tie_embeddings
    # Keys the preset does not mention keep their defaults.
    assert cfg.model.rope_theta == Config().model.rope_theta
    assert cfg.sft.beta2 == Config().sft.beta2


def test_toml_path_works_as_a_preset(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        '[run]\nname = "mine"\n[model]\ndepth = 2\ntie_embeddings = true\nrope_theta = 500000\n'
        "[sft]\nlr = 2e-4\n",
    )
    cfg = make_config(str(path))
    assert cfg.run.name == "mine"
    assert cfg.model.depth == 2 and cfg.model.tie_embeddings is True
    assert cfg.model.rope_theta == 500000.0 and isinstance(cfg.model.rope_theta, float)
    assert cfg.sft.lr == 2e-4 and cfg.pretrain.lr == Config().pretrain.lr


def test_overrides_apply_after_the_preset(tmp_path: Path) -> None:
    path = _write(tmp_path, "[model]\ndepth = 2\n")
    assert make_config(str(path), ["--model.depth=8"]).model.depth == 8
    assert make_config("demo", ["--sft.lr=1e-4"]).sft.lr == 1e-4
    # The last override wins.
    assert make_config(overrides=["--model.depth=3", "--model.depth=5"]).model.depth == 5


def test_empty_section_table_is_fine(tmp_path: Path) -> None:
    path = _write(tmp_path, "[model]\n[run]\nseed = 7\n")
    cfg = make_config(str(path))
    assert cfg.model == ModelConfig() and cfg.run.seed == 7


def test_unknown_preset_lists_the_available_ones() -> None:
    with pytest.raises(ChatsmithError) as err:
        make_config("nosuchpreset")
    msg = str(err.value)
    assert "nosuchpreset" in msg
    for name in available_presets():
        assert name in msg


def test_presets_are_found_by_name_in_presets_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write(tmp_path, "[model]\ndepth = 9\n", "zeta.toml")
    _write(tmp_path, "[model]\ndepth = 1\n", "alpha.toml")
    _write(tmp_path, "not a preset", "notes.txt")
    monkeypatch.setattr(config_module, "presets_dir", lambda: tmp_path)
    assert available_presets() == ["alpha", "zeta"]
    assert make_config("zeta").model.depth == 9
    with pytest.raises(ChatsmithError, match="available presets: alpha, zeta"):
        make_config("beta")
    monkeypatch.setattr(config_module, "presets_dir", lambda: tmp_path / "absent")
    assert available_presets() == []
    with pytest.raises(ChatsmithError, match="none found"):
        make_config("zeta")


def test_missing_toml_path_errors(tmp_path: Path) -> None:
    with pytest.raises(ChatsmithError, match=r"missing\.toml"):
        load_preset(str(tmp_path / "missing.toml"))


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("[model]\ndpeth = 3\n", "model.dpeth"),
        ("[nosuch]\nkey = 1\n", "nosuch"),
        ("depth = 4\n", "depth"),
        ("[model.depth]\nx = 1\n", "model.depth"),
    ],
)
def test_toml_preset_with_unknown_key_errors(tmp_path: Path, text: str, key: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(ChatsmithError) as err:
        make_config(str(path))
    msg = str(err.value)
    assert key in msg
    assert str(path) in msg  # says which preset is wrong


@pytest.mark.parametrize(
    ("text", "key", "expected"),
    [
        ('[model]\ndepth = "four"\n', "model.depth", "integer"),
        ("[model]\ndepth = 4.5\n", "model.depth", "integer"),
        ("[model]\ndepth = true\n", "model.depth", "integer"),
        ('[pretrain]\nlr = "fast"\n', "pretrain.lr", "number"),
        ("[pretrain]\nlr = true\n", "pretrain.lr", "number"),
        ("[model]\ntie_embeddings = 1\n", "model.tie_embeddings", "true or false"),
        ("[run]\nname = 5\n", "run.name", "string"),
        ("[run]\nname = [1, 2]\n", "run.name", "string"),
        ("[run.name]\n", "run.name", "string"),  # an empty table must not vanish silently
        ("model = 3\n", "model", "section"),
    ],
)
def test_toml_preset_with_wrong_type_errors(tmp_path: Path, text: str, key: str, expected: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(ChatsmithError) as err:
        make_config(str(path))
    assert f"'{key}'" in str(err.value) and expected in str(err.value)


def test_invalid_toml_is_a_chatsmith_error(tmp_path: Path) -> None:
    path = _write(tmp_path, "[model\ndepth = \n")
    with pytest.raises(ChatsmithError, match="not valid TOML"):
        load_preset(str(path))
    bad_utf8 = tmp_path / "latin1.toml"
    bad_utf8.write_bytes('[run]\nname = "caf\xe9"\n'.encode("latin-1"))
    with pytest.raises(ChatsmithError, match="not valid TOML"):
        load_preset(str(bad_utf8))


def test_preset_is_read_as_utf8(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "zh.toml"
    path.write_bytes('[identity]\nmaker_zh = "小团队"\n'.encode())
    # TOML is UTF-8 whatever the locale says: pretend the locale is Latin-1, as on some Windows
    # machines, for any text read that does not name its encoding.
    monkeypatch.setattr(io, "text_encoding", lambda encoding, stacklevel=2: encoding or "latin-1")
    assert make_config(str(path)).identity.maker_zh == "小团队"


# --- overrides -----------------------------------------------------------------------------


def test_parse_override() -> None:
    assert parse_override("--model.depth=6") == ("model.depth", "6")
    assert parse_override("--run.name=a=b") == ("run.name", "a=b")
    assert parse_override("--run.name=") == ("run.name", "")


@pytest.mark.parametrize(
    ("override", "section", "key", "value"),
    [
        ("--model.depth=6", "model", "depth", 6),
        ("--model.depth=1_024", "model", "depth", 1024),
        ("--sft.lr=1e-4", "sft", "lr", 1e-4),
        ("--pretrain.lr=3", "pretrain", "lr", 3.0),
        ("--model.tie_embeddings=true", "model", "tie_embeddings", True),
        ("--model.tie_embeddings=True", "model", "tie_embeddings", True),
        ("--model.tie_embeddings=false", "model", "tie_embeddings", False),
        ("--model.tie_embeddings=0", "model", "tie_embeddings", False),
        ("--run.name=my run", "run", "name", "my run"),
        ("--run.name=42", "run", "name", "42"),
    ],
)
def test_overrides_convert_types(override: str, section: str, key: str, value: object) -> None:
    cfg = make_config(overrides=[override])
    got = getattr(getattr(cfg, section), key)
    assert got == value and type(got) is type(value)
    # Nothing else changed.
    setattr(getattr(cfg, section), key, getattr(getattr(Config(), section), key))
    assert cfg == Config()


def test_override_of_sft_leaves_pretrain_alone() -> None:
    cfg = make_config(overrides=["--sft.lr=1e-4"])
    assert cfg.sft.lr == 1e-4 and cfg.pretrain.lr == Config().pretrain.lr


@pytest.mark.parametrize(
    ("override", "key", "where", "choices"),
    [
        ("--model.dpeth=3", "model.dpeth", "dpeth", ["depth", "n_embd", "tie_embeddings"]),
        ("--nosuch.key=1", "nosuch.key", "nosuch", ["model", "pretrain", "run", "sft"]),
        ("--eval.nosuch=1", "eval.nosuch", "nosuch", ["arithmetic", "max_new_tokens"]),
    ],
)
def test_unknown_key_names_it_and_lists_choices(
    override: str, key: str, where: str, choices: list[str]
) -> None:
    with pytest.raises(ChatsmithError) as err:
        make_config(overrides=[override])
    msg = str(err.value)
    assert f"'{key}'" in msg and f"'{where}'" in msg
    assert "allowed" in msg
    for choice in choices:
        assert choice in msg


def test_unknown_key_lists_all_fields_of_the_section() -> None:
    with pytest.raises(ChatsmithError) as err:
        make_config(overrides=["--model.dpeth=3"])
    allowed = str(err.value).split("allowed:", 1)[1]
    assert {s.strip() for s in allowed.split(",")} == {f.name for f in dataclasses.fields(ModelConfig)}


@pytest.mark.parametrize(
    ("override", "key", "expected"),
    [
        ("--model.depth=abc", "model.depth", "integer"),
        ("--model.depth=6.5", "model.depth", "integer"),
        ("--model.depth=", "model.depth", "integer"),
        ("--pretrain.lr=fast", "pretrain.lr", "number"),
        ("--sft.lr=", "sft.lr", "number"),
        ("--model.tie_embeddings=maybe", "model.tie_embeddings", "true or false"),
        ("--model.tie_embeddings=", "model.tie_embeddings", "true or false"),
    ],
)
def test_bad_type_names_key_and_expected_type(override: str, key: str, expected: str) -> None:
    with pytest.raises(ChatsmithError) as err:
        make_config(overrides=[override])
    msg = str(err.value)
    assert f"'{key}'" in msg and expected in msg


@pytest.mark.parametrize("override", ["--model.depth", "--model.depth6", "model.depth"])
def test_override_without_equals_errors(override: str) -> None:
    with pytest.raises(ChatsmithError) as err:
        make_config(overrides=[override])
    assert f"'{override}'" in str(err.value) and "--section.key=value" in str(err.value)


@pytest.mark.parametrize(("override", "key"), [("--model=3", "model"), ("--sft={}", "sft")])
def test_setting_a_whole_section_errors(override: str, key: str) -> None:
    with pytest.raises(ChatsmithError) as err:
        make_config(overrides=[override])
    assert f"'{key}'" in str(err.value) and "section" in str(err.value)


def test_key_below_a_value_errors() -> None:
    with pytest.raises(ChatsmithError, match=r"'model\.depth\.x'.*not a section"):
        make_config(overrides=["--model.depth.x=1"])


# --- round trip ----------------------------------------------------------------------------


def test_to_dict_from_dict_round_trips() -> None:
    cfg = make_config("demo", ["--model.depth=6", "--model.tie_embeddings=true", "--run.name=x"])
    data = to_dict(cfg)
    assert data["model"]["depth"] == 6 and data["sft"]["lr"] == 1.5e-3
    back = from_dict(Config, data)
    assert back == cfg and back is not cfg
    # Through JSON too, as a run folder stores it.
    assert from_dict(Config, json.loads(json.dumps(data))) == cfg


def test_from_dict_fills_missing_keys_with_defaults() -> None:
    cfg = from_dict(Config, {"model": {"depth": 7}})
    assert cfg.model.depth == 7
    cfg.model.depth = Config().model.depth
    assert cfg == Config()


def test_from_dict_of_a_section() -> None:
    assert from_dict(ModelConfig, {"depth": 3}) == ModelConfig(depth=3)


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"model": {"dpeth": 3}}, "model.dpeth"),
        ({"nosuch": {}}, "nosuch"),
        ({"model": {"depth": "three"}}, "model.depth"),
    ],
)
def test_from_dict_rejects_unknown_keys_and_bad_types(data: dict, key: str) -> None:
    with pytest.raises(ChatsmithError, match=f"'{key}'"):
        from_dict(Config, data)


def test_from_dict_rejects_non_tables() -> None:
    with pytest.raises(ChatsmithError):
        from_dict(Config, [1, 2])  # type: ignore[arg-type]
