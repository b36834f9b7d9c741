"""The ``Feed`` contract, run against ``FolderFeed`` and ``S3Feed`` (real MinIO), plus
feed URLs and manifest checks."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from pipeline.errors import ConfigurationError, SourceError
from pipeline.feeds import Feed, FolderFeed, ManifestEntry, open_feed, verify_manifest
from pipeline.feeds.s3 import S3Feed
from pipeline.s3 import make_client
from pipeline.store import sha256_hex
from tests.test_s3 import s3_bucket, s3_endpoint  # noqa: F401  (session fixtures)

Drop = Callable[[str, bytes], None]  # how a producer drops one file: (path under root, bytes)
HL7 = b"MSH|^~\\&|LAB|BIO||CARNET|20250314||ORU^R01|1|P|2.5\r"
PDF = b"%PDF-1.4\n" + bytes(range(256))


@pytest.fixture(params=["folder", pytest.param("s3", marks=pytest.mark.s3)])
def feed_and_drop(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Feed, Drop]:
    if request.param == "folder":
        root = tmp_path / "feed"
        root.mkdir()

        def drop_file(name: str, data: bytes) -> None:
            path = root / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)

        return FolderFeed(root), drop_file

    bucket = request.getfixturevalue("s3_bucket")
    endpoint = request.getfixturevalue("s3_endpoint")
    prefix = f"feeds-{tmp_path.name}"
    client = make_client(endpoint_url=endpoint, region="us-east-1")

    def drop_object(name: str, data: bytes) -> None:
        client.put_object(Bucket=bucket, Key=f"{prefix}/{name}", Body=data)

    return S3Feed.from_url(f"s3://{bucket}/{prefix}", endpoint_url=endpoint, region="us-east-1"), drop_object


def test_is_a_feed(feed_and_drop: tuple[Feed, Drop]) -> None:
    assert isinstance(feed_and_drop[0], Feed)


def test_batch_without_marker_is_not_listed(feed_and_drop: tuple[Feed, Drop]) -> None:
    feed, drop = feed_and_drop
    drop("lab/b1/a.hl7", HL7)
    drop("lab/b1/sub/b.pdf", PDF)
    assert feed.list_batches() == []
    drop("lab/b1/_READY", b"")
    assert [b.key for b in feed.list_batches()] == ["lab/b1"]


def test_ready_batch_lists_nested_files_without_control_files(feed_and_drop: tuple[Feed, Drop]) -> None:
    feed, drop = feed_and_drop
    for name, data in {
        "a.hl7": HL7,
        "sub/b.pdf": PDF,
        "sub/deeper/c.xml": b"<ClinicalDocument/>",
        "_READY": b"",
        "_report.json": b"{}",
        "_ack/a.hl7": b"MSH|ACK",
        ".DS_Store": b"x",
        "sub/.partial": b"x",
        ".git/objects/ab": HL7,  # inside a hidden folder: not a document either
        "sub/.thumbnails/b.png": b"x",
    }.items():
        drop(f"lab/2025-03-14/{name}", data)
    drop("radio/r7/x.pdf", PDF)  # incomplete batch of another producer

    [batch] = feed.list_batches()
    assert (batch.producer, batch.batch, batch.feed_url) == ("lab", "2025-03-14", feed.url)
    assert batch.files == ("a.hl7", "sub/b.pdf", "sub/deeper/c.xml")
    assert batch.manifest is None
    assert feed.read(batch, "sub/b.pdf") == PDF
    assert feed.read(batch, "a.hl7") == HL7
    assert feed.source_uri(batch, "sub/b.pdf").endswith("/lab/2025-03-14/sub/b.pdf")


def test_batches_sorted_across_producers(feed_and_drop: tuple[Feed, Drop]) -> None:
    feed, drop = feed_and_drop
    for key in ["radio/r2", "lab/b2", "lab/b1", "pharma/p1"]:
        drop(f"{key}/doc.hl7", HL7)
        drop(f"{key}/_READY", b"")
    assert [b.key for b in feed.list_batches()] == ["lab/b1", "lab/b2", "pharma/p1", "radio/r2"]


def test_manifest_batch_carries_its_entries(feed_and_drop: tuple[Feed, Drop]) -> None:
    feed, drop = feed_and_drop
    entries = [
        {"name": "a.hl7", "size": len(HL7), "sha256": sha256_hex(HL7)},
        {"name": "scans/b.pdf", "size": len(PDF)},
    ]
    drop("lab/m1/a.hl7", HL7)
    drop("lab/m1/scans/b.pdf", PDF)
    drop("lab/m1/_manifest.json", json.dumps({"files": entries}).encode())

    [batch] = feed.list_batches()
    assert batch.files == ("a.hl7", "scans/b.pdf")
    assert batch.manifest == tuple(ManifestEntry.model_validate(e) for e in entries)


@pytest.mark.parametrize(
    "manifest", [b"{not json", b'{"files": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"]
)  # the second was a RecursionError out of the feed's listing
def test_an_unreadable_manifest_is_the_batch_s_not_the_feed_s(
    feed_and_drop: tuple[Feed, Drop], manifest: bytes
) -> None:
    """The batch is complete (its manifest is there) and says why its manifest cannot be
    read; the other batches are listed. It was a SourceError out of the whole listing: one
    producer's broken manifest stopped every producer of the feed, at every schedule."""
    feed, drop = feed_and_drop
    drop("lab/m2/a.hl7", HL7)
    drop("lab/m2/_manifest.json", manifest)
    drop("other/b1/a.hl7", HL7)
    drop("other/b1/_READY", b"")
    broken, other = feed.list_batches()
    assert (broken.key, broken.files, broken.manifest) == ("lab/m2", ("a.hl7",), None)
    assert broken.manifest_error is not None and broken.manifest_error.startswith("unreadable batch manifest")
    assert other.key == "other/b1" and other.manifest_error is None


