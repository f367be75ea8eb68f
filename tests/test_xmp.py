"""XMP sidecars: real clients (exiftool) read them, existing sidecars are merged, parsing is safe."""

from __future__ import annotations

import json
import os
import resource
import shutil
import stat
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgenn import xmp
from edgenn.cli import main
from edgenn.errors import EdgennError

from .conftest import REPO, SAMPLES

MODEL = REPO / "tests" / "data" / "tiny_cnn_int8.tflite"


@pytest.fixture
def photo(tmp_path):
    """A real photo (a Fashion-MNIST sample JPEG) in its own folder."""
    folder = tmp_path / "album"
    folder.mkdir()
    return Path(shutil.copy(next(SAMPLES.glob("Sneaker/*.jpg")), folder / "Sneaker-0.jpg"))


def test_exiftool_reads_the_keywords(photo):
    result = CliRunner().invoke(main, ["tag", "-m", str(MODEL), str(photo), "--threshold", "0"])
    assert result.exit_code == 0, result.output
    exiftool = shutil.which("exiftool")
    assert exiftool, "exiftool (libimage-exiftool-perl) is installed by scripts/setup.sh test"
    side = xmp.sidecar_path(photo)
    out = subprocess.run(
        [exiftool, "-j", "-XMP-dc:Subject", "-XMP-lr:HierarchicalSubject", str(side)],
        capture_output=True,
        text=True,
        check=True,
    )
    doc = json.loads(out.stdout)[0]
    subjects = doc["Subject"] if isinstance(doc["Subject"], list) else [doc["Subject"]]
    hierarchy = doc["HierarchicalSubject"]
    hierarchy = hierarchy if isinstance(hierarchy, list) else [hierarchy]
    assert subjects and all(h.startswith("edgenn|") for h in hierarchy)
    assert [h.split("|", 1)[1] for h in hierarchy] == subjects


FOREIGN = """<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>
<x:xmpmeta xmlns:x="adobe:ns:meta/" x:xmptk="darktable">
 <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
  <rdf:Description rdf:about=""
    xmlns:xmp="http://ns.adobe.com/xap/1.0/"
    xmlns:dc="http://purl.org/dc/elements/1.1/"
    xmlns:lr="http://ns.adobe.com/lightroom/1.0/"
    xmlns:darktable="http://darktable.sf.net/"
    xmp:Rating="4"
    darktable:xmp_version="5">
   <dc:subject><rdf:Bag><rdf:li>holiday</rdf:li><rdf:li>family</rdf:li></rdf:Bag></dc:subject>
   <lr:hierarchicalSubject><rdf:Bag><rdf:li>places|beach</rdf:li></rdf:Bag></lr:hierarchicalSubject>
   <darktable:history><rdf:Seq><rdf:li darktable:operation="exposure" darktable:enabled="1"/></rdf:Seq></darktable:history>
  </rdf:Description>
 </rdf:RDF>
</x:xmpmeta>
<?xpacket end="w"?>
"""


def _subjects(side: Path) -> list[str]:
    root, _ = xmp.read_sidecar(side)
    return xmp.bag_items(root.find(".//" + xmp.qname("dc", "subject")))


def test_existing_sidecar_is_merged_not_replaced(photo):
    side = photo.with_name(photo.name + ".xmp")
    side.write_text(FOREIGN)
    for args in ([], ["--retag"], ["--retag", "--threshold", "0"]):
        result = CliRunner().invoke(main, ["tag", "-m", str(MODEL), str(photo), *args])
        assert result.exit_code == 0, result.output
    text = side.read_text()
    # Everything that was there survives, with its own prefixes.
    for kept in (
        "holiday",
        "family",
        "places|beach",
        'xmp:Rating="4"',
        "darktable:history",
        'darktable:operation="exposure"',
        'darktable:xmp_version="5"',
        'xmlns:darktable="http://darktable.sf.net/"',
    ):
        assert kept in text, kept
    # edgenn's keywords are updated in place, never duplicated across reruns.
    subjects = _subjects(side)
    assert subjects[:2] == ["holiday", "family"] and len(subjects) == len(set(subjects))
    assert text.count("<edgenn:ModelHash>") == 1
    assert len(subjects) == 2 + 3  # --threshold 0 with k=3: three labels
    exif = subprocess.run(
        ["exiftool", "-j", "-XMP-dc:Subject", str(side)], capture_output=True, text=True
    )
    assert "holiday" in exif.stdout


