"""[device] XMP sidecars: read one safely, merge edgenn's keywords into it, write it atomically.

Keywords go under ``dc:subject`` and ``lr:hierarchicalSubject`` (``edgenn|<label>``), which
darktable, digiKam, Lightroom and exiftool read; the scores, the model and its hash go to an edgenn
namespace. An existing sidecar is merged, never replaced: every property, keyword and namespace
prefix in it is kept. ``edgenn:AddedKeywords`` records the keywords edgenn itself put into
``dc:subject``, and only those are removed on a retag: a keyword the user had before stays, even
when a model predicted it too.

The tree is written back with the document's own prefixes (and its default namespace) through a
serializer of its own: ElementTree's would need prefixes registered process-wide, which refuses
``ns0``-style ones and changes how every other caller's XML is written.

A sidecar is named ``photo.jpg.xmp`` (style ``ext``: darktable, digiKam) or ``photo.xmp`` (style
``replace``: Lightroom). Only a regular file is read, with a size limit. Writes go through a temp
file and a rename, so a killed run never leaves a half-written sidecar; a rewritten sidecar keeps
its permissions and owner, and a symlinked one is updated where the link points.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from pathlib import Path
from xml.parsers import expat

from edgenn.errors import EdgennError
from edgenn.fileio import atomic_write_text, read_regular

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
#: Largest sidecar read: darktable's, with a long edit history, stay far below.
MAX_SIDECAR_BYTES = 32 * 1024 * 1024
#: Deepest element nesting read: XMP nests about ten levels; a deeper file is refused, not
#: allowed to exhaust the recursion of the code that walks it.
MAX_DEPTH = 100
#: Root elements of an XMP document (``x:xmpmeta``, the older ``x:xapmeta``, or a bare ``rdf:RDF``).
XMP_ROOTS = ("{adobe:ns:meta/}xmpmeta", "{adobe:ns:meta/}xapmeta", f"{{{NS['rdf']}}}RDF")
#: The namespace every XML document has, written ``xml:`` (``xml:lang``) and never declared.
XML_NS = "http://www.w3.org/XML/1998/namespace"

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


class _Refused(Exception):
    """Raised from expat's handlers to stop parsing a document edgenn will not merge into."""


