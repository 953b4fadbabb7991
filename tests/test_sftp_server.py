"""The SFTP test server (conftest.sftp_server) is a real one: OpenSSH's sshd, which
checks the client's key and presents its own, and which a manifest can name.

The conformance suite (test_conformance*.py) runs datamove against it; this file
only shows that what it runs against is not a permissive stand-in.
"""

from __future__ import annotations

import os
from pathlib import Path

import paramiko
import pytest
import yaml

from datamove.manifest.model import parse_manifest

from .conftest import SftpServer


def test_files_written_over_sftp_are_on_the_servers_disk(sftp_server: SftpServer) -> None:
    directory = sftp_server.new_dir()
    fs = sftp_server.fs()
    fs.pipe(f"{directory}/a.bin", b"over ssh")
    fs.mv(f"{directory}/a.bin", f"{directory}/b.bin")  # posix-rename@openssh.com
    assert (Path(directory) / "b.bin").read_bytes() == b"over ssh"
    assert not (Path(directory) / "a.bin").exists()
    assert [i["name"] for i in fs.ls(directory, detail=True)] == [f"{directory}/b.bin"]


def connect(server: SftpServer, **kwargs: object) -> paramiko.SSHClient:
    client = paramiko.SSHClient()
    client.load_host_keys(str(server.known_hosts))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    client.connect("127.0.0.1", port=server.port, username=server.username,
                   look_for_keys=False, timeout=10, **kwargs)  # type: ignore[arg-type]
    return client


def test_the_server_wants_the_agents_key_and_shows_the_known_host_key(
        sftp_server: SftpServer) -> None:
    assert os.environ["SSH_AUTH_SOCK"]  # the fixture's agent, for datamove's workers
    client = connect(sftp_server)  # RejectPolicy: the host key is the one in known_hosts
    client.close()
    with pytest.raises(paramiko.AuthenticationException):  # another key: refused
        connect(sftp_server, allow_agent=False, pkey=paramiko.ECDSAKey.generate())
    with pytest.raises(paramiko.AuthenticationException):  # no password login at all
        connect(sftp_server, allow_agent=False, password="anything")

def test_a_manifest_names_the_server_without_a_secret(tmp_path: Path,
                                                      sftp_server: SftpServer) -> None:
    """The key stays in the agent; and SSH is encrypted, so a remote SFTP host is
    not refused as clear text (transport.py), as plain http:// or ftp:// would be."""
    local = sftp_server.location(sftp_server.new_dir())
    remote = {"url": "sftp://backup.example.com:2222/srv/archive/", "options": {"username": "u"}}
    for destination in (local, remote):
        doc = {"version": 1, "name": "sftp", "datasets": [
            {"name": "d", "source": {"url": f"{tmp_path}/"}, "destination": destination}]}
        m = parse_manifest(yaml.safe_dump(doc), str(tmp_path / "m.yaml"), base_dir=tmp_path)
        assert m.datasets[0].destination.url == destination["url"]
