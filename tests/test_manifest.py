"""Manifest v1 loading: defaults, path resolution, and errors that name file, line and field.

Every bad manifest must raise ManifestError (exit code 2) whose message says
``FILE:LINE: field.path: explanation``, and a secret found in a manifest must
never be echoed back in that message.
"""

from __future__ import annotations

import hashlib
import re
import textwrap
import tracemalloc
from dataclasses import dataclass
from pathlib import Path

import pytest

from datamove.errors import EXIT_BAD_INPUT, ManifestError
from datamove.manifest.model import (
    DEFAULT_LEDGER,
    EngineSpec,
    Manifest,
    VerifyMode,
    load_manifest,
    parse_manifest,
)
from tests.conftest import write_manifest


def write(directory: Path, text: str, name: str = "m.yaml") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def load_error_measured(path: Path) -> tuple[ManifestError, int]:
    """:func:`load_error` and the most memory Python allocated meanwhile (tracemalloc):
    a bound that holds on a busy machine, unlike a time limit."""
    tracemalloc.start()
    try:
        error = load_error(path)
        return error, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def load_error(path: Path) -> ManifestError:
    with pytest.raises(ManifestError) as caught:
        load_manifest(path)
    error = caught.value
    assert error.exit_code == EXIT_BAD_INPUT == 2
    assert error.path == str(path)
    return error


# --- a valid manifest ----------------------------------------------------------------

VALID = """
    version: 1
    name: demo-migration
    datasets:
      - name: photos
        source: {url: ./src/}
        destination: {url: ../out/photos/}
        include: ["**/*.jpg"]
        exclude: ["tmp/**"]
      - name: remote.models_v2
        source:
          url: s3://legacy-raw/models/
          region: us-east-1
          options: {endpoint_url: "http://127.0.0.1:9000", anon: false}
        destination: {url: "file://mirror/models"}
        verify: full
        classification: internal
        tags: {owner: vision-team, cost_center: cc-4411}
"""


def test_valid_manifest_loads_with_defaults(tmp_path: Path) -> None:
    project = tmp_path / "project"
    path = write(project, VALID)

    manifest = load_manifest(path)

    assert isinstance(manifest, Manifest)
    assert manifest.version == 1
    assert manifest.name == "demo-migration"
    assert manifest.path == str(path)
    assert manifest.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    # The default ledger lives beside the manifest, not in the current directory.
    assert DEFAULT_LEDGER == "./.datamove/ledger"
    assert manifest.ledger == str(project / ".datamove" / "ledger")

    engine = manifest.engine
    assert engine == EngineSpec()
    assert engine.scheduler is None
    assert engine.threads == 8
    assert engine.window is None
    assert engine.effective_window == 16  # max(4, 2 * threads)
    assert engine.batch_objects == 256
    assert engine.batch_bytes == 64 * 1024 * 1024
    assert engine.retries == 4
    assert engine.part_size == 16 * 1024 * 1024
    assert engine.fsync is False

    photos, remote = manifest.datasets
    assert manifest.dataset("photos") is photos
    assert photos.verify == VerifyMode.checksum
    assert photos.source.url == f"{project}/src/"
    assert photos.destination.url == f"{tmp_path}/out/photos/"  # '..' normalised away
    assert photos.include == ["**/*.jpg"]
    assert photos.exclude == ["tmp/**"]
    assert photos.source.options == {}
    assert photos.source.region is None
    assert photos.classification is None
    assert photos.tags == {}

    assert remote.verify == VerifyMode.full
    assert remote.source.url == "s3://legacy-raw/models/"  # remote URLs are left alone
    assert remote.source.region == "us-east-1"
    assert remote.source.options == {"endpoint_url": "http://127.0.0.1:9000", "anon": False}
    assert remote.destination.url == f"file://{project}/mirror/models"
    assert remote.classification == "internal"
    assert remote.tags == {"owner": "vision-team", "cost_center": "cc-4411"}

    with pytest.raises(KeyError, match=r"no dataset named 'nope'.*photos, remote\.models_v2"):
        manifest.dataset("nope")


def test_relative_paths_do_not_depend_on_the_working_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path / "project", VALID)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)

    manifest = load_manifest(Path("..") / "project" / "m.yaml")

    assert manifest.datasets[0].source.url == f"{path.parent}/src/"
    assert manifest.ledger == str(path.parent / ".datamove" / "ledger")


@pytest.mark.parametrize(("ledger", "expected"), [
    ("state/ledger", "{dir}/state/ledger"),
    ("/var/lib/datamove/ledger", "/var/lib/datamove/ledger"),
    ("~/ledger", "{home}/ledger"),
    ("s3://ml-ledger/datamove", "s3://ml-ledger/datamove"),
])
def test_ledger_is_resolved_like_a_location(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            ledger: str, expected: str) -> None:
    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    path = write(tmp_path / "project", VALID + f"    ledger: {ledger}\n")

    manifest = load_manifest(path)

    assert manifest.ledger == expected.format(dir=path.parent, home=home)


def test_parse_without_base_dir_keeps_relative_urls() -> None:
    manifest = parse_manifest(textwrap.dedent(VALID), "inline.yaml")
    assert manifest.path == "inline.yaml"
    assert manifest.datasets[0].source.url == "./src/"
    assert manifest.ledger == DEFAULT_LEDGER


def test_engine_settings_are_read(tmp_path: Path) -> None:
    path = write(tmp_path, VALID + textwrap.indent(textwrap.dedent("""
        engine:
          scheduler: tcp://scheduler.internal:8786
          allow_insecure: true
          threads: 32
          window: 100
          batch_objects: 1000
          batch_bytes: 1048576
          retries: 0
          part_size: 5242880
          fsync: true
    """), "    "))

    engine = load_manifest(path).engine

    assert (engine.scheduler, engine.allow_insecure) == ("tcp://scheduler.internal:8786", True)
    assert (engine.threads, engine.window, engine.effective_window) == (32, 100, 100)
    assert (engine.batch_objects, engine.batch_bytes) == (1000, 1048576)
    assert (engine.retries, engine.part_size, engine.fsync) == (0, 5 * 1024 * 1024, True)


