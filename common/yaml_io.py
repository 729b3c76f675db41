"""The one way the project reads YAML (configs, and any other YAML file it reads): `yaml.safe_load` plus two
checks that plain safe_load lacks, each an error naming the file.

- A key given twice in one mapping (YAML keeps the last silently): `DuplicateKeyError` names the key (dotted path
  from the top) and both line numbers.
- Aliases that expand to more than `MAX_NODES` nodes (a "billion laughs" bomb: a few lines whose expansion
  exhausts memory once the values are copied), or that refer to themselves: `AliasExpansionError`. The size of the
  expansion is counted on the composed node graph, where an alias is a shared reference, so counting costs no more
  than the file's own size.
"""
from __future__ import annotations

import os
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

__all__ = ["MAX_NODES", "AliasExpansionError", "DuplicateKeyError", "YAMLContentError", "load_yaml_file",
           "load_yaml_text"]

# A config has a few hundred nodes; a suite file a few thousand. A million would be ~100 MB once expanded.
MAX_NODES = 100_000
MERGE_TAG = "tag:yaml.org,2002:merge"


class YAMLContentError(yaml.YAMLError):
    """Well-formed YAML that the project refuses to use; the message names the file."""


class DuplicateKeyError(YAMLContentError):
    """A mapping gives the same key twice."""


class AliasExpansionError(YAMLContentError):
    """Aliases expand to too many nodes, or an alias refers to itself."""


def _line(node: Node) -> int:
    return node.start_mark.line + 1


class _CheckedLoader(yaml.SafeLoader):
    """SafeLoader that checks the composed document (duplicate keys, alias expansion) before building values."""

    def __init__(self, stream: Any, source: str, max_nodes: int):
        super().__init__(stream)
        self.source, self.max_nodes = source, max_nodes

    def construct_document(self, node: Node) -> Any:
        _expanded_size(node, self.source, self.max_nodes, {}, set())
        self._check_duplicates(node, "", set())
        return super().construct_document(node)

    def _check_duplicates(self, node: Node, path: str, seen: set[int]) -> None:
        """Every mapping reachable from `node` (each once, aliases included) has distinct keys."""
        if id(node) in seen:
            return
        seen.add(id(node))
        if isinstance(node, SequenceNode):
            for i, child in enumerate(node.value):
                self._check_duplicates(child, f"{path}[{i}]", seen)
        elif isinstance(node, MappingNode):
            first_line: dict[Any, int] = {}
            for key_node, value_node in node.value:
                if key_node.tag == MERGE_TAG or not isinstance(key_node, ScalarNode):
                    self._check_duplicates(value_node, path, seen)  # `<<: *base` entries may be overridden
                    continue
                key = self.construct_object(key_node)
                dotted = f"{path}.{key}" if path else str(key)
                if key in first_line:
                    raise DuplicateKeyError(f"{self.source}: key {dotted} is given twice, at line {first_line[key]} "
                                            f"and at line {_line(key_node)}; YAML would keep the second silently, "
                                            f"so remove one")
                first_line[key] = _line(key_node)
                self._check_duplicates(value_node, dotted, seen)


def _expanded_size(node: Node, source: str, limit: int, sizes: dict[int, int], open_nodes: set[int]) -> int:
    """Nodes in the tree `node` stands for once every alias is replaced by a copy of its anchor (memoised)."""
    if id(node) in sizes:
        return sizes[id(node)]
    if id(node) in open_nodes:
        raise AliasExpansionError(f"{source}: line {_line(node)}: an alias refers to a node that contains it "
                                  f"(a recursive structure, which a config cannot hold)")
    open_nodes.add(id(node))
    size = 1
    if isinstance(node, SequenceNode):
        size += sum(_expanded_size(child, source, limit, sizes, open_nodes) for child in node.value)
    elif isinstance(node, MappingNode):
        size += sum(_expanded_size(key, source, limit, sizes, open_nodes)
                    + _expanded_size(value, source, limit, sizes, open_nodes) for key, value in node.value)
    open_nodes.discard(id(node))
    if size > limit:
        raise AliasExpansionError(f"{source}: line {_line(node)}: the aliases (*name) expand this value to more "
                                  f"than {limit:,} nodes; refusing it (an alias bomb would exhaust memory)")
    sizes[id(node)] = size
    return size


def load_yaml_text(text: str | bytes, source: str = "<string>", max_nodes: int = MAX_NODES) -> Any:
    """`yaml.safe_load(text)` with the duplicate-key and alias-expansion checks; errors name `source`.

    Raises `YAMLContentError` (a `yaml.YAMLError`) for a refused document, `yaml.YAMLError` for invalid YAML.
    """
    loader = _CheckedLoader(text, source, max_nodes)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def load_yaml_file(path: str | os.PathLike[str], max_nodes: int = MAX_NODES) -> Any:
    """`load_yaml_text` of a file (UTF-8, or UTF-16 with a BOM, as YAML allows); FileNotFoundError when it is
    missing. Errors name the file."""
    with open(path, "rb") as handle:
        return load_yaml_text(handle.read(), str(path), max_nodes)