def test_update_replaces_edgenn_keywords_and_keeps_the_others(tmp_path):
    side = tmp_path / "a.jpg.xmp"
    side.write_text(FOREIGN)
    xmp.update_sidecar(side, ["Bag", "Coat"], {"Bag": 0.7, "Coat": 0.2}, "m.tflite", "aaaa")
    xmp.update_sidecar(side, ["Shirt"], {"Shirt": 0.9}, "n.tflite", "bbbb")
    assert _subjects(side) == ["holiday", "family", "Shirt"]
    root, _ = xmp.read_sidecar(side)
    hierarchy = xmp.bag_items(root.find(".//" + xmp.qname("lr", "hierarchicalSubject")))
    assert hierarchy == ["places|beach", f"{xmp.HIERARCHY_ROOT}|Shirt"]
    assert xmp.sidecar_model_hash(side) == "bbbb"
    assert "Shirt=0.9000" in side.read_text() and "Coat" not in side.read_text()


def test_a_new_sidecar_holds_only_edgenn_properties(tmp_path):
    side = tmp_path / "new.jpg.xmp"
    assert xmp.sidecar_model_hash(side) is None
    xmp.update_sidecar(side, ["Bag"], {"Bag": 0.8}, "m.tflite", "cafe")
    text = side.read_text()
    assert text.startswith("<?xpacket begin=") and text.rstrip().endswith('<?xpacket end="w"?>')
    assert _subjects(side) == ["Bag"] and xmp.sidecar_model_hash(side) == "cafe"


def test_model_hash_in_the_older_attribute_form_is_read_and_replaced(tmp_path):
    side = tmp_path / "old.jpg.xmp"
    side.write_text(
        FOREIGN.replace('xmp:Rating="4"', f'xmp:Rating="4" xmlns:edgenn="{xmp.NS["edgenn"]}" '
                        'edgenn:ModelHash="1234"')
    )  # fmt: skip
    assert xmp.sidecar_model_hash(side) == "1234"
    xmp.update_sidecar(side, [], {}, "m.tflite", "5678")
    assert xmp.sidecar_model_hash(side) == "5678"
    assert 'edgenn:ModelHash="1234"' not in side.read_text()


def test_a_doctype_is_refused_and_the_sidecar_left_alone(tmp_path):
    side = tmp_path / "lol.jpg.xmp"
    bomb = (
        '<?xml version="1.0"?>\n<!DOCTYPE x [<!ENTITY a "aaaaaaaaaa">'
        '<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]>\n'
        '<x:xmpmeta xmlns:x="adobe:ns:meta/">&b;</x:xmpmeta>\n'
    )
    side.write_text(bomb)
    with pytest.raises(EdgennError, match="DOCTYPE"):
        xmp.read_sidecar(side)
    with pytest.raises(EdgennError, match="DOCTYPE"):
        xmp.update_sidecar(side, ["Bag"], {"Bag": 0.9}, "m.tflite", "cafe")
    assert side.read_text() == bomb and xmp.sidecar_model_hash(side) is None


def test_invalid_xml_is_refused_and_the_photo_reported(photo):
    side = xmp.sidecar_path(photo)
    side.write_text("<x:xmpmeta xmlns:x='adobe:ns:meta/'><unclosed></x:xmpmeta>")
    with pytest.raises(EdgennError, match="not valid XML"):
        xmp.read_sidecar(side)
    result = CliRunner().invoke(main, ["tag", "-m", str(MODEL), str(photo), "--json"])
    assert result.exit_code == 1
    failure = json.loads(result.stdout)["failures"][0]
    assert "not valid XML" in failure["error"] and "left as it is" in failure["error"]
    assert "<unclosed>" in side.read_text()


def test_a_prefix_elementtree_reserves_is_written_back_as_the_same_namespace(tmp_path):
    side = tmp_path / "ns.jpg.xmp"
    side.write_text(FOREIGN.replace("darktable", "ns0"))
    xmp.update_sidecar(side, ["Bag"], {"Bag": 0.9}, "m.tflite", "cafe")
    root, namespaces = xmp.read_sidecar(side)
    assert "http://ns0.sf.net/" in namespaces.values()
    assert root.find(".//{http://ns0.sf.net/}history") is not None
    assert _subjects(side) == ["holiday", "family", "Bag"]


