"""The config tree: an EasyDict that can be frozen, cloned and merged with type checks.

Used by `common/config.py`; errors name the source (a file or "command line") and the dotted key.
"""
from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NoReturn, TypeAlias

from easydict import EasyDict

# What a key may hold once merged: a scalar, a list or tuple of values, or a nested section.
ConfigScalar: TypeAlias = "bool | int | float | str | None"
ConfigValue: TypeAlias = "ConfigScalar | list[Any] | tuple[Any, ...] | ConfigNode"
# A task's defaults hook, `add_<task>_defaults(cfg)`: adds keys to the mutable tree in place.
AddDefaults: TypeAlias = Callable[["ConfigNode"], None]
# A parser receives (value, source, dotted_key) and returns the value to store, or raises ConfigError.
Parser: TypeAlias = Callable[[Any, str, str], Any]


class ConfigError(ValueError):
    """A config file, key or value that does not fit the defaults."""


class FrozenList(list):
    """A list inside a frozen config: reads like a list (and equals one), refuses every change."""

    def _refuse(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise ConfigError("cannot change a list of a frozen config (use cfg.clone() for a mutable copy)")

    append = extend = insert = remove = pop = clear = sort = reverse = _refuse
    __setitem__ = __delitem__ = __iadd__ = __imul__ = _refuse

    def __reduce__(self) -> tuple[type[FrozenList], tuple[list[Any]]]:
        # Pickle and copy rebuild it whole (the default would append item by item, which is refused).
        return (FrozenList, (list(self),))


class ConfigNode(EasyDict):
    """A mapping of str keys to `ConfigValue`s with attribute access (`cfg.TRAIN.LR`); sections are `ConfigNode`s.

    The contract the engine, the tasks and the model code rely on:
    * it is a `dict` (and an `EasyDict`): `cfg["TRAIN"]`, `cfg.TRAIN`, `"LR" in cfg.TRAIN`, iteration, `==`;
    * a mapping assigned to a key becomes a `ConfigNode`, also inside lists and tuples;
    * names starting with "_" are private attributes, never keys: not iterated, not dumped, kept by `clone()`,
      deepcopy and pickle;
    * after `freeze()` nothing below the node can change: setting, deleting, `update`, `pop`, `popitem`,
      `clear`, `setdefault` of a missing key raise `ConfigError` at any depth, nodes inside lists included, and
      lists become `FrozenList`s (equal to the same list, but refusing `append` and the like);
    * `clone()` is the way to a mutable deep copy; a deepcopy or pickle keeps the frozen state.
    """

    def __init__(self, d: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        # EasyDict.__init__ would copy the methods of subclasses into the dict, so it is not called.
        object.__setattr__(self, "_frozen", False)
        for key, value in {**dict(d or {}), **kwargs}.items():
            self[key] = value

    # ----- access ---------------------------------------------------------------------------------------
    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"config has no key {name!r}") from None

    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(name, str) and name.startswith("_"):
            object.__setattr__(self, name, value)
            return
        self._check_mutable(name)
        dict.__setitem__(self, name, _to_nodes(value))

    __setitem__ = __setattr__

    def __delattr__(self, name: str) -> None:
        self._check_mutable(name)
        dict.__delitem__(self, name)

    __delitem__ = __delattr__

    def update(self, e: Mapping[str, Any] | Iterable[tuple[str, Any]] | None = None, **f: Any) -> None:
        for key, value in {**dict(e or {}), **f}.items():
            self[key] = value

    def pop(self, key: str, *default: Any) -> Any:
        self._check_mutable(key)
        return dict.pop(self, key, *default)

    def setdefault(self, key: str, default: Any = None) -> Any:
        if key not in self:
            self[key] = default
        return self[key]

    def popitem(self) -> tuple[str, Any]:
        self._check_mutable("<any>")
        return dict.popitem(self)

    def clear(self) -> None:
        self._check_mutable("<all>")
        dict.clear(self)

    def _check_mutable(self, name: str) -> None:
        if self.__dict__.get("_frozen", False):
            raise ConfigError(f"cannot change key {name!r}: the config is frozen (use cfg.clone() for a mutable copy)")

    # ----- freezing and copies ----------------------------------------------------------------------------
    def freeze(self) -> ConfigNode:
        """Make this node and everything below it read-only; returns self."""
        for key, value in self.items():
            dict.__setitem__(self, key, _frozen_value(value))
        object.__setattr__(self, "_frozen", True)
        return self

    @property
    def is_frozen(self) -> bool:
        return self.__dict__.get("_frozen", False)

    def clone(self) -> ConfigNode:
        """A mutable deep copy (private attributes included)."""
        copy = type(self)()
        for name, value in self.__dict__.items():
            if name != "_frozen":
                object.__setattr__(copy, name, _clone_value(value))
        for key, value in self.items():
            copy[key] = _clone_value(value)
        return copy

    def __deepcopy__(self, memo: dict[int, Any]) -> ConfigNode:
        copy = self.clone()
        return copy.freeze() if self.is_frozen else copy

    def __reduce__(self) -> tuple[Callable[..., ConfigNode], tuple[Any, ...]]:
        # Pickle (DataLoader workers) as a plain dict, the private attributes and the frozen flag.
        private = {name: value for name, value in self.__dict__.items() if name != "_frozen"}
        return (_rebuild_node, (type(self), self.to_dict(keep_tuples=True), self.is_frozen, private))

    def to_dict(self, keep_tuples: bool = False) -> dict[str, Any]:
        """Plain python types (dict, list, str, numbers, bool, None) for YAML dumps and checkpoints.

        Tuples become lists unless keep_tuples (used for pickling, where types must survive).
        """
        return {key: _plain(value, keep_tuples) for key, value in self.items()}


def _rebuild_node(cls: type[ConfigNode], data: dict[str, Any], frozen: bool,
                  private: Mapping[str, Any] | None = None) -> ConfigNode:
    node = cls(data)
    for name, value in (private or {}).items():
        object.__setattr__(node, name, value)
    return node.freeze() if frozen else node


def _to_nodes(value: Any) -> Any:
    if isinstance(value, Mapping) and not isinstance(value, ConfigNode):
        return ConfigNode(value)
    if isinstance(value, list):  # a FrozenList put into a mutable node becomes a plain list again
        return [_to_nodes(item) for item in value]
    if type(value) is tuple:
        return tuple(_to_nodes(item) for item in value)
    return value


def _frozen_value(value: Any) -> Any:
    if isinstance(value, ConfigNode):
        return value.freeze()
    if isinstance(value, list):
        return FrozenList(_frozen_value(item) for item in value)
    if type(value) is tuple:
        return tuple(_frozen_value(item) for item in value)
    return value


def _clone_value(value: Any) -> Any:
    if isinstance(value, ConfigNode):
        return value.clone()
    if isinstance(value, list):  # a FrozenList comes back as a plain list
        return [_clone_value(item) for item in value]
    if isinstance(value, tuple):
        return type(value)(_clone_value(item) for item in value)
    if isinstance(value, dict):
        return {key: _clone_value(item) for key, item in value.items()}
    if isinstance(value, (set, frozenset)):
        return type(value)(value)
    return value


def _plain(value: Any, keep_tuples: bool) -> Any:
    if isinstance(value, Mapping):
        return {key: _plain(item, keep_tuples) for key, item in value.items()}
    if isinstance(value, tuple) and keep_tuples:
        return tuple(_plain(item, keep_tuples) for item in value)
    if isinstance(value, (list, tuple)):
        return [_plain(item, keep_tuples) for item in value]
    return value


# ----- merging with checks --------------------------------------------------------------------------------
def dotted_keys(node: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Every key of the tree as a dotted path ("TRAIN.LR", "NETWORK.VLBERT.hidden_size", ...)."""
    keys = []
    for key, value in node.items():
        keys.append(prefix + key)
        if isinstance(value, Mapping):
            keys.extend(dotted_keys(value, prefix + key + "."))
    return keys


def unknown_key_error(source: str, dotted: str, candidates: list[str]) -> ConfigError:
    """`typo.yaml: unknown key TRAIN.LRR (did you mean TRAIN.LR?)`."""
    guess = difflib.get_close_matches(dotted, candidates, n=1, cutoff=0.6)
    hint = f" (did you mean {guess[0]}?)" if guess else ""
    return ConfigError(f"{source}: unknown key {dotted}{hint}")


def type_error(source: str, dotted: str, expected: str, value: Any) -> ConfigError:
    return ConfigError(f"{source}: key {dotted} expects {expected}, found {type(value).__name__} ({value!r})")


def coerce_like(default: Any, value: Any, source: str, dotted: str) -> Any:
    """Check `value` against the type of `default` and return it normalised to that type.

    int -> float is allowed; list and tuple take the default's type; a None default accepts anything;
    a bool must be a bool (and a bool is not a number).
    """
    if default is None:
        return value
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise type_error(source, dotted, "bool", value)
        return value
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise type_error(source, dotted, "int", value)
        return value
    if isinstance(default, float):
        return to_float(value, source, dotted)
    if isinstance(default, str):
        if not isinstance(value, str):
            raise type_error(source, dotted, "str", value)
        return value
    if isinstance(default, (list, tuple)):
        if not isinstance(value, (list, tuple)):
            raise type_error(source, dotted, "a list", value)
        return tuple(value) if isinstance(default, tuple) else list(value)
    raise type_error(source, dotted, type(default).__name__, value)


def to_float(value: Any, source: str, dotted: str) -> float:
    """A number as float. Also takes strings like "7e-5": PyYAML reads an exponent without a dot as a string."""
    if isinstance(value, bool):
        raise type_error(source, dotted, "float", value)
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str) and _looks_like_exponent_number(value):
        return float(value)
    raise type_error(source, dotted, "float", value)


def _looks_like_exponent_number(text: str) -> bool:
    mantissa, sep, exponent = text.strip().lower().partition("e")
    if not sep:
        return False
    mantissa = mantissa.lstrip("+-")
    return (mantissa.replace(".", "", 1).isdigit()) and exponent.lstrip("+-").isdigit()


def merge_mapping(
    node: ConfigNode,
    values: Any,
    source: str,
    prefix: str,
    parsers: Mapping[str, Parser],
    schema_prefix: str | None = None,
) -> None:
    """Merge `values` (a mapping) into `node` key by key, recursing into sections.

    `prefix` is the dotted path shown in errors ("DATASET[1]." for list entries); `schema_prefix` is the
    path used to find a key's parser ("DATASET."). Unknown keys and wrong types raise ConfigError.
    """
    schema_prefix = prefix if schema_prefix is None else schema_prefix
    if not isinstance(values, Mapping):
        raise type_error(source, prefix.rstrip(".") or "<top level>", "a mapping", values)
    for key, value in values.items():
        dotted = f"{prefix}{key}"
        if not isinstance(key, str) or key not in node:
            siblings = [prefix + k for k in node]
            raise unknown_key_error(source, dotted, siblings or dotted_keys(node, prefix))
        node[key] = merge_value(node[key], value, source, dotted, f"{schema_prefix}{key}", parsers)


def merge_value(
    current: Any, value: Any, source: str, dotted: str, schema_key: str, parsers: Mapping[str, Parser]
) -> Any:
    """The value to store at `dotted` when `value` is merged onto `current`."""
    if schema_key in parsers:
        return parsers[schema_key](value, source, dotted)
    if isinstance(current, ConfigNode):
        merge_mapping(current, value, source, dotted + ".", parsers, schema_key + ".")
        return current
    if isinstance(value, Mapping):
        raise type_error(source, dotted, f"a {type(current).__name__} value, not a section", value)
    return coerce_like(current, value, source, dotted)