def _scan(data: bytes) -> dict[str, str]:
    """The namespace prefixes a document declares (first declaration wins; "" is the default).

    A DOCTYPE is refused before ElementTree sees the document: XMP never has one (Adobe's XMP
    toolkit rejects it too), and a DTD is where entity expansion attacks live. So is nesting
    deeper than :data:`MAX_DEPTH`.

    Raises:
        _Refused: The document declares a DOCTYPE, or nests too deep (the reason as its text).
        expat.ExpatError: The document is not well-formed XML.
    """
    found: dict[str, str] = {}
    depth = [0]

    def on_namespace(prefix: str | None, uri: str) -> None:
        found.setdefault(prefix or "", uri)

    def on_doctype(*_: object) -> None:
        raise _Refused("declares a DOCTYPE, which XMP never does")

    def on_start(*_: object) -> None:
        depth[0] += 1
        if depth[0] > MAX_DEPTH:
            raise _Refused(f"nests elements more than {MAX_DEPTH} deep, which XMP never does")

    def on_end(*_: object) -> None:
        depth[0] -= 1

    parser = expat.ParserCreate(namespace_separator=" ")
    parser.StartNamespaceDeclHandler = on_namespace
    parser.StartDoctypeDeclHandler = on_doctype
    parser.StartElementHandler = on_start
    parser.EndElementHandler = on_end
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
        EdgennError: Something is there but it is not a regular file of at most
            :data:`MAX_SIDECAR_BYTES`, not XML, not XMP, or declares a DOCTYPE.
    """
    path = Path(path)
    if not os.path.lexists(path):
        return _empty_xmp(), {}
    data = read_regular(path, "an XMP sidecar", MAX_SIDECAR_BYTES)
    try:
        namespaces = _scan(data)
        root = ET.fromstring(data)
    except _Refused as exc:
        raise EdgennError(
            f"{path}: the existing sidecar {exc}; it was left as it is",
            "Move the sidecar away (or remove what is named) and tag again.",
        ) from None
    except (expat.ExpatError, ET.ParseError) as exc:
        raise EdgennError(
            f"{path}: the existing sidecar is not valid XML ({exc}); it was left as it is"
        ) from None
    if root.tag not in XMP_ROOTS:
        raise EdgennError(
            f"{path}: the existing file is XML but not XMP (its root is {root.tag!r}, expected "
            "x:xmpmeta or rdf:RDF); it was left as it is"
        )
    return root, namespaces


def bag_items(prop: ET.Element | None) -> list[str]:
    """The ``rdf:li`` texts of a property (``dc:subject`` and the like); [] for None."""
    if prop is None:
        return []
    return [li.text or "" for li in prop.iter(qname("rdf", "li"))]


def sidecar_model_hash(path: Path) -> str | None:
    """The edgenn model hash recorded in a sidecar (None when absent or unreadable)."""
    if not os.path.lexists(path):
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


def _holder(descriptions: list[ET.Element], tag: str) -> ET.Element | None:
    """The description that holds property ``tag`` (exiftool writes one per namespace)."""
    return next((d for d in descriptions if d.find(tag) is not None), None)


def _remove_edgenn_properties(descriptions: list[ET.Element]) -> set[str]:
    """Drop every edgenn property; return the keywords edgenn had added to ``dc:subject``.

    A sidecar from before ``edgenn:AddedKeywords`` existed does not say which of its keywords
    were the user's: none is taken as edgenn's (keeping a keyword beats losing the user's).
    """
    added: set[str] = set()
    prefix = f"{{{NS['edgenn']}}}"
    for desc in descriptions:
        added.update(bag_items(desc.find(qname("edgenn", "AddedKeywords"))))
        for attr in [a for a in desc.attrib if a.startswith(prefix)]:
            del desc.attrib[attr]  # an older attribute form of edgenn's properties
        for child in [c for c in desc if c.tag.startswith(prefix)]:
            desc.remove(child)
    return added


def merge_tags(
    root: ET.Element, keywords: list[str], scores: dict[str, float], model: str, digest: str
) -> ET.Element:
    """Put edgenn's keywords into an XMP tree, keeping everything else that is there.

    Keywords edgenn added before (listed in ``edgenn:AddedKeywords``) are removed from
    ``dc:subject``, and its ``edgenn|...`` branch from ``lr:hierarchicalSubject``, so a rerun
    updates rather than duplicates. A keyword that was there already is the user's: it is not
    recorded as added, and stays when a later model does not predict it. Each property is
    updated in the ``rdf:Description`` that holds it; every other keyword, property and
    namespace stays as it was.

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
    subject_tag, hierarchy_tag = qname("dc", "subject"), qname("lr", "hierarchicalSubject")
    home = _holder(descriptions, subject_tag) or descriptions[0]
    hierarchy_home = _holder(descriptions, hierarchy_tag) or home
    added_before = _remove_edgenn_properties(descriptions)
    subjects = [s for s in bag_items(home.find(subject_tag)) if s not in added_before]
    added = [k for k in dict.fromkeys(keywords) if k not in subjects]
    hierarchy = [
        h
        for h in bag_items(hierarchy_home.find(hierarchy_tag))
        if not h.startswith(f"{HIERARCHY_ROOT}|")
    ]
    _set_bag(home, subject_tag, subjects + added)
    _set_bag(hierarchy_home, hierarchy_tag, hierarchy + [f"{HIERARCHY_ROOT}|{k}" for k in keywords])
    _set_bag(home, qname("edgenn", "Keywords"), keywords)
    _set_bag(home, qname("edgenn", "AddedKeywords"), added)
    _set_bag(home, qname("edgenn", "Scores"), [f"{k}={v:.4f}" for k, v in scores.items()], "Seq")
    ET.SubElement(home, qname("edgenn", "Model")).text = model
    ET.SubElement(home, qname("edgenn", "ModelHash")).text = digest
    return root


# ------------------------------------------------------------------------------------- writing


def _split(name: str) -> tuple[str, str]:
    """``(namespace URI, local name)`` of an ElementTree name (``""`` when it has none)."""
    if name.startswith("{"):
        uri, local = name[1:].split("}", 1)
        return uri, local
    return "", name


def _prefix_map(root: ET.Element, declared: dict[str, str]) -> tuple[dict[str, str], str | None]:
    """URI -> prefix for the namespaces to write, and the default namespace to keep (if any).

    The document's own prefixes come first (all of them, used or not), then edgenn's
    (:data:`NS`); a namespace with neither gets a new ``nsN``. The document's default namespace
    stays the default for its elements, unless an element without a namespace needs the default
    to be empty; attributes never take a default namespace, so they get a prefix.
    """
    element_uris, attribute_uris, unqualified = [], set(), False
    for element in root.iter():
        uri = _split(element.tag)[0]
        element_uris.append(uri)
        unqualified = unqualified or not uri
        attribute_uris.update(_split(name)[0] for name in element.attrib)
    default = None if unqualified else declared.get("") or None
    candidates = [(p, u) for p, u in declared.items() if p and u] + list(NS.items())
    wanted = [u for _, u in candidates] + element_uris + sorted(attribute_uris)
    prefixes: dict[str, str] = {}
    taken = {"xml", "xmlns"}
    for uri in dict.fromkeys(wanted):
        if not uri or uri == XML_NS:
            continue
        prefix = next((p for p, u in candidates if u == uri and p not in taken), None)
        if prefix is None and uri == default and uri not in attribute_uris:
            continue  # its elements are written unprefixed, in the default namespace
        count = 0
        while prefix is None or prefix in taken:
            count += 1
            prefix = f"ns{count}"
        prefixes[uri] = prefix
        taken.add(prefix)
    return prefixes, default


def _name(name: str, prefixes: dict[str, str], default: str | None, attribute: bool) -> str:
    uri, local = _split(name)
    if not uri:
        return local
    if uri == XML_NS:
        return f"xml:{local}"
    if uri == default and not attribute:
        return local
    return f"{prefixes[uri]}:{local}"


# Characters XML 1.0 cannot hold: written out, they make a file no reader (edgenn included) parses.
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _text(value: str, quote: bool = False) -> str:
    if _NOT_XML.search(value):
        raise EdgennError(
            f"{value!r} holds a character XML cannot store (a control character); the sidecar "
            "was left as it is",
            "Rename the label in the model's labels.",
        )
    value = value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    value = value.replace("\r", "&#13;")
    if quote:
        value = value.replace('"', "&quot;").replace("\n", "&#10;").replace("\t", "&#9;")
    return value


def serialize(root: ET.Element, namespaces: dict[str, str]) -> str:
    """Write an XMP tree as text with the document's own prefixes, declared on the root.

    Args:
        root: The tree (as :func:`read_sidecar` and :func:`merge_tags` give it).
        namespaces: The prefixes the original document declared (``""``: its default namespace).

    Returns:
        The XML text.

    Raises:
        EdgennError: A text holds a character XML cannot store.
    """
    prefixes, default = _prefix_map(root, namespaces)
    declared = [f' xmlns="{_text(default, True)}"'] if default else []
    declared += [f' xmlns:{p}="{_text(uri, True)}"' for uri, p in prefixes.items()]
    out: list[str] = []

    def write(element: ET.Element, extra: str) -> None:
        tag = _name(element.tag, prefixes, default, attribute=False)
        attributes = "".join(
            f' {_name(k, prefixes, default, attribute=True)}="{_text(v, True)}"'
            for k, v in element.attrib.items()
        )
        out.append(f"<{tag}{extra}{attributes}")
        if element.text or len(element):
            out.append(">" + _text(element.text or ""))
            for child in element:
                write(child, "")
            out.append(f"</{tag}>")
        else:
            out.append(" />")
        out.append(_text(element.tail or ""))

    write(root, "".join(declared))
    return "".join(out)


def _replace_keeping_owner(path: Path, data: bytes) -> None:
    """Replace an existing file atomically, keeping its permission bits and (when allowed) owner.

    The temp file is created private (0600) and gets the original's mode and owner before the
    rename, so the sidecar is never readable by more people than before, not even for a moment.
    """
    info = os.stat(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            mine = os.fstat(fh.fileno())
            for uid, gid in ((info.st_uid, info.st_gid), (-1, info.st_gid)):
                if (mine.st_uid, mine.st_gid) == (info.st_uid, info.st_gid):
                    break
                with contextlib.suppress(PermissionError):  # only root gives files away
                    os.fchown(fh.fileno(), uid, gid)
                    break
            os.fchmod(fh.fileno(), stat.S_IMODE(info.st_mode))
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_sidecar(path: Path, root: ET.Element, namespaces: dict[str, str]) -> None:
    """Serialize and write a sidecar atomically (temp file, fsync, rename).

    An existing sidecar keeps its mode and owner; a symlinked one is written where it points.

    Args:
        path: The sidecar.
        root: The tree.
        namespaces: Prefixes to keep as the original file declared them.

    Raises:
        EdgennError: A text holds a character XML cannot store (nothing is written).
    """
    path = Path(path)
    ET.indent(root, space=" ")
    try:
        text = _XPACKET_BEGIN + serialize(root, namespaces) + _XPACKET_END
    except EdgennError as exc:
        raise EdgennError(f"{path}: {exc.message}", exc.hint) from None
    if not os.path.lexists(path):
        atomic_write_text(path, text)
        return
    _replace_keeping_owner(Path(os.path.realpath(path)), text.encode("utf-8"))


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
            # Only files: a folder that happens to have such a name is not ours to remove.
            if stale.is_dir() or not any(stale.name.startswith(f".{n}.") for n in names):
                continue
            with contextlib.suppress(FileNotFoundError):  # another run removed it first
                stale.unlink()
                removed += 1
    return removed