def test_sidecar_names_and_styles():
    photo = Path("/photos/IMG_1.JPG")
    assert xmp.sidecar_path(photo, "ext") == Path("/photos/IMG_1.JPG.xmp")
    assert xmp.sidecar_path(photo, "replace") == Path("/photos/IMG_1.xmp")
    assert xmp.sidecar_path(photo) == xmp.sidecar_path(photo, xmp.DEFAULT_SIDECAR_STYLE)
    assert set(xmp.SIDECAR_STYLES) == set(xmp.SIDECAR_READERS)
    assert xmp.DEFAULT_SIDECAR_STYLE in xmp.SIDECAR_STYLES
    assert xmp.describe_styles().count("photo.") == len(xmp.SIDECAR_STYLES)
    with pytest.raises(ValueError, match="ext"):
        xmp.sidecar_path(photo, "sidecar")


def test_only_our_stale_temp_files_are_removed(tmp_path):
    ours = tmp_path / ".a.jpg.xmp.k3j2.tmp"
    other_photo = tmp_path / ".b.jpg.xmp.x9.tmp"
    foreign = tmp_path / "a.jpg.xmp.tmp"
    for path in (ours, other_photo, foreign):
        path.write_text("half")
    assert xmp.remove_stale_temp_files([tmp_path / "a.jpg.xmp"]) == 1
    assert not ours.exists() and other_photo.exists() and foreign.exists()


# ------------------------------------------------------------------ the user's data is theirs


def test_a_users_own_keyword_survives_a_retag(tmp_path):
    """The user had Bag; a model also predicted Bag; another model's retag keeps the user's Bag."""
    side = tmp_path / "a.jpg.xmp"
    side.write_text(FOREIGN.replace("<rdf:li>family</rdf:li>", "<rdf:li>Bag</rdf:li>"))
    xmp.update_sidecar(side, ["Bag", "Coat"], {"Bag": 0.7, "Coat": 0.6}, "m.tflite", "aaaa")
    assert _subjects(side) == ["holiday", "Bag", "Coat"]
    xmp.update_sidecar(side, ["Shirt"], {"Shirt": 0.9}, "n.tflite", "bbbb")
    assert _subjects(side) == ["holiday", "Bag", "Shirt"]
    xmp.update_sidecar(side, [], {}, "o.tflite", "cccc")
    assert _subjects(side) == ["holiday", "Bag"]


def _exiftool_json(path: Path) -> dict:
    out = subprocess.run(
        ["exiftool", "-j", "-struct", "-XMP:all", str(path)],
        capture_output=True,
        text=True,
        check=True,
    )
    doc = json.loads(out.stdout)[0]
    doc.pop("SourceFile")
    return doc


def _as_list(value) -> list:
    return value if isinstance(value, list) else [value]


@pytest.fixture
def exiftool_sidecar(photo):
    """A sidecar exiftool wrote for a real JPEG: one rdf:Description per namespace, an rdf:Alt
    with xml:lang, a user keyword edgenn's model also predicts."""
    side = photo.with_name(photo.name + ".xmp")
    subprocess.run(
        [
            "exiftool", "-q", "-o", str(side),
            "-XMP-dc:Subject=mine", "-XMP-dc:Subject=Bag", "-XMP-dc:Title=A title",
            "-XMP-dc:Creator=Me", "-XMP-xmp:Rating=3", "-XMP-photoshop:City=Paris",
            "-XMP-lr:HierarchicalSubject=places|home", str(photo),
        ],
        check=True,
    )  # fmt: skip
    return side


def test_exiftool_sidecars_round_trip(exiftool_sidecar):
    side = exiftool_sidecar
    before = _exiftool_json(side)
    xmp.update_sidecar(side, ["Bag", "Coat"], {"Bag": 0.9, "Coat": 0.6}, "m.tflite", "aaaa")
    xmp.update_sidecar(side, ["Shirt"], {"Shirt": 0.8}, "n.tflite", "bbbb")
    after = _exiftool_json(side)
    assert _as_list(after["Subject"]) == ["mine", "Bag", "Shirt"]
    # exiftool put lr:hierarchicalSubject in its own rdf:Description: edgenn's entry joins it
    # there rather than making a second, conflicting property.
    assert _as_list(after["HierarchicalSubject"]) == ["places|home", "edgenn|Shirt"]
    assert side.read_text().count("<lr:hierarchicalSubject>") == 1
    for key, value in before.items():
        if key not in ("Subject", "HierarchicalSubject"):
            assert after[key] == value, key
    assert after["ModelHash"] == "bbbb" and xmp.sidecar_model_hash(side) == "bbbb"