def test_options_that_only_look_secret_are_accepted(tmp_path: Path) -> None:
    path = write(tmp_path, """
        version: 1
        name: not-secrets
        datasets:
          - name: one
            source:
              url: gs://public-bucket/data/
              options: {token: anon}
            destination:
              url: s3://bucket/out/
              options:
                anon: false
                key_prefix: x
                token: null
                config_kwargs: {signature_version: s3v4}
                client_kwargs: {region_name: eu-central-1}
                s3_additional_kwargs: {ServerSideEncryption: "aws:kms", SSEKMSKeyId: alias/k}
    """)

    dataset = load_manifest(path).datasets[0]

    assert dataset.source.options == {"token": "anon"}
    assert dataset.destination.options["s3_additional_kwargs"]["SSEKMSKeyId"] == "alias/k"
    assert dataset.destination.options["config_kwargs"] == {"signature_version": "s3v4"}


def test_yaml_anchors_and_merge_keys_work(tmp_path: Path) -> None:
    path = write(tmp_path, """
        version: 1
        name: anchors
        datasets:
          - name: one
            source: &src {url: "s3://bucket/a/", options: {endpoint_url: "https://h:9000"}}
            destination: {url: ./out/a/}
          - name: two
            source: {<<: *src, url: "s3://bucket/b/"}
            destination: {url: ./out/b/}
    """)

    two = load_manifest(path).datasets[1]

    assert two.source.url == "s3://bucket/b/"
    assert two.source.options == {"endpoint_url": "https://h:9000"}


# --- bad manifests -------------------------------------------------------------------

@dataclass(frozen=True)
class Bad:
    text: str
    line: int
    field: str | None  # None: the problem is in the YAML itself, reported as LINE:COLUMN
    phrase: str
    secret: str | None = None  # must never appear in the message

    def __str__(self) -> str:
        return self.phrase


HEAD = """\
version: 1
name: demo
datasets:
  - name: one
"""  # lines 1-4; a case's own lines start at 5


def ds(body: str) -> str:
    """A manifest whose first dataset continues with ``body`` (its first line is line 5)."""
    return HEAD + textwrap.indent(textwrap.dedent(body).lstrip("\n"), "    ")


SRC_DST = """
source: {url: ./src/}
destination: {url: ./dst/}
"""  # lines 5-6


def opt(options: str) -> str:
    """A manifest whose first source (line 5) has these flow-style ``options``."""
    return ds(f"source: {{url: 's3://b/x/', options: {options}}}\ndestination: {{url: ./dst/}}\n")

# A well-formed recipient and an identity (its secret must never be echoed).
RECIPIENT = "age1zvkyg2lqzraa2lnjvqej32nkuu0ues2s82hzrye869xeexvn73equnujwj"
SECRET_AGE_KEY = "AGE-SECRET-KEY-1GFPYYSJZGFPYYSJZGFPYYSJZGFPYYSJZGFPYYSJZGFPYYSJZGFPQ4EGAEX"

