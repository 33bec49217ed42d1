"""Training configs: files plus command-line overrides, and errors that say where a bad value came from."""

from __future__ import annotations

import pytest

from training.tasks import load_config


def test_overrides_win_over_the_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("trials: 3\ncv_folds: 4\n")
    config = load_config(path, trials=7, timeout=None)
    assert (config.trials, config.cv_folds, config.timeout) == (7, 4, None)


def test_a_bad_option_is_named_as_the_option_not_as_the_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("trials: 3\n")
    with pytest.raises(ValueError) as caught:
        load_config(path, trials=0)
    assert str(caught.value).startswith("--trials: Input should be greater than or equal to 1 (got 0)")
    assert str(path) not in str(caught.value)


def test_bad_fields_in_the_file_are_each_named_with_the_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("cv_folds: 1\nfamilies: [catboost]\nbogus: 1\n")
    with pytest.raises(ValueError) as caught:
        load_config(path)
    message = str(caught.value)
    assert f"{path}: cv_folds: Input should be greater than or equal to 2 (got 1)" in message
    assert f"{path}: families.0: Input should be 'lightgbm' or 'xgboost'" in message
    assert f"{path}: bogus: Extra inputs are not permitted" in message


def test_a_missing_or_non_mapping_file_is_refused(tmp_path):
    with pytest.raises(ValueError, match="not found"):
        load_config(tmp_path / "absent.yaml")
    listed = tmp_path / "list.yaml"
    listed.write_text("- 1\n- 2\n")
    with pytest.raises(ValueError, match="a training config is a YAML mapping"):
        load_config(listed)
