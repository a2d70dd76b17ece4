import socket, struct, time, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=3)
p = b"user\0" + sys.argv[2].encode() + b"\0database\0" + sys.argv[3].encode() + b"\0\0"
s.sendall(struct.pack("!II", 8 + len(p), 196608) + p); time.sleep(0.3); s.recv(65536)
def msg(t, body): return t + struct.pack("!I", 4 + len(body)) + body
def q(sql): return msg(b"Q", sql.encode() + b"\0")
s.sendall(q("BEGIN")); time.sleep(0.2); s.recv(65536)
s.sendall(q("DECLARE c1 CURSOR FOR SELECT obs_id, var_id FROM pbmc.x ORDER BY obs_id LIMIT 100")); time.sleep(0.3); s.recv(65536)
s.sendall(msg(b"D", b"Pc1\0") + msg(b"S", b"")); time.sleep(0.3)
data = s.recv(65536); i = 0; out = []
while i + 5 <= len(data):
    t = chr(data[i]); ln = struct.unpack("!I", data[i+1:i+5])[0]; body = data[i+5:i+1+ln]
    out.append(t + (f"(nfields={struct.unpack('!H', body[:2])[0]})" if t == "T" else ""))
    i += 1 + ln
print("Describe portal c1 ->", " ".join(out))