BAD = {
    # YAML itself
    "yaml-syntax-mapping-value": Bad(
        "version: 1\nname: demo: two\n", 2, None,
        "2:11: YAML syntax error: mapping values are not allowed here"),
    "yaml-syntax-unclosed-list": Bad(
        "version: 1\nname: demo\ndatasets: [\n  {name: one}\n", 5, None,
        "5:1: YAML syntax error: expected ',' or ']', but got '<stream end>' (while parsing a "
        "flow sequence that started at line 3, column 11)"),
    "yaml-tab-indent": Bad(
        "version: 1\n\tname: demo\n", 2, None,
        "2:1: YAML syntax error: found character '\\t' that cannot start any token"),
    "empty-file": Bad("", 1, "(top level)", "the manifest is empty"),
    "only-comments": Bad("# nothing yet\n\n", 1, "(top level)", "the manifest is empty"),
    "top-level-list": Bad(
        "# a list, not a mapping\n- version: 1\n- name: demo\n", 2, "(top level)",
        "must be a mapping of keys (version, name, datasets, ...), not a list"),
    "top-level-scalar": Bad("just some text\n", 1, "(top level)", "not a single value"),
    # required keys
    "missing-name": Bad(
        "version: 1\ndatasets:\n  - name: one\n    source: {url: a}\n"
        "    destination: {url: b}\n", 1, "name", "required key is missing"),
    "missing-version": Bad(ds(SRC_DST).replace("version: 1\n", ""), 1, "version",
                           "required key is missing"),
    "missing-datasets": Bad("version: 1\nname: demo\n", 1, "datasets",
                            "required key is missing"),
    "empty-datasets": Bad("version: 1\nname: demo\ndatasets: []\n", 3, "datasets",
                          "must list at least 1 item"),
    "missing-source-url": Bad(ds("""
        source:
          region: us-east-1
        destination: {url: ./dst/}
    """), 5, "datasets[0].source.url", "required key is missing"),
    "null-dataset": Bad("version: 1\nname: demo\ndatasets:\n  -\n  - name: two\n", 4,
                        "datasets[0]", "must be a mapping of keys (got null)"),
    # unknown keys
    "unknown-top-level-key": Bad(ds(SRC_DST) + "datasetz: []\n", 7, "datasetz",
                                 "unknown key; check the spelling"),
    "unknown-engine-key": Bad(ds(SRC_DST) + "engine:\n  threads: 4\n  bogus: 1\n", 9,
                              "engine.bogus", "unknown key"),
    "unknown-location-key": Bad(ds("""
        source:
          url: ./src/
          urll: ./other/
        destination: {url: ./dst/}
    """), 7, "datasets[0].source.urll", "unknown key"),
    "provenance-field-in-file": Bad(ds(SRC_DST) + "sha256: abc\n", 7, "sha256",
                                    "unknown key"),
    "fsync-not-bool": Bad(ds(SRC_DST) + "engine: {fsync: sometimes}\n", 7, "engine.fsync",
                          "must be true or false (got 'sometimes')"),
    "unknown-dataset-key": Bad(ds(SRC_DST + "encrypted: true\n"), 7, "datasets[0].encrypted",
                               "unknown key"),
    # encryption
    "encrypt-without-recipients": Bad(ds(SRC_DST + "encrypt: true\n"), 7, "datasets[0].encrypt",
                                      "no recipients to encrypt for"),
    "encrypt-not-a-flag": Bad(ds(SRC_DST + "encrypt: yes please\n"), 7, "datasets[0].encrypt",
                              "must be true, false, or a mapping"),
    "encrypt-bad-recipient": Bad(ds(SRC_DST + "encrypt:\n  recipients: [age1xyz]\n"), 8,
                                 "datasets[0].encrypt.recipients[0]",
                                 "not a valid age recipient"),
    "encrypt-secret-key-as-recipient": Bad(
        ds(SRC_DST + "encrypt:\n  recipients: [" + SECRET_AGE_KEY + "]\n"), 8,
        "datasets[0].encrypt.recipients[0]", "contains an age secret key",
        secret=SECRET_AGE_KEY),
    "encrypt-missing-recipients-file": Bad(
        ds(SRC_DST + "encrypt: {recipients_file: keys/none.txt}\n"), 7,
        "datasets[0].encrypt.recipients_file", "keys/none.txt: No such file or directory"),
    "encrypt-suffix-without-dot": Bad(
        ds(SRC_DST + "encrypt: {recipients: [" + RECIPIENT + "], suffix: age}\n"), 7,
        "datasets[0].encrypt.suffix", "must be a file suffix such as '.age'"),
    "identity-inline-secret": Bad(
        ds(SRC_DST) + "keys:\n  recipients: [" + RECIPIENT + "]\n  identity:\n"
        "    file: id.txt\n    secret: " + SECRET_AGE_KEY + "\n", 11, "keys.identity.secret",
        "contains an age secret key", secret=SECRET_AGE_KEY),
    "identity-bad-env-name": Bad(
        ds(SRC_DST) + "keys:\n  identity: {file: id.txt, passphrase_env: 'MY PASS'}\n", 8,
        "keys.identity.passphrase_env", "must be the name of an environment variable"),
    "storage-class-on-local": Bad(
        ds("source: {url: ./src/}\ndestination: {url: ./dst/, storage_class: GLACIER}\n"), 6,
        "datasets[0].destination.storage_class", "only S3 destinations have storage classes"),
    "storage-class-unknown": Bad(
        ds("source: {url: ./src/}\ndestination: {url: 's3://b/p/', storage_class: COLD}\n"), 6,
        "datasets[0].destination.storage_class", "unknown S3 storage class 'COLD'"),
    "audit-signing-key-inline": Bad(
        ds(SRC_DST) + "audit: {signing_key: '"
        "PRIVATE+KEY+ops+0f2e818b+AdMXLKJJY5nNINvno8kOzg0dp'}\n",
        7, "audit.signing_key", "contains an audit signing key",
        secret="AdMXLKJJY5nNINvno8kOzg0dp"),
    "keys-bad-recipient": Bad(ds(SRC_DST) + "keys:\n  recipients: [age1qqqq]\n", 8,
                              "keys.recipients[0]", "not a valid age recipient"),
    # types and ranges
    "threads-not-a-number": Bad(ds(SRC_DST) + 'engine:\n  threads: "many"\n', 8,
                                "engine.threads", "must be a whole number (got 'many')"),
    "threads-bool": Bad(ds(SRC_DST) + "engine: {threads: true}\n", 7, "engine.threads",
                        "must be a whole number (got true)"),
    "threads-zero": Bad(ds(SRC_DST) + "engine:\n  threads: 0\n", 8, "engine.threads",
                        "must be at least 1 (got 0)"),
    "threads-too-many": Bad(ds(SRC_DST) + "engine:\n  threads: 1000\n", 8, "engine.threads",
                            "must be at most 256 (got 1000)"),
    "window-zero": Bad(ds(SRC_DST) + "engine: {window: 0}\n", 7, "engine.window",
                       "must be at least 1"),
    "part-size-too-small": Bad(ds(SRC_DST) + "engine: {part_size: 1024}\n", 7,
                               "engine.part_size", "must be at least 5242880 (got 1024)"),
    "engine-null": Bad(ds(SRC_DST) + "engine:\n", 7, "engine",
                       "must be a mapping of keys (got null)"),
    "tag-not-text": Bad(ds(SRC_DST + "tags: {cost_center: 4411}\n"), 7,
                        "datasets[0].tags.cost_center", "must be text (got 4411)"),
    "key-not-text": Bad(ds(SRC_DST + "tags:\n  2024: q1\n"), 8, "datasets[0].tags.2024",
                        "keys must be text, but YAML reads this one as int"),
    "version-2": Bad(ds(SRC_DST).replace("version: 1", "version: 2"), 1, "version",
                     "unsupported manifest version 2; this datamove reads version 1"),
    "version-true": Bad(ds(SRC_DST).replace("version: 1", "version: true"), 1, "version",
                        "unsupported manifest version true"),
    "bad-verify-mode": Bad(ds(SRC_DST + "verify: sha1\n"), 7, "datasets[0].verify",
                           "must be one of 'size', 'checksum' or 'full' (got 'sha1')"),
    "bad-dataset-name": Bad(ds(SRC_DST).replace("name: one", "name: -my data"), 4,
                            "datasets[0].name",
                            "must start with a letter or digit and use only letters"),
    "bad-manifest-name": Bad(ds(SRC_DST).replace("name: demo", "name: demo/x"), 2, "name",
                             "got 'demo/x'"),
    "bad-scheduler-address": Bad(ds(SRC_DST) + "engine:\n  scheduler: localhost:8786\n", 8,
                                 "engine.scheduler",
                                 "must be a Dask scheduler address such as tcp://HOST:8786"),
    # duplicates
    "duplicate-dataset-names": Bad(
        ds(SRC_DST) + "  - name: one\n    source: {url: ./a/}\n    destination: {url: ./b/}\n",
        7, "datasets[1].name", "dataset name 'one' is already used by datasets[0]"),
    "duplicate-yaml-key": Bad(ds(SRC_DST + "verify: size\nverify: full\n"), 8,
                              "datasets[0].verify", "duplicate key; keep only one"),
    # locations
    "unknown-url-scheme": Bad(ds("source: {url: 'foo://x'}\ndestination: {url: ./dst/}\n"), 5,
                              "datasets[0].source.url", "unknown storage scheme 'foo'"),
    "ledger-on-a-store-delta-cannot-use": Bad(
        ds(SRC_DST) + "ledger: 'sftp://files.example/ledger'\n", 7, "ledger",
        "sftp:// cannot hold the ledger"),
    "s3-without-bucket": Bad(ds("source: {url: ./src/}\ndestination: {url: 's3://'}\n"), 6,
                             "datasets[0].destination.url",
                             "s3:// URL needs a bucket or container name"),
    "gs-without-bucket": Bad(ds("source: {url: 'gs:///'}\ndestination: {url: ./dst/}\n"), 5,
                             "datasets[0].source.url", "gs:// URL needs a bucket"),
    "destination-inside-source": Bad(
        ds("source: {url: ./data}\ndestination: {url: ./data/copy/}\n"), 6,
        "datasets[0].destination.url", "lies inside the source"),
    "destination-inside-s3-source": Bad(
        ds("source: {url: 's3://b/data/'}\ndestination: {url: 's3://b/data/copy'}\n"), 6,
        "datasets[0].destination.url", "lies inside the source"),
    "same-source-and-destination": Bad(
        ds("source: {url: ./data}\ndestination: {url: ./data/}\n"), 6,
        "datasets[0].destination.url", "is the same location as the source"),
    "same-location-file-url": Bad(
        ds("source: {url: ./data/}\ndestination: {url: 'file://data'}\n"), 6,
        "datasets[0].destination.url", "is the same location as the source"),
    "include-and-exclude-same": Bad(
        ds(SRC_DST + "include: ['*.jpg', '*.tmp']\nexclude: ['*.tmp']\n"), 8,
        "datasets[0].exclude", "'*.tmp' is both included and excluded"),
    # filters and bwlimit (issue 18)
    "glob-unclosed-brace": Bad(ds(SRC_DST + "include: ['*.jpg', '*.{png,gif']\n"), 7,
                               "datasets[0].include[1]", "has a '{' without its '}'"),
    "min-size-no-unit": Bad(ds(SRC_DST + "min_size: '100'\n"), 7, "datasets[0].min_size",
                            "needs a unit: 100B for bytes, 100K for KiB"),
    "max-size-bad-unit": Bad(ds(SRC_DST + "max_size: 10X\n"), 7, "datasets[0].max_size",
                             "must be a size such as 10M (MiB), 1.5GiB"),
    "max-size-negative": Bad(ds(SRC_DST + "max_size: -5\n"), 7, "datasets[0].max_size",
                             "must not be negative"),
    "min-size-over-max-size": Bad(ds(SRC_DST + "min_size: 10M\nmax_size: 1M\n"), 8,
                                  "datasets[0].max_size", "is smaller than min_size"),
    "max-age-bad": Bad(ds(SRC_DST + "max_age: 7 days\n"), 7, "datasets[0].max_age",
                       "must be a duration such as 90d, 12h"),
    "min-age-over-max-age": Bad(ds(SRC_DST + "min_age: 2w\nmax_age: 1d\n"), 8,
                                "datasets[0].max_age", "is shorter than min_age"),
    "files-from-missing": Bad(ds(SRC_DST + "files_from: lists/none.txt\n"), 7,
                              "datasets[0].files_from", "No such file or directory"),
    "files-from-url": Bad(ds(SRC_DST + "files_from: 's3://b/keys.txt'\n"), 7,
                          "datasets[0].files_from", "must be a local file"),
    "bwlimit-bad": Bad(ds(SRC_DST) + "engine: {bwlimit: fast}\n", 7, "engine.bwlimit",
                       "must be a size such as 10M"),
    "bwlimit-zero": Bad(ds(SRC_DST) + "engine: {bwlimit: 0}\n", 7, "engine.bwlimit",
                        "must be at least 1"),
    # inline secrets: the value must never be echoed
    "option-secret": Bad(
        ds("source:\n  url: s3://b/x/\n  options: {secret: hunter2-very-secret}\n"
           "destination: {url: ./dst/}\n"), 7, "datasets[0].source.options.secret",
        "looks like a credential ('secret'); inline secrets are refused",
        secret="hunter2-very-secret"),
    "option-key": Bad(
        ds("source:\n  url: s3://b/x/\n  options:\n    key: MYKEYID12345\n"
           "destination: {url: ./dst/}\n"), 8, "datasets[0].source.options.key",
        "looks like a credential ('key')", secret="MYKEYID12345"),
    "option-nested-camel-case": Bad(
        ds(SRC_DST.replace("{url: ./dst/}", "{url: 's3://b/y/', options: "
                           "{s3_additional_kwargs: {SSECustomerKey: c3NlLWMta2V5}}}")), 6,
        "datasets[0].destination.options.s3_additional_kwargs.SSECustomerKey",
        "looks like a credential", secret="c3NlLWMta2V5"),
    "option-azure-connection-string": Bad(
        ds("source: {url: 'az://c/x/', options: {connection_string: 'DefaultEndpointsProtocol"
           "=https;AccountName=a;AccountKey=QUJDRA=='}}\ndestination: {url: ./dst/}\n"), 5,
        "datasets[0].source.options.connection_string", "looks like a credential",
        secret="QUJDRA=="),
    "aws-access-key-id-value": Bad(ds(SRC_DST + "tags: {note: AKIAIOSFODNN7EXAMPLE}\n"), 7,
                                   "datasets[0].tags.note", "contains an AWS access key id",
                                   secret="AKIAIOSFODNN7EXAMPLE"),
    "aws-access-key-id-in-option": Bad(
        ds("source:\n  url: s3://b/x/\n  options: {profile: AKIAIOSFODNN7EXAMPLE}\n"
           "destination: {url: ./dst/}\n"), 7, "datasets[0].source.options.profile",
        "contains an AWS access key id", secret="AKIAIOSFODNN7EXAMPLE"),
    "age-secret-key-value": Bad(
        ds(SRC_DST + "classification: AGE-SECRET-KEY-1QYQSZQGPQYQSZQGPQYQSZQGPQYQSZQGP\n"), 7,
        "datasets[0].classification", "contains an age secret key",
        secret="AGE-SECRET-KEY-1QYQSZQGPQYQSZQGPQYQSZQGPQYQSZQGP"),
    "pem-private-key-value": Bad(
        ds(SRC_DST + "tags:\n  cert: |\n    -----BEGIN RSA PRIVATE KEY-----\n"
           "    MIIBOgIBAAJBAKj34GkxFhD90vcNLYLInFEX6Ppy1tPf9Cnzj4p4WGeKLs1Pt8Qu\n"
           "    -----END RSA PRIVATE KEY-----\n"), 8, "datasets[0].tags.cert",
        "contains a PEM private key", secret="MIIBOgIBAAJBAKj34GkxFhD90vcNLYLInFEX6Ppy1tPf9C"),
    "url-with-password": Bad(
        ds("source: {url: ./src/}\ndestination: {url: 'sftp://deploy:s3cr3t-pw@host/x/'}\n"),
        6, "datasets[0].destination.url", "the URL embeds a password", secret="s3cr3t-pw"),
    "url-with-sig-param": Bad(
        ds("source: {url: 'https://acct.blob.example.net/c/x?sv=2024&sig=c2lnbmF0dXJl'}\n"
           "destination: {url: ./dst/}\n"), 5, "datasets[0].source.url",
        "signed or secret query parameter ('sig')", secret="c2lnbmF0dXJl"),
    "url-with-amz-signature": Bad(
        ds("source: {url: './src/'}\ndestination:\n  url: 'https://b.s3.amazonaws.com/k"
           "?X-Amz-Expires=60&X-Amz-Signature=deadbeefcafe'\n"), 7,
        "datasets[0].destination.url", "signed or secret query parameter ('X-Amz-Signature')",
        secret="deadbeefcafe"),
    "ledger-url-with-password": Bad(ds(SRC_DST) + "ledger: 's3://me:ledger-pw@bkt/l'\n", 7,
                                    "ledger", "the URL embeds a password",
                                    secret="ledger-pw"),
    "endpoint-with-password": Bad(
        ds("source:\n  url: s3://b/x/\n  options: {endpoint_url: 'http://u:endpoint-pw@h:9000'}\n"
           "destination: {url: ./dst/}\n"), 7, "datasets[0].source.options.endpoint_url",
        "the URL embeds a password", secret="endpoint-pw"),
    "invalid-url-with-password": Bad(
        ds("source: {url: ./src/}\ndestination: {url: 's 3://me:odd-pw@bkt/x'}\n"), 6,
        "datasets[0].destination.url", "the URL embeds a password", secret="odd-pw"),
    "secret-in-a-typed-field": Bad(ds(SRC_DST) + "engine: {threads: AKIAIOSFODNN7EXAMPLE}\n",
                                   7, "engine.threads", "contains an AWS access key id",
                                   secret="AKIAIOSFODNN7EXAMPLE"),
    "secret-as-a-key": Bad(ds(SRC_DST) + "AKIAIOSFODNN7EXAMPLE: 1\n", 7, "<redacted>",
                           "the key contains an AWS access key id",
                           secret="AKIAIOSFODNN7EXAMPLE"),
    # credential option names and values beyond the obvious ones (issue 15)
    **{f"option-name-{name}": Bad(
        opt(options), 5, f"datasets[0].source.options.{field}", phrase,
        secret=secret) for name, options, field, phrase, secret in [
        ("pwd", "{pwd: pw-value-1}", "pwd", "looks like a credential ('pwd')", "pw-value-1"),
        ("auth", "{auth: [deploy, auth-value-2]}", "auth", "looks like a credential ('auth')",
         "auth-value-2"),
        ("headers-authorization", "{client_kwargs: {headers: {Authorization: 'token "
         "hdr-value-3'}}}", "client_kwargs.headers.Authorization",
         "looks like a credential ('Authorization')", "hdr-value-3"),
        ("proxy-authorization", "{headers: {Proxy-Authorization: proxy-value-4}}",
         "headers.Proxy-Authorization", "looks like a credential ('Proxy-Authorization')",
         "proxy-value-4"),
        ("cookie", "{headers: {Cookie: 'sid=cookie-value-5'}}", "headers.Cookie",
         "looks like a credential ('Cookie')", "cookie-value-5"),
        ("bearer", "{bearer: bearer-value-6}", "bearer", "looks like a credential ('bearer')",
         "bearer-value-6"),
        ("bearer-value", "{headers: {X-Custom: 'Bearer eyJhbGciOiJIUzI1NiJ9.e30.c2ln'}}",
         "headers.X-Custom", "contains an HTTP Authorization value", "eyJhbGciOiJIUzI1NiJ9"),
        ("api-key", "{api_key: apikey-value-7}", "api_key",
         "looks like a credential ('api_key')", "apikey-value-7"),
        ("apikey", "{apikey: apikey-value-8}", "apikey", "looks like a credential ('apikey')",
         "apikey-value-8"),
        ("sas-token", "{sas_token: 'sv=2024-01-01&sig=sas-value-9'}", "sas_token",
         "looks like a credential ('sas_token')", "sas-value-9"),
        ("client-secret", "{client_secret: cs-value-10}", "client_secret",
         "looks like a credential ('client_secret')", "cs-value-10"),
        ("clientsecret-glued", "{clientsecret: cs-value-11}", "clientsecret",
         "looks like a credential ('clientsecret')", "cs-value-11"),
        ("session-token", "{session_token: st-value-12}", "session_token",
         "looks like a credential ('session_token')", "st-value-12"),
        ("google-oauth-token", "{project: ya29.a0AfH6SMBxTESTTOKENvalue13xyz}", "project",
         "contains a Google OAuth access token", "ya29.a0AfH6SMBxTESTTOKENvalue13xyz"),
    ]},
    # clear-text transport to another host, unless the location opts in (issue 15)
    "http-endpoint-to-another-host": Bad(
        opt("{endpoint_url: 'http://minio.internal:9000'}"), 5,
        "datasets[0].source.options.endpoint_url",
        "is plain http:// to minio.internal, which is not this machine; use https://, or if "
        "the network to that host is trusted, set allow_insecure: true in this location's "
        "options (docs/MANIFEST.md, \"Insecure transport\")"),
    "http-endpoint-in-client-kwargs": Bad(
        opt("{client_kwargs: {endpoint_url: 'http://10.1.2.3:9000'}}"), 5,
        "datasets[0].source.options.client_kwargs.endpoint_url", "is plain http:// to 10.1.2.3"),
    "http-endpoint-looks-local": Bad(
        opt("{endpoint_url: 'http://127.0.0.1.nip.io:9000'}"), 5,
        "datasets[0].source.options.endpoint_url", "is plain http:// to 127.0.0.1.nip.io"),
    "tls-verify-off": Bad(
        opt("{client_kwargs: {verify: false}}"), 5,
        "datasets[0].source.options.client_kwargs.verify",
        "turns TLS or its certificate checks off towards the store's public endpoint, which "
        "is not this machine; remove it (to trust a private CA, give verify: the path of a "
        "CA bundle), or if the network to that host is trusted, set allow_insecure: true"),
    "tls-off-with-https-endpoint": Bad(
        opt("{endpoint_url: 'https://s3.example.com', use_ssl: false}"), 5,
        "datasets[0].source.options.use_ssl",
        "turns TLS or its certificate checks off towards s3.example.com"),
    "http-source-url": Bad(
        ds("source: {url: 'http://files.example.com/pub/'}\ndestination: {url: ./dst/}\n"), 5,
        "datasets[0].source.url", "is plain http:// to files.example.com"),
    "http-ledger-endpoint": Bad(
        ds(SRC_DST) + "ledger: s3://ledger/l\nledger_options: {endpoint_url: "
        "'http://ledger.lan:9000'}\n", 8, "ledger_options.endpoint_url",
        "is plain http:// to ledger.lan, which is not this machine; use https://, or if the "
        "network to that host is trusted, set allow_insecure: true in ledger_options"),
    "http-kms-endpoint": Bad(
        ds(SRC_DST) + f"keys:\n  recipients: [{RECIPIENT}]\n  identity: {{file: k.key, "
        "kms_endpoint_url: 'http://kms.lan:4566'}\n", 9, "keys.identity.kms_endpoint_url",
        "is plain http:// to kms.lan, which is not this machine; use https://, or if the "
        "network to that host is trusted, set allow_insecure: true in the identity mapping"),
    "http-cold-location": Bad(
        ds(SRC_DST + "lifecycle:\n  - {after: 30d, location: {url: 's3://cold/x/', options: "
           "{endpoint_url: 'http://cold.lan:9000'}}}\n"), 8,
        "datasets[0].lifecycle[0].location.options.endpoint_url",
        "is plain http:// to cold.lan"),
    "allow-insecure-not-a-boolean": Bad(
        opt("{endpoint_url: 'https://minio.internal', allow_insecure: 'please'}"), 5,
        "datasets[0].source.options.allow_insecure", "must be true or false"),
    "identity-allow-insecure-not-a-boolean": Bad(
        ds(SRC_DST) + "keys:\n  identity: {file: k.key, allow_insecure: 'please'}\n", 8,
        "keys.identity.allow_insecure", "must be true or false"),
    # abuse
    "recursive-alias": Bad(ds(SRC_DST) + "tags: &t\n  - *t\n", 7, "tags[0]",
                           "a YAML alias refers to a value that contains it"),
}


