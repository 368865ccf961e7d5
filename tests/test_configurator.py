"""The configurator's rules: files then --key=value in order, types must match, errors are one helpful line."""
import pytest

from configurator import ConfigError, apply_overrides
from conftest import run

DEFAULTS = dict(batch_size=12, learning_rate=6e-4, dropout=0.0, compile=True, dataset='openwebtext', n_layer=12, start='\n')

def cfg(*args):
    config = dict(DEFAULTS)
    apply_overrides(config, list(args))
    return config


def test_key_value_goes_through_literal_eval():
    c = cfg('--batch_size=32', '--learning_rate=1e-3', '--compile=False')
    assert (c['batch_size'], c['learning_rate'], c['compile']) == (32, 1e-3, False)


def test_a_value_that_is_not_a_literal_stays_a_string():
    assert cfg('--dataset=shakespeare_char')['dataset'] == 'shakespeare_char'
    assert cfg("--dataset='quoted'")['dataset'] == 'quoted'
    assert cfg('--start={[]: 1}')['start'] == '{[]: 1}' # literal_eval raises TypeError on this one, not ValueError


def test_text_that_reads_as_a_number_is_an_error_that_says_how_to_quote_it():
    with pytest.raises(ConfigError) as e:
        cfg('--start=123')
    assert str(e.value).endswith('''for text, quote it: --start="'123'"''')
    assert cfg("--start='123'")['start'] == '123' # what the shell passes for --start="'123'"


def test_values_may_contain_equals_signs():
    assert cfg('--start=a=b==c')['start'] == 'a=b==c'


def test_an_int_is_accepted_where_a_float_is_expected():
    c = cfg('--dropout=0', '--learning_rate=1')
    assert c['dropout'] == 0.0 and type(c['dropout']) is float and type(c['learning_rate']) is float


@pytest.mark.parametrize('arg, expected_type', [
    ('--batch_size=1.5', 'int'),     # a float is not an int
    ('--batch_size=True', 'int'),    # nor is a bool
    ('--compile=1', 'bool'),         # an int is not a bool
    ('--dropout=high', 'float'),     # a string is not a float
    ('--dataset=3', 'str'),          # an int is not a string
])
def test_a_wrong_type_names_the_key_the_expected_type_and_the_value(arg, expected_type):
    key, value = arg[2:].split('=')
    with pytest.raises(ConfigError) as e:
        cfg(arg)
    msg = str(e.value)
    assert key in msg and f'expects {expected_type}' in msg and value in msg and '\n' not in msg


def test_an_unknown_key_names_the_closest_valid_keys():
    with pytest.raises(ConfigError) as e:
        cfg('--batch_sise=8')
    assert "unknown config key 'batch_sise'" in str(e.value) and '--batch_size' in str(e.value)


def test_a_key_without_value_is_an_error():
    with pytest.raises(ConfigError, match='--key=value'):
        cfg('--batch_size')


def test_config_files_run_in_order_and_later_arguments_win(tmp_path):
    a, b = tmp_path / 'a.py', tmp_path / 'b.py'
    a.write_text("import math\nbatch_size = 4\nn_layer = 2 * 3\ndataset = 'from_a'\n")
    b.write_text("batch_size = batch_size * 2 # sees what a.py set\n")
    c = cfg(str(a), '--dataset=cli', str(b))
    assert (c['batch_size'], c['n_layer'], c['dataset']) == (8, 6, 'cli')
    assert cfg(str(a), str(b), '--batch_size=1')['batch_size'] == 1


def test_config_files_obey_the_same_rules(tmp_path):
    bad_key, bad_type = tmp_path / 'k.py', tmp_path / 't.py'
    bad_key.write_text("batchsize = 4\n")
    bad_type.write_text("dropout = 'lots'\n")
    with pytest.raises(ConfigError, match="unknown config key 'batchsize'.*--batch_size"):
        cfg(str(bad_key))
    with pytest.raises(ConfigError, match='dropout expects float'):
        cfg(str(bad_type))
    with pytest.raises(ConfigError, match='not found'):
        cfg(str(tmp_path / 'missing.py'))


def test_a_missing_config_file_names_the_closest_one_and_nanogpts_names_find_ours(tmp_path):
    (tmp_path / 'shakespeare_char.py').write_text("batch_size = 4\n")
    # nanoGPT's README says config/train_shakespeare_char.py; the same config here has no train_ prefix
    for typed in ('train_shakespeare_char.py', 'shakespear_char.py'):
        with pytest.raises(ConfigError, match=f"{typed} not found: did you mean .*shakespeare_char.py"):
            cfg(str(tmp_path / typed))
    with pytest.raises(ConfigError, match='not found: pass a path such as'): # nothing close: the general hint
        cfg(str(tmp_path / 'openwebtext.py'))


def test_train_help_lists_every_key_with_its_default():
    out = run('train.py', '--help').stdout
    for line in ("--batch_size", "= 12", "--dataset", "'openwebtext'", "--learning_rate", "--compile", "--device", "'auto'"):
        assert line in out
    assert out.count('\n  --') >= 35 # every setting of train.py
    assert '--GPT2_VOCAB_SIZE' not in out and '--GELU_KEY' not in out # constants imported from model.py are not settings


def test_constants_are_not_settings():
    from configurator import config_keys
    assert config_keys({'n_layer': 12, 'GPT2_VOCAB_SIZE': 50257, 'GELU_KEY': 'gelu_approximate', '_private': 1}) == {'n_layer': 12}


@pytest.mark.parametrize('script', ['train.py', 'sample.py'])
def test_scripts_turn_config_errors_into_one_line_and_exit_nonzero(script):
    p = run(script, '--n_layr=3' if script == 'train.py' else '--top_kk=3', check=False)
    assert p.returncode != 0
    assert p.stderr.strip().count('\n') == 0 and p.stderr.startswith('error: unknown config key')
    assert 'Traceback' not in p.stderr
