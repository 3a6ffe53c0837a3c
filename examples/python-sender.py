#!/usr/bin/env python3
# Send an open file's fd from Python to fdpass (raw mode: plain sendmsg).
#   terminal 1:  fdpass recv --listen /tmp/py.sock --raw --read
#   terminal 2:  python3 examples/python-sender.py /tmp/py.sock /etc/hostname
import socket, sys, os

path, file = sys.argv[1], sys.argv[2]
fd = os.open(file, os.O_RDONLY)
with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
    s.connect(path)
    socket.send_fds(s, [b"X"], [fd])  # a stream message with fds needs a byte
os.close(fd)  # ours; the receiver has its own