@pytest.mark.parametrize("case", BAD.values(), ids=BAD.keys())
def test_bad_manifest_names_file_line_and_field(tmp_path: Path, case: Bad) -> None:
    path = tmp_path / "bad-manifest.yaml"
    path.write_text(case.text, encoding="utf-8")

    error = load_error(path)
    message = str(error)

    assert message.startswith(f"{path}: invalid manifest (")
    assert "bad-manifest.yaml" in message
    if case.field is None:
        assert f"{path}:{case.phrase}" in message
    else:
        # Exactly FILE:LINE: field: explanation, on one line of the message.
        prefix = f"{path}:{case.line}: {case.field}: "
        assert f"\n  {prefix}" in message, message
        assert any(p.startswith(prefix) and case.phrase in p for p in error.problems), message
    assert case.phrase in message
    if case.secret is not None:
        assert case.secret not in message
        assert all(case.secret not in problem for problem in error.problems)


def test_parse_manifest_reports_the_name_it_is_given() -> None:
    with pytest.raises(ManifestError) as caught:
        parse_manifest(ds(SRC_DST) + "engine: {threads: 0}\n", "configs/prod.yaml")
    assert caught.value.exit_code == 2
    assert caught.value.problems == [
        "configs/prod.yaml:7: engine.threads: must be at least 1 (got 0)"]