def test_acknowledgements_read_back_and_not_listed(feed_and_drop: tuple[Feed, Drop]) -> None:
    feed, drop = feed_and_drop
    drop("lab/b1/a.hl7", HL7)
    drop("lab/b1/_READY", b"")
    [batch] = feed.list_batches()

    report = json.dumps({"files": [{"file": "a.hl7", "status": "indexed"}]}).encode()
    feed.write(batch, "_report.json", report)
    feed.write(batch, "_ack/a.hl7", b"MSH|^~\\&|CARNET\rMSA|AA|1\r")
    assert feed.read(batch, "_report.json") == report
    assert feed.read(batch, "_ack/a.hl7") == b"MSH|^~\\&|CARNET\rMSA|AA|1\r"
    [again] = feed.list_batches()
    assert again.files == ("a.hl7",)


def test_missing_feed_root_is_a_source_error(tmp_path: Path) -> None:
    with pytest.raises(SourceError):
        FolderFeed(tmp_path / "nowhere").list_batches()


@pytest.mark.s3
def test_missing_bucket_is_a_source_error(s3_endpoint: str) -> None:  # noqa: F811
    feed = S3Feed.from_url(
        "s3://carnet-no-such-bucket-7f3a/feeds", endpoint_url=s3_endpoint, region="us-east-1"
    )
    with pytest.raises(SourceError, match="NoSuchBucket"):
        feed.list_batches()


def test_open_feed_picks_the_backend(tmp_path: Path) -> None:
    assert isinstance(open_feed(str(tmp_path)), FolderFeed)
    folder = open_feed(f"file://{tmp_path}")
    assert isinstance(folder, FolderFeed) and folder.url == str(tmp_path)
    s3 = open_feed("s3://feeds/producers/", endpoint_url="http://127.0.0.1:9000", region="us-east-1")
    assert isinstance(s3, S3Feed) and s3.url == "s3://feeds/producers"
    with pytest.raises(ConfigurationError):
        open_feed("ftp://feeds/x")


def test_verify_manifest() -> None:
    data = b"compte rendu"
    assert verify_manifest(ManifestEntry(name="a", size=len(data), sha256=sha256_hex(data)), data) is None
    assert verify_manifest(ManifestEntry(name="a"), data) is None
    assert verify_manifest(ManifestEntry(name="a", sha256=sha256_hex(data).upper()), data) is None

    size = verify_manifest(ManifestEntry(name="a", size=len(data) + 1), data)
    assert size == f"size {len(data)} bytes, manifest says {len(data) + 1}"

    other = sha256_hex(b"another file")
    sha = verify_manifest(ManifestEntry(name="a", size=len(data), sha256=other), data)
    assert sha == f"sha256 {sha256_hex(data)}, manifest says {other}"


def test_a_folder_given_to_ingest_leaves_hidden_folders_out(tmp_path: Path) -> None:
    from pipeline.feeds.folder import iter_folder_files

    root = tmp_path / ".carnet" / "feed"  # a hidden folder above the root does not count
    for name in ("lab/a.hl7", "lab/.git/HEAD", ".Trash-1000/files/old.pdf", "lab/.notes", "lab/sub/b.pdf"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"x")
    assert [p.relative_to(root).as_posix() for p in iter_folder_files(root)] == ["lab/a.hl7", "lab/sub/b.pdf"]


