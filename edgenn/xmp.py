"""[device] XMP sidecars: read one safely, merge edgenn's keywords into it, write it atomically.

Keywords go under ``dc:subject`` and ``lr:hierarchicalSubject`` (``edgenn|<label>``), which
darktable, digiKam, Lightroom and exiftool read; the scores, the model and its hash go to an edgenn
namespace. An existing sidecar is merged, never replaced: every property, keyword and namespace
prefix in it is kept, and only the keywords edgenn wrote before are updated.

A sidecar is named ``photo.jpg.xmp`` (style ``ext``: darktable, digiKam) or ``photo.xmp`` (style
``replace``: Lightroom). Writes go through a temp file and a rename, so a killed run never leaves a
half-written sidecar.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterable
from pathlib import Path
from xml.parsers import expat

from edgenn.errors import EdgennError
from edgenn.fileio import atomic_write_text

#: Prefix -> URI of every namespace edgenn writes.
NS = {
    "x": "adobe:ns:meta/",
    "rdf": "http://www.w3.org/1999/02/22-rdf-syntax-ns#",
    "dc": "http://purl.org/dc/elements/1.1/",
    "lr": "http://ns.adobe.com/lightroom/1.0/",
    "edgenn": "https://github.com/edgenn/edgenn/ns/1.0/",
}
#: The top of edgenn's branch in ``lr:hierarchicalSubject``.
HIERARCHY_ROOT = "edgenn"
#: Sidecar naming style -> the photo managers that look for that name.
SIDECAR_READERS = {"ext": "darktable, digiKam", "replace": "Lightroom"}
SIDECAR_STYLES = tuple(SIDECAR_READERS)
DEFAULT_SIDECAR_STYLE = "ext"
#: What :func:`edgenn.fileio.atomic_write_bytes` names its temp files beside a sidecar.
TEMP_GLOB = ".*.xmp.*.tmp"

_XPACKET_BEGIN = '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>\n'
_XPACKET_END = '\n<?xpacket end="w"?>\n'


def qname(prefix: str, name: str) -> str:
    """ElementTree's ``{uri}name`` for a property in one of :data:`NS`'s namespaces."""
    return f"{{{NS[prefix]}}}{name}"


def sidecar_path(photo: Path, style: str = DEFAULT_SIDECAR_STYLE) -> Path:
    """``photo.jpg.xmp`` (ext: darktable, digiKam) or ``photo.xmp`` (replace: Lightroom).

    Args:
        photo: The photo.
        style: One of :data:`SIDECAR_STYLES`.

    Returns:
        The sidecar's path (it may not exist yet).

    Raises:
        ValueError: ``style`` is not one of :data:`SIDECAR_STYLES`.
    """
    photo = Path(photo)
    if style == "ext":
        return photo.with_name(photo.name + ".xmp")
    if style == "replace":
        return photo.with_suffix(".xmp")
    raise ValueError(f"unknown sidecar style {style!r}; expected one of {SIDECAR_STYLES}")


def describe_styles() -> str:
    """One line naming each style's sidecar and readers, for help texts."""
    example = Path("photo.jpg")
    return "; ".join(
        f"{style}: {sidecar_path(example, style).name} ({readers})"
        for style, readers in SIDECAR_READERS.items()
    )


# ------------------------------------------------------------------------------------- reading


class _DoctypeRefused(Exception):
    """Raised from expat's handler to stop parsing at a DOCTYPE."""


def _scan(data: bytes) -> dict[str, str]:
    """The namespace prefixes a document declares (first declaration wins; "" is the default).

    A DOCTYPE is refused before ElementTree sees the document: XMP never has one (Adobe's XMP
    toolkit rejects it too), and a DTD is where entity expansion attacks live.

    Raises:
        _DoctypeRefused: The document declares a DOCTYPE.
        expat.ExpatError: The document is not well-formed XML.
    """
    found: dict[str, str] = {}

    def on_namespace(prefix: str | None, uri: str) -> None:
        found.setdefault(prefix or "", uri)

    def on_doctype(*_: object) -> None:
        raise _DoctypeRefused

    parser = expat.ParserCreate(namespace_separator=" ")
    parser.StartNamespaceDeclHandler = on_namespace
    parser.StartDoctypeDeclHandler = on_doctype
    parser.Parse(data, True)
    return found