def test_destination_inside_source_when_only_one_is_relative(tmp_path: Path) -> None:
    """Relative paths are anchored at the manifest before locations are compared."""
    project = tmp_path / "project"
    path = write(project, ds(f"source: {{url: '{project}/data'}}\n"
                             "destination: {url: ./data/copy/}\n"))

    error = load_error(path)

    assert error.problems == [f"{path}:6: datasets[0].destination.url: lies inside the source; "
                              "a copy would include its own output. Choose a destination "
                              "outside the source"]


def test_file_not_found(tmp_path: Path) -> None:
    path = tmp_path / "missing" / "nope.yaml"

    error = load_error(path)

    assert error.problems == [f"{path}: file not found; check the path"]
    assert str(error) == f"{path}: invalid manifest (1 problem)\n  {path}: file not found; " \
                         "check the path"


def test_a_directory_is_not_a_manifest(tmp_path: Path) -> None:
    error = load_error(tmp_path)
    assert error.problems[0].startswith(f"{tmp_path}: cannot read: ")


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"version: 1\nname: d\xe9mo\n")

    error = load_error(path)

    assert error.problems == [f"{path}:2: not UTF-8 text (byte 0xe9); save the manifest as UTF-8"]


def test_alias_bomb_is_refused_quickly(tmp_path: Path) -> None:
    lines = ["version: 1", "name: demo", "a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    path = write(tmp_path, "\n".join(lines) + "\n")

    error = load_error(path)

    assert len(error.problems) == 1
    assert "more than 100000 values once YAML aliases are expanded" in error.problems[0]


def test_absurd_nesting_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "version: 1\nname: demo\ntags: " + "[" * 100 + "]" * 100 + "\n")

    error = load_error(path)

    assert error.problems[0].startswith(f"{path}:3: tags")
    assert "nested more than 64 levels deep" in error.problems[0]