DEFAULT_NS = """<x:xmpmeta xmlns:x="adobe:ns:meta/">
 <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
  <rdf:Description rdf:about="" xmlns="http://ns.example.com/tool/1.0/"
    xmlns:dc="http://purl.org/dc/elements/1.1/" xmlns:ns2="http://ns2.example.com/"
    xmlns:ns0="http://ns0.example.com/" ns0:flag="on">
   <Rating>3</Rating>
   <ns2:Label>Red</ns2:Label>
   <dc:title><rdf:Alt><rdf:li xml:lang="x-default">Title &amp; more</rdf:li></rdf:Alt></dc:title>
   <dc:subject><rdf:Bag><rdf:li>mine</rdf:li></rdf:Bag></dc:subject>
  </rdf:Description>
 </rdf:RDF>
</x:xmpmeta>
"""


def test_default_namespaces_and_reserved_looking_prefixes_survive_rewrites(tmp_path):
    """A default namespace stays the default, ns0/ns2 prefixes stay as written, and edgenn's
    own output can be retagged again and again."""
    side = tmp_path / "d.jpg.xmp"
    side.write_text(DEFAULT_NS)
    for digest in ("aaaa", "bbbb", "cccc"):
        xmp.update_sidecar(side, ["Bag"], {"Bag": 0.9}, "m.tflite", digest)
    text = side.read_text()
    assert 'xmlns="http://ns.example.com/tool/1.0/"' in text and "<Rating>3</Rating>" in text
    assert 'xmlns:ns2="http://ns2.example.com/"' in text and "<ns2:Label>Red</ns2:Label>" in text
    assert 'ns0:flag="on"' in text and 'xml:lang="x-default">Title &amp; more<' in text
    root, namespaces = xmp.read_sidecar(side)
    assert namespaces[""] == "http://ns.example.com/tool/1.0/"
    assert root.find(".//{http://ns.example.com/tool/1.0/}Rating").text == "3"
    assert _subjects(side) == ["mine", "Bag"] and xmp.sidecar_model_hash(side) == "cccc"
    assert "Rating" in _exiftool_json(side) or "Title" in _exiftool_json(side)


def test_writing_a_sidecar_changes_no_global_prefix(tmp_path):
    """Other code in the process serializes XML as before: no foreign prefix is registered."""
    probe = ET.Element("{http://darktable.sf.net/}history")
    before = ET.tostring(probe)
    side = tmp_path / "g.jpg.xmp"
    side.write_text(FOREIGN)
    xmp.update_sidecar(side, ["Bag"], {"Bag": 0.9}, "m.tflite", "cafe")
    assert ET.tostring(probe) == before
    assert ET.tostring(ET.Element(xmp.qname("edgenn", "Model"))).startswith(b"<ns0:")


@pytest.mark.skipif(os.geteuid() != 0, reason="changing a file's owner needs root")
def test_a_rewritten_sidecar_keeps_its_mode_and_owner(tmp_path):
    side = tmp_path / "private.jpg.xmp"
    side.write_text(FOREIGN)
    os.chmod(side, 0o600)
    os.chown(side, 65534, 65534)
    xmp.update_sidecar(side, ["Bag"], {"Bag": 0.9}, "m.tflite", "cafe")
    info = side.stat()
    assert stat.S_IMODE(info.st_mode) == 0o600 and (info.st_uid, info.st_gid) == (65534, 65534)
    assert _subjects(side) == ["holiday", "family", "Bag"]


def test_a_rewritten_sidecar_keeps_its_mode(tmp_path):
    side = tmp_path / "shared.jpg.xmp"
    side.write_text(FOREIGN)
    for mode in (0o600, 0o664):
        os.chmod(side, mode)
        xmp.update_sidecar(side, ["Bag"], {"Bag": 0.9}, "m.tflite", "cafe")
        assert stat.S_IMODE(side.stat().st_mode) == mode


def test_a_symlinked_sidecar_is_updated_through_the_link(tmp_path):
    real = tmp_path / "catalog" / "a.xmp"
    real.parent.mkdir()
    real.write_text(FOREIGN)
    side = tmp_path / "a.jpg.xmp"
    side.symlink_to(real)
    xmp.update_sidecar(side, ["Bag"], {"Bag": 0.9}, "m.tflite", "cafe")
    assert side.is_symlink() and xmp.sidecar_model_hash(real) == "cafe"