def _empty_xmp() -> ET.Element:
    root = ET.Element(qname("x", "xmpmeta"))
    rdf = ET.SubElement(root, qname("rdf", "RDF"))
    desc = ET.SubElement(rdf, qname("rdf", "Description"))
    desc.set(qname("rdf", "about"), "")
    return root


def read_sidecar(path: Path) -> tuple[ET.Element, dict[str, str]]:
    """Parse an XMP sidecar (or start an empty one when there is none).

    Args:
        path: The sidecar.

    Returns:
        ``(root element, the namespace prefixes it declares)``.

    Raises:
        EdgennError: The file exists but is not XML, or declares a DOCTYPE.
    """
    path = Path(path)
    if not path.exists():
        return _empty_xmp(), {}
    data = path.read_bytes()
    try:
        namespaces = _scan(data)
        root = ET.fromstring(data)
    except _DoctypeRefused:
        raise EdgennError(
            f"{path}: the existing sidecar declares a DOCTYPE, which XMP never does; it was "
            "left as it is",
            "Remove the <!DOCTYPE ...> line, or move the sidecar away.",
        ) from None
    except (expat.ExpatError, ET.ParseError) as exc:
        raise EdgennError(
            f"{path}: the existing sidecar is not valid XML ({exc}); it was left as it is"
        ) from None
    return root, namespaces


def bag_items(prop: ET.Element | None) -> list[str]:
    """The ``rdf:li`` texts of a property (``dc:subject`` and the like); [] for None."""
    if prop is None:
        return []
    return [li.text or "" for li in prop.iter(qname("rdf", "li"))]


def sidecar_model_hash(path: Path) -> str | None:
    """The edgenn model hash recorded in a sidecar (None when absent or unreadable)."""
    if not Path(path).exists():
        return None
    try:
        root, _ = read_sidecar(path)
    except EdgennError:
        return None
    for desc in root.iter(qname("rdf", "Description")):
        node = desc.find(qname("edgenn", "ModelHash"))
        if node is not None and node.text:
            return node.text
        value = desc.get(qname("edgenn", "ModelHash"))
        if value:
            return value
    return None


# ------------------------------------------------------------------------------------- merging


def _set_bag(desc: ET.Element, tag: str, items: list[str], kind: str = "Bag") -> None:
    prop = desc.find(tag)
    if prop is None:
        prop = ET.SubElement(desc, tag)
    for child in list(prop):
        prop.remove(child)
    container = ET.SubElement(prop, qname("rdf", kind))
    for item in items:
        ET.SubElement(container, qname("rdf", "li")).text = item


def _descriptions(root: ET.Element) -> list[ET.Element]:
    """Every ``rdf:Description`` under the tree's ``rdf:RDF``, creating both when missing."""
    rdf = root if root.tag == qname("rdf", "RDF") else root.find(qname("rdf", "RDF"))
    if rdf is None:
        rdf = ET.SubElement(root, qname("rdf", "RDF"))
    descriptions = rdf.findall(qname("rdf", "Description"))
    if not descriptions:
        desc = ET.SubElement(rdf, qname("rdf", "Description"))
        desc.set(qname("rdf", "about"), "")
        descriptions = [desc]
    return descriptions


def _remove_edgenn_properties(descriptions: list[ET.Element]) -> set[str]:
    """Drop every edgenn property; return the keywords edgenn had written."""
    previous: set[str] = set()
    prefix = f"{{{NS['edgenn']}}}"
    for desc in descriptions:
        previous.update(bag_items(desc.find(qname("edgenn", "Keywords"))))
        for attr in [a for a in desc.attrib if a.startswith(prefix)]:
            del desc.attrib[attr]  # an older attribute form of edgenn's properties
        for child in [c for c in desc if c.tag.startswith(prefix)]:
            desc.remove(child)
    return previous