def test_every_problem_is_reported_at_once_in_file_order(tmp_path: Path) -> None:
    path = write(tmp_path, """
        version: 3
        name: demo
        engine:
          threads: 0
          bogus: true
        datasets:
          - name: one
            source: {url: "foo://x", options: {secret: do-not-print-me}}
            destination: {url: ./dst/}
            verify: sha1
          - name: one
            source: {url: ./a/}
            destination: {url: ./b/}
    """)

    error = load_error(path)

    assert error.problems == [
        f"{path}:1: version: unsupported manifest version 3; this datamove reads version 1",
        f"{path}:4: engine.threads: must be at least 1 (got 0)",
        f"{path}:5: engine.bogus: unknown key; check the spelling against docs/MANIFEST.md",
        f"{path}:8: datasets[0].source.options.secret: looks like a credential ('secret'); "
        "inline secrets are refused; supply credentials through the environment or the "
        "store's standard provider chain (docs/MANIFEST.md, \"Credentials\")",
        f"{path}:10: datasets[0].verify: must be one of 'size', 'checksum' or 'full' "
        "(got 'sha1')",
    ]
    assert str(error).startswith(f"{path}: invalid manifest (5 problems)\n")
    assert "do-not-print-me" not in str(error)


def test_semantic_problems_are_reported_together(tmp_path: Path) -> None:
    """Checks that need a valid model (names, URLs) are all reported in one pass too."""
    path = write(tmp_path, """
        version: 1
        name: demo
        datasets:
          - name: one
            source: {url: "foo://x"}
            destination: {url: "s3://"}
          - name: one
            source: {url: ./a/}
            destination: {url: ./a/b/}
    """)

    error = load_error(path)

    assert [p.split(": ", 2)[:2] for p in error.problems] == [
        [f"{path}:5", "datasets[0].source.url"],
        [f"{path}:6", "datasets[0].destination.url"],
        [f"{path}:7", "datasets[1].name"],
        [f"{path}:9", "datasets[1].destination.url"],
    ]