READ_IN_CHILD = """
import sys
from edgenn import xmp
from edgenn.errors import EdgennError
try:
    xmp.read_sidecar(sys.argv[1])
except EdgennError as exc:
    print(exc.message)
print(xmp.sidecar_model_hash(sys.argv[1]))
"""


def _read_in_child(side: Path) -> list[str]:
    """Read a sidecar in a child with 1 GB of address space and 60 s: a hang or a flood fails."""

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))

    out = subprocess.run(
        [sys.executable, "-c", READ_IN_CHILD, str(side)],
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=limit,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.splitlines()


@pytest.mark.parametrize("kind", ["fifo", "dev-zero", "directory", "loop", "dangling"])
def test_a_sidecar_that_is_not_a_regular_file_is_one_line(tmp_path, kind):
    side = tmp_path / "odd.jpg.xmp"
    if kind == "fifo":
        os.mkfifo(side)
    elif kind == "dev-zero":
        side.symlink_to("/dev/zero")
    elif kind == "directory":
        side.mkdir()
    elif kind == "loop":
        side.symlink_to(side)
    else:
        side.symlink_to(tmp_path / "gone.xmp")
    message, model_hash = _read_in_child(side)
    expected = {
        "fifo": "not a regular file",
        "dev-zero": "not a regular file",
        "directory": "is a directory",
        "loop": "symlink loop",
        "dangling": "dangling symlink",
    }[kind]
    assert message.startswith(str(side)) and expected in message and model_hash == "None"
    assert "sidecar" in message


def test_a_sidecar_directory_is_one_failed_photo(photo, tmp_path):
    second = Path(shutil.copy(photo, photo.with_name("second.jpg")))
    xmp.sidecar_path(photo).mkdir()
    result = CliRunner().invoke(main, ["tag", "-m", str(MODEL), str(photo.parent), "--json"])
    assert result.exit_code == 1, result.output
    summary = json.loads(result.stdout)
    assert summary["tagged"] == 1 and summary["failed"] == 1
    (failure,) = summary["failures"]
    assert failure["photo"] == str(photo) and "is a directory" in failure["error"]
    assert xmp.sidecar_model_hash(xmp.sidecar_path(second)) is not None


def test_a_label_xml_cannot_hold_fails_the_photo_and_writes_nothing(tmp_path):
    side = tmp_path / "c.jpg.xmp"
    side.write_text(FOREIGN)
    with pytest.raises(EdgennError, match=rf"^{side}: 'Bag\\x01' holds a character XML cannot"):
        xmp.update_sidecar(side, ["Bag\x01"], {"Bag\x01": 0.9}, "m.tflite", "cafe")
    assert side.read_text() == FOREIGN
    assert not list(tmp_path.glob(".*.tmp"))


@pytest.mark.parametrize(
    "text, message",
    [
        ("<html><body>notes</body></html>", "XML but not XMP"),
        ('<x:xmpmeta xmlns:x="adobe:ns:meta/">' + "<a>" * 500 + "</a>" * 500 + "</x:xmpmeta>",
         "more than 100 deep"),
    ],
)  # fmt: skip
def test_xml_that_is_not_xmp_is_left_alone(tmp_path, text, message):
    side = tmp_path / "n.jpg.xmp"
    side.write_text(text)
    with pytest.raises(EdgennError, match=message):
        xmp.update_sidecar(side, ["Bag"], {"Bag": 0.9}, "m.tflite", "cafe")
    assert side.read_text() == text and xmp.sidecar_model_hash(side) is None


def test_a_sidecar_over_the_size_limit_is_refused_unread(tmp_path):
    side = tmp_path / "huge.jpg.xmp"
    with side.open("wb") as fh:
        fh.truncate(xmp.MAX_SIDECAR_BYTES + 1)  # sparse: nothing to write, everything to read
    with pytest.raises(EdgennError, match=f"^{side} has 33,554,433 bytes; an XMP sidecar is at"):
        xmp.read_sidecar(side)


def test_a_directory_named_like_a_stale_temp_file_is_left_alone(tmp_path):
    folder = tmp_path / ".a.jpg.xmp.k3j2.tmp"
    folder.mkdir()
    (folder / "keep.txt").write_text("mine")
    assert xmp.remove_stale_temp_files([tmp_path / "a.jpg.xmp"]) == 0
    assert (folder / "keep.txt").read_text() == "mine"
