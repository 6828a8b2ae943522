#!/usr/bin/python3
"""A minimal CRI v1 client: what kubelet does to a pod's network, and nothing more.

crictl is not packaged in Debian. This speaks the public CRI v1 API (service
runtime.v1.RuntimeService of k8s.io/cri-api, field numbers from its api.proto) over gRPC with
Debian's python3-grpcio, encoding the few messages it needs by hand (no generated code).

  cri.py SOCKET version                      wait until the runtime answers (bounded)
  cri.py SOCKET runp NAME UID NAMESPACE [PROTO:CONTAINER_PORT:HOST_PORT ...]
                                             RunPodSandbox; prints the sandbox ID
  cri.py SOCKET status ID                    PodSandboxStatus (verbose); prints JSON:
                                             {"id", "state", "ip", "additional_ips", "pid"}
  cri.py SOCKET stopp ID                     StopPodSandbox
  cri.py SOCKET rmp ID                       RemovePodSandbox
  cri.py SOCKET cleanup                      stop and remove every pod sandbox

Errors are printed on stderr with the gRPC status and exit with code 1.
"""
import json
import sys

import grpc

SERVICE = "/runtime.v1.RuntimeService/"
TIMEOUT = 60  # seconds, for any one call


# --- protobuf wire format (varint = 0, length-delimited = 2) ---------------------------------

def _varint(n):
    out = bytearray()
    n &= (1 << 64) - 1
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _key(field, wire):
    return _varint(field << 3 | wire)


def f_str(field, s):
    data = s.encode() if isinstance(s, str) else s
    return _key(field, 2) + _varint(len(data)) + data if data else b""


def f_msg(field, data):
    return _key(field, 2) + _varint(len(data)) + data


def f_int(field, n):
    return _key(field, 0) + _varint(n) if n else b""


def decode(data):
    """A message as {field: [value, ...]}: ints for varints, bytes for length-delimited."""
    fields, i = {}, 0
    while i < len(data):
        key, i = _read_varint(data, i)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _read_varint(data, i)
        elif wire == 2:
            size, i = _read_varint(data, i)
            value, i = data[i:i + size], i + size
        elif wire == 1:
            value, i = data[i:i + 8], i + 8
        elif wire == 5:
            value, i = data[i:i + 4], i + 4
        else:
            raise ValueError("unsupported wire type %d" % wire)
        fields.setdefault(field, []).append(value)
    return fields


def _read_varint(data, i):
    n, shift = 0, 0
    while True:
        b = data[i]
        i += 1
        n |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return n, i


def first(fields, field, default=b""):
    return fields.get(field, [default])[0]


# --- CRI messages -----------------------------------------------------------------------------

PROTOCOLS = {"tcp": 0, "udp": 1, "sctp": 2}


def run_pod_sandbox_request(name, uid, namespace, ports):
    # PodSandboxMetadata{name=1, uid=2, namespace=3, attempt=4}
    metadata = f_str(1, name) + f_str(2, uid) + f_str(3, namespace)
    # PodSandboxConfig{metadata=1, hostname=2, port_mappings=5, linux=8}
    config = f_msg(1, metadata) + f_str(2, name)
    for spec in ports:
        proto, container_port, host_port = spec.split(":")
        # PortMapping{protocol=1, container_port=2, host_port=3, host_ip=4}
        mapping = (f_int(1, PROTOCOLS[proto.lower()]) + f_int(2, int(container_port))
                   + f_int(3, int(host_port)))
        config += f_msg(5, mapping)
    # LinuxPodSandboxConfig{} (defaults: no cgroup parent, no sysctls)
    config += f_msg(8, b"")
    # RunPodSandboxRequest{config=1, runtime_handler=2}
    return f_msg(1, config)


def sandbox_status(response):
    # PodSandboxStatusResponse{status=1, info=2 (map<string,string>)}
    top = decode(response)
    status = decode(first(top, 1))
    # PodSandboxStatus{id=1, metadata=2, state=3, created_at=4, network=5}
    network = decode(first(status, 5))
    # PodSandboxNetworkStatus{ip=1, additional_ips=2 (PodIP{ip=1})}
    extra = [first(decode(m), 1).decode() for m in network.get(2, [])]
    info = {}
    for entry in top.get(2, []):
        kv = decode(entry)
        info[first(kv, 1).decode()] = first(kv, 2).decode()
    pid = None
    if "info" in info:
        try:
            pid = json.loads(info["info"]).get("pid")
        except ValueError:
            pid = None
    state = first(status, 3, 0)
    return {
        "id": first(status, 1).decode(),
        "state": {0: "SANDBOX_READY", 1: "SANDBOX_NOTREADY"}.get(state, str(state)),
        "ip": first(network, 1).decode(),
        "additional_ips": extra,
        "pid": pid,
    }


def call(channel, method, request):
    stub = channel.unary_unary(SERVICE + method)
    return stub(request, timeout=TIMEOUT)


def main(argv):
    if len(argv) < 2:
        sys.exit(__doc__)
    sock, cmd, rest = argv[0], argv[1], argv[2:]
    with grpc.insecure_channel("unix://" + sock) as channel:
        try:
            if cmd == "version":
                # Waits (bounded) until the socket exists and the server answers: gRPC's own
                # connection backoff, no polling here.
                # VersionRequest{version=1}; VersionResponse{runtime_name=2, runtime_version=3,
                # runtime_api_version=4}
                stub = channel.unary_unary(SERVICE + "Version")
                out = decode(stub(f_str(1, "v1"), timeout=TIMEOUT, wait_for_ready=True))
                print(first(out, 2).decode(), first(out, 3).decode(), first(out, 4).decode())
            elif cmd == "runp" and len(rest) >= 3:
                out = decode(call(channel, "RunPodSandbox",
                                  run_pod_sandbox_request(rest[0], rest[1], rest[2], rest[3:])))
                print(first(out, 1).decode())
            elif cmd == "status" and len(rest) == 1:
                # PodSandboxStatusRequest{pod_sandbox_id=1, verbose=2}
                out = call(channel, "PodSandboxStatus", f_str(1, rest[0]) + f_int(2, 1))
                print(json.dumps(sandbox_status(out)))
            elif cmd == "stopp" and len(rest) == 1:
                call(channel, "StopPodSandbox", f_str(1, rest[0]))
            elif cmd == "rmp" and len(rest) == 1:
                call(channel, "RemovePodSandbox", f_str(1, rest[0]))
            elif cmd == "cleanup" and not rest:
                # ListPodSandboxResponse{items=1 (PodSandbox{id=1})}
                items = decode(call(channel, "ListPodSandbox", b"")).get(1, [])
                for item in items:
                    sandbox = first(decode(item), 1)
                    call(channel, "StopPodSandbox", f_str(1, sandbox))
                    call(channel, "RemovePodSandbox", f_str(1, sandbox))
            else:
                sys.exit(__doc__)
        except grpc.RpcError as e:
            sys.stderr.write("cri.py %s: %s: %s\n" % (cmd, e.code().name, e.details()))
            sys.exit(1)


if __name__ == "__main__":
    main(sys.argv[1:])