def test_complete_examples_in_the_docs_load(tmp_path: Path) -> None:
    docs = Path(__file__).resolve().parent.parent / "docs" / "MANIFEST.md"
    blocks = [b for b in re.findall(r"```yaml\n(.*?)```", docs.read_text(), re.DOTALL)
              if b.startswith(("version:", "#"))]
    assert len(blocks) >= 2  # the smallest manifest and the complete example

    for i, block in enumerate(blocks):
        manifest = load_manifest(write(tmp_path / str(i), block))
        assert manifest.version == 1
        assert manifest.datasets


def test_encryption_comes_from_the_dataset_over_the_manifest_keys(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.mkdir()
    (keys / "recipients.txt").write_text(f"# ops + recovery\n{RECIPIENT}\n")
    manifest = parse_manifest(textwrap.dedent(f"""\
        version: 1
        name: demo
        keys:
          recipients_file: keys/recipients.txt
          identity: {{file: keys/identity.txt, kms_context: {{purpose: datamove}}}}
        datasets:
          - name: plain
            source: {{url: ./a/}}
            destination: {{url: ./b/}}
          - name: default-keys
            source: {{url: ./c/}}
            destination: {{url: ./d/}}
            encrypt: true
          - name: own-keys
            source: {{url: ./e/}}
            destination: {{url: ./f/}}
            encrypt: {{recipients: ["{RECIPIENT}"], suffix: .enc}}
        """), "m.yaml", base_dir=tmp_path)
    plain, default, own = (manifest.encryption_of(d) for d in manifest.datasets)
    assert plain is None
    assert default is not None and own is not None
    assert default.recipients_file == str(keys / "recipients.txt")
    assert default.suffix == ".age"
    assert own.recipients == [RECIPIENT] and own.recipients_file is None
    assert own.suffix == ".enc"
    for effective in (default, own):  # the identity is inherited, its path resolved
        assert effective.identity is not None
        assert effective.identity.file == str(keys / "identity.txt")
        assert effective.identity.kms_context == {"purpose": "datamove"}


# --- in-transit security -------------------------------------------------------------

def s3_source(options: dict) -> list[dict]:
    return [{"name": "one", "source": {"url": "s3://b/x/", "options": options},
             "destination": {"url": "./dst/"}}]


@pytest.mark.parametrize("options", [
    {"endpoint_url": "http://127.0.0.1:9000"},
    {"endpoint_url": "http://127.8.9.10:9000"},
    {"endpoint_url": "http://localhost:9000"},
    {"endpoint_url": "http://[::1]:9000"},
    {"endpoint_url": "http://127.0.0.1:9000", "client_kwargs": {"verify": False}},
    {"endpoint_url": "https://minio.internal:9000"},
    {"client_kwargs": {"verify": "/etc/ssl/private-ca.pem"}},
    {"config_kwargs": {"proxies": {"https": "http://proxy.corp:3128"}}},  # TLS via CONNECT
    {"endpoint_url": "http://minio.internal:9000", "allow_insecure": True},
    {"client_kwargs": {"verify": False}, "allow_insecure": True},
], ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()))
def test_loopback_tls_and_opted_in_endpoints_are_accepted(tmp_path: Path,
                                                          options: dict) -> None:
    path = write_manifest(tmp_path / "m.yaml", s3_source(options))

    assert load_manifest(path).datasets[0].source.options == options


