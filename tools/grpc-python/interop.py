#!/usr/bin/env python3
"""A Python gRPC client (grpcio) calling a svrkit server, as any language's client would.

Stubs are made with grpcio-tools from the services' own IDL; nothing here knows svrkit
beyond two documented metadata keys (svrkit-user-priority and svrkit-uid). svrkit's test
suite runs it (tools/cli/tests/it/grpc.rs) against a real server, and the README's "From
other languages" section shows it. Every check that fails raises; the last line printed
is PASSED.

    python interop.py --idl idl --corpus-idl svrkit-codegen/tests/corpus/idl \
        --addr 127.0.0.1:7000 --overloaded 127.0.0.1:7001

With --watch-drain it then watches the server's health and expects SERVING to turn
NOT_SERVING (printing WATCHING first, so that the caller knows when to drain it).
"""

import argparse
import importlib
import os
import sys
import tempfile

import grpc
import grpc_tools
from google.protobuf import any_pb2, descriptor_pool, duration_pb2, empty_pb2
from google.protobuf import field_mask_pb2, struct_pb2, timestamp_pb2, wrappers_pb2
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)
from grpc_status import rpc_status
from grpc_tools import protoc

TIMEOUT = 10.0


def check(condition, what):
    if not condition:
        raise AssertionError(what)
    print(f"ok: {what}", flush=True)


def generate(includes, files):
    """Python stubs for `files` (with grpcio-tools), importable from then on."""
    out = tempfile.mkdtemp(prefix="svrkit-grpc-python-")
    well_known = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
    args = ["protoc", *(f"-I{i}" for i in includes), f"-I{well_known}"]
    args += [f"--python_out={out}", f"--grpc_python_out={out}", *files]
    if protoc.main(args) != 0:
        sys.exit("grpcio-tools could not compile the IDL")
    sys.path.insert(0, out)


def scalars_and_well_known_types(channel):
    types = importlib.import_module("corpus.types_pb2")
    types_grpc = importlib.import_module("corpus.types_pb2_grpc")
    wkt = importlib.import_module("corpus.wkt_pb2")
    wkt_grpc = importlib.import_module("corpus.wkt_pb2_grpc")

    scalars = types.Scalars(
        f_double=1.5,
        f_float=0.25,
        f_int32=-(2**31),
        f_int64=-(2**63),
        f_uint32=2**32 - 1,
        f_uint64=2**64 - 1,
        f_sint32=-7,
        f_sint64=2**63 - 1,
        f_fixed32=2**32 - 1,
        f_fixed64=2**64 - 1,
        f_sfixed32=-1,
        f_sfixed64=-(2**63),
        f_bool=True,
        f_string="héllo ✓",
        f_bytes=b"\x00\xff\x7f",
        f_enum=types.COLOR_GREEN,
    )
    reply = types_grpc.TypesStub(channel).Scalars(scalars, timeout=TIMEOUT)
    check(reply == scalars, "every scalar type comes back as sent")

    packed = any_pb2.Any()
    packed.Pack(scalars)
    value = struct_pb2.Value()
    value.list_value.values.add().string_value = "two"
    known = wkt.AllKnown(
        timestamp=timestamp_pb2.Timestamp(seconds=1_700_000_000, nanos=500),
        timestamp_list=[timestamp_pb2.Timestamp(seconds=-1)],
        duration=duration_pb2.Duration(seconds=-3, nanos=-5),
        duration_map={"d": duration_pb2.Duration(seconds=1)},
        empty=empty_pb2.Empty(),
        any=packed,
        struct=struct_pb2.Struct(fields={"k": struct_pb2.Value(number_value=2.5)}),
        value=value,
        list_value=struct_pb2.ListValue(values=[struct_pb2.Value(bool_value=True)]),
        field_mask=field_mask_pb2.FieldMask(paths=["a.b", "c"]),
        bool_value=wrappers_pb2.BoolValue(value=False),
        bytes_value=wrappers_pb2.BytesValue(value=b"\x00"),
        double_value=wrappers_pb2.DoubleValue(value=0.5),
        float_value=wrappers_pb2.FloatValue(value=-0.5),
        int32_value=wrappers_pb2.Int32Value(value=-(2**31)),
        int64_value=wrappers_pb2.Int64Value(value=-(2**63)),
        int64_value_map={"i": wrappers_pb2.Int64Value(value=9)},
        string_value=wrappers_pb2.StringValue(value="✓"),
        u_int32_value=wrappers_pb2.UInt32Value(value=2**32 - 1),
        u_int64_value=wrappers_pb2.UInt64Value(value=2**64 - 1),
        null=struct_pb2.NULL_VALUE,
    )
    known.api.name = "svrkit.demo.Echo"
    known.type.name = "corpus.types.Scalars"
    known.source_context.file_name = "corpus/types.proto"
    reply = wkt_grpc.KnownStub(channel).EchoAll(known, timeout=TIMEOUT)
    check(reply == known, "every well-known type comes back as sent")
    check(reply.HasField("bool_value") and not reply.bool_value.value, "a false wrapper keeps its presence")


