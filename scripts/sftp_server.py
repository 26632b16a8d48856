"""A real SSH/SFTP server for the tests (asyncssh), run as its own process:

    python sftp_server.py PORT ROOT HOST_KEY AUTHORIZED_KEYS USER PASSWORD

It serves ROOT as the SFTP root (chroot) to USER, who logs in with PASSWORD or a key in
AUTHORIZED_KEYS ("-": password only), and prints "ready" once it listens on 127.0.0.1:PORT."""

import asyncio
import sys

import asyncssh


async def main(port: int, root: str, host_key: str, authorized: str, user: str, password: str) -> None:
    class Server(asyncssh.SSHServer):
        def begin_auth(self, username):
            return True

        def password_auth_supported(self):
            return True

        def validate_password(self, username, given):
            return username == user and given == password

    await asyncssh.listen(
        "127.0.0.1", port, server_host_keys=[host_key], authorized_client_keys=None if authorized == "-" else authorized,
        server_factory=Server, sftp_factory=lambda channel: asyncssh.SFTPServer(channel, chroot=root),
        allow_scp=False,
    )
    print("ready", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    port, root, host_key, authorized, user, password = sys.argv[1:7]
    asyncio.run(main(int(port), root, host_key, authorized, user, password))
