from __future__ import annotations

from pathlib import Path

import pytest

from bot.persona import PersonaError, load_persona, load_personas, pick_persona


def test_builtin_personas_load_with_distinct_voices():
    personas = load_personas()
    assert {"quip", "plain", "wire"} <= set(personas)
    prompts = {name: p.system_prompt() for name, p in personas.items()}
    assert len(set(prompts.values())) == len(prompts)
    assert "don't use it" in personas["quip"].description
    assert personas["plain"].sampling.temperature < personas["quip"].sampling.temperature
    assert pick_persona(personas, None).name == "quip"
    for p in personas.values():
        assert "Never invent a post" in p.system_prompt()


def test_user_folder_adds_a_yaml_persona_and_can_replace_a_builtin(tmp_path: Path):
    (tmp_path / "pirate.yaml").write_text(
        "name: pirate\ndescription: Arr.\nsystem: You talk like a pirate.\n"
        "style: [Say arr.]\nexamples:\n  - user: hi\n    assistant: Arr, hello.\n"
    )
    (tmp_path / "plain.toml").write_text('name = "plain"\ndescription = "mine"\nsystem = "Mine."\n')
    personas = load_personas([tmp_path])
    assert personas["pirate"].examples[0].assistant == "Arr, hello."
    assert personas["plain"].description == "mine"


def test_malformed_toml_is_rejected_with_its_line(tmp_path: Path):
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "bad"\ndescription = "x"\nsystem = "unterminated\n')
    with pytest.raises(PersonaError) as err:
        load_persona(bad)
    assert err.value.line == 3 and "not valid TOML" in str(err.value)
    assert str(bad) in str(err.value)


def test_invalid_value_is_rejected_with_the_line_of_its_key(tmp_path: Path):
    bad = tmp_path / "hot.toml"
    bad.write_text('name = "hot"\ndescription = "x"\nsystem = "y"\n\n[sampling]\ntemperature = 9\n')
    with pytest.raises(PersonaError) as err:
        load_persona(bad)
    assert err.value.line == 5 and "sampling.temperature" in err.value.reason


def test_unknown_key_and_missing_field_are_rejected(tmp_path: Path):
    extra = tmp_path / "extra.yaml"
    extra.write_text("name: extra\ndescription: x\nsystem: y\nsytle: [typo]\n")
    with pytest.raises(PersonaError) as err:
        load_persona(extra)
    assert err.value.line == 4 and "sytle" in err.value.reason
    missing = tmp_path / "missing.yaml"
    missing.write_text("name: missing\ndescription: x\n")
    with pytest.raises(PersonaError, match="system"):
        load_persona(missing)


def test_a_malformed_file_in_a_user_folder_stops_loading(tmp_path: Path):
    (tmp_path / "broken.yml").write_text("name: [unclosed\n")
    with pytest.raises(PersonaError, match="not valid YAML"):
        load_personas([tmp_path])