def context_errors_and_deadlines(channel):
    echo = importlib.import_module("demo.echo_pb2")
    echo_grpc = importlib.import_module("demo.echo_pb2_grpc")
    stub = echo_grpc.EchoStub(channel)

    metadata = [("tenant", "acme"), ("blob-bin", b"\x00\xff"), ("svrkit-uid", "42")]
    reply = stub.Echo(echo.EchoRequest(payload=b"hi"), metadata=metadata, timeout=2.0)
    seen = reply.seen
    check(reply.payload == b"hi", "a call answers")
    check(dict(seen.metadata) == {"tenant": b"acme", "blob-bin": b"\x00\xff"}, "metadata arrives in the handler")
    check(seen.uid == 42, "svrkit-uid names the user")
    # Some time is left, never more than sent (gRPC's C core rounds the timeout it sends up
    # a little: 2 s may go as "2100m"). How much is left is the machine's business.
    check(0 < seen.remaining_ms <= 2200, f"the deadline arrives ({seen.remaining_ms} ms left)")
    check(seen.business_priority == 20, "the method's IDL priority applies")

    try:
        stub.Echo(echo.EchoRequest(payload=b"refuse"), timeout=TIMEOUT)
        raise AssertionError("a refusal was expected")
    except grpc.RpcError as e:
        check(e.code() == grpc.StatusCode.FAILED_PRECONDITION, f"an error keeps its code ({e.code()})")
        check("refused" in e.details(), f"and its message ({e.details()!r})")
        status = rpc_status.from_call(e)
        reasons, details = [], []
        for detail in status.details:
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                reasons.append((info.domain, info.reason))
            elif detail.Is(wrappers_pb2.BytesValue.DESCRIPTOR):
                value = wrappers_pb2.BytesValue()
                detail.Unpack(value)
                details.append(value.value)
        check(reasons == [("svrkit", "not_allowed")], f"its reason in google.rpc.ErrorInfo ({reasons})")
        check(details == [b"\x08\x2a"], f"its details in grpc-status-details-bin ({details})")

    try:
        stub.Echo(echo.EchoRequest(payload=b"slow", delay_ms=3000), timeout=0.2)
        raise AssertionError("the deadline was expected to pass")
    except grpc.RpcError as e:
        check(e.code() == grpc.StatusCode.DEADLINE_EXCEEDED, f"a deadline expires ({e.code()})")

    try:
        channel.unary_unary("/svrkit.demo.Echo/NoSuchMethod")(b"", timeout=TIMEOUT)
        raise AssertionError("an unknown method was expected to fail")
    except grpc.RpcError as e:
        check(e.code() == grpc.StatusCode.UNIMPLEMENTED, f"an unknown method is UNIMPLEMENTED ({e.code()})")
    reply = stub.Echo(echo.EchoRequest(payload=b"after"), timeout=TIMEOUT)
    check(reply.payload == b"after", "the server keeps serving")


def overload(address):
    echo = importlib.import_module("demo.echo_pb2")
    echo_grpc = importlib.import_module("demo.echo_pb2_grpc")
    with grpc.insecure_channel(address) as channel:
        stub = echo_grpc.EchoStub(channel)
        try:
            stub.Echo(echo.EchoRequest(payload=b"low"), metadata=[("svrkit-user-priority", "128")], timeout=TIMEOUT)
            raise AssertionError("a low priority was expected to be shed")
        except grpc.RpcError as e:
            trailers = dict(e.trailing_metadata() or ())
            check(e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, f"DAGOR sheds a low priority ({e.code()})")
            check(trailers.get("svrkit-code") == "overloaded", "and says it was overload")
        reply = stub.Echo(echo.EchoRequest(payload=b"high"), metadata=[("svrkit-user-priority", "1")], timeout=TIMEOUT)
        check(reply.payload == b"high", "a high priority still passes")