def test_endpoints_from_the_environment_are_judged_too(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The store clients read AWS_ENDPOINT_URL and the Azure connection string
    themselves, so a manifest that relies on them is judged with them."""
    path = write_manifest(tmp_path / "m.yaml", [
        {"name": "one", "source": {"url": "s3://b/x/"}, "destination": {"url": "./dst/"}},
        {"name": "two", "source": {"url": "az://c/x/"}, "destination": {"url": "./dst2/"}},
        {"name": "three", "source": {"url": "s3://b/y/", "options": {"allow_insecure": True}},
         "destination": {"url": "./dst3/"}}])
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://minio.lan:9000")
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING",
                       "DefaultEndpointsProtocol=http;AccountName=acct;AccountKey=c2VjcmV0;"
                       "BlobEndpoint=http://azurite.lan:10000/acct;")

    error = load_error(path)

    assert error.problems == [
        f"{path}:6: datasets[0].source.url: the endpoint from AWS_ENDPOINT_URL is plain "
        "http:// to minio.lan, which is not this machine; use https://, or if the network to "
        "that host is trusted, set allow_insecure: true in this location's options "
        "(docs/MANIFEST.md, \"Insecure transport\")",
        f"{path}:11: datasets[1].source.url: the endpoint from the BlobEndpoint of "
        "AZURE_STORAGE_CONNECTION_STRING is plain http:// to azurite.lan, which is not this "
        "machine; use https://, or if the network to that host is trusted, set "
        "allow_insecure: true in this location's options (docs/MANIFEST.md, "
        "\"Insecure transport\")"]
    assert "c2VjcmV0" not in str(error)

    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9000")
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING",
                       "AccountName=acct;BlobEndpoint=http://127.0.0.1:10000/acct;")
    assert len(load_manifest(path).datasets) == 3


# --- size and depth: refused at once, whatever the file holds --------------------------

# Runs the real CLI and writes, at exit, its peak RSS (VmHWM, this process's own, not
# inherited from pytest) and its wall time since the interpreter started.
MEASURED_CLI = r"""
import atexit, os, runpy, sys, time
start = time.perf_counter()
def report():
    with open("/proc/self/status") as f:
        hwm_kib = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    with open(os.environ["DATAMOVE_MEASURE_TO"], "w") as out:
        out.write(f"{hwm_kib / 1024:.1f} {time.perf_counter() - start:.2f}")
atexit.register(report)
sys.argv = ["datamove", *sys.argv[1:]]
runpy.run_module("datamove.cli", run_name="__main__", alter_sys=True)
"""


def measured_cli(tmp_path: Path, *args: str) -> tuple[int, str, float, float]:
    """(exit code, stderr, peak RSS in MiB, seconds) of ``datamove ARGS``; a minute at most."""
    import os
    import subprocess
    import sys

    report = tmp_path / "measure.txt"
    env = {**os.environ, "DATAMOVE_MEASURE_TO": str(report)}
    result = subprocess.run([sys.executable, "-c", MEASURED_CLI, *args], capture_output=True,
                            text=True, env=env, timeout=60)
    rss, seconds = (float(x) for x in report.read_text().split())
    return result.returncode, result.stderr, rss, seconds


def big_manifest(path: Path, size: int) -> Path:
    """A manifest of many small datasets, ``size`` bytes or a little more."""
    block = "".join(f"  - name: d{i}\n    source: {{url: ./src{i}/}}\n"
                    f"    destination: {{url: ./dst{i}/}}\n" for i in range(1000))
    with open(path, "w") as f:
        f.write("version: 1\nname: big\ndatasets:\n")
        for _ in range(size // len(block) + 1):
            f.write(block)
    return path


def test_a_50_mb_manifest_is_refused_at_once_in_little_memory(tmp_path: Path) -> None:
    """It used to be parsed whole: 455 s and 2 GB before any refusal."""
    path = big_manifest(tmp_path / "big.yaml", 50 * 1024 * 1024)

    code, stderr, rss_mib, seconds = measured_cli(tmp_path, "plan", str(path))

    assert code == 2, stderr
    assert f"{path}: larger than 1 MiB, the most a manifest may hold; a manifest describes " \
           "where data is, not the data itself: split it" in stderr
    assert "Traceback" not in stderr
    assert rss_mib < 200, f"peak RSS {rss_mib} MiB"
    assert seconds < 20, f"{seconds} s, nearly all of it starting Python and importing"
    error, peak = load_error_measured(path)
    assert peak < 2_000_000  # refused on its size, not read
    assert error.problems[0].startswith(f"{path}: larger than 1 MiB")
    assert not (tmp_path / ".datamove").exists()  # nothing created


def test_a_manifest_just_over_the_size_limit_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    path.write_text(ds(SRC_DST) + "# " + "x" * (1024 * 1024) + "\n")

    assert load_error(path).problems == [
        f"{path}: larger than 1 MiB, the most a manifest may hold; a manifest describes where "
        "data is, not the data itself: split it, or use include/exclude patterns instead of "
        "listing objects"]
    with pytest.raises(ManifestError, match="larger than 1 MiB"):
        parse_manifest(path.read_text(), str(path))


def nested(kind: str, depth: int) -> str:
    if kind == "flow-list":
        return "tags: " + "[" * depth + "]" * depth + "\n"
    if kind == "flow-mapping":
        return "tags: " + "{a: " * depth + "1" + "}" * depth + "\n"
    return "tags:\n" + "".join(" " * (2 * i) + "- a:\n" for i in range(1, depth)) + \
        " " * (2 * depth) + "- 1\n"  # block style: lists of mappings, one level per line


@pytest.mark.parametrize(("kind", "depth"), [("flow-list", 1000), ("flow-mapping", 1000),
                                             ("flow-list", 100_000), ("block", 700)])
def test_deep_nesting_is_refused_without_recursion(tmp_path: Path, kind: str,
                                                   depth: int) -> None:
    """≥ 900 levels used to end in RecursionError (exit 1, a traceback)."""
    path = tmp_path / "m.yaml"
    path.write_text(ds(SRC_DST) + nested(kind, depth))

    error, peak = load_error_measured(path)

    assert peak < 10_000_000, f"{peak} bytes at peak"  # counted as events, never composed
    assert len(error.problems) == 1
    line = 7 if kind.startswith("flow") else 7 + 33  # each "- a:" opens two levels
    assert error.problems[0].startswith(f"{path}:{line}: tags[0]" if kind == "block" else
                                        f"{path}:{line}: tags"), error.problems[0]
    assert error.problems[0].endswith(": nested more than 64 levels deep; no field of "
                                      "datamove's nests that far, so flatten the structure")


def test_deep_nesting_through_the_cli_is_bad_input_without_a_traceback(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    path.write_text(ds(SRC_DST) + nested("flow-mapping", 5000))

    code, stderr, rss_mib, seconds = measured_cli(tmp_path, "run", str(path))

    assert code == 2, stderr
    assert "nested more than 64 levels deep" in stderr
    assert "Traceback" not in stderr and "RecursionError" not in stderr
    assert rss_mib < 200 and seconds < 20
    assert not (tmp_path / ".datamove").exists()


def test_too_many_values_are_refused_before_composing(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    path.write_text(ds(SRC_DST) + "tags: [" + "1, " * 150_000 + "1]\n")

    error, peak = load_error_measured(path)

    # Composing these values would take ~43 MB of nodes; counting events takes ~1.4 MB
    # (a bound on memory, unlike one on time, holds on a busy machine too).
    assert peak < 10_000_000
    # 100,000 values in all: the manifest's own 11 come first.
    assert error.problems == [f"{path}:7: tags[99989]: more than 100000 values; a manifest "
                              "should be small"]


def test_a_yaml_error_is_still_worded_by_the_python_parser(tmp_path: Path) -> None:
    """libyaml counts the events; its error messages differ, so PyYAML's are shown."""
    path = tmp_path / "m.yaml"
    path.write_text(ds(SRC_DST) + "tags: [a, b\n")

    assert load_error(path).problems == [
        f"{path}:8:1: YAML syntax error: expected ',' or ']', but got '<stream end>' (while "
        "parsing a flow sequence that started at line 7, column 7)"]
