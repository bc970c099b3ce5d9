"""Content fingerprints: a touched file still matches, another scan at the same path does not."""

from __future__ import annotations

import os

from toothseg.core.io.fingerprint import Fingerprint, fingerprint, same_content


def test_a_file_matches_until_its_bytes_change(tmp_path):
    scan = tmp_path / "scan.nii.gz"
    scan.write_bytes(b"A" * 1000)
    recorded = Fingerprint.from_dict(fingerprint(scan).to_dict())
    assert recorded is not None and same_content(scan, recorded)
    os.utime(scan, ns=(1, 1))  # touched (copied without -p, restored from backup): same bytes
    assert same_content(scan, recorded)
    scan.write_bytes(b"A" * 999 + b"B")  # another scan of the same size
    os.utime(scan, ns=(1, 1))
    assert not same_content(scan, recorded)


def test_a_folder_changes_with_a_file_renamed_added_or_edited(tmp_path):
    folder = tmp_path / "dicom"
    (folder / "sub").mkdir(parents=True)
    (folder / "1.dcm").write_bytes(b"one")
    (folder / "sub" / "2.dcm").write_bytes(b"two")
    recorded = fingerprint(folder)
    assert same_content(folder, recorded)
    (folder / "sub" / "2.dcm").rename(folder / "sub" / "3.dcm")
    assert not same_content(folder, recorded)
    (folder / "sub" / "3.dcm").rename(folder / "sub" / "2.dcm")
    assert same_content(folder, recorded)
    (folder / "4.dcm").write_bytes(b"")
    assert not same_content(folder, recorded)


def test_a_malformed_record_reads_as_none():
    assert Fingerprint.from_dict(None) is None
    assert Fingerprint.from_dict({"stat": "x"}) is None
    assert Fingerprint.from_dict({"sha256": "ab", "stat": "cd"}) == Fingerprint("ab", "cd")
