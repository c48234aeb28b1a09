"""Shape-driven XML: the body format of the query protocol's responses and of rest-xml."""

from __future__ import annotations

from typing import Any
from xml.etree import ElementTree
from xml.sax.saxutils import escape, quoteattr

from botocore.model import Shape

from sagestack.aws.values import WireValueError, scalar_to_text, text_to_scalar


def member_name(shape: Shape, default: str) -> str:
    return shape.serialization.get("name", default)


def is_flattened(shape: Shape) -> bool:
    return bool(shape.serialization.get("flattened"))


# ---------------------------------------------------------------- writing


def write_element(out: list[str], shape: Shape, value: Any, name: str, namespace: str | None = None) -> None:
    """Append ``<name>...</name>`` for ``value`` of ``shape`` to ``out``."""
    ns = f" xmlns={quoteattr(namespace)}" if namespace else ""
    kind = shape.type_name
    if kind == "structure":
        attrs, body = _structure_parts(shape, value)
        out.append(f"<{name}{ns}{_prefix_declaration(shape)}{attrs}>")
        out.extend(body)
        out.append(f"</{name}>")
    elif kind == "list":
        if is_flattened(shape):
            _write_list_items(out, shape, value, member_name(shape.member, name))
        else:
            out.append(f"<{name}{ns}>")
            _write_list_items(out, shape, value, member_name(shape.member, "member"))
            out.append(f"</{name}>")
    elif kind == "map":
        _write_map(out, shape, value, name, ns)
    else:
        fmt = shape.serialization.get("timestampFormat", "iso8601")
        out.append(f"<{name}{ns}>{escape(scalar_to_text(value, kind, fmt))}</{name}>")


def structure_body(shape: Shape, value: dict[str, Any], skip: set[str] | None = None) -> list[str]:
    """The children of a structure, without its own element."""
    _attrs, body = _structure_parts(shape, value, skip)
    return body


def _structure_parts(shape: Shape, value: dict[str, Any], skip: set[str] | None = None) -> tuple[str, list[str]]:
    attrs: list[str] = []
    body: list[str] = []
    for key, member in shape.members.items():
        item = value.get(key)
        if item is None or (skip and key in skip):
            continue
        name = member_name(member, key)
        if member.serialization.get("xmlAttribute"):
            attrs.append(f" {name}={quoteattr(scalar_to_text(item, member.type_name))}")
            continue
        write_element(body, member, item, name, _namespace_of(member))
    return "".join(attrs), body


def _prefix_declaration(shape: Shape) -> str:
    """``xmlns:xsi=...`` for a structure whose attributes use a prefix (S3's Grantee has xsi:type)."""
    ns = shape.serialization.get("xmlNamespace")
    if isinstance(ns, dict) and "prefix" in ns and "uri" in ns:
        return f" xmlns:{ns['prefix']}={quoteattr(ns['uri'])}"
    return ""


def _namespace_of(shape: Shape) -> str | None:
    ns = shape.serialization.get("xmlNamespace")
    if isinstance(ns, dict) and "prefix" in ns:
        return None  # e.g. xsi attributes; written by the value itself
    return ns.get("uri") if isinstance(ns, dict) else None


def _write_list_items(out: list[str], shape: Shape, items: list[Any], item_name: str) -> None:
    for item in items:
        write_element(out, shape.member, item, item_name)


def _write_map(out: list[str], shape: Shape, value: dict[str, Any], name: str, ns: str) -> None:
    key_name = member_name(shape.key, "key")
    value_name = member_name(shape.value, "value")
    flat = is_flattened(shape)
    if not flat:
        out.append(f"<{name}{ns}>")
    for key, item in value.items():
        out.append(f"<{name}>" if flat else "<entry>")
        write_element(out, shape.key, key, key_name)
        write_element(out, shape.value, item, value_name)
        out.append(f"</{name}>" if flat else "</entry>")
    if not flat:
        out.append(f"</{name}>")


# ---------------------------------------------------------------- reading


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def parse_document(body: bytes) -> ElementTree.Element:
    """Parse untrusted XML (expat resolves no external entities)."""
    try:
        return ElementTree.fromstring(body)
    except ElementTree.ParseError as exc:
        raise WireValueError(f"The XML you provided was not well-formed: {exc}") from exc


def read_element(shape: Shape, element: ElementTree.Element) -> Any:
    kind = shape.type_name
    if kind == "structure":
        return read_structure(shape, element)
    if kind == "list":
        item_name = member_name(shape.member, "member")
        return [read_element(shape.member, child) for child in element if _local(child.tag) == item_name]
    if kind == "map":
        return _read_map(shape, list(element))
    fmt = shape.serialization.get("timestampFormat", "iso8601")
    return text_to_scalar(element.text or "", kind, fmt)


def read_structure(shape: Shape, element: ElementTree.Element) -> dict[str, Any]:
    children: dict[str, list[ElementTree.Element]] = {}
    for child in element:
        children.setdefault(_local(child.tag), []).append(child)
    result: dict[str, Any] = {}
    for key, member in shape.members.items():
        name = member_name(member, key)
        if member.serialization.get("xmlAttribute"):
            attr = _find_attribute(element, name)
            if attr is not None:
                result[key] = text_to_scalar(attr, member.type_name)
            continue
        found = children.get(name)
        if not found:
            continue
        if member.type_name == "list" and is_flattened(member):
            result[key] = [read_element(member.member, child) for child in found]
        elif member.type_name == "map" and is_flattened(member):
            result[key] = _read_map(member, found, flattened=True)
        else:
            result[key] = read_element(member, found[0])
    return result


def _find_attribute(element: ElementTree.Element, name: str) -> str | None:
    local = name.split(":")[-1]
    for attr, value in element.attrib.items():
        if _local(attr) == local:
            return value
    return None


def _read_map(shape: Shape, entries: list[ElementTree.Element], flattened: bool = False) -> dict[str, Any]:
    key_name = member_name(shape.key, "key")
    value_name = member_name(shape.value, "value")
    result: dict[str, Any] = {}
    for entry in entries:
        if not flattened and _local(entry.tag) != "entry":
            continue
        parts = {_local(child.tag): child for child in entry}
        if key_name in parts and value_name in parts:
            key = read_element(shape.key, parts[key_name])
            result[key] = read_element(shape.value, parts[value_name])
    return result
