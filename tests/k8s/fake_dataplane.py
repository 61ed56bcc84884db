#!/usr/bin/env python3
"""A fake IR consumer for the Kubernetes source tests and perf/k8s_sync_bench.py (stdlib only).

Listens on a unix socket and speaks the dp-control protocol of dataplane/api/msg.h: frames
  u32 magic "SLCP" | u8 type | u64 generation | u32 length | payload   (little-endian)
For each IR frame it answers ACK(generation) with an empty note (every listener served),
and records (arrival time, generation, payload). It does not decode the IR: tests look
for byte strings in it (ir_codec strings are u32 length + bytes: see `ir_has`).
"""

import os
import socket
import struct
import threading
import time

MAGIC = 0x50434C53
IR, ACK, NACK = 1, 2, 3
HEADER = struct.Struct("<IBQI")


def ir_string(s):
    """The bytes a string takes in the IR (u32 length, then the bytes)."""
    b = s.encode()
    return struct.pack("<I", len(b)) + b


class FakeDataplane:
    def __init__(self, path):
        self.path = path
        self.lock = threading.Condition()
        self.frames = []  # (time.monotonic(), generation, payload)
        self.nack_next = 0  # answer the next N IR frames with NACK
        if os.path.exists(path):
            os.unlink(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        self.sock.listen(4)
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    @staticmethod
    def _read(conn, n):
        buf = b""
        while len(buf) < n:
            chunk = conn.recv(n - len(buf))
            if not chunk:
                return None
            buf += chunk
        return buf

    def _serve(self, conn):
        with conn:
            while True:
                head = self._read(conn, HEADER.size)
                if head is None:
                    return
                magic, typ, gen, length = HEADER.unpack(head)
                if magic != MAGIC:
                    return
                payload = self._read(conn, length) if length else b""
                if payload is None:
                    return
                if typ != IR:
                    continue
                now = time.monotonic()
                with self.lock:
                    nack = self.nack_next > 0
                    if nack:
                        self.nack_next -= 1
                    self.frames.append((now, gen, payload))
                    self.lock.notify_all()
                note = b"refused by the test" if nack else b""
                conn.sendall(HEADER.pack(MAGIC, NACK if nack else ACK, gen, len(note)) + note)

    def count(self):
        with self.lock:
            return len(self.frames)

    def last(self):
        with self.lock:
            return self.frames[-1] if self.frames else None

    def wait_for(self, pred, timeout, start=0):
        """The first frame at index >= start for which pred(payload) holds, or None."""
        end = time.monotonic() + timeout
        i = start
        with self.lock:
            while True:
                while i < len(self.frames):
                    if pred(self.frames[i][2]):
                        return self.frames[i]
                    i += 1
                left = end - time.monotonic()
                if left <= 0:
                    return None
                self.lock.wait(min(left, 0.5))

    def close(self):
        self.sock.close()
        try:
            os.unlink(self.path)
        except OSError:
            pass
