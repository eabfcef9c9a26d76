"""The settings tree: sources and their priority, validation naming the setting, masking."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from radtrace.config import ENV_PREFIX, Settings, load_settings
from radtrace.config_reference import masked_settings, settings_reference
from radtrace.errors import ConfigError

pytestmark = pytest.mark.unit


def test_defaults_are_the_embedded_setup(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path)
    assert settings.store_url == f"sqlite:///{(tmp_path / 'radtrace.db').resolve()}"
    assert settings.broker_url.startswith("sqla+sqlite:///")
    assert settings.spool_dir == tmp_path / "spool"
    assert settings.model.profile == "nv-reason-cxr"
    assert settings.model.max_pixels == 476 * 476
    assert settings.reporting.hl7_result_status == "P"


def test_environment_overrides_toml_file_which_overrides_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "radtrace.toml"
    config.write_text(
        """
        [listener]
        port = 104
        settle_seconds = 20
        [[dispatch.pacs]]
        ae_title = "ORTHANC"
        host = "10.0.0.5"
        port = 4242
        """,
        encoding="utf-8",
    )
    monkeypatch.setenv("RADTRACE_LISTENER__SETTLE_SECONDS", "3.5")
    settings = load_settings(config)
    assert settings.listener.port == 104  # from the file
    assert settings.listener.settle_seconds == 3.5  # the environment wins over the file
    assert settings.listener.ae_title == "RADTRACE"  # default kept beside file values
    assert settings.dispatch.pacs[0].ae_title == "ORTHANC"


@pytest.mark.parametrize(
    ("env", "value", "named"),
    [
        ("RADTRACE_LISTENER__PORT", "70000", "listener.port"),
        ("RADTRACE_LISTENER__AE_TITLE", "A_VERY_LONG_AE_TITLE_X", "listener.ae_title"),
        ("RADTRACE_REPORTING__HL7_RESULT_STATUS", "F", "reporting.hl7_result_status"),
        ("RADTRACE_MODEL__DEVICE", "tpu", "model.device"),
        ("RADTRACE_MODEL__PROFILE", "gpt", "model.profile"),
    ],
)
def test_invalid_value_fails_naming_setting_and_variable(
    monkeypatch: pytest.MonkeyPatch, env: str, value: str, named: str
) -> None:
    monkeypatch.setenv(env, value)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert named in str(caught.value)
    assert env in str(caught.value)


def test_final_hl7_status_is_refused_with_the_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RADTRACE_REPORTING__HL7_RESULT_STATUS", "F")
    with pytest.raises(ConfigError, match="unverified drafts"):
        load_settings()


def test_unknown_key_in_file_is_an_error_not_silently_ignored(tmp_path: Path) -> None:
    config = tmp_path / "typo.toml"
    config.write_text("[listener]\nsettle_secnds = 5\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"listener\.settle_secnds"):
        load_settings(config)


def test_missing_and_malformed_files_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "absent.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("[listener\nport = ", encoding="utf-8")
    with pytest.raises(ConfigError, match=f"config file {re.escape(str(broken))} is not valid TOML"):
        load_settings(broken)


def test_a_misspelled_variable_is_an_error_that_suggests_the_right_name(monkeypatch: pytest.MonkeyPatch) -> None:
    for wrong, meant in (("RADTRACE_LISTNER__PORT", "RADTRACE_LISTENER__PORT"),
                         ("RADTRACE_LISTENER_PORT", "RADTRACE_LISTENER__PORT")):  # fmt: skip
        monkeypatch.setenv(wrong, "104")
        with pytest.raises(ConfigError, match=f"{wrong}: no such setting; did you mean {meant}"):
            load_settings()
        monkeypatch.delenv(wrong)
    monkeypatch.setenv("radtrace_listener__port", "104")  # names are not case-sensitive, as pydantic reads them
    assert load_settings().listener.port == 104


def test_an_unknown_key_in_the_file_is_an_error_naming_the_file(tmp_path: Path) -> None:
    config = tmp_path / "radtrace.toml"
    config.write_text("[listener]\nprot = 104\n[model]\nbackend = 'vllm'\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=rf"unknown key\(s\) in config file {re.escape(str(config))}") as raised:
        load_settings(config)
    assert "listener.prot: no such setting; did you mean listener.port?" in raised.value.reason
    config.write_text("[model]\nbackend = 'vllm'\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=f"config file {re.escape(str(config))}"):  # a bad value names the file
        load_settings(config)


def test_the_data_directory_is_made_absolute_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert load_settings().data_dir == tmp_path / "var"
    assert load_settings(data_dir="elsewhere/data").data_dir == tmp_path / "elsewhere" / "data"


def test_tls_needs_certificate_and_key() -> None:
    with pytest.raises(ConfigError, match=r"listener\.tls"):
        load_settings(listener={"tls": {"enabled": True}})


def test_secrets_and_url_passwords_are_masked() -> None:
    settings = load_settings(
        store={"url": "postgresql+psycopg://radtrace:s3cr3t-pw@db.example:5432/radtrace"},
        broker={"url": "redis://:br0ker-pw@redis.example:6379/0"},
        audit={"checkpoint_key": "hmac-key-value"},
        model={"backend": "vllm", "vllm_url": "http://gpu:8000", "vllm_api_key": "sk-live-123"},
    )
    shown = json.dumps(masked_settings(settings))
    for secret in ("s3cr3t-pw", "br0ker-pw", "hmac-key-value", "sk-live-123"):
        assert secret not in shown
    assert "radtrace:***@db.example" in shown
    # the real values are still there for the code that needs them
    assert settings.audit.checkpoint_key is not None
    assert settings.audit.checkpoint_key.get_secret_value() == "hmac-key-value"


def test_settings_are_immutable(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path)
    with pytest.raises(ValueError, match="frozen"):
        settings.listener.port = 104  # type: ignore[misc]


def test_configuration_reference_in_docs_is_current() -> None:
    docs = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"
    reference = settings_reference()
    assert docs.read_text(encoding="utf-8") == reference, "run: radtrace config reference > docs/configuration.md"
    for env in ("RADTRACE_LISTENER__SETTLE_SECONDS", "RADTRACE_STORE__URL", "RADTRACE_AUDIT__CHECKPOINT_KEY"):
        assert f"`{env}`" in reference
    # every setting is explained to the operator
    rows = [line for line in reference.splitlines() if line.startswith("| `")]
    assert rows
    assert all(not line.rstrip().endswith("|  |") for line in rows)


def test_the_switches_of_tests_and_bench_are_not_taken_for_misspelled_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """``RADTRACE_FULL_FUZZ=1`` (the listener fuzz's full run) was refused by every radtrace process it started."""
    from radtrace.config import NOT_SETTING_PREFIXES, _setting_paths

    for switch in ("RADTRACE_FULL_FUZZ", "RADTRACE_FUZZ_EXAMPLES", "RADTRACE_FULL_LIMITS", "RADTRACE_GPU_BUDGET_S"):
        monkeypatch.setenv(switch, "1")
    load_settings()
    # No setting may ever be spelt with such a prefix, or its typos would pass unnoticed.
    settings = [ENV_PREFIX + "__".join(path).upper() for path in _setting_paths(Settings)]
    assert not [name for name in settings if name.startswith(NOT_SETTING_PREFIXES)]