def merge_tags(
    root: ET.Element, keywords: list[str], scores: dict[str, float], model: str, digest: str
) -> ET.Element:
    """Put edgenn's keywords into an XMP tree, keeping everything else that is there.

    Keywords edgenn wrote before (listed in ``edgenn:Keywords``) are removed from ``dc:subject``
    and ``lr:hierarchicalSubject`` first, so a rerun updates rather than duplicates; every other
    keyword, property and namespace stays as it was.

    Args:
        root: The parsed sidecar.
        keywords: Labels to write.
        scores: Label -> score of the top-k.
        model: Model file name.
        digest: Model hash.

    Returns:
        The same tree, updated.
    """
    descriptions = _descriptions(root)
    # Write where dc:subject already lives, so that one description keeps all keywords.
    desc = next(
        (d for d in descriptions if d.find(qname("dc", "subject")) is not None), descriptions[0]
    )
    previous = _remove_edgenn_properties(descriptions)
    subjects = [s for s in bag_items(desc.find(qname("dc", "subject"))) if s not in previous]
    subjects += [k for k in keywords if k not in subjects]
    hierarchy = [
        h
        for h in bag_items(desc.find(qname("lr", "hierarchicalSubject")))
        if not h.startswith(f"{HIERARCHY_ROOT}|")
    ]
    hierarchy += [f"{HIERARCHY_ROOT}|{k}" for k in keywords]
    _set_bag(desc, qname("dc", "subject"), subjects)
    _set_bag(desc, qname("lr", "hierarchicalSubject"), hierarchy)
    _set_bag(desc, qname("edgenn", "Keywords"), keywords)
    _set_bag(desc, qname("edgenn", "Scores"), [f"{k}={v:.4f}" for k, v in scores.items()], "Seq")
    ET.SubElement(desc, qname("edgenn", "Model")).text = model
    ET.SubElement(desc, qname("edgenn", "ModelHash")).text = digest
    return root


# ------------------------------------------------------------------------------------- writing


def _register_namespaces(extra: dict[str, str]) -> None:
    for prefix, uri in {**extra, **NS}.items():
        # ElementTree reserves ns0, ns1... for prefixes it invents and refuses to register them;
        # such a prefix is then written as ElementTree's own, which names the same namespace.
        if prefix and not (prefix.startswith("ns") and prefix[2:].isdigit()):
            ET.register_namespace(prefix, uri)


def write_sidecar(path: Path, root: ET.Element, namespaces: dict[str, str]) -> None:
    """Serialize and write a sidecar atomically (temp file, fsync, rename).

    Args:
        path: The sidecar.
        root: The tree.
        namespaces: Prefixes to keep as the original file declared them.
    """
    _register_namespaces(namespaces)
    ET.indent(root, space=" ")
    body = ET.tostring(root, encoding="unicode")
    atomic_write_text(path, _XPACKET_BEGIN + body + _XPACKET_END)


def update_sidecar(
    path: Path, keywords: list[str], scores: dict[str, float], model: str, digest: str
) -> None:
    """Read (or start), merge edgenn's keywords into, and write one sidecar.

    Args:
        path: The sidecar.
        keywords: Labels to write.
        scores: Label -> score of the top-k.
        model: Model file name.
        digest: Model hash.

    Raises:
        EdgennError: The existing sidecar cannot be parsed (it is left as it is).
        OSError: It cannot be written.
    """
    root, namespaces = read_sidecar(path)
    write_sidecar(path, merge_tags(root, keywords, scores, model, digest), namespaces)


def remove_stale_temp_files(sidecars: Iterable[Path]) -> int:
    """Delete the temp files a killed run left beside these sidecars.

    Only edgenn's own temp files for these sidecars (``.NAME.xmp.<random>.tmp``) are removed.

    Args:
        sidecars: Sidecars about to be written.

    Returns:
        How many files were removed.
    """
    names_by_folder: dict[Path, set[str]] = {}
    for side in map(Path, sidecars):
        names_by_folder.setdefault(side.parent, set()).add(side.name)
    removed = 0
    for folder, names in names_by_folder.items():
        for stale in folder.glob(TEMP_GLOB):
            if any(stale.name.startswith(f".{name}.") for name in names):
                stale.unlink(missing_ok=True)
                removed += 1
    return removed
