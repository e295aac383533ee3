"""An outside gRPC stack against capstan-api: stubs generated from proto/ with grpcio-tools.

Registers a task definition, creates a service, reads it back, and checks that an ECS error
arrives with its exception name. Run by tests/tests/api.rs; needs `pip install grpcio grpcio-tools`.
"""

import argparse
import importlib
import json
import os
import sys

from grpc_tools import protoc
import grpc


def generate(proto_dir, out_dir):
    os.makedirs(out_dir, exist_ok=True)
    rc = protoc.main([
        "grpc_tools.protoc",
        f"-I{proto_dir}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        os.path.join(proto_dir, "capstan/v1/capstan.proto"),
    ])
    if rc != 0:
        sys.exit(f"protoc failed ({rc})")
    sys.path.insert(0, out_dir)
    return (importlib.import_module("capstan.v1.capstan_pb2"),
            importlib.import_module("capstan.v1.capstan_pb2_grpc"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--proto-dir", required=True)
    ap.add_argument("--out-dir", required=True)
    ap.add_argument("--endpoint", required=True)
    args = ap.parse_args()
    pb, rpc = generate(args.proto_dir, args.out_dir)
    stub = rpc.CapstanStub(grpc.insecure_channel(args.endpoint))

    td = {"family": "py", "containerDefinitions": [
        {"name": "app", "image": "x", "memory": 32, "command": ["sleep", "60"]}]}
    r = stub.RegisterTaskDefinition(pb.RegisterTaskDefinitionRequest(task_definition_json=json.dumps(td)))
    reg = json.loads(r.task_definition_json)
    assert reg["revision"] == 1, reg

    svc = {"serviceName": "py-web", "taskDefinition": "py:1", "desiredCount": 0}
    stub.CreateService(pb.CreateServiceRequest(cluster="default", service_json=json.dumps(svc)))
    d = stub.DescribeServices(pb.DescribeServicesRequest(cluster="default", services=["py-web"]))
    got = json.loads(d.items_json[0])
    assert got["serviceName"] == "py-web", got
    assert got["status"] == "ACTIVE", got

    try:
        stub.CreateService(pb.CreateServiceRequest(cluster="nowhere", service_json=json.dumps(svc)))
        sys.exit("CreateService in an unknown cluster succeeded")
    except grpc.RpcError as e:
        assert e.code() == grpc.StatusCode.NOT_FOUND, e.code()
        assert e.details().startswith("ClusterNotFoundException"), e.details()
        meta = dict(e.trailing_metadata() or ())
        assert meta.get("capstan-exception") == "ClusterNotFoundException", meta
    print("python client: ok")


if __name__ == "__main__":
    main()