def reflection(channel):
    database = ProtoReflectionDescriptorDatabase(channel)
    services = set(database.get_services())
    for name in ["svrkit.demo.Echo", "corpus.wkt.Known", "corpus.types.Types", "grpc.health.v1.Health"]:
        check(name in services, f"reflection lists {name}")
    pool = descriptor_pool.DescriptorPool(database)
    method = pool.FindMethodByName("svrkit.demo.Echo.Echo")
    check(method.input_type.full_name == "svrkit.demo.EchoRequest", "reflection describes a method's request")
    check(method.output_type.full_name == "svrkit.demo.EchoReply", "and its reply")
    fields = [f.name for f in method.output_type.fields_by_name["seen"].message_type.fields]
    check("metadata" in fields and "remaining_ms" in fields, "and the messages it uses")

    # v1 speaks the same messages as v1alpha.
    info = channel.stream_stream(
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )
    answers = list(info(iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=TIMEOUT))
    names = {s.name for s in answers[0].list_services_response.service}
    check("svrkit.demo.Echo" in names, "grpc.reflection.v1 answers too")
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    asked = reflection_pb2.ServerReflectionRequest(file_containing_symbol="no.Such")
    answer = next(iter(stub.ServerReflectionInfo(iter([asked]), timeout=TIMEOUT)))
    check(answer.error_response.error_code == grpc.StatusCode.NOT_FOUND.value[0], "an unknown symbol is NOT_FOUND")


def health(channel, watch_drain):
    stub = health_pb2_grpc.HealthStub(channel)
    serving = health_pb2.HealthCheckResponse.SERVING
    check(stub.Check(health_pb2.HealthCheckRequest(), timeout=TIMEOUT).status == serving, "the server is SERVING")
    asked = health_pb2.HealthCheckRequest(service="svrkit.demo.Echo")
    check(stub.Check(asked, timeout=TIMEOUT).status == serving, "svrkit.demo.Echo is SERVING")
    try:
        stub.Check(health_pb2.HealthCheckRequest(service="no.Such"), timeout=TIMEOUT)
        raise AssertionError("an unknown service was expected to be NOT_FOUND")
    except grpc.RpcError as e:
        check(e.code() == grpc.StatusCode.NOT_FOUND, "an unknown service is NOT_FOUND")
    if not watch_drain:
        return
    watch = stub.Watch(health_pb2.HealthCheckRequest(), timeout=30.0)
    first = next(watch)
    check(first.status == serving, "Watch starts SERVING")
    print("WATCHING", flush=True)
    second = next(watch)
    check(second.status == health_pb2.HealthCheckResponse.NOT_SERVING, "and turns NOT_SERVING when the server drains")


def mutual_tls(address, tls_dir):
    """The server requires a certificate of the cluster's CA: with one, the handler sees
    the certificate's service name as the caller; without one, no connection."""
    echo = importlib.import_module("demo.echo_pb2")
    echo_grpc = importlib.import_module("demo.echo_pb2_grpc")
    read = lambda name: open(os.path.join(tls_dir, name), "rb").read()
    # svrkit's certificates name the host svrkit.cluster (identity is the SPIFFE URI).
    options = [("grpc.ssl_target_name_override", "svrkit.cluster")]
    member = grpc.ssl_channel_credentials(read("ca.crt"), read("python.key"), read("python.crt"))
    with grpc.secure_channel(address, member, options=options) as channel:
        reply = echo_grpc.EchoStub(channel).Echo(
            echo.EchoRequest(payload=b"tls"), metadata=[("svrkit-caller", "claimed")], timeout=TIMEOUT
        )
        check(reply.seen.caller == "python", f"over mutual TLS the caller is the certificate's ({reply.seen.caller!r})")
    stranger = grpc.ssl_channel_credentials(read("ca.crt"))
    with grpc.secure_channel(address, stranger, options=options) as channel:
        try:
            echo_grpc.EchoStub(channel).Echo(echo.EchoRequest(payload=b"x"), timeout=TIMEOUT)
            raise AssertionError("a client without a certificate was let in")
        except grpc.RpcError as e:
            check(e.code() == grpc.StatusCode.UNAVAILABLE, f"a client without a certificate is refused ({e.code()})")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--idl", required=True, help="svrkit's idl/ (demo/echo.proto, svrkit/options.proto)")
    parser.add_argument("--corpus-idl", required=True, help="svrkit-codegen/tests/corpus/idl")
    parser.add_argument("--addr", help="the server, HOST:PORT")
    parser.add_argument("--tls-addr", help="a server requiring mutual TLS, HOST:PORT")
    parser.add_argument("--tls-dir", help="ca.crt, python.crt and python.key for --tls-addr")
    parser.add_argument("--overloaded", help="a server DAGOR has found overloaded")
    parser.add_argument("--watch-drain", action="store_true")
    args = parser.parse_args()
    generate(
        [args.idl, args.corpus_idl],
        ["svrkit/options.proto", "demo/echo.proto", "corpus/types.proto", "corpus/wkt.proto"],
    )
    if args.tls_addr:
        mutual_tls(args.tls_addr, args.tls_dir)
    if args.addr:
        with grpc.insecure_channel(args.addr) as channel:
            scalars_and_well_known_types(channel)
            context_errors_and_deadlines(channel)
            reflection(channel)
            if args.overloaded:
                overload(args.overloaded)
            health(channel, args.watch_drain)
    print("PASSED", flush=True)


if __name__ == "__main__":
    main()
