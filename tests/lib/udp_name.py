#!/usr/bin/env python3
"""UDP backend for the integration tests: answers every datagram with NAME and a newline,
from one process, to the datagram's source.

usage: udp_name.py NAME PORT [ADDR]

Without ADDR it listens dual stack on [::]:PORT (IPv4 clients as mapped addresses);
with ADDR on that address only, so the answers leave from ADDR (a DSR VIP).

It replaces `socat UDP-RECVFROM:PORT,fork SYSTEM:"echo NAME"`, which loses datagrams on a
busy machine: when the forked `sh -c "echo NAME"` exits before the socat child has started
its transfer loop, the child's write of the datagram to the shell fails (EPIPE) and the
child exits without sending the answer the shell already wrote; the parent, seeing the child
fail, then throws away the next datagram on the socket too (socat 1.7.4: "drop data because
of child exit failed"). One race cost the client two tries.
"""

import socket
import sys


def main() -> None:
    name, port = sys.argv[1], int(sys.argv[2])
    addr = sys.argv[3] if len(sys.argv) > 3 else "::"
    if ":" in addr:
        s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    else:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((addr, port))
    answer = (name + "\n").encode()
    while True:
        _, peer = s.recvfrom(65535)
        s.sendto(answer, peer)


if __name__ == "__main__":
    main()