def test_a_name_climbing_out_of_its_folder_is_never_read(tmp_path: Path) -> None:
    from pipeline.errors import UnsafePathError
    from pipeline.feeds import read_regular_file

    (tmp_path / "feed" / "labo" / "b1").mkdir(parents=True)
    (tmp_path / "feed" / "other" / "b2").mkdir(parents=True)
    (tmp_path / "feed" / "other" / "b2" / "x.hl7").write_bytes(b"MSH|^~\\&|")
    batch = tmp_path / "feed" / "labo" / "b1"
    with pytest.raises(UnsafePathError, match="outside"):
        read_regular_file(batch, batch / ".." / ".." / "other" / "b2" / "x.hl7")


def test_a_file_gone_since_the_listing_is_the_producer_s_to_resend(feed_and_drop: tuple[Feed, Drop]) -> None:
    """Removed between the listing and the read (the producer re-uploading): rejected
    ``unreadable_file`` by the batch, not a failure of the feed."""
    from pipeline.errors import UnreadableFileError

    feed, drop = feed_and_drop
    drop("lab/b1/a.hl7", HL7)
    drop("lab/b1/_READY", b"")
    (batch,) = feed.list_batches()
    with pytest.raises(UnreadableFileError):
        feed.read(batch, "gone.hl7")


@pytest.mark.parametrize("kind", ["symlink", "fifo"])
def test_a_manifest_that_is_no_regular_file_is_never_read(tmp_path: Path, kind: str) -> None:
    """``_manifest.json`` linked to another producer's manifest gave this batch that
    manifest (its file names then reported here as missing); a FIFO so named hung the
    whole feed's listing. Either is the batch's unreadable manifest."""
    import os

    root = tmp_path / "feed"
    other = root / "other" / "b9"
    other.mkdir(parents=True)
    (other / "_manifest.json").write_text('{"files": [{"name": "secret-name.hl7"}]}')
    batch = root / "lab" / "b1"
    batch.mkdir(parents=True)
    (batch / "a.hl7").write_bytes(HL7)
    if kind == "symlink":
        (batch / "_manifest.json").symlink_to(other / "_manifest.json")
    else:
        os.mkfifo(batch / "_manifest.json")
    lab = next(b for b in FolderFeed(root).list_batches() if b.producer == "lab")
    assert lab.manifest is None and lab.manifest_error is not None
    assert "manifest" in lab.manifest_error and str(tmp_path) not in lab.manifest_error


def test_a_batch_or_producer_folder_that_is_a_link_is_not_a_batch(tmp_path: Path) -> None:
    """A producer links a batch folder of its own to another producer's batch (or a whole
    producer folder): listed, the other producer's file names went into its report, and
    Carnet wrote that report and ACKs through the link, over the other producer's own."""
    root = tmp_path / "feed"
    other = root / "other" / "b9"
    other.mkdir(parents=True)
    (other / "a.hl7").write_bytes(HL7)
    (other / "_READY").write_bytes(b"")
    (root / "lab").mkdir()
    (root / "lab" / "b1").symlink_to(other, target_is_directory=True)
    (root / "evil").symlink_to(root / "other", target_is_directory=True)
    assert [b.key for b in FolderFeed(root).list_batches()] == ["other/b9"]


def _deny_listing(monkeypatch: pytest.MonkeyPatch, *denied: Path) -> None:
    """``os.scandir`` raises EACCES for ``denied`` (the tests run as root, whom chmod
    would not stop)."""
    import errno
    import os

    def denying(real: Callable[[object], object]) -> Callable[[object], object]:
        def listing(path: object) -> object:
            if Path(str(path)) in denied:
                raise PermissionError(errno.EACCES, "Permission denied", str(path))
            return real(path)

        return listing

    for name in ("scandir", "listdir"):  # pathlib lists with either
        monkeypatch.setattr(os, name, denying(getattr(os, name)))


