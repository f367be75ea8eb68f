"""XMP sidecars: real clients (exiftool) read them, existing sidecars are merged, parsing is safe."""

from __future__ import annotations

import json
import shutil
import subprocess
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
