"""Settings for train.py, sample.py and bench.py: plain globals, overridden by config files and --key=value.

    python train.py config/shakespeare_char.py --batch_size=32 --compile=False

Each script keeps its settings as plain globals with defaults, then calls
configure(globals()). Arguments are applied left to right:
- a path (no leading --) is a Python file, executed; the settings it assigns win;
- --key=value sets one key; the value goes through ast.literal_eval and stays a
  string if that fails (so --dataset=shakespeare_char needs no quotes).
The rules, each with a one-line error:
- a key must exist (the message names the closest valid keys);
- a value must have its default's type, except that an int is fine for a float;
- --help lists every key with its default.
"""

import ast
import difflib
import os
import sys
import types

from common import UserError, error_exit


class ConfigError(UserError):
    """A bad config file or --key=value: shown to the user as one line."""


def config_keys(namespace):
    """
    The settings of a script: its plain (int, float, bool, str) globals that do not start with '_'.
    ALL_CAPS names are constants (GPT2_VOCAB_SIZE, imported from model.py), not settings.
    """
    return {k: v for k, v in namespace.items()
            if not k.startswith('_') and not k.isupper() and isinstance(v, (int, float, bool, str))}


def _closest(key, valid):
    close = difflib.get_close_matches(key, valid, n=3, cutoff=0.5)
    return f"did you mean {' or '.join('--' + c for c in close)}?" if close else "run with --help to list them"


def _closest_file(path):
    """The hint for a config file that does not exist: the closest file in its folder (nanoGPT's train_*.py too)."""
    folder, name = os.path.split(path)
    files = sorted(f for f in os.listdir(folder or '.') if f.endswith('.py')) if os.path.isdir(folder or '.') else []
    # nanoGPT calls its configs config/train_<name>.py; here they are config/<name>.py
    close = difflib.get_close_matches(name.removeprefix('train_'), files, n=1, cutoff=0.6)
    if close:
        return f"did you mean {os.path.join(folder, close[0])}?"
    return "pass a path such as config/shakespeare_char.py, or --key=value"


def _check(key, value, config, source):
    if key not in config:
        raise ConfigError(f"unknown config key '{key}' ({source}): {_closest(key, list(config))}")
    default = config[key]
    if isinstance(default, float) and type(value) is int:
        return float(value) # an int is fine where a float is expected: --dropout=0
    if type(value) is not type(default):
        # a --key=value whose text reads as a number or a list: say how to pass it as text
        text = source.split('=', 1)[1] if source.startswith('--') else None
        hint = f"; for text, quote it: --{key}=\"'{text}'\"" if isinstance(default, str) and text is not None else ''
        raise ConfigError(f"{key} expects {type(default).__name__} (default {default!r}) "
                          f"but got {type(value).__name__} {value!r} ({source}){hint}")
    return value


def apply_overrides(config, args):
    """Apply config files and --key=value args to the dict config, in order. Returns the keys that changed."""
    changed = []
    for arg in args:
        if not arg.startswith('--'):
            if not os.path.isfile(arg):
                raise ConfigError(f"config file {arg} not found: {_closest_file(arg)}")
            namespace = dict(config)
            try:
                with open(arg) as f:
                    exec(compile(f.read(), arg, 'exec'), namespace)
            except Exception as e:
                raise ConfigError(f"config file {arg} failed to run: {type(e).__name__}: {e}")
            for key, value in namespace.items():
                # skip what a config file may use in passing: imports, helpers, private names
                if key.startswith('_') or isinstance(value, (types.ModuleType, types.FunctionType, type)):
                    continue
                if key in config and value is config[key]:
                    continue
                config[key] = _check(key, value, config, arg)
                changed.append(key)
        else:
            if '=' not in arg:
                raise ConfigError(f"argument {arg} has no value: write --key=value, e.g. --batch_size=32")
            key, raw = arg[2:].split('=', 1) # only the first '=' separates: values may contain '='
            try:
                value = ast.literal_eval(raw)
            except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError): # e.g. '{[]: 1}' raises TypeError
                value = raw # a bare string
            config[key] = _check(key, value, config, arg)
            changed.append(key)
    return changed


def print_help(config, prog):
    print(f"usage: python {prog} [config/file.py ...] [--key=value ...]\n")
    print("keys and their defaults:")
    width = max(len(k) for k in config)
    for k, v in config.items():
        print(f"  --{k.ljust(width)} = {v!r}")


def script_settings(path):
    """
    The settings of another script, read without running it: the top-level assignments of a plain value
    (a literal, or arithmetic on literals such as 5 * 8) before its call of configure().
    """
    with open(path) as f:
        tree = ast.parse(f.read(), path)
    settings = {}
    for node in tree.body:
        if any(isinstance(n, ast.Call) and getattr(n.func, 'id', None) == 'configure' for n in ast.walk(node)):
            break
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            name = node.targets[0].id
            try:
                value = eval(compile(ast.Expression(node.value), path, 'eval'), {'__builtins__': {}})
            except Exception: # not a plain value (a call, a name): not a setting
                continue
            settings[name] = value
    return config_keys(settings)


def check_ranges(settings, positive=(), non_negative=(), unit=()):
    """One-line errors for settings out of range: positive (> 0), non_negative (>= 0), unit (in [0, 1))."""
    for name in positive:
        if settings[name] <= 0:
            raise ConfigError(f"{name}={settings[name]} must be > 0")
    for name in non_negative:
        if settings[name] < 0: # a negative grad_clip would flip the gradients, not clip them
            hint = " (0 turns it off)" if name == 'grad_clip' else ""
            raise ConfigError(f"{name}={settings[name]} must be >= 0{hint}")
    for name in unit:
        if not 0 <= settings[name] < 1:
            raise ConfigError(f"{name}={settings[name]} must be in [0, 1)")


def configure(namespace, argv=None):
    """Override the settings among namespace's globals from argv; print --help; exit with one line on bad input."""
    argv = sys.argv[1:] if argv is None else argv
    config = config_keys(namespace)
    if any(a in ('-h', '--help') for a in argv):
        print_help(config, os.path.basename(sys.argv[0]))
        sys.exit(0)
    try:
        changed = apply_overrides(config, argv)
    except ConfigError as e:
        error_exit(e)
    namespace.update(config)
    return {k: config[k] for k in dict.fromkeys(changed)}