def test_a_producer_folder_carnet_may_not_list_is_that_producer_s_problem(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One producer's folder Carnet may not list (its permissions) raised PermissionError
    out of list_batches: discover failed for every producer of the feed, at every run. Now
    the others' batches are listed and discovered, and that producer is alerted on."""
    from pipeline.ingest import discover_batches
    from pipeline.monitoring import AlertKind, load_alerts
    from pipeline.settings import Settings

    root = tmp_path / "feed"
    for name in ("labo/b1/a.hl7", "labo/b1/_READY", "radio/r1/x.pdf", "radio/r1/_READY", "pharma/p1/_READY"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(HL7)
    _deny_listing(monkeypatch, root / "labo", root / "pharma" / "p1")
    feed = FolderFeed(root)
    assert [b.key for b in feed.list_batches()] == ["radio/r1"]
    assert [(u.producer, u.batch) for u in feed.unlisted] == [("labo", None), ("pharma", "p1")]
    assert all("Permission denied" in u.reason for u in feed.unlisted)
    settings = Settings(data_dir=tmp_path / "carnet", data_docs=False)
    assert discover_batches(settings, str(root)) == ["radio/r1"]
    alerts = [a for a in load_alerts(settings) if a.kind is AlertKind.FOLDER_UNLISTED]
    assert sorted((a.producer, str(a.batch)) for a in alerts) == [("labo", "None"), ("pharma", "pharma/p1")]
    assert all("Permission denied" in a.message for a in alerts)


def test_a_batch_sub_folder_carnet_may_not_list_is_rejected_not_left_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pathlib's glob skips a folder it may not list: the files of such a sub-folder of a
    batch were left out of it, and of its report, in silence. It is now an entry of the
    batch, rejected unreadable_file."""
    from pipeline.ingest import process_batch
    from pipeline.settings import Settings
    from tests.test_acks import _validate

    root = tmp_path / "feed"
    batch = root / "labo" / "b1"
    (batch / "locked").mkdir(parents=True)
    (batch / "locked" / "x.pdf").write_bytes(PDF)
    (batch / "a.txt").write_bytes(b"pas un document")
    (batch / "_READY").write_bytes(b"")
    _deny_listing(monkeypatch, batch / "locked")
    (ref,) = FolderFeed(root).list_batches()
    assert ref.files == ("a.txt", "locked")
    summary = process_batch(Settings(data_dir=tmp_path / "carnet", data_docs=False), str(root), "labo/b1")
    report = json.loads((batch / "_report.json").read_text(encoding="utf-8"))
    _validate(report)
    locked = next(e for e in report["files"] if e["file"] == "locked")
    assert [r["code"] for r in locked["reasons"]] == ["unreadable_file"]
    assert summary.total == 2


def test_an_s3_producer_prefix_denied_is_that_producer_s_problem(
    feed_and_drop: tuple[Feed, Drop], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bucket policy denying Carnet one producer's prefix failed the whole listing; any
    other S3 error still does (retried)."""
    from botocore.exceptions import ClientError

    feed, drop = feed_and_drop
    if not isinstance(feed, S3Feed):
        pytest.skip("S3 only")
    for name in ("labo/b1/a.hl7", "labo/b1/_READY", "radio/r1/x.pdf", "radio/r1/_READY"):
        drop(name, HL7)
    real = feed.bucket.children

    def children(prefix: str, code: str = "AccessDenied") -> object:
        if prefix.endswith("/labo/"):
            raise ClientError({"Error": {"Code": code, "Message": "denied"}}, "ListObjectsV2")
        return real(prefix)

    monkeypatch.setattr(feed.bucket, "children", children)
    assert [b.key for b in feed.list_batches()] == ["radio/r1"]
    assert [u.producer for u in feed.unlisted] == ["labo"]
    monkeypatch.setattr(feed.bucket, "children", lambda p: children(p, "InternalError"))
    with pytest.raises(SourceError):
        feed.list_batches()


def test_a_batch_dropped_again_under_its_name_is_a_new_delivery(
    feed_and_drop: tuple[Feed, Drop], tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """A producer re-sending a batch under the name of one already processed (the same
    files, or changed ones) was skipped in silence: discover left it out for good, and the
    old _report.json stood. Closed again (its _READY written again, as when first sent), it
    is now processed as a new delivery: every document in one state (duplicate when sent
    again unchanged) and a new report. Left alone, it is not."""
    import time

    from pipeline.feeds import REPORT
    from pipeline.ingest import discover_batches, process_batch
    from pipeline.monitoring import AlertKind, load_alerts
    from pipeline.settings import Settings
    from tests.test_acks import _validate
    from tests.test_erasure import A, B, _oru

    feed, drop = feed_and_drop
    s3 = isinstance(feed, S3Feed)
    endpoint = request.getfixturevalue("s3_endpoint") if s3 else None
    settings = Settings(data_dir=tmp_path / "carnet", data_docs=False, s3_endpoint_url=endpoint)
    first = {
        "a.hl7": _oru(A, "M1", surname="DUPONT", words="ferritine"),
        "b.hl7": _oru(B, "M2", surname="MARTIN", words="glycemie"),
    }

    def deliver(files: dict[str, bytes]) -> None:
        time.sleep(1.1 if s3 else 0.05)  # past the stamps' resolution (S3: a second)
        for name, data in files.items():
            drop(f"labo/b1/{name}", data)
        drop("labo/b1/_READY", b"")

    def run() -> list[dict[str, str]]:
        summaries = [process_batch(settings, feed.url, k) for k in discover_batches(settings, feed.url)]
        if not summaries:
            return []
        (batch,) = feed.list_batches()
        report = json.loads(feed.read(batch, REPORT))
        _validate(report)
        assert report["documents"] == sum(s.total for s in summaries)
        return [{e["file"]: e["status"] for e in report["files"]}]

    deliver(first)
    assert run() == [{"a.hl7": "indexed", "b.hl7": "indexed"}]
    assert run() == []  # nothing dropped again: nothing to do
    deliver(first)  # the same bytes sent again
    assert run() == [{"a.hl7": "duplicate", "b.hl7": "duplicate"}]
    deliver({"c.hl7": _oru(A, "M3", surname="DUPONT", words="ferritine", printed="controle")})
    assert run() == [{"a.hl7": "duplicate", "b.hl7": "duplicate", "c.hl7": "indexed"}]
    assert run() == []
    # A document written under a processed batch not closed again may be an upload under
    # way: never processed half, but alerted; closed again, the batch is processed whole.
    time.sleep(1.1 if s3 else 0.05)
    drop("labo/b1/d.hl7", _oru(B, "M4", surname="MARTIN", words="potassium"))
    assert run() == []
    changed = [a for a in load_alerts(settings) if a.kind is AlertKind.BATCH_CHANGED]
    assert [a.batch for a in changed] == ["labo/b1"] and "_READY" in changed[0].message
    deliver({})
    assert run() == [{"a.hl7": "duplicate", "b.hl7": "duplicate", "c.hl7": "duplicate", "d.hl7": "indexed"}]


def test_batches_processed_before_deliveries_were_recorded_are_not_processed_again(tmp_path: Path) -> None:
    """At the upgrade (state revision 0009), a processed batch has no delivery recorded:
    the first listing adopts the one it finds, so nothing is reprocessed; a later re-drop is."""
    from sqlalchemy import update

    from pipeline.ingest import discover_batches, process_batch
    from pipeline.ledger import Ledger
    from pipeline.settings import Settings
    from pipeline.state.tables import batches

    root = tmp_path / "feed"
    (root / "labo" / "b1").mkdir(parents=True)
    (root / "labo" / "b1" / "a.txt").write_bytes(b"pas un document")
    (root / "labo" / "b1" / "_READY").write_bytes(b"")
    settings = Settings(data_dir=tmp_path / "carnet", data_docs=False)
    process_batch(settings, str(root), "labo/b1")
    ledger = Ledger(settings)
    with ledger.engine.begin() as conn:
        conn.execute(update(batches).values(delivery=None))
    assert discover_batches(settings, str(root)) == []
    assert ledger.batch_delivery(str(root), "labo/b1") is not None
    ledger.close()
    (root / "labo" / "b1" / "_READY").write_bytes(b"again")
    assert discover_batches(settings, str(root)) == ["labo/b1"]


def test_files_outside_any_batch_are_alerted_not_ignored(
    feed_and_drop: tuple[Feed, Drop], tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """A file dropped at the feed's root or in a producer's folder (not in a batch folder)
    was never listed, processed nor reported: the producer believed it delivered. It is
    now named in a stray_entry alert (per producer, or the root); batches run as before."""
    from pipeline.ingest import discover_batches
    from pipeline.monitoring import AlertKind, load_alerts
    from pipeline.settings import Settings

    feed, drop = feed_and_drop
    for name in ("loose.hl7", "lab/cr.pdf", "lab/_READY", "lab/.hidden", "lab/b1/a.hl7", "lab/b1/_READY"):
        drop(name, HL7)
    assert [b.key for b in feed.list_batches()] == ["lab/b1"]
    assert sorted(feed.stray) == ["lab/_READY", "lab/cr.pdf", "loose.hl7"]
    endpoint = request.getfixturevalue("s3_endpoint") if isinstance(feed, S3Feed) else None
    settings = Settings(data_dir=tmp_path / "carnet", data_docs=False, s3_endpoint_url=endpoint)
    assert discover_batches(settings, feed.url) == ["lab/b1"]
    alerts = {a.producer: a for a in load_alerts(settings) if a.kind is AlertKind.STRAY_ENTRY}
    assert set(alerts) == {"lab", None}
    assert alerts["lab"].details["entries"] == ["_READY", "cr.pdf"] and "cr.pdf" in alerts["lab"].message
    assert alerts[None].details["entries"] == ["loose.hl7"] and "feed root" in alerts[None].message
